"""Feeding a network: mini-batches, shuffling and data augmentation.

``ArrayBatches`` turns a pair of arrays ``x`` (N, ...) and ``y`` (N,) into a
re-iterable of ``(x_batch, y_batch)`` pairs, the form ``Sequential.fit`` takes
besides plain arrays. Each pass over it is one epoch: it shuffles afresh,
reproducibly from its seed, and ends with the last, smaller batch rather than
dropping it. ``x`` may be a memory-mapped array far larger than memory: a batch
reads only its own rows.

``random_flip_rotate`` is the augmentation of the MURA paper: random
horizontal flips and rotations of up to 30 degrees. Augmentation shows the
network a slightly different version of every training image in each epoch,
so that it learns what the images show, not the images themselves. It is used
on training batches only; evaluation sees the images as they are.
"""
import numpy as np
from scipy import ndimage

from .backend import default_rng, get_array_module, stack_samples, to_device, to_numpy
from .losses import check_class_indices, check_sample_weight
from .utils import check_flag, finite_float, float_dtype, positive_int, seed_or_none


class ArrayBatches:
    """Mini-batches ``(x, y)`` of arrays, shuffled afresh in every epoch.

    ``x``: (N, ...) samples, any numeric dtype (a ``np.memmap`` works);
    ``y``: (N,) integer labels, or (N, K) target rows. Each iteration yields
    ``ceil(N / batch_size)`` pairs ``(xb, yb)``: ``xb`` of ``dtype`` (float32)
    (B, ...), ``yb`` int64 (B,) or (B, K) of ``dtype``, every sample exactly once, the last
    batch holding the remainder. With ``sample_weight`` (N,), a weight per
    sample for the loss, it yields triples ``(xb, yb, wb)``.

    A batch goes through three steps:

    1. its rows of ``x`` are read, converted to ``dtype`` and placed on the
       current backend (``minidl.set_backend``): on a GPU, the next two steps
       run there;
    2. ``augment(xb, rng)``, if given, changes them randomly (training only),
       drawing from the iteration's generator ``rng``;
    3. ``transform(xb)``, if given, maps them to what the network takes, e.g.
       normalisation and a channel axis.

    Iteration ``e`` (counting from 0) draws its order and its augmentations
    from a generator seeded with ``(seed, e)``, so a run is reproducible from
    ``seed`` yet every epoch differs; ``seed=None`` draws fresh entropy.
    ``epoch`` counts the iterations begun so far.

    Every argument is checked when the batches are made, not at the first
    batch: ``augment`` or ``transform`` that is neither None nor callable is
    a ``TypeError``; a ``batch_size`` that is not a positive int, a
    ``shuffle`` that is not True or False, a ``seed`` that is neither None
    nor a non-negative int, and a bad ``dtype`` or ``sample_weight`` are
    each a ``ValueError``.
    """

    def __init__(self, x, y, batch_size=32, shuffle=True, seed=None, augment=None, transform=None,
                 dtype=np.float32, sample_weight=None):
        x = stack_samples(x)  # rows of x are read by index arrays
        for name, array in (("x", x), ("y", y)):
            if not hasattr(array, "__len__"):
                raise TypeError(f"ArrayBatches: {name} must be an array, got {type(array).__name__}")
            if getattr(array, "ndim", None) == 0:
                raise ValueError(f"ArrayBatches: {name} must have the samples along its first axis, got one value")
        # Complex would lose its imaginary part, strings be parsed as numbers. (An array-like without
        # a NumPy dtype, a lazy loader say, is taken as it is: its batches are checked as they come.)
        if isinstance(getattr(x, "dtype", None), np.dtype) and x.dtype.kind not in "biuf":
            raise ValueError(f"ArrayBatches: x must hold real numbers, got dtype {x.dtype}")
        if len(x) != len(y):
            raise ValueError(f"ArrayBatches: {len(x)} samples in x but {len(y)} labels in y")
        batch_size = positive_int("ArrayBatches", "batch_size", batch_size)
        seed = seed_or_none("ArrayBatches", seed)
        self.x = x
        y = to_numpy(y)
        if y.ndim == 1:
            check_class_indices(y, "ArrayBatches")
        self.dtype = float_dtype("ArrayBatches", dtype)
        # Class indices as int64; rows of class probabilities (one-hot, smoothed) kept as floats.
        self.y = y.astype(np.int64) if y.ndim == 1 else y.astype(self.dtype)
        self.batch_size = batch_size
        self.shuffle = check_flag("ArrayBatches", "shuffle", shuffle)
        self.seed = seed
        for name, function in (("augment", augment), ("transform", transform)):
            if function is not None and not callable(function):
                raise TypeError(f"ArrayBatches: {name} must be None or a function, got {type(function).__name__}")
        self.augment = augment
        self.transform = transform
        if sample_weight is not None:  # checked in full now, not when a bad weight's batch comes up
            sample_weight = check_sample_weight(to_numpy(sample_weight), len(y),
                                                np.result_type(dtype, np.float32), "ArrayBatches")
        self.sample_weight = sample_weight
        self.epoch = 0

    def __len__(self):
        """The number of batches in one epoch, the last partial batch included."""
        return -(-len(self.y) // self.batch_size)

    def __iter__(self):
        rng = default_rng(None if self.seed is None else [self.seed, self.epoch])
        self.epoch += 1
        n = len(self.y)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        for start in range(0, n, self.batch_size):
            # The order inside a batch does not matter to the gradient, and sorted
            # rows read a memory-mapped file front to back.
            rows = np.sort(order[start : start + self.batch_size])
            # Moved as stored (MURA's uint8 is a quarter of float32's bytes), converted there.
            xb = self._on_device(self.x[rows]).astype(self.dtype, copy=False)
            if self.augment is not None:
                xb = self.augment(xb, rng)
            if self.transform is not None:
                xb = self.transform(xb)
            if self.sample_weight is None:
                yield xb, self.y[rows]
            else:
                yield xb, self.y[rows], self.sample_weight[rows]

    def _on_device(self, rows):
        """``rows`` of ``x`` on the current backend, where the batch's next steps run."""
        return to_device(rows)


def random_flip_rotate(x, rng, flip=True, max_degrees=30.0, fill=0.0):
    """Randomly mirror and rotate a batch of images; returns a new float array (float64 for float64 ``x``, else float32).

    ``x``: (B, H, W) or (B, H, W, C) images, NumPy or CuPy (the work is done
    where ``x`` lives: ``scipy.ndimage`` or ``cupyx.scipy.ndimage``). Each
    image is mirrored left-right with probability 1/2 when ``flip``, then
    rotated about its centre by an angle drawn uniformly from
    [-max_degrees, max_degrees], with linear interpolation. The rotated image
    keeps its size (corners are cut off) and the area rotated in from outside
    takes the value ``fill``, which should be the background (black, for an
    X-ray). ``rng`` is a ``numpy.random.Generator``; the same generator state
    gives the same result. ``max_degrees=0`` and ``flip=False`` return a copy
    of ``x``.
    """
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"random_flip_rotate: rng must be a numpy.random.Generator (np.random.default_rng(seed)), "
                        f"got {type(rng).__name__}")
    flip = check_flag("random_flip_rotate", "flip", flip)
    degrees = finite_float(max_degrees)
    if degrees is None or not 0.0 <= degrees <= 180.0:
        raise ValueError(f"random_flip_rotate: max_degrees must be a number in [0, 180], got {max_degrees!r}")
    fill_value = finite_float(fill)  # a Python float: cupyx caches its kernels by the fill value, and compiles it in
    if fill_value is None:
        raise ValueError(f"random_flip_rotate: fill must be a finite number, got {fill!r}")
    xp = get_array_module(x)
    x = xp.array(x, dtype=xp.float64 if x.dtype == xp.float64 else xp.float32)  # the batches' dtype, or float32
    if x.ndim not in (3, 4):
        raise ValueError(f"random_flip_rotate: expected images (B, H, W) or (B, H, W, C), got shape {x.shape}")
    if flip:
        mirrored = xp.asarray(rng.random(len(x)) < 0.5).reshape((-1,) + (1,) * (x.ndim - 1))
        x = xp.where(mirrored, x[:, :, ::-1], x)
    angles = rng.uniform(-degrees, degrees, size=len(x))
    if degrees == 0 or len(x) == 0:
        return x
    return _rotate(x, np.deg2rad(angles), fill_value)


