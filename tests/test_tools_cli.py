"""Every command-line tool starts and prints its usage (an entry point cannot silently disappear)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIBRARIES = ("cli_common.py", "bench_common.py", "__init__.py")  # what the entry points share, not tools
TOOLS = sorted(p.name for p in (ROOT / "tools").glob("*.py") if p.name not in LIBRARIES)

PROBE = """
import contextlib, io, runpy, sys
failed = []
for name in {names!r}:
    sys.argv = [name, "--help"]
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            runpy.run_path({tools!r} + "/" + name, run_name="__main__")
        failed.append(name + ": returned without printing usage")
    except SystemExit as exit:
        if exit.code not in (0, None) or "usage" not in out.getvalue():
            failed.append(f"{{name}}: exit {{exit.code}}, output {{out.getvalue()[:200]!r}}")
print("FAILED" if failed else "OK", failed)
"""


def test_every_tool_is_importable_as_a_module():
    import importlib

    for name in TOOLS:
        module = importlib.import_module(f"tools.{name[:-3]}")
        assert module.__doc__, f"tools/{name} has no docstring"


def test_every_tool_prints_its_usage():
    assert len(TOOLS) >= 14
    code = PROBE.format(tools=str(ROOT / "tools"), names=TOOLS)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert run.returncode == 0 and run.stdout.strip().startswith("OK"), run.stdout[-3000:] + run.stderr[-3000:]
