"""The architecture of issue 13 as executable rules, read from the source (no imports executed).

An AST import graph of the packages ``bfdl_tff``, ``ledger`` and ``paper_figures`` (module-level
AND function-level imports, ``importlib.import_module("...")`` with a literal name included)
must satisfy:

* no import cycle between modules;
* ``ledger`` imports nothing from ``bfdl_tff``, ``paper_figures``, TensorFlow or TFF;
* ``paper_figures`` imports only the base layer of ``bfdl_tff`` (``runs``, ``config``,
  ``io_utils``, ``errors``, ``stats``) and no TensorFlow; the base layer itself imports no TensorFlow and
  nothing above it, so nothing reaches training code from the figures;
* ``bfdl_tff`` never imports ``paper_figures`` (the figures run as ``python -m paper_figures``);
* ``bfdl_tff.federated`` (training) imports nothing of the layers above it;
* no function over 80 lines and no file over 600 lines, unless the function's docstring has a
  line starting with ``Long function:`` / the module docstring a line starting with
  ``Long file:`` that gives the reason.

Known violations in files owned by other work streams are listed by name in
:data:`KNOWN_VIOLATIONS` with their owner. A rule test fails on any violation not in the list,
and also on a listed violation that no longer occurs (remove its entry when the fix is merged);
while listed violations remain, the test is reported as xfail naming them.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("bfdl_tff", "ledger", "paper_figures")
BASE_LAYER = frozenset({"bfdl_tff", "bfdl_tff.errors", "bfdl_tff.io_utils", "bfdl_tff.hashing", "bfdl_tff.config",
                        "bfdl_tff.runs", "bfdl_tff.stats"})
FIGURES_MAY_IMPORT = frozenset({"bfdl_tff", "bfdl_tff.runs", "bfdl_tff.config", "bfdl_tff.io_utils", "bfdl_tff.errors",
                                "bfdl_tff.stats"})
TENSORFLOW = ("tensorflow", "tensorflow_federated", "tensorflow_privacy", "keras")
ABOVE_TRAINING = ("bfdl_tff.integration", "bfdl_tff.keys", "bfdl_tff.privacy_eval", "bfdl_tff.reproduce",
                  "bfdl_tff.commands", "bfdl_tff.cli", "bfdl_tff.experiment", "bfdl_tff.evaluate", "paper_figures")
MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 600

# violation key -> owner. Keys are exactly what the rule tests print. The lead removes an entry
# when the branch that fixes it is merged (a stale entry fails the test).
KNOWN_VIOLATIONS: dict[str, str] = {
    "cycle: bfdl_tff.models.architectures -> bfdl_tff.models.registry -> bfdl_tff.models.architectures":
        "H-science (bfdl_tff/models)",
    "size: function bfdl_tff/data/synth.py render_batch()": "H-science (data/synth.py)",
    "size: function bfdl_tff/data/synth.py synthesize()": "H-science (data/synth.py)",
    "size: function bfdl_tff/federated/dp_sgd.py build_dp_sgd_client_work()": "H-science (federated/dp_sgd.py)",
}


# --------------------------------------------------------------------------------------------
# The import graph
# --------------------------------------------------------------------------------------------


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    lines: int
    imports: dict[str, int] = field(default_factory=dict)  # imported module -> first line


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _resolve_relative(mod: Module, level: int, target: str | None) -> str:
    base = mod.name.split(".")
    if not _is_package(mod.path):
        base = base[:-1]
    base = base[: len(base) - (level - 1)] if level > 1 else base
    return ".".join(base + ([target] if target else []))


def _imports_of(mod: Module, known: set[str]) -> dict[str, int]:
    """Every module ``mod`` imports anywhere in its body: ``from a.b import c`` is ``a.b.c`` when
    that is a module of the repository, else ``a.b``."""
    out: dict[str, int] = {}

    def add(name: str, line: int) -> None:
        out.setdefault(name, line)

    for node in ast.walk(mod.tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                add(a.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(mod, node.level, node.module) if node.level else (node.module or "")
            for a in node.names:
                sub = f"{base}.{a.name}"
                add(sub if sub in known else base, node.lineno)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            add(node.args[0].value, node.lineno)
    out.pop(mod.name, None)
    return out


@lru_cache(maxsize=1)
def modules() -> dict[str, Module]:
    mods: dict[str, Module] = {}
    for pkg in PACKAGES:
        for path in sorted((REPO / pkg).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            name = _module_name(path)
            mods[name] = Module(name, path, ast.parse(text, filename=str(path)), len(text.splitlines()))
    known = set(mods)
    for m in mods.values():
        m.imports = _imports_of(m, known)
    return mods


def _within(name: str, prefixes: tuple[str, ...] | frozenset[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _rel(m: Module) -> str:
    return str(m.path.relative_to(REPO))


def internal_edges() -> dict[str, set[str]]:
    mods = modules()
    return {n: {t for t in m.imports if t in mods} for n, m in mods.items()}


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each as one cycle path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    sccs: list[list[str]] = []
    counter = [0]

    def strong(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return [_cycle_path(graph, comp) for comp in sorted(sccs)]


def _cycle_path(graph: dict[str, set[str]], comp: list[str]) -> list[str]:
    """One concrete cycle through the component's first module (breadth-first back to it)."""
    members, start = set(comp), comp[0]
    prev: dict[str, str] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    path = [v]
                    while path[-1] != start:
                        path.append(prev[path[-1]])
                    return list(reversed(path)) + [start]
                if w not in prev:
                    prev[w] = v
                    nxt.append(w)
        frontier = nxt
    return comp  # pragma: no cover - a strongly connected component always has a cycle


