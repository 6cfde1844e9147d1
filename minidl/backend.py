"""Where arrays live: NumPy on the CPU or CuPy on an NVIDIA GPU.

minidl follows Chainer's rule: code that computes never imports numpy or cupy
itself. It asks the data which module it belongs to,

    xp = get_array_module(x)
    y = xp.maximum(x, 0)

so the same line runs on the CPU and on the GPU. ``set_backend`` only decides
where *new* parameters and batches are created; ``to_device`` moves an array
to either device and ``to_numpy`` brings any array back. ``fuse`` lets a chain
of element-wise operations run as one GPU kernel, with the same code.
"""
import functools

import numpy

from .utils import check_flag

_BACKENDS = ("numpy", "cupy")
_current = "numpy"


def _import_cupy():
    """Return the cupy module, or raise ``RuntimeError`` saying why it cannot be used."""
    try:
        import cupy
    except ImportError as exc:
        raise RuntimeError(
            "set_backend('cupy'): CuPy is not installed. Install minidl with the GPU extra "
            "(pip install 'minidl[gpu]'), or a cupy-cudaXXx wheel matching your CUDA."
        ) from exc
    if not cupy.is_available():
        raise RuntimeError(
            "set_backend('cupy'): CuPy is installed but no usable CUDA GPU was found "
            "(cupy.is_available() is False). Use set_backend('numpy') to run on the CPU."
        )
    return cupy


def set_backend(name):
    """Choose where new parameters and batches are created: ``"numpy"`` or ``"cupy"``.

    Asking for ``"cupy"`` without CuPy or without a GPU raises ``RuntimeError``;
    minidl never falls back to the CPU silently.
    """
    global _current
    if name not in _BACKENDS:
        raise ValueError(f"set_backend: unknown backend {name!r}; choose one of {_BACKENDS}")
    if name == "cupy":
        _import_cupy()
    _current = name


def get_backend():
    """The name of the current backend, ``"numpy"`` or ``"cupy"``."""
    return _current


def backend_module():
    """The array module of the current backend (``numpy`` or ``cupy``)."""
    return _import_cupy() if _current == "cupy" else numpy


def get_array_module(*arrays):
    """The array module (``numpy`` or ``cupy``) that ``arrays`` belong to.

    Returns ``cupy`` if any argument is a CuPy array, else ``numpy``; it works
    without CuPy installed.
    """
    for a in arrays:
        if _is_cupy(a):
            import cupy

            return cupy
    return numpy


def _is_cupy(x):
    return type(x).__module__.startswith("cupy")


#: The most arguments ``fuse`` hands to one CuPy kernel (see ``fuse``).
_MAX_FUSED_ARGUMENTS = 32


def fuse(function):
    """Decorator: run ``function`` as written on NumPy arrays, as one CuPy kernel on GPU arrays.

    Chainer's ``cuda.fuse``. On the GPU every whole-array operation is a kernel
    that reads its operands from memory and writes its result back, so a chain
    of them (Adam's update is twelve) costs one pass over memory each.
    ``cupy.fuse`` traces the same function once per dtype and rank of its
    arguments and compiles the chain into a single kernel that reads each
    array once and keeps the intermediate results in registers (an array
    argument that the function writes, with ``out=`` or in place, is still
    written to memory). On NumPy arrays the function simply runs, one
    operation after the other.

    ``function`` must be element-wise: ufuncs only (``xp.maximum``, operators,
    ``out=`` and in-place updates of its array arguments), no indexing or
    reductions, and no Python branching on array values; its other arguments
    are Python or NumPy scalars, and all are passed by position, as
    ``cupy.fuse`` takes them.

    A call with more than ``_MAX_FUSED_ARGUMENTS`` (32) arguments, such as max
    pooling in training over a window of more than 29 entries (a slab each),
    runs one operation at a time on the GPU too: before CUDA 12.1 a kernel's
    arguments must fit in 4 KB, and an array takes up to about 100 bytes.
    """
    fused = None

    @functools.wraps(function)
    def run(*args):
        nonlocal fused
        if get_array_module(*args) is numpy or len(args) > _MAX_FUSED_ARGUMENTS:
            return function(*args)
        if fused is None:
            import cupy

            fused = cupy.fuse(function)
        return fused(*args)

    return run


def to_numpy(x, copy=False):
    """Return ``x`` as a NumPy array, copying it from the GPU if it lives there.

    ``x`` may also be a list or tuple holding CuPy arrays (one value per batch, say).
    With ``copy=True`` the result never shares memory with ``x``: a NumPy array
    is copied, while an array from the GPU is a new one already and is not
    copied twice.
    """
    if copy is not True and copy is not False:  # checked only then: to_numpy runs many times a step
        copy = check_flag("to_numpy", "copy", copy)
    if _is_cupy(x):
        return x.get()
    try:
        return numpy.array(x, copy=True) if copy else numpy.asarray(x)
    except TypeError:  # NumPy refuses to convert the CuPy arrays in a list itself
        if not isinstance(x, (list, tuple)):
            raise
        return numpy.asarray([to_numpy(v) for v in x])


def stack_samples(value):
    """A list or tuple of N samples (or labels) of shape S as one (N, *S) array: CuPy's
    when they are CuPy arrays, which NumPy cannot take in, else NumPy's; anything
    else as it is."""
    if not isinstance(value, (list, tuple)):
        return value
    xp = get_array_module(*value)
    return numpy.asarray(value) if xp is numpy else xp.stack(value)


def to_device(x, dtype=None, xp=None):
    """Return ``x`` as an array of ``xp`` (``numpy`` or ``cupy``; default: the current backend's).

    It is copied from the GPU to the host or back if it lives on the other
    device, and not copied at all when it is already there in ``dtype``.
    """
    xp = backend_module() if xp is None else xp
    if xp is not numpy:
        return xp.asarray(x, dtype=dtype)
    try:  # straight to dtype, which refuses what it cannot hold (300 as uint8), as CuPy does
        return numpy.asarray(x.get() if _is_cupy(x) else x, dtype=dtype)
    except TypeError:  # a list holding CuPy arrays
        return numpy.asarray(to_numpy(x), dtype=dtype)


def device_name():
    """A one-line description of where the current backend computes, for logs."""
    if _current == "cupy":
        cupy = _import_cupy()
        device = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(device.id)
        return f"cupy {cupy.__version__} on GPU {device.id}: {props['name'].decode()}"
    return f"numpy {numpy.__version__} on the CPU"


def default_rng(seed=None):
    """A NumPy random generator; every random draw in minidl goes through one.

    ``seed`` may be ``None`` (fresh entropy), an int, or a generator (returned as is).
    Parameters are always drawn on the CPU with NumPy and then moved, so the same
    seed gives the same initial weights on the CPU and on the GPU.
    """
    if isinstance(seed, numpy.random.Generator):
        return seed
    return numpy.random.default_rng(seed)
