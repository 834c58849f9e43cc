"""The package's shape, checked from its source: no import cycle, no module name that shadows another
or a library, pure ml/ and market/, SQL only in brain/, status words only in the vocabulary, and chain
steps that read only what ChainState declares."""

from __future__ import annotations

import ast
import dataclasses
import importlib.metadata
import re
import sys
from pathlib import Path

from brain_tasks import vocabulary
from brain_tasks.service.chain import ChainState

PACKAGE = Path(__file__).resolve().parent.parent / "brain_tasks"
# `celery -A brain_tasks` finds the app in `brain_tasks.celery` (Celery's own convention): the one name
# that matches a library on purpose; `brain_tasks.integrations.freqtrade` is named by its contract
# (`pip install brain-tasks[freqtrade]`), and an absolute `import freqtrade` inside it finds the library.
ALLOWED_SHADOWS = {"celery", "freqtrade"}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if "migrations" in path.parts:
            continue
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path) -> set[str]:
    """Every brain_tasks module `name` imports, at module level or inside a function."""
    found = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in MODULES}
    return found - {name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle():
    # A package imports its submodules' parents implicitly; the edges that matter are module to module.
    graph = {name: {t for t in _imports(name, path) if not name.startswith(t + ".")} for name, path in MODULES.items()}
    assert _cycles(graph) == []


def test_no_module_name_shadows_another_or_a_library():
    stems = [p.stem for p in MODULES.values() if p.name != "__init__.py"]
    assert sorted({s for s in stems if stems.count(s) > 1}) == []
    libraries = set(sys.stdlib_module_names)
    for dist in importlib.metadata.distributions():
        libraries |= set((dist.read_text("top_level.txt") or "").split())
    assert sorted((set(stems) & libraries) - ALLOWED_SHADOWS) == []


def test_ml_and_market_are_pure():
    for name, path in MODULES.items():
        if not name.startswith(("brain_tasks.ml", "brain_tasks.market")):
            continue
        source = path.read_text()
        assert not re.search(r"^\s*(from|import) (celery|sqlalchemy|kombu)\b", source, re.M), name
        inner = {m for m in _imports(name, path)
                 if not m.startswith(("brain_tasks.ml", "brain_tasks.market"))}
        assert inner <= {"brain_tasks", "brain_tasks.errors", "brain_tasks.timekeeping", "brain_tasks.vocabulary"}, \
            (name, inner)


def test_sql_lives_in_brain():
    sql = re.compile(r"sa\.(select|insert|update|delete|text)\(|session\.(scalars|execute)|conn\.execute\(")
    outside = [f"{name}:{i}" for name, path in MODULES.items() if not name.startswith("brain_tasks.brain")
               for i, line in enumerate(path.read_text().splitlines(), 1) if sql.search(line)]
    assert outside == []


WORDS = {m.value for enum in (vocabulary.Status, vocabulary.Action, vocabulary.ChampionStatus) for m in enum}
# Names whose value is a state, status or action: a bare word given to them is a literal to flag.
STATE_KEYWORDS = {"status", "state", "action"}


def _status_literals(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants that are status words used as one: compared with, tested for membership, or
    given to a status / state / action argument.  Dict keys and messages are not."""
    found = []

    def words(node: ast.AST) -> list[ast.Constant]:
        items = node.elts if isinstance(node, (ast.Tuple, ast.List, ast.Set)) else [node]
        return [n for n in items if isinstance(n, ast.Constant) and n.value in WORDS]

    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in (node.left, *node.comparators):
                found += [(c.lineno, c.value) for c in words(operand)]
        elif isinstance(node, ast.keyword) and node.arg in STATE_KEYWORDS:
            found += [(c.lineno, c.value) for c in words(node.value)]
    return found


def test_status_words_live_in_the_vocabulary():
    bad = {name: _status_literals(ast.parse(path.read_text())) for name, path in MODULES.items()
           if name != "brain_tasks.vocabulary"}
    assert {k: v for k, v in bad.items() if v} == {}


def test_the_checks_above_catch_what_they_look_for():
    assert _status_literals(ast.parse('if x["state"] == "failed": pass')) == [(1, "failed")]
    assert _status_literals(ast.parse('f(status="succeeded")')) == [(1, "succeeded")]
    assert _status_literals(ast.parse('d = {"failed": 1}; print("failed")')) == []
    assert _cycles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]


def test_chain_steps_read_only_declared_state():
    """In the steps, a ChainState is read by attribute, never by key, and only what it declares."""
    declared = {f.name for f in dataclasses.fields(ChainState)} | {
        n for n, v in vars(ChainState).items() if not n.startswith("__")}
    for path in (PACKAGE / "service" / "steps").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "state":
                assert node.attr in declared, f"{path.name}:{node.lineno}: state.{node.attr} is not declared"
            if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "state":
                raise AssertionError(f"{path.name}:{node.lineno}: the chain state is read by key")


def test_moved_module_paths_still_import_and_warn():
    """An old path (Engine code may import `brain_tasks.serving`, `brain_tasks.sizer_jobs`, ...) forwards
    to its new module for one release, with a DeprecationWarning naming it."""
    import importlib
    import warnings

    from brain_tasks._moved import MOVED

    for old, new in MOVED.items():
        sys.modules.pop(old, None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            module = importlib.import_module(old)
        assert any(issubclass(w.category, DeprecationWarning) and new in str(w.message) for w in caught), old
        target = importlib.import_module(new)
        public = [n for n in vars(target) if not n.startswith("_")]
        assert all(getattr(module, n) is getattr(target, n) for n in public), old
    from brain_tasks import sizer_jobs  # noqa: F401  (the `from package import old` form works too)
