"""The layers' import directions, read from the source: a module may import its own
layer's package and the layers below it, never one above, and never a sibling package
of its own layer. So the tree keeps the shape docs/ARCHITECTURE.md draws."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Lowest first. A module belongs to the longest prefix that names it. The kernel's
# modules (plain values and errors every layer shares) may import one another.
KERNEL = {
    "router.errors",
    "router.settings",
    "router.metrics",
    "router.periods",
    "router.boards",
    "router.shardmap",
    "router.events",
    "router.clock",
}
LAYERS: list[set[str]] = [
    KERNEL,
    {"router.aio"},
    {"router.shards", "router.store"},
    {"router.core"},
    {"router.background"},
    {"router.services"},
    {"router.api"},
    {"router.asgi"},
    {"router.app"},
    {"router.serve"},
    {"shard_manager"},
]
FRAMEWORK_FREE = ("router.core", "router.shards", "router.store", "router.background", "router.aio")


def _package_of(module: str) -> tuple[int, str] | None:
    best: tuple[int, str] | None = None
    for rank, packages in enumerate(LAYERS):
        for package in packages:
            if (module == package or module.startswith(package + ".")) and (
                best is None or len(package) > len(best[1])
            ):
                best = (rank, package)
    return best


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
    return found


def _modules() -> list[tuple[str, Path]]:
    out = []
    for top in ("router", "shard_manager"):
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts == (top, "__init__"):
                continue  # the package's own docstring, nothing else
            out.append((".".join(p for p in parts if p != "__init__"), path))
    return out


def test_every_module_has_a_layer():
    assert [name for name, _ in _modules() if _package_of(name) is None] == []


def test_imports_go_down_the_layers_only():
    wrong = []
    for name, path in _modules():
        rank, package = _package_of(name)  # type: ignore[misc]
        for line, imported in _imports(path):
            target = _package_of(imported)
            if target is None:
                continue  # the standard library or a third-party package
            target_rank, target_package = target
            sibling = target_rank == rank and target_package != package and package not in KERNEL
            if target_rank > rank or sibling:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert wrong == []


def test_the_core_and_below_know_nothing_of_http():
    wrong = []
    for name, path in _modules():
        if name.startswith(FRAMEWORK_FREE):
            for line, imported in _imports(path):
                if imported.split(".")[0] in {"fastapi", "starlette", "uvicorn", "pydantic"}:
                    wrong.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert wrong == []


def test_the_checks_see_a_wrong_import(tmp_path):
    # The walk itself: a module of the core importing the API is caught.
    probe = tmp_path / "probe.py"
    probe.write_text("from router.api.routes import router\nimport fastapi\n")
    assert _imports(probe) == [(1, "router.api.routes"), (2, "fastapi")]
    assert _package_of("router.core.ranking") < _package_of("router.api.routes")  # type: ignore[operator]