def _rotate(x, radians, fill):
    """Turn each image ``x[b]`` by ``radians[b]`` about its centre, the whole batch in one resampling.

    Output pixel ``(b, i, j)`` takes the value of input ``(b, i', j')`` with
    ``(i', j')`` the point ``(i, j)`` turned back about the centre ``(ci, cj)``::

        i' = ci + cos(a) (i - ci) + sin(a) (j - cj)
        j' = cj - sin(a) (i - ci) + cos(a) (j - cj)

    interpolated linearly (``map_coordinates``, order 1), ``fill`` outside:
    what ``ndimage.rotate(image, degrees, axes=(1, 0), reshape=False, order=1)``
    gives image by image. One call for the batch keeps a GPU busy where 32
    calls of ``rotate`` would each cost more to launch than to run.
    """
    xp = get_array_module(x)
    b, h, w = x.shape[:3]
    ci, cj = (h - 1) / 2, (w - 1) / 2
    i = xp.arange(h, dtype=xp.float32)[None, :, None] - ci
    j = xp.arange(w, dtype=xp.float32)[None, None, :] - cj
    a = xp.asarray(radians, dtype=xp.float32)[:, None, None]
    cos, sin = xp.cos(a), xp.sin(a)
    source = [xp.arange(b, dtype=xp.float32)[:, None, None], ci + cos * i + sin * j, cj - sin * i + cos * j]
    if x.ndim == 4:
        source = [s[..., None] for s in source] + [xp.arange(x.shape[3], dtype=xp.float32)]
    coordinates = xp.stack(xp.broadcast_arrays(*source))
    return _ndimage_for(xp).map_coordinates(x, coordinates, order=1, mode="constant", cval=fill)


def _ndimage_for(xp):
    """``scipy.ndimage`` for NumPy arrays, ``cupyx.scipy.ndimage`` for CuPy arrays."""
    if xp is np:
        return ndimage
    from cupyx.scipy import ndimage as cupy_ndimage

    return cupy_ndimage
