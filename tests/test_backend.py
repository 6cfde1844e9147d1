"""NumPy/CuPy selection: never a silent fallback to the CPU."""
import sys

import numpy as np
import pytest
from numpy.testing import assert_array_equal

from minidl import backend
from minidl.backend import get_array_module, get_backend, set_backend, to_numpy


@pytest.fixture(autouse=True)
def restore_backend():
    before = get_backend()
    yield
    backend._current = before


def test_get_array_module_of_numpy_arrays_and_other_values_is_numpy():
    assert get_array_module(np.zeros(3)) is np
    assert get_array_module(np.zeros(3), np.ones((2, 2), dtype=np.float32)) is np
    assert get_array_module([1.0, 2.0], 3.0) is np
    assert get_array_module() is np


def test_asking_for_cupy_without_a_gpu_is_a_clear_error_not_a_fallback():
    try:
        import cupy
    except ImportError:
        pass  # also a clear error, below
    else:
        if cupy.is_available():
            pytest.skip("a GPU is usable here (tests/layers/test_layers_gpu.py covers set_backend('cupy'))")
    set_backend("numpy")
    with pytest.raises(RuntimeError, match=r"set_backend\('cupy'\).*(GPU|not installed)") as err:
        set_backend("cupy")
    assert "numpy" in str(err.value)  # says what to do instead
    assert get_backend() == "numpy"
    assert backend.backend_module() is np


def test_asking_for_cupy_when_cupy_is_not_installed_says_so(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    with pytest.raises(RuntimeError, match="not installed"):
        set_backend("cupy")
    assert get_backend() == "numpy"


def test_unknown_backend_is_a_value_error_and_changes_nothing():
    with pytest.raises(ValueError, match="torch"):
        set_backend("torch")
    with pytest.raises(ValueError):
        set_backend("CuPy")
    assert get_backend() == "numpy"


def test_to_numpy():
    a = np.arange(6.0).reshape(2, 3)
    assert to_numpy(a) is a
    out = to_numpy([[1, 2], [3, 4]])
    assert isinstance(out, np.ndarray)
    assert_array_equal(out, [[1, 2], [3, 4]])


def test_to_device_on_the_numpy_backend():
    set_backend("numpy")
    out = backend.to_device([1, 2, 3], dtype=np.float32)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    assert "numpy" in backend.device_name()


def test_default_rng_is_seedable_and_passes_generators_through():
    assert_array_equal(backend.default_rng(4).random(5), backend.default_rng(4).random(5))
    g = np.random.default_rng(0)
    assert backend.default_rng(g) is g
