"""The package's shape, read from its source with ``ast``: no import cycle between dedup's
modules (imports inside functions count: that is how cycles hide), SQL runs only in
``dedup/store/``, and tests share helpers through ``tests/support/``, never by importing a
conftest. Each failure names the offending file:line."""

from __future__ import annotations

import ast
from collections import deque
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SQL_CALLS = frozenset({"execute", "executemany"})


@dataclass(frozen=True)
class Edge:
    """One import statement of ``source`` that loads ``target`` (both dedup modules)."""

    source: str
    target: str
    path: Path
    line: int
    scope: str  # "module level", or the function the import is in

    def where(self, root: Path) -> str:
        return f"{self.path.relative_to(root)}:{self.line} ({self.scope})"


def module_names(package: Path) -> dict[str, Path]:
    """Every module of the package at ``package``: dotted name -> file."""
    out = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _scopes(tree: ast.AST) -> dict[ast.AST, str]:
    """Each node -> the name of the innermost function around it ("module level" if none)."""
    scope: dict[ast.AST, str] = {}

    def visit(node: ast.AST, name: str) -> None:
        for child in ast.iter_child_nodes(node):
            inner = f"in {child.name}()" if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)) else name
            scope[child] = inner
            visit(child, inner)

    visit(tree, "module level")
    return scope


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, known: dict[str, Path]) -> list[str]:
    """The known modules an import statement loads (``from p import m`` loads module p.m
    when there is one, else p itself)."""
    if isinstance(node, ast.Import):
        # ``import a.b.c`` loads a.b.c (its parent packages load first, as for any module).
        return [m for alias in node.names if (m := _longest_known(alias.name, known)) is not None]
    if node.level:
        # Relative: level 1 is the importer's own package.
        base = importer.split(".") if is_package else importer.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        parent = ".".join(base + ([node.module] if node.module else []))
    else:
        parent = node.module or ""
    out = []
    for alias in node.names:
        full = f"{parent}.{alias.name}"
        if full in known:
            out.append(full)
        elif (found := _longest_known(parent, known)) is not None:
            out.append(found)
    return out


def _longest_known(dotted: str, known: dict[str, Path]) -> str | None:
    """The longest prefix of ``dotted`` that is a known module (None: not the package's)."""
    parts = dotted.split(".")
    while parts:
        if ".".join(parts) in known:
            return ".".join(parts)
        parts.pop()
    return None


def import_edges(package: Path) -> list[Edge]:
    """Every import between the package's modules, wherever the statement is (module
    level, functions, ``if TYPE_CHECKING:`` blocks)."""
    known = module_names(package)
    edges = []
    for name, path in known.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        scope = _scopes(tree)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(node, name, path.name == "__init__.py", known):
                    if target != name:
                        edges.append(Edge(name, target, path, node.lineno, scope[node]))
    return edges


@dataclass(frozen=True)
class Cycle:
    """A group of mutually importing modules and one shortest chain of imports through it."""

    members: frozenset[str]
    edges: list[Edge]


def import_cycles(edges: list[Edge]) -> list[Cycle]:
    """One shortest cycle in each group of mutually importing modules (strongly connected
    component), as its chain of import statements."""
    first: dict[tuple[str, str], Edge] = {}
    for e in sorted(edges, key=lambda e: (e.source, e.target, e.line)):
        first.setdefault((e.source, e.target), e)
    graph: dict[str, list[str]] = {}
    for source, target in first:
        graph.setdefault(source, []).append(target)
        graph.setdefault(target, [])
    cycles = []
    for component in _components(graph):
        if len(component) < 2:
            continue
        start = min(component)
        path = _shortest_path_back(graph, start, component)
        cycles.append(Cycle(frozenset(component), [first[(a, b)] for a, b in zip(path, path[1:])]))
    return cycles


def _components(graph: dict[str, list[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components (iterative, so deep graphs are fine)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        group.add(top)
                        if top == node:
                            break
                    out.append(group)
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(graph[child])))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return out


def _shortest_path_back(graph: dict[str, list[str]], start: str, within: set[str]) -> list[str]:
    """The shortest path start -> ... -> start inside one component (breadth first)."""
    came_from: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph[node]):
            if child not in within:
                continue
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(came_from[path[-1]])
                return [*reversed(path), start]
            if child not in came_from:
                came_from[child] = node
                queue.append(child)
    raise AssertionError(f"{start} is in a component but on no cycle")


def sql_calls_outside(package: Path, allowed: Path) -> list[str]:
    """``file:line (scope)`` of every ``.execute(`` / ``.executemany(`` call outside ``allowed``."""
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.is_relative_to(allowed):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        scope = _scopes(tree)
        calls = sorted((node.lineno, scope[node], node.func.attr) for node in ast.walk(tree)
                       if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_CALLS)
        found += [f"{path.relative_to(package.parent)}:{line} ({where}): .{attr}(" for line, where, attr in calls]
    return found


