"""The public API is what __all__ says, and the code passes mypy --strict and ruff."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import castore

ROOT = Path(__file__).resolve().parents[1]


def test_exported_members_exist_and_are_documented() -> None:
    for name in castore.__all__:
        member = getattr(castore, name)
        assert member.__doc__, f"castore.{name} has no docstring"
    assert {"Store", "NotFound", "InvalidName", "CastoreError"} <= set(castore.__all__)


def test_errors_derive_from_one_base() -> None:
    members = [getattr(castore, n) for n in castore.__all__]
    errors = [m for m in members if isinstance(m, type) and issubclass(m, BaseException)]
    assert len(errors) >= 10 and all(issubclass(e, castore.CastoreError) for e in errors)


def test_mypy_strict() -> None:
    done = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout


def test_ruff() -> None:
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "castore", "django_bridge", "tests", "benchmarks"],
                          cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout


# -- the map of the code (docs/design.md): layers depend one way, no import circle, small modules ------

LAYERS = [
    {"errors", "names", "keys", "digests", "codec", "content_coding", "sizes", "faults", "lazy", "reserve", "layout", "inherited",
     "protocol", "batch"},
    {"blobs", "metadata"},
    {"ingest", "reading", "creating", "preflight"},
    {"location", "putting"},
    {"store", "maintenance", "moving", "opening", "compacting"},
    {"client", "server", "migration"},
    {"cli", "__main__", ""},
]
"""castore's layers, lowest first (by the first part of a module's name below ``castore``):
a module imports from its own layer or lower ones only."""

MAX_LINES = 700


def _castore_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted((ROOT / "castore").rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _imports(path: Path, module: str, modules: dict[str, Path]) -> set[str]:
    """castore modules ``path`` imports, at module level or inside functions (not for type checking only)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # "from . import maintenance" imports a module; "from .names import check_path", a name
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in child.names]
            else:
                visit(child)
                continue
            for name in names:
                target = resolve(name) if name.startswith("castore") else None
                if target is not None and target != module:
                    found.add(target)

    visit(ast.parse(path.read_text()))
    return found


def _graph() -> dict[str, set[str]]:
    modules = _castore_modules()
    return {module: _imports(path, module, modules) for module, path in modules.items()}


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else ""
    return next(i for i, names in enumerate(LAYERS) if top in names)


def test_no_import_circle() -> None:
    """No castore module imports itself back through others, also through imports inside functions."""
    graph = _graph()
    state: dict[str, int] = {}
    circles = []

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                circles.append(trail[trail.index(target):] + [target])
            elif target not in state:
                visit(target, trail + [target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_layers_depend_one_way() -> None:
    """A module imports only from its own layer or lower ones, and the client never from the server."""
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in _graph().items()
        for target in targets
        if _layer(target) > _layer(module)
        or (module.startswith("castore.client") and target.startswith("castore.server"))
    )
    assert wrong == []


def test_no_module_over_the_size_bound_without_saying_why() -> None:
    too_long = [str(path.relative_to(ROOT)) for path in sorted((ROOT / "castore").rglob("*.py"))
                if len(path.read_text().splitlines()) > MAX_LINES and "one idea" not in (ast.get_docstring(
                    ast.parse(path.read_text())) or "")]
    assert too_long == []
