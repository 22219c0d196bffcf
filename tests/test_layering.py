"""`core` must not import the downstream packages, tools, timm or detectron2 (one-way layering)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"classification", "reid", "detection", "tools", "timm", "detectron2"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


CORE_FILES = sorted((ROOT / "core").rglob("*.py"))


def test_core_has_modules():
    assert len(CORE_FILES) >= 5


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: p.name)
def test_core_imports_nothing_downstream(path):
    bad = imported_roots(path) & FORBIDDEN
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_checker_catches_a_violation(tmp_path):
    f = tmp_path / "bad.py"
    f.write_text("import numpy\nfrom classification.models import x\nimport timm.layers\n")
    assert imported_roots(f) & FORBIDDEN == {"classification", "timm"}