def conftest_imports(tests: Path) -> list[str]:
    """``file:line`` of every import of a conftest module (shared helpers belong in
    ``tests/support/``; a conftest is pytest's to load, and imported by name it can be a
    second copy of the module, or another folder's conftest)."""
    found = []
    for path in sorted(tests.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom):
                names = [node.module or "", *(alias.name for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            if any(n.split(".")[-1] == "conftest" for n in names):
                found.append(f"{path.relative_to(tests.parent)}:{node.lineno}")
    return found


def describe(cycle: Cycle, root: Path) -> str:
    """The cycle's chain, each import's file:line, and the rest of its group, if any."""
    chain = " -> ".join([cycle.edges[0].source, *(e.target for e in cycle.edges)])
    lines = [chain, *(f"    {e.source} imports {e.target} at {e.where(root)}" for e in cycle.edges)]
    if others := sorted(cycle.members - {e.source for e in cycle.edges}):
        lines.append(f"    (also in this group of mutually importing modules: {', '.join(others)})")
    return "\n".join(lines)


def test_no_import_cycle_between_dedup_modules() -> None:
    cycles = import_cycles(import_edges(ROOT / "dedup"))
    if cycles:
        pytest.fail(f"{len(cycles)} import cycle(s) between dedup's modules:\n" + "\n".join(describe(c, ROOT) for c in cycles),
                    pytrace=False)


def test_sql_runs_only_in_the_store() -> None:
    found = sql_calls_outside(ROOT / "dedup", ROOT / "dedup" / "store")
    if found:
        pytest.fail(f"{len(found)} SQL call(s) outside dedup/store/:\n  " + "\n  ".join(found), pytrace=False)


def test_no_test_imports_a_conftest() -> None:
    found = conftest_imports(ROOT / "tests")
    if found:
        pytest.fail(f"{len(found)} import(s) of a conftest (move the helper to tests/support/):\n  " + "\n  ".join(found),
                    pytrace=False)


# The checks themselves, on a small package written for the test: they find what they must.

def _write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / "pkg" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root / "pkg"


def test_a_cycle_hidden_in_a_function_is_found_with_its_lines(tmp_path: Path) -> None:
    pkg = _write(tmp_path, {
        "__init__.py": "",
        "a.py": "from pkg.b import g\n\ndef f():\n    return g()\n",
        "b.py": "def g():\n    from pkg import a\n    return a\n",
        "sub/__init__.py": "",
        "sub/c.py": "from ..a import f\nfrom . import d\n",
        "sub/d.py": "import pkg.sub.c\n",
        "leaf.py": "import os\nfrom pkg import sub\n",
    })
    cycles = import_cycles(import_edges(pkg))
    found = sorted(describe(c, tmp_path) for c in cycles)
    assert found == [
        "pkg.a -> pkg.b -> pkg.a"
        "\n    pkg.a imports pkg.b at pkg/a.py:1 (module level)"
        "\n    pkg.b imports pkg.a at pkg/b.py:2 (in g())",
        "pkg.sub.c -> pkg.sub.d -> pkg.sub.c"
        "\n    pkg.sub.c imports pkg.sub.d at pkg/sub/c.py:2 (module level)"
        "\n    pkg.sub.d imports pkg.sub.c at pkg/sub/d.py:1 (module level)",
    ]


def test_a_longer_cycle_is_reported_whole(tmp_path: Path) -> None:
    pkg = _write(tmp_path, {
        "__init__.py": "",
        "x.py": "from pkg import y\n",
        "y.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.z import Z\nfrom pkg import zz\n",
        "z.py": "class Z:\n    def m(self):\n        import pkg.x\n",
        "zz.py": "from . import x\n",
    })
    (cycle,) = import_cycles(import_edges(pkg))
    assert [e.source for e in cycle.edges] == ["pkg.x", "pkg.y", "pkg.z"]
    assert [e.where(tmp_path) for e in cycle.edges] == ["pkg/x.py:1 (module level)", "pkg/y.py:3 (module level)",
                                                  "pkg/z.py:3 (in m())"]
    assert describe(cycle, tmp_path).endswith("(also in this group of mutually importing modules: pkg.zz)")


def test_no_cycle_in_a_layered_package(tmp_path: Path) -> None:
    pkg = _write(tmp_path, {
        "__init__.py": "from pkg.low import v\n",
        "low.py": "v = 1\n",
        "high.py": "from pkg import low\nfrom pkg.low import v\n\ndef f():\n    from . import low as again\n",
    })
    assert import_cycles(import_edges(pkg)) == []


@pytest.mark.parametrize("call", ["conn.execute('SELECT 1')", "cur.executemany('INSERT', rows)"])
def test_sql_outside_the_store_is_found(tmp_path: Path, call: str) -> None:
    pkg = _write(tmp_path, {
        "store/__init__.py": "",
        "store/q.py": "def ok(conn):\n    conn.execute('SELECT 1')\n",
        "web.py": f"def handler(conn, cur, rows):\n    x = 1\n    {call}\n",
    })
    assert sql_calls_outside(pkg, pkg / "store") == [f"pkg/web.py:3 (in handler()): .{call.split('(')[0].split('.')[1]}("]


def test_conftest_imports_are_found(tmp_path: Path) -> None:
    pkg = _write(tmp_path, {
        "conftest.py": "import pytest\n",
        "a/test_x.py": "from conftest import Cli\nfrom ..support import pg\n",
        "b/test_y.py": "def f():\n    from .conftest import Site\n",
        "c/test_z.py": "import pkg.c.conftest as c\nimport conftest_like\nfrom x import conftest_helper\n",
        "d/test_w.py": "from . import conftest\n",
    })
    assert conftest_imports(pkg) == ["pkg/a/test_x.py:1", "pkg/b/test_y.py:2", "pkg/c/test_z.py:1", "pkg/d/test_w.py:1"]


# One threshold policy (issue 13): only dedup/operating_point.py answers "the threshold in
# force", from the tails in dedup/modelcards/. Any other module that reads a documented
# operating point, a profile's threshold or calibration.json, or turns a target into a
# threshold, is computing its own.
THRESHOLD_HOME = ("operating_point.py", "modelcards/")   # paths inside the package
# (what is referenced, where else it may be, why)
THRESHOLD_RULES: dict[str, tuple[str, ...]] = {
    # dlib's documented LFW rule: defined in face/threshold.py, re-exported by face/__init__.py
    "DEFAULT_COSINE_THRESHOLD": ("face/threshold.py", "face/__init__.py"),
    "SFACE_COSINE_THRESHOLD": ("face/threshold.py",),
    "documented_cosine_threshold": ("face/threshold.py",),
    "operating_threshold": (),
    "threshold_of": (),
    "CALIBRATION_FILE": (),
    "load_calibration": (),
    "calibration.json": (),
    # the tail's own primitives: the GPD (tail.py) and the DET's FNMR-at-FMR rows, which are
    # reported figures, never the threshold in force (metrics.py)
    "threshold_for_fmr": ("evaluation/tail.py", "evaluation/metrics.py"),
    # calibrate reports the per-comparison FMR its threshold stands for (and its interval)
    "fmr_for_fpir": ("evaluation/tail.py", "evaluation/calibrate.py"),
}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings (words about the policy are fine)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
                out.add(id(first.value))
    return out


def threshold_computations(package: Path) -> list[str]:
    """``file:line (scope): what`` for every reference to a threshold source outside the policy's home.

    Names (``x``, ``a.x``, ``from m import x``), and string constants that are not docstrings
    (``"calibration.json"``); also ``<profile>.threshold`` (a synthetic profile's documented point).
    """
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package).as_posix()
        if rel.startswith(THRESHOLD_HOME):
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        scope, docs = _scopes(tree), _docstrings(tree)
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Name):
                names = [node.id]
            elif isinstance(node, ast.Attribute):
                names = [node.attr]
                if node.attr == "threshold" and isinstance(node.value, ast.Name) and node.value.id == "profile" \
                        or node.attr == "threshold" and isinstance(node.value, ast.Subscript) \
                        and isinstance(node.value.value, ast.Name) and node.value.value.id == "PROFILES":
                    names.append("profile.threshold")
            elif isinstance(node, ast.alias):
                names = [node.name.split(".")[-1]]
            elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
                names = [k for k in THRESHOLD_RULES if "." in k and k in node.value]
            for name in names:
                allowed = THRESHOLD_RULES.get(name, ("bench/synth.py",) if name == "profile.threshold" else None)
                if allowed is not None and not rel.startswith(allowed):
                    found.append(f"{package.name}/{rel}:{getattr(node, 'lineno', '?')} ({scope.get(node, 'module level')}): {name}")
    return sorted(set(found))


