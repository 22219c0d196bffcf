"""No function of the packages runs past 60 lines, its docstring not counted (a long one is split along its
steps, as re_ranking is)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 60
FILES = sorted(p for pkg in ("core", "classification", "reid", "detection") for p in (ROOT / pkg).rglob("*.py"))


def code_lines(node: ast.FunctionDef) -> int:
    lines = node.end_lineno - node.lineno + 1
    first = node.body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        lines -= first.end_lineno - first.lineno + 1
    return lines


def long_functions(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    return [f"{node.name} ({code_lines(node)} lines)" for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and code_lines(node) > LIMIT]


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_function_over_60_lines(path):
    assert not long_functions(path), f"{path.relative_to(ROOT)}: {long_functions(path)}"


def test_the_check_sees_a_long_function(tmp_path):
    f = tmp_path / "long.py"
    f.write_text('def f():\n    """Doc\n    string."""\n' + "    x = 1\n" * LIMIT)
    assert long_functions(f) == [f"f ({LIMIT + 1} lines)"]
    f.write_text('def f():\n    """Doc\n    string."""\n' + "    x = 1\n" * (LIMIT - 1))
    assert long_functions(f) == []
