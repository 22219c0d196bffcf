"""The mutation check of tests/mutants.py (``make mutants``): its list is well formed and covers what it
must, and the harness reports a planted bug as killed and an unchanged run as survived."""

import importlib
import inspect
from pathlib import Path

import pytest

from . import mutants as M

ROOT = Path(__file__).resolve().parents[1]

# named in issue #21: each must stay in the list
REQUIRED = {
    "keep_erasing_above", "keep_cutmix_above", "ops_erase_identity", "cutmix_lambda_half", "cutmix_lambda_beta55",
    "erasing_area_constant", "erasing_ratio_constant", "erasing_log_ratio_ignored", "low_res_nearest_upsampling",
    "keep_cutout_above", "keep_paste_below",
}


def test_names_are_unique_and_required_mutants_are_listed():
    names = [m.name for m in (*M.MUTANTS, *M.EXTRA)]
    assert len(names) == len(set(names))
    assert REQUIRED <= set(names)
    assert {m.name for m in M.MUTANTS if m.issue} <= REQUIRED


@pytest.mark.parametrize("mutant", M.MUTANTS + M.EXTRA, ids=lambda m: m.name)
def test_each_mutant_targets_something_that_exists(mutant):
    owner, name, original = M.resolve(mutant.target)  # raises if the module or attribute is gone
    assert mutant.scope in ("everywhere", "binding")
    assert mutant.files and all((ROOT / f).exists() for f in mutant.files), mutant.files
    replacement = mutant.make(original)
    assert replacement is not original
    if inspect.isfunction(original) and inspect.isfunction(replacement):
        params = inspect.signature(replacement).parameters
        variadic = any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params.values())
        # a replacement takes the original's arguments (by name too), so it fails only by its planted bug
        assert variadic or list(params) == list(inspect.signature(original).parameters)


def test_every_sampler_and_selective_op_has_a_mutant():
    """A new function in core/sampling.py or core/sizes.py, or a new op, fails here until it has a mutant."""
    targets = {m.target for m in M.MUTANTS}
    for module_name in ("core.sampling", "core.sizes"):
        module = importlib.import_module(module_name)
        functions = [n for n, f in vars(module).items()
                     if inspect.isfunction(f) and f.__module__ == module_name and not n.startswith("_")]
        missing = [n for n in functions if f"{module_name}:{n}" not in targets]
        assert not missing, f"no mutant for {module_name}: {missing}"
    from core import OPS

    selective = {m.name.split("_")[1] for m in M.MUTANTS if m.name.startswith("keep_") and m.scope == "binding"}
    assert set(OPS) <= selective


def test_harness_kills_planted_bugs_and_not_an_unchanged_run():
    """End to end on single cheap test files: two planted bugs are killed, the unchanged run survives."""
    by_name = {m.name: m for m in (*M.MUTANTS, *M.EXTRA)}
    cases = [("ops_erase_identity", ["tests/core/test_ops.py", "tests/core/test_keep.py"], "killed"),
             ("low_res_nearest_upsampling", ["tests/core/test_low_res.py"], "killed"),
             ("null_unchanged", ["tests/core/test_low_res.py"], "survived")]
    for name, files, expected in cases:
        result = M.run(by_name[name], ROOT, timeout=300, files=files)
        assert result.status == expected, (name, result.detail)
