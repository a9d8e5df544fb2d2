"""The benchmarks' localnet byte-compiles the project before it times a node's start."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from cli.bench.cluster import compile_project


def test_every_project_module_gets_its_bytecode(tmp_path: Path) -> None:
    module = tmp_path / "node" / "api" / "thing.py"
    module.parent.mkdir(parents=True)
    module.write_text("VALUE = 1\n")
    (tmp_path / "ledger").mkdir()
    (tmp_path / "ledger" / "tx.py").write_text("X = 2\n")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "other.py").write_text("Y = 3\n")
    assert compile_project(tmp_path)
    assert Path(importlib.util.cache_from_source(str(module))).is_file()
    assert Path(importlib.util.cache_from_source(str(tmp_path / "ledger" / "tx.py"))).is_file()
    # Only the project's packages are compiled.
    assert not Path(importlib.util.cache_from_source(str(tmp_path / "elsewhere" / "other.py"))).exists()


def test_a_module_that_does_not_compile_is_reported(tmp_path: Path) -> None:
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "broken.py").write_text("def (:\n")
    assert not compile_project(tmp_path)


def test_the_real_tree_compiles() -> None:
    assert compile_project()
    import cli.bench.cluster as cluster
    assert Path(importlib.util.cache_from_source(cluster.__file__)).is_file()
