"""The house's rules, read from the source (ast, nothing executed): no import cycles between modules or
between rooms, the core imports only the core, no file over 400 lines, optional packages imported lazily."""

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "melo"
CORE = {f"melo.{name}" for name in ("config", "memory", "router", "layer", "model", "editor", "clusters", "nethook",
                                     "prefix", "text", "chat", "encoders", "scope", "database", "augment",
                                     "persistence", "manage", "errors", "auto")}
FACADE = "melo"  # melo/__init__.py: re-exports the core and the preset table
APPS = {f"melo.{name}" for name in ("bench", "demo", "standins", "serve", "cli", "baselines", "export", "loading",
                                     "evaluation")}
MAX_LINES = 400
LAZY = {"fcntl", "matplotlib", "peft"}  # POSIX-only or extras: imported inside the functions that use them


def modules(src: Path = SRC) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package's __init__)."""
    found = {}
    for path in sorted((src / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        found[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return found


def imports(name: str, path: Path, is_package: bool, known: set[str]) -> list[tuple[str, int, bool]]:
    """(module imported, line, at module level) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(node) for node in tree.body}
    package = name if is_package else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            targets = [f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names]
        else:
            continue
        found.extend((target, node.lineno, id(node) in top_level) for target in targets)
    return found


def graph(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the melo modules it imports (anywhere in the file: a lazy import is still a dependency)."""
    mods = modules(src)
    known = set(mods)
    edges = {}
    for name, (path, is_package) in mods.items():
        edges[name] = {target for target, _, _ in imports(name, path, is_package, known)
                       if target in known and target != name}
    return edges


def room(module: str) -> str:
    """A package below melo is one room; each module directly in melo (the core, cli) is its own."""
    parts = module.split(".")
    return ".".join(parts[:2])


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def room_graph(edges: dict[str, set[str]]) -> dict[str, set[str]]:
    rooms: dict[str, set[str]] = {}
    for source, targets in edges.items():
        rooms.setdefault(room(source), set()).update(room(t) for t in targets if room(t) != room(source))
    return rooms


def test_no_import_cycles_between_modules():
    assert cycles(graph()) == []


def test_no_import_cycles_between_rooms():
    assert cycles(room_graph(graph())) == []


def test_the_core_imports_only_the_core():
    edges = graph()
    upward = {module: sorted(targets - CORE) for module, targets in edges.items() if module in CORE and targets - CORE}
    assert upward == {}
    assert sorted(t for t in edges[FACADE] if room(t) in APPS) == []


def test_every_module_directly_in_melo_is_core_or_an_app():
    top = {name for name, (_, is_package) in modules().items() if name.count(".") == 1 and not is_package}
    assert top - CORE - APPS == set()


@pytest.mark.parametrize("name,path", [(name, path) for name, (path, _) in modules().items()], ids=lambda x: str(x))
def test_no_file_over_400_lines(name, path):
    assert len(path.read_text().splitlines()) <= MAX_LINES, f"{path.relative_to(SRC)} is over {MAX_LINES} lines"


def test_optional_and_posix_packages_are_imported_lazily():
    mods = modules()
    eager = [(name, line, target) for name, (path, is_package) in mods.items()
             for target, line, top_level in imports(name, path, is_package, set(mods))
             if top_level and target.split(".")[0] in LAZY]
    assert eager == []


def test_matplotlib_backend_is_never_switched():
    trees = [(path, ast.parse(path.read_text())) for path, _ in modules().values()]
    calls = [(path.name, node.lineno) for path, tree in trees for node in ast.walk(tree)
             if isinstance(node, ast.Attribute) and node.attr == "use" and isinstance(node.value, ast.Name)
             and node.value.id == "matplotlib"]
    assert calls == []


def test_the_checks_find_what_they_look_for(tmp_path):
    """A cycle, an upward import and a lazy one are seen (the checks above could not pass vacuously)."""
    pkg = tmp_path / PACKAGE
    (pkg / "bench").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "bench" / "__init__.py").write_text("")
    (pkg / "config.py").write_text("def f():\n    from .bench import run\n")
    (pkg / "bench" / "run.py").write_text("from ..config import f\nfrom . import other\n")
    (pkg / "bench" / "other.py").write_text("from .run import x\n")
    edges = graph(tmp_path)
    assert edges["melo.config"] == {"melo.bench.run"}  # found inside a function too
    assert imports("melo.config", pkg / "config.py", False, set(edges)) == [("melo.bench.run", 2, False)]
    assert cycles(edges) == [["melo.bench.other", "melo.bench.run", "melo.config"]]
    assert cycles(room_graph(edges)) == [["melo.bench", "melo.config"]]


def test_melo_imports_without_fcntl_matplotlib_or_peft():
    """What the lazy imports buy: every room imports where these packages are missing."""
    import os
    import subprocess
    import sys

    code = ("import sys\nfor name in ('fcntl', 'matplotlib', 'peft'):\n    sys.modules[name] = None\n"
            "import melo, melo.cli, melo.bench.run, melo.demo.run, melo.export, melo.baselines, melo.serve\n")
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
