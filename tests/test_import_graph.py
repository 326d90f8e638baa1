"""No import cycle inside gazeprep, counting imports written inside functions too (issue 13).

The graph is built from the source with :mod:`ast`, not by importing: every ``import`` and
``from ... import`` of a gazeprep module, at module level or inside a function, method or class
body, is an edge from the importing module to the imported one. ``from package import name`` is an
edge to ``package.name`` when that is a module, else to the package itself (its ``__init__``);
relative imports are resolved. Imports under ``if TYPE_CHECKING:`` are left out (never executed).

A cycle is a strongly connected component of more than one module. The cycles that remain in code
other helpers own are listed in :data:`KNOWN_CYCLES` with the reason and the fix; the test fails on
any other cycle, and also when a listed one has gone (then delete its entry), so the list never
outlives the cycles it excuses.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import gazeprep

PACKAGE_DIR = Path(gazeprep.__file__).resolve().parent

#: Cycles still present, each with why it is there and what removes it.
KNOWN_CYCLES: dict[frozenset[str], str] = {}


# ----------------------------------------------------------------------------------------------
# the graph


def module_name(path: Path, root: Path) -> str:
    """Dotted name of the module in ``path`` under the package folder ``root``."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import node of ``tree`` at any depth, except the body of ``if TYPE_CHECKING:``."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        stack.extend(ast.iter_child_nodes(node))


def import_graph(root: Path) -> dict[str, dict[str, list[int]]]:
    """``{importer: {imported: [line, ...]}}`` over the modules of the package folder ``root``."""
    top = root.name
    files = {module_name(p, root): p for p in sorted(root.rglob("*.py"))}
    graph: dict[str, dict[str, list[int]]] = {m: {} for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    src = ".".join(base + ([node.module] if node.module else []))
                else:
                    src = node.module or ""
                targets = [f"{src}.{a.name}" if f"{src}.{a.name}" in files else src for a in node.names]
            for t in targets:
                if (t == top or t.startswith(top + ".")) and t in files and t != mod:
                    graph[mod].setdefault(t, []).append(node.lineno)
    return graph


def cycles(graph: dict[str, dict[str, list[int]]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[frozenset[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, {})))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = set()
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.add(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(frozenset(comp))
    return found


def _describe(comp: frozenset[str], graph: dict[str, dict[str, list[int]]]) -> str:
    edges = [
        f"{a} -> {b} (line {', '.join(map(str, lines))})"
        for a in sorted(comp)
        for b, lines in sorted(graph[a].items())
        if b in comp
    ]
    return "; ".join(edges)


# ----------------------------------------------------------------------------------------------
# tests


def test_no_import_cycle_beyond_the_known_ones():
    graph = import_graph(PACKAGE_DIR)
    found = set(cycles(graph))
    new = [c for c in found if c not in KNOWN_CYCLES]
    gone = [c for c in KNOWN_CYCLES if c not in found]
    assert not new, "import cycle(s): " + " | ".join(_describe(c, graph) for c in new)
    assert not gone, f"listed cycle(s) no longer present, delete them from KNOWN_CYCLES: {[sorted(c) for c in gone]}"


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return root / "pkg"


def test_the_graph_sees_function_level_relative_and_submodule_imports(tmp_path):
    """The builder on a toy package with a known answer: a cycle closed only inside a function, one
    through a relative ``from . import``, an acyclic chain, and a TYPE_CHECKING import ignored."""
    pkg = _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/a.py": "from pkg.b import f\n",
            "pkg/b.py": "def f():\n    from pkg import a  # closes a <-> b\n    return a\n",
            "pkg/sub/__init__.py": "",
            "pkg/sub/c.py": "from . import d\n",
            "pkg/sub/d.py": "class K:\n    def m(self):\n        import pkg.sub.c\n",
            "pkg/e.py": "from typing import TYPE_CHECKING\nimport pkg.a\nif TYPE_CHECKING:\n    from pkg import e2\n",
            "pkg/e2.py": "import pkg.e\n",
        },
    )
    graph = import_graph(pkg)
    assert graph["pkg.b"] == {"pkg.a": [2]}  # `from pkg import a` is the module pkg.a
    assert graph["pkg.sub.c"] == {"pkg.sub.d": [1]}  # relative import resolved
    assert graph["pkg.e"] == {"pkg.a": [2]}  # the TYPE_CHECKING import is not an edge
    assert set(cycles(graph)) == {frozenset({"pkg.a", "pkg.b"}), frozenset({"pkg.sub.c", "pkg.sub.d"})}


def test_metric_registry_is_complete_without_a_loader():
    """The metrics registry lost its loader (it imported gazeprep.evaluate.metrics back): a fresh
    interpreter that imports only the registry module still finds the built-in metrics."""
    code = "from gazeprep.evaluate.registry import get_metric, list_metrics; print(get_metric('kld').name, len(list_metrics()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "kld" and int(out[1]) >= 15


def test_the_version_lives_in_one_leaf_module():
    """``gazeprep.__version__`` is the leaf module's value (no second copy) and agrees with
    pyproject.toml, so the manifests' ``created_by`` and ``gazeprep --version`` name the release."""
    import tomllib

    from gazeprep import _version

    pyproject = tomllib.loads((PACKAGE_DIR.parent / "pyproject.toml").read_text(encoding="utf-8"))
    assert gazeprep.__version__ == _version.__version__ == pyproject["project"]["version"]
    assert import_graph(PACKAGE_DIR)["gazeprep._version"] == {}  # a leaf: imports nothing of gazeprep
