"""The package's folders are its layers: every import goes down, never up or sideways into a peer above."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "distill"
#: Rank of each layer; a module may import its own layer and any of lower rank.
LAYERS = {"core": 0, "extraction": 1, "results": 2, "job": 3, "monitor": 4, "bench": 4, "cli": 5}
TOP_LEVEL_MODULES = {"__init__.py", "__main__.py", "stub_server.py"}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "distill" and parts[1] in LAYERS else None


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_only_go_down_the_layers(path: Path) -> None:
    own = path.relative_to(PACKAGE).parts[0]
    upward = [m for m in _imports(path) if (layer := _layer(m)) and LAYERS[layer] > LAYERS[own]]
    sideways = [m for m in _imports(path) if (layer := _layer(m)) and layer != own and LAYERS[layer] == LAYERS[own]]
    assert not upward, f"{path.name} imports a higher layer: {upward}"
    assert not sideways, f"{path.name} imports a peer layer: {sideways}"


def test_the_top_level_shows_the_layers_and_each_says_what_it_owns() -> None:
    entries = {p.name for p in PACKAGE.iterdir() if not p.name.startswith((".", "__pycache__"))}
    assert entries - TOP_LEVEL_MODULES == set(LAYERS)
    for layer in LAYERS:
        doc = ast.get_docstring(ast.parse((PACKAGE / layer / "__init__.py").read_text(encoding="utf-8")))
        assert doc and len(doc.split()) >= 8, f"distill/{layer}/__init__.py needs a docstring saying what it owns"


@pytest.mark.parametrize("path", sorted(PACKAGE.rglob("*.py")), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_no_module_is_over_about_four_hundred_lines(path: Path) -> None:
    assert len(path.read_text(encoding="utf-8").splitlines()) <= 420
