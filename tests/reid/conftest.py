
import pytest

from ..shared_data import extract_once


@pytest.fixture(scope="session")
def market_full():
    """The full Market-1501 from the shared archive, extracted once per machine (skipped if absent)."""
    return extract_once("market1501.tar.gz", "keepaug-market-full")
