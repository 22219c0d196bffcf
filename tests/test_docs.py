"""What the docs say about the test suite stays true: a test count stated in ``README.md`` or ``docs/*.md``
("420 tests") may not drift more than 10 % from what pytest collects. The collection (a subprocess,
``pytest --collect-only -q``) runs only when a count is stated, so the usual run costs nothing."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
COUNT = re.compile(r"\b(\d{1,3}(?:,\d{3})*|\d+) tests\b")
TOLERANCE = 0.10


def stated_counts(text: str) -> list[int]:
    """Every "N tests" in ``text`` (thousands separators allowed)."""
    return [int(m.group(1).replace(",", "")) for m in COUNT.finditer(text)]


def collected_count() -> int:
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "tests"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    found = re.search(r"(\d+) tests? collected", out.stdout)
    assert found, f"no count in pytest's collection output: {out.stdout[-1000:]}{out.stderr[-1000:]}"
    return int(found.group(1))


def test_stated_counts_are_found():
    assert stated_counts("`make test` runs 420 tests: 405 passed; CI ran 1,204 tests") == [420, 1204]
    assert stated_counts("Tests that need the data skip; tests/core mirrors core; 3 test files") == []


def test_stated_test_counts_match_the_suite():
    stated = {doc.relative_to(ROOT).as_posix(): stated_counts(doc.read_text()) for doc in DOCS}
    stated = {doc: counts for doc, counts in stated.items() if counts}
    if not stated:
        pytest.skip("no test count stated in README.md or docs/*.md")
    actual = collected_count()
    wrong = {doc: [n for n in counts if abs(n - actual) > TOLERANCE * actual] for doc, counts in stated.items()}
    wrong = {doc: counts for doc, counts in wrong.items() if counts}
    assert not wrong, f"pytest collects {actual} tests; these docs state counts more than 10 % off: {wrong}"
