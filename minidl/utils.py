"""Small helpers shared across minidl: argument checks, atomic file writes."""
import contextlib
import errno
import math
import numbers
import os
import secrets
import stat
import sys

import numpy


def is_int(value):
    """An integer (Python or NumPy), but not a bool: 2.5, "2" and True are not counts or sizes."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def positive_int(owner, name, value):
    """``value`` as an int if it is an integer of at least 1 (not a bool, not 2.0), else a ``ValueError``."""
    if not is_int(value) or value < 1:
        raise ValueError(f"{owner}: {name} must be a positive integer, got {value!r}")
    return int(value)


def seed_or_none(owner, seed):
    """``seed`` as an int, or None, else a ``ValueError``: a generator's seed is None or a non-negative int."""
    if seed is not None and (not is_int(seed) or seed < 0):
        raise ValueError(f"{owner}: seed must be None or a non-negative int, got {seed!r}")
    return None if seed is None else int(seed)


def stacklevel_outside(module_name):
    """The ``stacklevel`` at which a warning that code of ``module_name`` raises points at the
    first caller outside that module, however deep inside it the warning is raised (through
    its context managers too: ``contextlib``'s frames are skipped).

    Call it in the ``warnings.warn`` call itself: ``stacklevel=stacklevel_outside(__name__)``.
    """
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__") in (module_name, "contextlib"):
        frame, level = frame.f_back, level + 1
    return level


def check_flag(owner, name, value):
    """``value`` as a bool if it is one (Python's, NumPy's, 0 or 1, or a 0-d array of them, NumPy's or CuPy's),
    else a ``ValueError``.

    ``"no"`` is not a flag, although ``bool("no")`` is True.
    """
    item = value.item() if getattr(value, "ndim", None) == 0 and hasattr(value, "item") else value
    if isinstance(item, (bool, numpy.bool_)) or (is_int(item) and item in (0, 1)):
        return bool(item)
    raise ValueError(f"{owner}: {name} must be True or False, got {value!r}")


def check_choice(owner, name, value, choices):
    """``value`` as an int if it is an integer among ``choices`` (``verbose`` in ``(0, 1, 2)``, say), else a ``ValueError``."""
    if not (isinstance(value, numbers.Integral) and value in choices):
        raise ValueError(f"{owner}: {name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return int(value)


#: The dtypes minidl computes in: float32, and float64 for gradient checks (see ``float_dtype``).
FLOAT_DTYPES = (numpy.dtype(numpy.float32), numpy.dtype(numpy.float64))


def float_dtype(owner, dtype):
    """``dtype`` as a NumPy dtype if it is float32 or float64, else a ``ValueError`` naming ``owner``.

    Not float16: without loss scaling, what falls below its 6e-8 becomes 0,
    small gradients and Adam's bias-corrected ``eps`` among them.
    """
    try:
        as_dtype = None if dtype is None else numpy.dtype(dtype)  # NumPy would read None as float64
    except TypeError:  # "foo", or an object that is no dtype
        as_dtype = None
    if as_dtype is None or as_dtype not in FLOAT_DTYPES:  # (None == float64 in NumPy's eyes)
        shown = repr(dtype) if as_dtype is None else str(as_dtype)
        raise ValueError(f"{owner}: dtype must be float32 or float64, got {shown}")
    return as_dtype


def file_path(owner, name, path):
    """``path`` (a ``str`` or ``os.PathLike``) as a ``str``, or an error naming ``owner``: a folder is not a file.

    ``TypeError`` for anything else than a path; ``ValueError`` for an empty one or a folder.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{owner}: {name} must be a file path (str or os.PathLike), got {path!r}")
    path = str(os.fspath(path))
    # "new/", "new/." and "new/..": folders, whether or not they exist yet.
    if not path or os.path.isdir(path) or os.path.basename(path) in ("", ".", ".."):
        raise ValueError(f"{owner}: {name} {path!r} is {'a folder' if path else 'empty'}; give the path of a file")
    return path


def finite_float(value):
    """``value`` as a float if it is one finite real number (Python, NumPy or a 0-d array), else None.

    Bools and strings are not numbers here: ``True``, ``"0.5"`` and their arrays give None.
    """
    kind = getattr(getattr(value, "dtype", None), "kind", "f")  # a NumPy or CuPy number's, else "f"
    if isinstance(value, (bool, str, bytes)) or kind not in "iuf" or getattr(value, "ndim", 0) != 0:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def sample_shape(shape, who):
    """``shape``, the shape of one sample (no batch axis), as a tuple of positive ints.

    Else a ``ValueError`` whose message starts with ``who``, e.g. ``"Sequential: input_shape"``.
    """
    if not isinstance(shape, (tuple, list)) or not all(is_int(n) and n > 0 for n in shape):
        raise ValueError(f"{who} must be a tuple of positive ints, the shape of one sample without the batch "
                         f"axis, e.g. (64, 64, 1) or (5,); got {shape!r}")
    return tuple(int(n) for n in shape)


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; on success rename it onto ``path``.

    The rename (``os.replace``) is atomic on POSIX and Windows, so readers see
    either the old file or the complete new one, never a half-written file.
    If the block raises, the temporary file is removed and ``path`` is untouched.
    A file replaced keeps its permissions, and a symbolic link to a file keeps
    pointing at it, the file replaced (a loop of links is an ``OSError``).

        with atomic_path("model.npz") as tmp:
            write_everything_to(tmp)
    """
    path = os.fspath(path)
    if os.path.islink(path):  # renaming onto the link would replace it, leaving its target as it was
        target = os.path.realpath(path)
        if os.path.islink(target):  # realpath gives up on a loop of links and returns one of them
            raise OSError(errno.ELOOP, f"cannot write through {path}: {os.strerror(errno.ELOOP)}", path)
        path = target
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(path)
    # Not tempfile.mkstemp: it makes the file private (mode 0600), and the rename
    # would pass that on to ``path``. Mode 0666 is filtered by the umask, as for open().
    while True:
        tmp = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        if os.path.exists(path):  # only now: the block may have to write into tmp, and path may be read-only
            os.chmod(tmp, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
