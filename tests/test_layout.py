"""The shape of the code a reader holds in their head: no import cycle among the project's modules, no project
import hidden inside a function (the usual way to dodge a cycle), and no module over MAX_LINES lines."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX_LINES = 700
PACKAGES = ("data", "verifiers")  # the project's packages; every other project module is a top-level file


def project_modules() -> dict[str, Path]:
    """Module name -> file, for the top-level modules and the packages' modules (bench/ and tests/ are scripts)."""
    mods = {p.stem: p for p in REPO.glob("*.py")}
    for pkg in PACKAGES:
        for p in (REPO / pkg).glob("*.py"):
            mods[pkg if p.stem == "__init__" else f"{pkg}.{p.stem}"] = p
    return mods


def imports_of(path: Path, mods: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported project module, at module level?) for each import statement of the file."""
    tree = ast.parse(path.read_text(), str(path))
    package = path.parent.name if path.parent != REPO else None
    top = {id(node) for node in tree.body}
    for node in tree.body:  # imports under a module-level `if`/`try` still run at import time
        if isinstance(node, (ast.If, ast.Try)):
            top |= {id(n) for n in ast.walk(node)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x / from .x import y
                base = package or ""
                names = [f"{base}.{node.module}" if node.module else f"{base}.{a.name}" for a in node.names]
            else:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            if name in mods:
                found.append((name, id(node) in top))
    return found


def test_no_import_cycle_and_no_hidden_import():
    mods = project_modules()
    assert {"train", "run", "config", "verify", "tasks", "data", "verifiers.sandbox"} <= set(mods)
    graph, hidden = {}, []
    for name, path in mods.items():
        edges = imports_of(path, mods)
        graph[name] = {m for m, _ in edges if m != name}
        hidden += [f"{name} imports {m} inside a function" for m, at_top in edges if not at_top]
    assert not hidden, hidden
    # A package imports its own submodules (data -> data.load); a submodule importing its package's __init__
    # would be a cycle, and is one here.
    state: dict[str, int] = {}

    def visit(node, path):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2
    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_the_algorithm_imports_downward():
    """train.py is the top: nothing imports it (bench scripts and tests aside), and the run machinery below it
    never reaches back up into the algorithm."""
    mods = project_modules()
    for name, path in mods.items():
        assert "train" not in {m for m, _ in imports_of(path, mods)}, name
    assert not {"train", "baselines", "config"} & {m for m, _ in imports_of(mods["run"], mods)}


def test_no_module_is_over_the_line_limit():
    long = {str(p.relative_to(REPO)): n for p in project_modules().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, long
