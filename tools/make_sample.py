"""Cut the embedded CIFAR-10 sample (``samples/cifar10-sample.tar.gz``) from the full CIFAR-10 archive.

The sample keeps the first N train and M test images (by file name) of every class, as the original
JPEG bytes, in the ImageFolder layout ``{train,test}/<class>/NNNN.jpg``. Deterministic: the same
archive gives the same bytes.

    python tools/make_sample.py ../shared/data/cifar10-jpeg.tar.gz --train 250 --test 50
"""

from __future__ import annotations

import argparse
import io
import tarfile
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("archive", help="CIFAR-10 JPEG archive (train/<class>/*.jpg, test/<class>/*.jpg)")
    ap.add_argument("--train", type=int, default=250, help="train images per class")
    ap.add_argument("--test", type=int, default=50, help="test images per class")
    ap.add_argument("--out", default="samples/cifar10-sample.tar.gz")
    args = ap.parse_args()
    if not Path(args.archive).is_file():
        raise SystemExit(f"archive not found: {args.archive}")
    picked: dict[tuple[str, str], list[tarfile.TarInfo]] = {}
    with tarfile.open(args.archive) as src:
        members = sorted((m for m in src.getmembers() if m.isfile() and m.name.endswith(".jpg")), key=lambda m: m.name)
        for m in members:
            parts = Path(m.name).parts[-3:]
            if len(parts) == 3 and parts[0] in ("train", "test"):
                picked.setdefault((parts[0], parts[1]), []).append(m)
        if not picked:
            raise SystemExit(f"{args.archive} has no train/<class>/*.jpg members")
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        with tarfile.open(args.out, "w:gz", format=tarfile.USTAR_FORMAT) as dst:
            for (split, cls), ms in sorted(picked.items()):
                for m in ms[: args.train if split == "train" else args.test]:
                    data = src.extractfile(m).read()
                    info = tarfile.TarInfo(f"{split}/{cls}/{Path(m.name).name}")
                    info.size, info.mtime, info.mode = len(data), 0, 0o644
                    dst.addfile(info, io.BytesIO(data))
    print(f"wrote {args.out} ({Path(args.out).stat().st_size / 2**20:.1f} MiB)")


if __name__ == "__main__":
    main()
