"""Market-1501 (Zheng et al., ICCV 2015), parsed as the reference toolkits do (BoT / fast-reid
``market1501.py``): ids and cameras from ``^(-?\\d+)_c(\\d)`` (so the 38 official ``*.jpg.jpg`` files
count), junk (pid -1) dropped from every split, distractors (pid 0) kept in the gallery, train ids
relabelled 0..N-1, cameras 0-based.

Statistics of the official release (v15.09.15), checked by a test when the shared archive is present:
train 751 ids / 12,936 images; query 750 ids / 3,368 images; gallery 751 ids (incl. 0) / 15,913 images.
"""

from __future__ import annotations

import re
from pathlib import Path

from . import register

PATTERN = re.compile(r"^(-?\d+)_c(\d)")
SUBDIRS = ("bounding_box_train", "query", "bounding_box_test")


def parse_name(name: str) -> tuple[int, int]:
    """``0002_c1s1_000451_03.jpg`` -> (2, 0)."""
    m = PATTERN.match(name)
    if not m:
        raise ValueError(f"cannot parse a Market-1501 name: {name!r} (expected PPPP_cC...)")
    return int(m.group(1)), int(m.group(2)) - 1


@register("market1501")
class Market1501:
    """``root`` holds the three folders, or a ``Market-1501-v15.09.15/`` sub-folder that does."""

    def __init__(self, root: str | Path) -> None:
        root = Path(root)
        if (root / "Market-1501-v15.09.15").is_dir():
            root = root / "Market-1501-v15.09.15"
        missing = [d for d in SUBDIRS if not (root / d).is_dir()]
        if missing:
            raise FileNotFoundError(f"{root} is not a Market-1501 folder: missing {', '.join(missing)} "
                                    f"(expected {', '.join(SUBDIRS)}, directly or under Market-1501-v15.09.15/)")
        self.root = root
        self.train = self._read(root / "bounding_box_train", relabel=True)
        self.query = self._read(root / "query")
        self.gallery = self._read(root / "bounding_box_test")
        self.num_train_pids = len({p for _, p, _ in self.train})

    @staticmethod
    def _read(folder: Path, relabel: bool = False) -> list[tuple[str, int, int]]:
        items = []
        for path in sorted(p for p in folder.iterdir() if p.suffix == ".jpg"):
            pid, cam = parse_name(path.name)
            if pid == -1:
                continue  # junk
            if not 0 <= pid <= 1501 or not 0 <= cam <= 5:
                raise ValueError(f"{path}: id {pid} or camera {cam + 1} out of the Market-1501 range")
            items.append((str(path), pid, cam))
        if not items:
            raise FileNotFoundError(f"no images in {folder}")
        if relabel:
            ids = {p: i for i, p in enumerate(sorted({p for _, p, _ in items}))}
            items = [(f, ids[p], c) for f, p, c in items]
        return items

    def statistics(self) -> dict:
        return {split: {"ids": len({p for _, p, _ in items}), "images": len(items),
                        "cameras": len({c for _, _, c in items})}
                for split, items in (("train", self.train), ("query", self.query), ("gallery", self.gallery))}
