"""Layout rules from the project's standards, checked instead of remembered: no module over 400 lines, and no
import cycle among fcgipool's modules.

A cycle counts only when every import in it runs at import time: module level, class bodies, ``try``/``if``
blocks. An import inside a function is how a cycle is deferred on purpose (it runs at call time, when both
modules are loaded), so it is not counted: a cycle closed that way passes. Neither is one under
``if TYPE_CHECKING:`` (never runs) or ``if __name__ == "__main__":`` (runs only as a script). Imports by name
at run time (``importlib.import_module``) are not seen.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "pool" / "fcgipool"
MAX_LINES = 400


def long_modules(roots: list[Path], limit: int = MAX_LINES) -> list[tuple[str, int]]:
    """(path relative to the roots' parent, line count) of every ``.py`` over ``limit`` lines, tests excluded."""
    found = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            if "tests" in path.relative_to(root).parts:
                continue
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > limit:
                found.append((str(path.relative_to(root.parent)), lines))
    return found


def _modules(package_dir: Path) -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a package is its ``__init__``)."""
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = [package_dir.name, *path.relative_to(package_dir).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_guard(test: ast.expr) -> bool:
    """``if TYPE_CHECKING:`` / ``if typing.TYPE_CHECKING:`` / ``if __name__ == "__main__":``."""
    if isinstance(test, ast.Name | ast.Attribute):
        return (test.id if isinstance(test, ast.Name) else test.attr) == "TYPE_CHECKING"
    return (
        isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )


def _import_time_nodes(body: list[ast.AST]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported: not in functions, not behind a guard."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        elif isinstance(node, ast.If):
            if not _is_guard(node.test):
                yield from _import_time_nodes(node.body)
            yield from _import_time_nodes(node.orelse)
        else:
            # class bodies, try/except/else/finally, with, for, while, match cases: all run at import time
            for field in ("body", "handlers", "orelse", "finalbody", "cases"):
                yield from _import_time_nodes(getattr(node, field, []))


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports at import time.

    ``import a.b.c`` / ``from a.b.c import x`` import every package on the way (their ``__init__`` runs), so each
    counts, except the importer's own packages: they are already in ``sys.modules`` while it loads. ``from P
    import n`` counts ``P.n`` when it is a module; when ``n`` is a name defined in ``P`` it counts ``P`` even
    if ``P`` is the importer's own package (``P`` must have got that far: a real cycle).
    """
    modules = _modules(package_dir)
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        own_package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 2)}
        edges = graph.setdefault(name, set())
        for node in _import_time_nodes(ast.parse(path.read_text(encoding="utf-8")).body):
            if isinstance(node, ast.Import):
                targets = [(alias.name, []) for alias in node.names]
            else:
                base = own_package.split(".")[: len(own_package.split(".")) - node.level + 1] if node.level else []
                targets = [(".".join([*base, *([node.module] if node.module else [])]), [a.name for a in node.names])]
            for target, names in targets:
                parts = target.split(".")
                edges.update(p for p in (".".join(parts[:i]) for i in range(1, len(parts) + 1)) if p not in ancestors)
                for n in names:
                    edges.add(f"{target}.{n}" if f"{target}.{n}" in modules else target)
        edges.intersection_update(modules)
        edges.discard(name)
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycle paths (``[a, b, a]``) found by a depth-first search in name order: at least one through every
    group of modules that import each other (not every cycle of a tangled group), each once."""
    cycles: dict[frozenset[str], list[str]] = {}
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                cycle = [*path[path.index(nxt) :], nxt]
                cycles.setdefault(frozenset(cycle), cycle)
            elif nxt not in done:
                visit(nxt, [*path, nxt])
        done.add(node)

    for start in sorted(graph):
        if start not in done:
            visit(start, [start])
    return sorted(cycles.values())


# --- the rules --------------------------------------------------------------------------------------------


def test_no_module_is_over_400_lines() -> None:
    offenders = long_modules([PACKAGE, REPO / "loadtest"])
    assert not offenders, f"modules over {MAX_LINES} lines (split along a responsibility): " + ", ".join(
        f"{path} ({lines})" for path, lines in offenders
    )


def test_no_import_cycle_among_fcgipool_modules() -> None:
    cycles = find_cycles(import_graph(PACKAGE))
    assert not cycles, "import cycles at import time (defer one import into the function that needs it): " + (
        "; ".join(" -> ".join(c) for c in cycles)
    )


# --- the helpers can fail: a tiny package in tmp_path -----------------------------------------------------


def _package(root: Path, files: dict[str, str]) -> Path:
    pkg = root / "pkg"
    for rel, text in {"__init__.py": "", **files}.items():
        (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
        (pkg / rel).write_text(text)
    return pkg


def test_a_long_module_is_listed_and_tests_are_not(tmp_path: Path) -> None:
    pkg = _package(tmp_path, {"long.py": "x = 1\n" * 401, "ok.py": "x = 1\n" * 400, "tests/test_x.py": "\n" * 900})
    assert long_modules([pkg]) == [("pkg/long.py", 401)]


def test_a_module_level_cycle_is_found_with_its_path(tmp_path: Path) -> None:
    pkg = _package(tmp_path, {
        "a.py": "from . import b\n",
        "b.py": "try:\n    from .c import f\nexcept ImportError:\n    pass\n",
        "c.py": "import pkg.a\n\ndef f():\n    pass\n",
    })  # fmt: skip
    assert find_cycles(import_graph(pkg)) == [["pkg.a", "pkg.b", "pkg.c", "pkg.a"]]


def test_deferred_and_guarded_imports_are_not_cycles(tmp_path: Path) -> None:
    pkg = _package(tmp_path, {
        "a.py": "from .b import g\n",
        "b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import x\n"
                "def g():\n    from . import a\n"
                "if __name__ == '__main__':\n    from pkg.a import main\n",
    })  # fmt: skip
    assert import_graph(pkg)["pkg.b"] == set()
    assert find_cycles(import_graph(pkg)) == []


def test_a_subpackage_init_and_its_modules(tmp_path: Path) -> None:
    """A package's ``__init__`` importing its own modules is no cycle; one of them needing a name the ``__init__``
    defines after that import is."""
    pkg = _package(tmp_path, {
        "sub/__init__.py": "from .one import f\nVALUE = 1\n",
        "sub/one.py": "from .two import g\n\ndef f():\n    pass\n",
        "sub/two.py": "from . import one\n\ndef g():\n    pass\n",
        "other.py": "from .sub.one import f\n",
    })  # fmt: skip
    graph = import_graph(pkg)
    assert graph["pkg.other"] == {"pkg.sub", "pkg.sub.one"}
    assert find_cycles(graph) == [["pkg.sub.one", "pkg.sub.two", "pkg.sub.one"]]
    (pkg / "sub" / "two.py").write_text("def g():\n    pass\n")
    (pkg / "sub" / "one.py").write_text("from . import VALUE\n\ndef f():\n    pass\n")
    assert find_cycles(import_graph(pkg)) == [["pkg.sub", "pkg.sub.one", "pkg.sub"]]