def test_one_threshold_policy() -> None:
    found = threshold_computations(ROOT / "dedup")
    if found:
        pytest.fail(f"{len(found)} place(s) compute a threshold outside dedup/operating_point.py (ask "
                    "threshold_in_force instead):\n  " + "\n  ".join(found), pytrace=False)


def test_a_module_computing_its_own_threshold_is_found(tmp_path: Path) -> None:
    pkg = _write(tmp_path, {
        "__init__.py": "",
        "operating_point.py": "from pkg.face import DEFAULT_COSINE_THRESHOLD\nPATH = 'calibration.json'\n",
        "pipeline.py": "from pkg.face import DEFAULT_COSINE_THRESHOLD\n\ndef run(dep):\n    return dep.t or DEFAULT_COSINE_THRESHOLD\n",
        "web.py": '"""Reads calibration.json (a docstring: fine)."""\n\ndef meaning(home):\n    return home / "calibration.json"\n',
        "bench.py": "def resolve(profile):\n    return profile.threshold\n",
        "quiet.py": "def f(params):\n    return params.threshold\n",
    })
    assert threshold_computations(pkg) == [
        "pkg/bench.py:2 (in resolve()): profile.threshold",
        "pkg/pipeline.py:1 (module level): DEFAULT_COSINE_THRESHOLD",
        "pkg/pipeline.py:4 (in run()): DEFAULT_COSINE_THRESHOLD",
        "pkg/web.py:4 (in meaning()): calibration.json",
    ]
