"""The rooms of the code base and which way imports may point (docs/architecture.md, "Rules").

Checked from the source with `ast`, not by importing it: every `import`/`from ... import` of one of
our packages anywhere in a module counts (a late import inside a function too: it hides a cycle
rather than removing it), and so does one under `if TYPE_CHECKING:` (a type is coupling too, and
mypy follows it). Also checked: no import cycle between
modules, and no module-level or class-level mutable state (many nodes run in one process).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ledger", "consensus", "storage", "p2p", "node", "cli")

# room -> the rooms it may import. A module belongs to the longest room name that prefixes it.
NODE_SHARED = "node.shared"  # the leaf modules every node room may use (see SHARED_MODULES)
SHARED_MODULES = ("node.config", "node.metrics", "node.logs", "node.service")
RULES: dict[str, frozenset[str]] = {
    "ledger": frozenset({"ledger"}),
    "consensus": frozenset({"ledger", "consensus"}),
    "storage": frozenset({"ledger", "consensus", "storage"}),
    "p2p": frozenset({"ledger", "consensus", "p2p"}),
    NODE_SHARED: frozenset({"ledger", "consensus", NODE_SHARED}),
    "node.core": frozenset({"ledger", "consensus", "storage", "node.core", NODE_SHARED}),
    "node.net": frozenset({"ledger", "consensus", "storage", "p2p", "node.core", "node.net", NODE_SHARED}),
    "node.api": frozenset({"ledger", "node.api", NODE_SHARED}),
    "node": frozenset({"ledger", "consensus", "storage", "p2p", "node.core", "node.net", "node.api", NODE_SHARED,
                       "node"}),
    "cli": frozenset({"ledger", "consensus", "storage", "p2p", "node.core", "node.net", "node.api", NODE_SHARED,
                      "node", "cli"}),
}

# Module-level names that hold an object but no state a second node could see change.
STATELESS_FACTORIES = frozenset({
    "Struct",  # struct.Struct: a compiled, immutable format
    "JSONEncoder",  # a configured encoder; encode() keeps no state between calls
    "ContextVar",  # per-context by design: each task sees its own value
    "AppKey",  # aiohttp typed application keys: immutable names
    "ConfigDict",  # pydantic's declared model configuration, read once when the class is built
    "TypeVar", "ParamSpec", "frozenset", "MappingProxyType", "compile", "getLogger", "namedtuple",
})
CACHE_DECORATORS = ("lru_cache", "cache", "cached_property_global")


def modules() -> Iterator[tuple[str, Path]]:
    for package in PACKAGES:
        base = ROOT / package
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            yield ".".join(parts), path


def room_of(module: str) -> str:
    if module in SHARED_MODULES:
        return NODE_SHARED
    best = ""
    for room in RULES:
        if room == NODE_SHARED:
            continue
        if (module == room or module.startswith(room + ".")) and len(room) > len(best):
            best = room
    return best


def imports_of(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported module) for every import of one of our packages."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[int, str]] = []
    is_package = path.name == "__init__.py"

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((node.lineno, alias.name))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            for alias in node.names:  # `from node import core` imports the module node.core
                found.append((node.lineno, f"{target}.{alias.name}"))
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    ours = {name for name, _ in modules()}
    result = []
    for line, target in found:
        if target.split(".")[0] not in PACKAGES:
            continue
        # `from x import name`: keep the module x.name if it exists, else the module x.
        if target in ours:
            result.append((line, target))
    return result


def test_every_module_is_in_a_room() -> None:
    homeless = [m for m, _ in modules() if not room_of(m)]
    assert not homeless, f"modules outside every room of RULES: {homeless}"


def test_imports_point_the_allowed_way() -> None:
    wrong = []
    for module, path in modules():
        room = room_of(module)
        for line, target in imports_of(module, path):
            if room_of(target) not in RULES[room]:
                wrong.append(f"{path.relative_to(ROOT)}:{line}: {module} ({room}) imports {target} "
                             f"({room_of(target)})")
    assert not wrong, "imports that point the wrong way:\n" + "\n".join(wrong)


def test_no_import_cycles() -> None:
    graph = {m: sorted({t for _, t in imports_of(m, p) if t != m}) for m, p in modules()}
    # A package's __init__ re-exporting its own modules is not a cycle of design: skip parent edges.
    for m, targets in graph.items():
        graph[m] = [t for t in targets if not m.startswith(t + ".")]
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in graph.get(m, []):
            if state.get(t) == 1:
                cycles.append(" -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in graph:
        if m not in state:
            visit(m)
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


MUTABLE_FACTORIES = frozenset({"dict", "list", "set", "deque", "OrderedDict", "defaultdict", "Counter",
                               "bytearray"})


def _mutable_value(names: list[str], value: ast.expr) -> bool:
    """A container display or a mutable container's constructor, whatever the name; any other call
    bound to a name that is not UPPER_CASE (a constant by convention: `OK = Receipt("ok")`)."""
    if isinstance(value, ast.Dict | ast.List | ast.Set | ast.DictComp | ast.ListComp | ast.SetComp):
        return True
    if isinstance(value, ast.Call):
        func = value.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        if name in MUTABLE_FACTORIES:
            return True
        return name not in STATELESS_FACTORIES and not all(n.isupper() for n in names)
    return False


def state_findings(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for deco in node.decorator_list:
                text = ast.unparse(deco)
                if any(text.split("(")[0].endswith(c) for c in CACHE_DECORATORS):
                    found.append(f"{node.lineno}: @{text} on {node.name}: a process-wide cache")
        if isinstance(node, ast.Global):
            found.append(f"{node.lineno}: `global {', '.join(node.names)}`")
    scopes: list[tuple[str, list[ast.stmt]]] = [("module", tree.body)]
    scopes += [(f"class {c.name}", c.body) for c in ast.walk(tree) if isinstance(c, ast.ClassDef)]
    for scope, body in scopes:
        for stmt in body:
            if isinstance(stmt, ast.Assign):
                names = [t.id for t in stmt.targets if isinstance(t, ast.Name)]
                value: ast.expr | None = stmt.value
            elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                names, value = [stmt.target.id], stmt.value
                if scope != "module" and value is not None and not _class_var(stmt):
                    continue  # a dataclass/pydantic field default, per instance
            else:
                continue
            if value is None or names in (["__all__"], ["__slots__"]):
                continue
            if _mutable_value(names, value):
                found.append(f"{stmt.lineno}: {scope}: {', '.join(names)} = {ast.unparse(value)[:60]}")
    return found


def _class_var(stmt: ast.AnnAssign) -> bool:
    return "ClassVar" in ast.unparse(stmt.annotation)


@pytest.mark.parametrize("package", PACKAGES)
def test_no_module_or_class_level_mutable_state(package: str) -> None:
    findings = []
    for module, path in modules():
        if module.split(".")[0] == package:
            findings += [f"{path.relative_to(ROOT)}:{f}" for f in state_findings(path)]
    assert not findings, ("module- or class-level mutable state (many nodes share one process; caches "
                          "belong to an object the node owns; constants are tuples, frozensets or "
                          "MappingProxyType):\n" + "\n".join(findings))


def test_the_checks_bite(tmp_path: Path) -> None:
    """Each checker finds what it is for in a small made-up module."""
    bad = tmp_path / "bad.py"
    bad.write_text("import functools\n_seen = {}\nCACHE = dict()\n@functools.lru_cache(maxsize=8)\n"
                   "def f(x):\n    return x\nclass K:\n    shared: list[int] = []\n    items = []\n")
    text = "\n".join(state_findings(bad))
    for needle in ("_seen", "CACHE", "lru_cache", "items"):
        assert needle in text
    good = tmp_path / "good.py"
    good.write_text("import struct\nLIMITS = (1, 2)\n_U32 = struct.Struct('>I')\nNAMES = frozenset({'a'})\n")
    assert state_findings(good) == []
    assert room_of("node.core.machine") == "node.core" and room_of("node.config") == NODE_SHARED
    assert room_of("node.api.app") not in RULES["node.core"]
