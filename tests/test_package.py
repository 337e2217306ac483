"""The package's shape: imports point down the data flow, and light layers stay light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rllib_seps"

# Layers in data-flow order; a module may import its own layer and the ones before it.
# envs sits beside the flow: the RLlib glue and the CLI find the paper's environments there.
LAYERS = ["options", "sharing", "pretraining", "rllib.internals", "envs", "rllib", "cli"]


def layer_of(module: str) -> int:
    """Index in LAYERS of a dotted module name below rllib_seps (the longest matching prefix)."""
    name = module.removeprefix("rllib_seps").lstrip(".")
    matches = [i for i, layer in enumerate(LAYERS) if name == layer or name.startswith(layer + ".")]
    return max(matches, key=lambda i: len(LAYERS[i])) if matches else -1  # the package root: none


def imports_of(path: Path) -> set[str]:
    """Every rllib_seps module a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rllib_seps"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("rllib_seps"))
    return found


def test_imports_point_down_the_data_flow():
    against = []
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(("rllib_seps", *path.relative_to(PACKAGE).with_suffix("").parts))
        if path.name == "__init__.py" and path.parent == PACKAGE:
            continue  # the lazy top-level names point anywhere by design
        own = layer_of(module.removesuffix(".__init__"))
        against += [f"{module} -> {name}" for name in imports_of(path) if layer_of(name) > own]
    assert not against, f"imports against the flow {LAYERS}: {against}"


@pytest.mark.parametrize("module, forbidden", [
    ("rllib_seps", "ray"),  # names resolve lazily: `rllib --help` stays instant
    ("rllib_seps.sharing.plan", "ray"),
    ("rllib_seps.sharing.layout", "ray"),
    ("rllib_seps.sharing.adaps", "ray"),
    ("rllib_seps.pretraining.pipeline", "ray.rllib"),
    ("rllib_seps.pretraining.report", "ray.rllib"),
    ("rllib_seps.cli.main", "ray"),
])
def test_light_layers_do_not_import_heavy_ones(module, forbidden):
    code = (f"import sys, {module}; heavy = sorted(m for m in sys.modules if m == {forbidden!r} "
            f"or m.startswith({forbidden!r} + '.')); print(heavy[:5])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", f"{module} imports {out.stdout.strip()}"
