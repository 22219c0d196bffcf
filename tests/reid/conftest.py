import tarfile
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@pytest.fixture(scope="session")
def market_full():
    """The full Market-1501 from the shared archive, extracted once per machine (skipped if absent)."""
    archive = SHARED / "market1501.tar.gz"
    if not archive.is_file():
        pytest.skip("shared Market-1501 archive not present")
    root = Path("/tmp") / "keepaug-market-full"
    marker = root / ".extracted"
    if not marker.exists():
        with tarfile.open(archive) as tar:
            tar.extractall(root, filter="data")
        marker.touch()
    return root
