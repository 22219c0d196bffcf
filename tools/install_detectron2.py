"""Install Detectron2 into the current interpreter: from its GitHub source, or offline-capable fallback.

Detectron2 has no official PyPI release (INSTALL.md: build from source). This script tries, in order:

1. ``source``: ``pip install --no-build-isolation <source>`` where ``<source>`` is the official
   ``git+https://github.com/facebookresearch/detectron2.git`` at a pinned commit (``OFFICIAL_COMMIT``;
   or ``--source`` / ``$DETECTRON2_SOURCE``: a local clone, an archive, another git URL or ref).
   Torch must already be installed (setup.py imports it), hence ``--no-build-isolation``. This builds
   the C++/CUDA ops.
2. ``fallback`` (when the source cannot be fetched or built): the PyPI sdist ``pb1-detectron2==0.6``
   carries detectron2 v0.6's Python sources and model-zoo configs but not its C++ sources, so its own
   setup.py cannot build. We fetch it from the package index, refuse it unless its sha256 is the one
   pinned here (``SDIST_SHA256``), and install the ``detectron2`` package directory as a pure-Python
   distribution (version ``0.6+pyonly``).
   Nothing in the sources is edited. ``detection/compat.py`` supplies what that install lacks
   (a ``detectron2._C`` stand-in, Pillow>=10's missing ``Image.LINEAR``) when ``detection`` is imported.

    python tools/install_detectron2.py                 # already installed -> nothing to do
    python tools/install_detectron2.py --mode fallback  # skip the GitHub attempt
    python tools/install_detectron2.py --force          # reinstall
    DETECTRON2_INSTALL=fallback make test               # the mode for make (CI sets fallback)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.parse
import urllib.request
from pathlib import Path

# The GitHub source pinned to a commit of main (2026-06-06, the newest we have read; INSTALL.md builds main, not a tag).
OFFICIAL_COMMIT = "02b5c4e295e990042a714712c21dc79b731e8833"
OFFICIAL_SOURCE = f"git+https://github.com/facebookresearch/detectron2.git@{OFFICIAL_COMMIT}"
SDIST_NAME = "pb1-detectron2"
SDIST_VERSION = "0.6"
# sha256 of pb1-detectron2-0.6.tar.gz (518,688 bytes), as PyPI lists it and as we hashed the download,
# 2026-11-28. Any other file is refused, whatever the index says.
SDIST_SHA256 = "5d2e9e51e523ec72f6a31cca04b0a515492e9514b773a3d134cedc0677170b29"
# detectron2 v0.6 setup.py install_requires, with black unpinned (21.4b2 does not install on 3.11's click).
FALLBACK_REQUIRES = [
    "Pillow>=7.1", "matplotlib", "pycocotools>=2.0.2", "termcolor>=1.1", "yacs>=0.1.8", "tabulate",
    "cloudpickle", "tqdm>4.29.0", "tensorboard", "fvcore>=0.1.5,<0.1.6", "iopath>=0.1.7,<0.1.10",
    "omegaconf>=2.1", "hydra-core>=1.1", "black",
]


def installed_detectron2() -> str | None:
    """Version of the detectron2 importable by this interpreter (in a fresh process), or None."""
    probe = ("import importlib.metadata as m, importlib.util as u; "
             "print(m.version('detectron2') if u.find_spec('detectron2') else '')")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)  # prints only on success
    return out.stdout.strip() or None


def pip(*args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", *args]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(cmd, timeout=timeout)


def install_from_source(source: str, timeout: float) -> bool:
    try:
        import torch  # noqa: F401  (setup.py imports torch: it must be there before the build)
    except ImportError:
        sys.exit("install torch first: detectron2's setup.py imports it at build time")
    try:
        return pip("--no-build-isolation", source, timeout=timeout).returncode == 0
    except subprocess.TimeoutExpired:
        print(f"building detectron2 from {source} took longer than {timeout:.0f} s; giving up on it")
        return False


def index_url() -> str:
    """pip's index: $PIP_INDEX_URL, else pip's configured global.index-url, else PyPI."""
    url = os.environ.get("PIP_INDEX_URL")
    if not url:
        out = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.index-url"],
                             capture_output=True, text=True)
        url = out.stdout.strip() if out.returncode == 0 else ""
    return (url or "https://pypi.org/simple").rstrip("/")


def fetch_sdist(dest: Path, expected_sha256: str = SDIST_SHA256) -> Path:
    """Download pb1-detectron2's sdist from the package index; refuse it unless its sha256 is the pinned one
    (the index's own listing, when it has one, must agree too)."""
    url = f"{index_url()}/{SDIST_NAME}/"
    req = urllib.request.Request(url, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        files = json.load(resp)["files"]
    wanted = f"{SDIST_NAME}-{SDIST_VERSION}.tar.gz"
    entry = next((f for f in files if f["filename"] == wanted), None)
    if entry is None:
        raise RuntimeError(f"{wanted} is not listed at {url}")
    path = dest / wanted
    with urllib.request.urlopen(urllib.parse.urljoin(url, entry["url"]), timeout=300) as resp, open(path, "wb") as out:
        shutil.copyfileobj(resp, out)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    listed = entry.get("hashes", {}).get("sha256")
    if digest != expected_sha256:
        path.unlink()
        raise RuntimeError(f"{wanted} from {url}: sha256 {digest} is not the pinned {expected_sha256} "
                           f"(refused; the index lists {listed or 'no sha256'})")
    if listed is not None and listed != digest:
        path.unlink()
        raise RuntimeError(f"{wanted}: sha256 {digest} does not match the index's {listed}")
    return path


def stage_python_package(sdist: Path, work: Path) -> Path:
    """Lay out the sdist's ``detectron2`` package (with model_zoo/configs) as an installable project."""
    with tarfile.open(sdist) as tar:
        tar.extractall(work, filter="data")
    src = work / f"{SDIST_NAME}-{SDIST_VERSION}" / "detectron2"
    if not (src / "model_zoo" / "configs" / "Base-RCNN-FPN.yaml").is_file():
        raise RuntimeError(f"{sdist.name} does not hold detectron2/model_zoo/configs as expected")
    project = work / "detectron2-pyonly"
    shutil.copytree(src, project / "detectron2")
    deps = ",\n    ".join(json.dumps(r) for r in FALLBACK_REQUIRES)
    (project / "pyproject.toml").write_text(
        f"""[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "detectron2"
version = "{SDIST_VERSION}+pyonly"
description = "detectron2 v{SDIST_VERSION} Python sources from the {SDIST_NAME} sdist, without the C++/CUDA ops"
requires-python = ">=3.7"
dependencies = [
    {deps},
]

[tool.setuptools.packages.find]
include = ["detectron2*"]
namespaces = false

[tool.setuptools.package-data]
"detectron2.model_zoo" = ["configs/**/*.yaml", "configs/**/*.py"]
"""
    )
    return project


def install_fallback() -> bool:
    with tempfile.TemporaryDirectory(prefix="d2-fallback-") as tmp:
        work = Path(tmp)
        try:
            sdist = fetch_sdist(work)
        except (OSError, RuntimeError, ValueError, KeyError) as exc:
            print(f"could not fetch {SDIST_NAME}=={SDIST_VERSION} from {index_url()}: {exc}")
            return False
        project = stage_python_package(sdist, work)
        return pip("--no-build-isolation", str(project)).returncode == 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mode", choices=("auto", "source", "fallback"),
                    default=os.environ.get("DETECTRON2_INSTALL", "auto"),
                    help="auto: source, then fallback (default); source / fallback: only that path")
    ap.add_argument("--source", default=os.environ.get("DETECTRON2_SOURCE", OFFICIAL_SOURCE),
                    help="what to pip-install for the source path (default: the official GitHub repository)")
    ap.add_argument("--source-timeout", type=float, default=3600.0, help="seconds allowed for the source build")
    ap.add_argument("--force", action="store_true", help="reinstall even if detectron2 is importable")
    args = ap.parse_args(argv)

    have = installed_detectron2()
    if have and not args.force:
        print(f"detectron2 {have} is already installed")
        return 0
    if args.mode in ("auto", "source"):
        if install_from_source(args.source, args.source_timeout):
            print("detectron2 installed from source (with its compiled ops)")
            return 0
        if args.mode == "source":
            print(f"error: could not install detectron2 from {args.source}", file=sys.stderr)
            return 1
        print(f"detectron2 source ({args.source}) not reachable or not buildable: "
              f"falling back to {SDIST_NAME}=={SDIST_VERSION}'s Python sources")
    if install_fallback():
        print("detectron2 0.6 installed from Python sources only; see docs/detection.md 'Detectron2 install' for what "
              "detection/compat.py provides")
        return 0
    print("error: neither the detectron2 source nor the fallback sdist could be installed", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
