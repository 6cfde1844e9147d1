"""Shared test configuration: hypothesis profiles, the GPU marker, switching the backend, and a
stand-in for CuPy that runs without a GPU."""
import os
import sys
import types

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

from minidl import backend

# The default profile draws the same examples on every run, so a red CI run can be
# reproduced and a green one is not luck; "thorough" explores 300 fresh examples per property.
settings.register_profile(
    "default", deadline=None, max_examples=25, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", deadline=None, max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def gpu_available():
    try:
        import cupy
    except ImportError:
        return False
    return bool(cupy.is_available())


def pytest_collection_modifyitems(config, items):
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs CuPy and a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def use_backend():
    """``use_backend(name)`` switches minidl's backend; the test's end switches it back."""
    before = backend.get_backend()
    yield backend.set_backend
    backend.set_backend(before)


class FakeCupyArray:
    """A stand-in for ``cupy.ndarray`` holding a NumPy array, for the CuPy side of the dispatch.

    CuPy imports without a GPU but cannot make an array, so these tests need no GPU: minidl
    takes for a CuPy array any array whose type comes from a module named cupy. Like CuPy's
    arrays it has ``get()`` to copy to the host and refuses NumPy's implicit conversion, so
    code that would hand a GPU array to NumPy fails here as it would on a GPU.
    """

    def __init__(self, data):
        self.data = np.asarray(data)

    shape = property(lambda self: self.data.shape)
    ndim = property(lambda self: self.data.ndim)
    dtype = property(lambda self: self.data.dtype)

    def __len__(self):
        return len(self.data)

    def __getitem__(self, index):
        return FakeCupyArray(self.data[index])

    def __float__(self):  # a 0-d array's, as CuPy's
        return float(self.data)

    def astype(self, dtype, copy=True):
        return FakeCupyArray(self.data.astype(dtype, copy=copy))

    def get(self):
        return self.data.copy()

    def __array__(self, *args, **kwargs):  # as CuPy's arrays: NumPy may not convert them itself
        raise TypeError("Implicit conversion to a NumPy array is not allowed")


FakeCupyArray.__module__ = "cupy._core.core"


@pytest.fixture
def fake_cupy(monkeypatch):
    """A stand-in ``cupy`` module, imported by ``import cupy`` and by the backend; its ``ndarray``
    is ``FakeCupyArray`` and its GPU "Fake GPU 1"."""
    module = types.ModuleType("cupy")
    module.ndarray = FakeCupyArray
    module.asarray = lambda x, dtype=None: FakeCupyArray(np.asarray(x, dtype=dtype))
    module.stack = lambda arrays: FakeCupyArray(np.stack([a.get() for a in arrays]))  # CuPy arrays only, as CuPy's
    module.__version__ = "0.fake"
    module.cuda = types.SimpleNamespace(
        Device=lambda: types.SimpleNamespace(id=1),
        runtime=types.SimpleNamespace(getDeviceProperties=lambda i: {"name": f"Fake GPU {i}".encode()}))
    monkeypatch.setitem(sys.modules, "cupy", module)
    monkeypatch.setattr(backend, "_import_cupy", lambda: module)
    return module
