"""NumPy/CuPy selection: never a silent fallback to the CPU."""
import sys

import numpy as np
import pytest
from conftest import FakeCupyArray
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


def test_get_array_module_is_cupy_when_any_argument_is_a_cupy_array(fake_cupy):
    assert get_array_module(FakeCupyArray([1.0])) is fake_cupy
    assert get_array_module(np.zeros(1), 2.0, FakeCupyArray([1.0])) is fake_cupy


def test_to_numpy_copies_a_cupy_array_to_the_host(fake_cupy):
    on_gpu = FakeCupyArray([1.0, 2.0])
    out = to_numpy(on_gpu)
    assert type(out) is np.ndarray and out is not on_gpu.data
    assert_array_equal(out, [1.0, 2.0])


def test_to_numpy_with_copy_shares_no_memory_and_copies_from_the_gpu_once(fake_cupy, monkeypatch):
    a = np.arange(6.0).reshape(2, 3)
    for x in (a, a[:, 1:]):  # an array and a view of it
        out = to_numpy(x, copy=True)
        assert not np.shares_memory(out, a)
        assert_array_equal(out, x)
    on_gpu = FakeCupyArray([1.0, 2.0])
    monkeypatch.setattr(np, "array", lambda *args, **kwargs: pytest.fail("a second copy of the GPU's array"))
    out = to_numpy(on_gpu, copy=True)
    assert not np.shares_memory(out, on_gpu.data)
    assert_array_equal(out, [1.0, 2.0])


def test_to_numpy_takes_lists_holding_cupy_arrays(fake_cupy):
    # One value per batch, say; NumPy would refuse the CuPy arrays in them.
    assert_array_equal(to_numpy([FakeCupyArray(1.0), 2.0, FakeCupyArray(3.0)]), [1.0, 2.0, 3.0])
    assert_array_equal(to_numpy(([FakeCupyArray(1.0), 2.0], [3.0, FakeCupyArray(4.0)])), [[1.0, 2.0], [3.0, 4.0]])


def test_to_numpy_passes_on_the_conversion_error_of_what_is_not_a_list():
    class Refuses:  # an array of another library that NumPy may not convert, say
        def __array__(self, *args, **kwargs):
            raise TypeError("cannot convert this")

    with pytest.raises(TypeError, match="cannot convert this"):
        to_numpy(Refuses())


def test_stack_samples_stacks_cupy_samples_with_cupy(fake_cupy):
    # NumPy cannot take CuPy arrays in; the stacked samples stay on the GPU.
    out = backend.stack_samples([FakeCupyArray([1, 2]), FakeCupyArray([3, 4])])
    assert isinstance(out, FakeCupyArray)
    assert_array_equal(out.get(), [[1, 2], [3, 4]])
    assert_array_equal(backend.stack_samples(([1, 2], [3, 4])), [[1, 2], [3, 4]])  # NumPy's otherwise


def test_to_device_brings_cupy_arrays_to_numpy(fake_cupy):
    out = backend.to_device(FakeCupyArray([1, 2]), dtype=np.float64, xp=np)
    assert type(out) is np.ndarray and out.dtype == np.float64
    assert_array_equal(out, [1.0, 2.0])
    assert_array_equal(backend.to_device([FakeCupyArray(1.0), 2.0], xp=np), [1.0, 2.0])
    out = backend.to_device([FakeCupyArray(1), 2], dtype=np.float32, xp=np)  # a list holding them, to dtype
    assert type(out) is np.ndarray and out.dtype == np.float32
    assert_array_equal(out, [1.0, 2.0])


@pytest.mark.parametrize("value", [300, [-1], [1.5e300]])
def test_to_device_refuses_a_value_its_dtype_cannot_hold(value):
    # Converted straight to the dtype, as CuPy does, not through a wider array and a silent cast.
    with pytest.raises(OverflowError):
        backend.to_device(value, dtype=np.uint8 if value != [1.5e300] else np.int64, xp=np)


def test_the_cupy_backend_puts_arrays_on_the_current_gpu_and_names_it(fake_cupy):
    backend._current = "cupy"
    assert backend.backend_module() is fake_cupy
    assert isinstance(backend.to_device([1, 2], dtype=np.float32), FakeCupyArray)
    assert backend.device_name() == "cupy 0.fake on GPU 1: Fake GPU 1"


def test_default_rng_without_a_seed_draws_fresh_entropy():
    assert len({int(backend.default_rng().integers(2**62)) for _ in range(3)}) == 3


@pytest.mark.parametrize("copy", ["no", None, 2])
def test_to_numpy_refuses_a_copy_flag_that_is_no_flag(copy):
    with pytest.raises(ValueError, match=rf"^to_numpy: copy must be True or False, got {copy!r}"):
        to_numpy(np.ones(2), copy=copy)


def scale_into(x, c, out):
    """An element-wise chain for the ``fuse`` tests: ``out = c * x``, and ``x + out`` returned."""
    xp = get_array_module(x)
    xp.multiply(x, c, out=out)
    return x + out


def test_fuse_runs_the_function_as_written_on_numpy_arrays_without_importing_cupy(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # "import cupy" now raises ImportError
    fused = backend.fuse(scale_into)
    x, out = np.arange(4.0), np.zeros(4)
    assert_array_equal(fused(x, 2.0, out), 3 * x)
    assert_array_equal(out, 2 * x)
    assert fused.__name__ == "scale_into" and fused.__wrapped__ is scale_into


def test_fuse_hands_the_function_to_cupy_fuse_once_for_gpu_arrays(fake_cupy):
    compiled = []

    def cupy_fuse(function):
        compiled.append(function)
        return lambda *args: ("fused", function(*(a.get() if isinstance(a, FakeCupyArray) else a for a in args)))

    fake_cupy.fuse = cupy_fuse
    fused = backend.fuse(scale_into)
    assert compiled == []  # nothing is compiled before a GPU array comes
    out = np.zeros(3)
    for _ in range(2):
        kind, value = fused(FakeCupyArray(np.ones(3)), 5.0, out)
        assert kind == "fused"
        assert_array_equal(value, np.full(3, 6.0))
    assert compiled == [scale_into]


def test_fuse_compiles_calls_up_to_the_most_arguments_one_kernel_takes_and_runs_more_as_written(fake_cupy):
    compiled = []
    fake_cupy.fuse = lambda function: compiled.append(function) or (lambda *args: ("fused", len(args)))
    seen = []

    @backend.fuse
    def count(*arrays):
        seen.append(len(arrays))
        return "as written", len(arrays)

    most = backend._MAX_FUSED_ARGUMENTS
    assert count(*[FakeCupyArray(np.zeros(1))] * most) == ("fused", most)
    assert count(*[FakeCupyArray(np.zeros(1))] * (most + 1)) == ("as written", most + 1)
    assert seen == [most + 1] and len(compiled) == 1
