"""Every `python -m X` in scripts/ names a module that exists, so a move (node.bench.plot became
cli.bench.plot) cannot leave a script that fails only at its end, after a 25-minute sweep."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# `python -m X`, `python3 -m X`, `"$VENV/bin/python" -m X`, `"$PY" -m X` (quotes and braces allowed).
MODULE_RUN = re.compile(r"""(?:python[0-9.]*|\$\{?PY\}?)["']?\s+-m\s+([A-Za-z_][\w.]*)""")


def module_runs(text: str) -> list[str]:
    return [m.group(1) for line in text.splitlines()
            if not line.lstrip().startswith("#") for m in MODULE_RUN.finditer(line)]


def findable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package is missing
        return False


def scripts() -> list[Path]:
    return sorted(p for p in (ROOT / "scripts").iterdir() if p.is_file())


def test_the_pattern_finds_each_way_the_scripts_run_a_module() -> None:
    text = ('exec python -m tests.sim "$@"\n  "$PY" -m venv "$VENV"\n'
            '"$VENV/bin/python" -m pip install\npython3 -m cli.bench.plot "$OUT"\n# python -m commented.out\n')
    assert module_runs(text) == ["tests.sim", "venv", "pip", "cli.bench.plot"]


def test_every_module_a_script_runs_can_be_found() -> None:
    found = {(path.name, module) for path in scripts() for module in module_runs(path.read_text())}
    assert ("simulate", "tests.sim") in found  # the scan sees the scripts at all
    if str(ROOT) not in sys.path:  # the scripts run from the repository root
        sys.path.insert(0, str(ROOT))
    missing = sorted(f"scripts/{name}: python -m {module}" for name, module in found
                     if not findable(module))
    assert not missing, f"scripts run modules that do not exist: {missing}"
