"""The one-way layering, checked on the source (no import needed):

1. ``core``'s tensor modules import only torch and the standard library (not ``core.engine``, numpy, timm...);
2. ``import core`` (and ``import core.engine``) loads neither yaml, tqdm nor TensorBoard;
3. ``core.engine`` imports no downstream package;
4. ``reid`` and ``detection`` never import ``classification`` (their shared code lives in ``core.engine``).
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOWNSTREAM = {"classification", "reid", "detection", "tools"}
THIRD_PARTY_FOR_CORE = {"torch"}


def imports(path: Path, package: str = "") -> set[str]:
    """Absolute dotted names ``path`` imports (relative imports resolved against ``package``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.add(node.module)
    return names


def imported_roots(path: Path) -> set[str]:
    return {name.split(".")[0] for name in imports(path)}


def package_of(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name != "__init__" else rel.parts[:-1]
    return ".".join(parts)


CORE_TENSOR = sorted(p for p in (ROOT / "core").glob("*.py"))
CORE_ENGINE = sorted((ROOT / "core" / "engine").glob("*.py"))
REID_DETECTION = sorted([*(ROOT / "reid").rglob("*.py"), *(ROOT / "detection").rglob("*.py")])


def test_the_packages_have_modules():
    assert len(CORE_TENSOR) >= 5 and len(CORE_ENGINE) >= 8 and len(REID_DETECTION) >= 10


@pytest.mark.parametrize("path", CORE_TENSOR, ids=lambda p: p.name)
def test_core_tensor_modules_import_only_torch(path):
    names = imports(path, package_of(path))
    bad = {n for n in names if n.split(".")[0] not in sys.stdlib_module_names | THIRD_PARTY_FOR_CORE | {"core"}}
    bad |= {n for n in names if n.startswith("core.engine")}
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", CORE_ENGINE, ids=lambda p: p.name)
def test_core_engine_imports_nothing_downstream(path):
    bad = imported_roots(path) & (DOWNSTREAM | {"timm", "detectron2"})
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", REID_DETECTION, ids=lambda p: str(p.relative_to(ROOT)))
def test_reid_and_detection_never_import_classification(path):
    assert "classification" not in imported_roots(path), f"{path.relative_to(ROOT)} imports classification"


def test_importing_core_loads_no_yaml_tqdm_or_tensorboard():
    # beyond what ``import torch`` loads by itself (this torch build imports tqdm for its hub)
    code = ("import sys, torch; before = set(sys.modules); import core, core.engine; "
            "print(sorted(m for m in set(sys.modules) - before "
            "if m.split('.')[0] in ('yaml', 'tqdm', 'tensorboard', 'torch.utils.tensorboard')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]", run.stdout


def test_checker_catches_violations(tmp_path):
    f = tmp_path / "bad.py"
    f.write_text("import numpy\nfrom classification.models import x\nimport timm.layers\nfrom .engine import trainer\n")
    assert imported_roots(f) & (DOWNSTREAM | {"timm"}) == {"classification", "timm"}
    assert "core.engine" in imports(f, "core")  # a relative import from core/ into its engine is seen
