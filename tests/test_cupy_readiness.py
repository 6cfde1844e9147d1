"""Will minidl run on CuPy? Checked from the source, without a GPU.

minidl's computing code never imports numpy or cupy: it asks ``xp = get_array_module(x)``
and calls ``xp.<function>``. A function that NumPy has and CuPy lacks would only fail
on a GPU machine, so this module parses minidl's source with ``ast``, collects every
attribute chain on a name ``xp`` (``xp.matmul``, ``xp.random.default_rng``, ...), and
checks that CuPy has each one. It needs CuPy installed (it imports without a GPU), not
a GPU. The parity of the results on a GPU is tested in ``tests/layers/test_layers_gpu.py``.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "minidl"

#: Host-only by design, left out of the ``xp`` scan: they work on NumPy arrays on the
#: CPU, after results were brought back with ``to_numpy``, and never see CuPy arrays.
#:   metrics.py  - scores from NumPy arrays (``predict`` returns NumPy)
#:   plots.py    - matplotlib figures
#:   datasets/   - files, images and caches on disk
#: (data.py is scanned: batches move to the device before they are augmented there.)
HOST_ONLY = {"metrics.py", "plots.py", "datasets"}

#: Device-side modules that must never import numpy or cupy directly (the Chainer rule of
#: DESIGN.md): the layers, the loss and the optimisers. ``optimizers.py`` is checked when
#: present. initializers.py (draws on the CPU), gradcheck.py (float64 finite differences on
#: the host) and backend.py (chooses the module) import NumPy by design.
NO_DIRECT_IMPORTS = sorted(PACKAGE.glob("layers/*.py")) + [
    p for p in (PACKAGE / "losses.py", PACKAGE / "optimizers.py") if p.exists()
]


def device_modules():
    """Every minidl source file except the host-only ones."""
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] not in HOST_ONLY:
            yield path


def xp_chains(tree):
    """Every attribute chain rooted at the name ``xp``: ``xp.random.default_rng`` -> ("random", "default_rng")."""
    inner = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    chains = set()
    for node in ast.walk(tree):
        if id(node) in inner:
            continue  # part of a longer chain, seen from its outermost attribute
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if parts and isinstance(node, ast.Name) and node.id == "xp":
            chains.add(tuple(reversed(parts)))
    return chains


def used_xp_chains():
    """``{chain: [files using it]}`` over the device-side modules."""
    uses = {}
    for path in device_modules():
        for chain in xp_chains(ast.parse(path.read_text(encoding="utf-8"))):
            uses.setdefault(chain, []).append(str(path.relative_to(PACKAGE)))
    return uses


def imported_modules(tree):
    """Top-level names of every module imported anywhere in ``tree`` (also inside functions)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_the_scan_sees_the_array_functions_the_layers_use():
    # Guards the test below against passing vacuously (e.g. if the scan found nothing).
    uses = used_xp_chains()
    assert {("matmul",), ("zeros",), ("exp",), ("log",), ("maximum",)} <= set(uses)
    assert xp_chains(ast.parse("y = xp.linalg.norm(xp.abs(x)).item()")) == {("linalg", "norm"), ("abs",)}


def test_every_xp_function_minidl_uses_exists_in_cupy():
    cupy = pytest.importorskip("cupy")
    missing = []
    for chain, files in sorted(used_xp_chains().items()):
        obj = cupy
        for i, name in enumerate(chain):
            if not hasattr(obj, name):
                missing.append(f"cupy.{'.'.join(chain[: i + 1])} (used as xp.{'.'.join(chain)} in {', '.join(files)})")
                break
            obj = getattr(obj, name)
    assert not missing, "CuPy lacks:\n" + "\n".join(missing)


@pytest.mark.parametrize("path", NO_DIRECT_IMPORTS, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_device_side_modules_never_import_numpy_or_cupy(path):
    direct = imported_modules(ast.parse(path.read_text(encoding="utf-8"))) & {"numpy", "cupy"}
    assert not direct, f"{path.relative_to(PACKAGE)} imports {sorted(direct)}; use xp = get_array_module(x)"


def test_the_import_scan_catches_imports_anywhere():
    tree = ast.parse("import os\ndef f():\n    import numpy as np\nfrom cupy.random import rand\nfrom . import backend")
    assert imported_modules(tree) == {"os", "numpy", "cupy"}