# --------------------------------------------------------------------------------------------
# Violations per rule (each a set of printable keys)
# --------------------------------------------------------------------------------------------


Violations = dict[str, str]  # stable key (no line numbers) -> where and how much


def cycle_violations() -> Violations:
    return {"cycle: " + " -> ".join(c): "import cycle" for c in find_cycles(internal_edges())}


def _forbidden(owner: tuple[str, ...], forbidden: tuple[str, ...], *,
               allow: frozenset[str] = frozenset()) -> Violations:
    out = {}
    for m in modules().values():
        if not _within(m.name, owner):
            continue
        for target, line in m.imports.items():
            if _within(target, forbidden) and target not in allow:
                out[f"import: {m.name} imports {target}"] = f"{_rel(m)}:{line}"
    return out


def ledger_violations() -> Violations:
    return _forbidden(("ledger",), ("bfdl_tff", "paper_figures") + TENSORFLOW)


def figures_violations() -> Violations:
    return _forbidden(("paper_figures",), ("bfdl_tff",) + TENSORFLOW, allow=FIGURES_MAY_IMPORT)


def base_layer_violations() -> Violations:
    """The base layer (what paper_figures may use) imports no TensorFlow and nothing above it."""
    out = {}
    for m in modules().values():
        if m.name not in BASE_LAYER:
            continue
        for target, line in m.imports.items():
            above = _within(target, ("bfdl_tff",)) and target not in BASE_LAYER
            if above or _within(target, TENSORFLOW + ("ledger", "paper_figures")):
                out[f"import: {m.name} imports {target}"] = f"{_rel(m)}:{line}"
    return out


def bfdl_violations() -> Violations:
    return _forbidden(("bfdl_tff",), ("paper_figures",))


def training_violations() -> Violations:
    return _forbidden(("bfdl_tff.federated",), ABOVE_TRAINING)


def _has_reason(node: ast.AST, prefix: str) -> bool:
    doc = ast.get_docstring(node, clean=True) or ""  # type: ignore[arg-type]
    return any(line.strip().startswith(prefix) for line in doc.splitlines())


def size_violations() -> Violations:
    out = {}
    for m in modules().values():
        if m.lines > MAX_FILE_LINES and not _has_reason(m.tree, "Long file:"):
            out[f"size: file {_rel(m)}"] = f"{m.lines} lines (> {MAX_FILE_LINES})"
        for node in ast.walk(m.tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if n > MAX_FUNCTION_LINES and not _has_reason(node, "Long function:"):
                    out[f"size: function {_rel(m)} {node.name}()"] = (
                        f"line {node.lineno}, {n} lines (> {MAX_FUNCTION_LINES})")
    return out


def _check(found: Violations, rule: str) -> None:
    """Fail on new violations and on stale known ones; xfail naming the known ones that remain."""
    new = sorted(k for k in found if k not in KNOWN_VIOLATIONS)
    assert not new, f"{len(new)} new violation(s) of the {rule} rule:\n" + "\n".join(
        f"{k} ({found[k]})" for k in new)
    stale = sorted(k for k in KNOWN_VIOLATIONS if k.split(":", 1)[0] == rule and k not in found)
    assert not stale, "fixed: remove from KNOWN_VIOLATIONS in tests/test_architecture.py:\n" + "\n".join(stale)
    remaining = sorted(k for k in found if k in KNOWN_VIOLATIONS)
    if remaining:
        pytest.xfail(f"{len(remaining)} known violation(s) owned elsewhere: "
                     + "; ".join(f"{k} ({found[k]}) [{KNOWN_VIOLATIONS[k]}]" for k in remaining))


# --------------------------------------------------------------------------------------------
# The rules
# --------------------------------------------------------------------------------------------


def test_graph_sees_module_and_function_level_imports():
    mods = modules()
    assert {"bfdl_tff.config", "ledger.pbft", "paper_figures.report"} <= set(mods)
    # runs.py imports config at module level; cli.py imports its commands inside a function
    assert "bfdl_tff.config" in mods["bfdl_tff.runs"].imports
    assert any(t.startswith("bfdl_tff.") for t in mods["bfdl_tff.experiment"].imports)
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    _check(cycle_violations(), "cycle")


def test_import_rules():
    found = {**ledger_violations(), **figures_violations(), **base_layer_violations(), **bfdl_violations(),
             **training_violations()}
    _check(found, "import")


def test_no_long_functions_or_files():
    _check(size_violations(), "size")
