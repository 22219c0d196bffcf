"""The real data in ``../shared/data`` (see its README), extracted once per machine for the tests."""

import tarfile
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def extract_once(archive_name: str, dest_name: str) -> Path:
    """``/tmp/<dest_name>`` holding the extracted archive; the test is skipped if the archive is absent."""
    archive = SHARED / archive_name
    if not archive.is_file():
        pytest.skip(f"shared archive {archive} not present")
    root = Path("/tmp") / dest_name
    marker = root / ".extracted"
    if not marker.exists():
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
        marker.touch()
    return root
