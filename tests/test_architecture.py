"""The one-way rule, read from the source (ast, nothing is imported or run):

- the domain packages of shoprec never import a shell (kfp, KServe's server classes, the CLI,
  the KFP components and pipelines, the KServe entry points) nor start one by naming it in a
  string (`python -m ...`, PYTHONPATH);
- no import cycle between modules, nor between the rooms (top-level packages) of shoprec;
- every package folder is listed in pyproject.toml (setuptools cannot find the mapped ones).
"""

from __future__ import annotations

import ast
import tomllib
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Where each part of the shoprec namespace lives (the same map as pyproject.toml's package-dir).
SHELL_DIRS = {"shoprec.components": REPO / "components", "shoprec.pipelines": REPO / "pipelines",
              "shoprec.kserve": REPO / "serving"}
SHELLS = ("shoprec.cli", "shoprec.kfp", *SHELL_DIRS)
# Third-party runtimes only shells may import: the KFP SDK, KServe, the Kubernetes client.
SHELL_LIBRARIES = ("kfp", "kserve", "kubernetes", "fastapi", "uvicorn")
SHELL_STRINGS = ("PYTHONPATH", *(f"{shell}." for shell in SHELLS), "-m shoprec.")


def module_files() -> dict[str, Path]:
    """Every module of the shoprec namespace -> its source file."""
    roots = {"shoprec": REPO / "src" / "shoprec", **SHELL_DIRS}
    found: dict[str, Path] = {}
    for prefix, root in roots.items():
        for path in sorted(root.rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([prefix, *parts])
            if prefix == "shoprec" and any(name == s or name.startswith(s + ".") for s in SHELL_DIRS):
                continue
            found[name] = path
    return found


def is_shell(module: str) -> bool:
    return any(module == s or module.startswith(s + ".") for s in SHELLS)


def imports_of(module: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(imported module, line) for every import in the file, at any depth (lazy ones too)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                out.append((candidate if candidate in known else base, node.lineno))
    return out


def graph() -> dict[str, list[tuple[str, int]]]:
    files = module_files()
    known = set(files)
    edges: dict[str, list[tuple[str, int]]] = {}
    for module, path in files.items():
        edges[module] = [(target, line) for target, line in imports_of(module, path, known)]
    return edges


def test_domain_never_imports_a_shell() -> None:
    files = module_files()
    offenders = []
    for module, targets in graph().items():
        if is_shell(module):
            continue
        for target, line in targets:
            if is_shell(target) or target.split(".")[0] in SHELL_LIBRARIES:
                offenders.append(f"{files[module].relative_to(REPO)}:{line} imports {target}")
    assert not offenders, "domain -> shell imports:\n" + "\n".join(offenders)


def test_domain_starts_no_shell_through_a_string() -> None:
    offenders = []
    for module, path in module_files().items():
        if is_shell(module):
            continue
        tree = ast.parse(path.read_text())
        # Docstrings may name a shell for the reader; strings in code may not.
        docstrings = {id(owner.body[0].value) for owner in ast.walk(tree)
                      if isinstance(owner, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                      and owner.body and isinstance(owner.body[0], ast.Expr)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                hit = next((s for s in SHELL_STRINGS if s in node.value), None)
                if hit:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno} names {hit!r}")
    assert not offenders, "domain code that starts a shell by name:\n" + "\n".join(offenders)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each a cycle's members."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            members = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                members.append(top)
                if top == node:
                    break
            if len(members) > 1:
                found.append(sorted(members))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def _internal_edges() -> dict[str, dict[str, int]]:
    """module -> {imported shoprec module: first line}, without self-imports and parent packages
    (importing `a.b.c` runs `a.b`'s __init__, which is no dependency of the importer's design)."""
    edges: dict[str, dict[str, int]] = defaultdict(dict)
    files = module_files()
    for module, targets in graph().items():
        for target, line in targets:
            if target in files and target != module and not module.startswith(target + "."):
                edges[module].setdefault(target, line)
    return edges


def test_no_import_cycle_between_modules() -> None:
    edges = _internal_edges()
    cycles = _cycles({m: set(t) for m, t in edges.items()})
    described = [" -> ".join(c) + "; edges: " + ", ".join(
        f"{a} imports {b} (line {edges[a][b]})" for a in c for b in c if b in edges.get(a, {})) for c in cycles]
    assert not cycles, "import cycles between modules:\n" + "\n".join(described)


def room(module: str) -> str:
    """The room of a module: shoprec.<first part> (shoprec itself for the package root)."""
    parts = module.split(".")
    return ".".join(parts[:2])


def test_no_import_cycle_between_rooms() -> None:
    edges = _internal_edges()
    rooms: dict[str, set[str]] = defaultdict(set)
    why: dict[tuple[str, str], str] = {}
    for module, targets in edges.items():
        for target, line in targets.items():
            a, b = room(module), room(target)
            if a != b and a != "shoprec" and b != "shoprec":
                rooms[a].add(b)
                why.setdefault((a, b), f"{module}:{line} imports {target}")
    cycles = _cycles(rooms)
    described = [" <-> ".join(c) + ": " + "; ".join(why[(a, b)] for a in c for b in c if (a, b) in why)
                 for c in cycles]
    assert not cycles, "import cycles between rooms:\n" + "\n".join(described)


def test_every_package_folder_is_installed() -> None:
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    packages = {m for m, p in module_files().items() if p.name == "__init__.py"}
    assert packages - listed == set(), f"package folders missing from pyproject.toml: {sorted(packages - listed)}"
    assert listed - packages == set(), f"listed packages with no folder: {sorted(listed - packages)}"


@pytest.mark.parametrize("bad", ["import_shell", "cycle"])
def test_the_walk_names_what_it_finds(bad: str, tmp_path: Path) -> None:
    """The checks above can fail: a planted violation is found and named."""
    if bad == "import_shell":
        path = tmp_path / "x.py"
        path.write_text("def f():\n    from shoprec.kfp.local import run_locally\n")
        found = imports_of("shoprec.features.x", path, {"shoprec.kfp.local"})
        assert ("shoprec.kfp.local", 2) in found and is_shell(found[0][0])
    else:
        assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
