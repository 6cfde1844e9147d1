"""Shared test helpers for the layers: hypothesis strategies for layer configurations,
random inputs, and running one forward/backward pass.

Shapes are kept small (spatial <= 9, channels <= 3, batch <= 3) so that each
finite-difference gradient check takes milliseconds. Each ``*_cases`` strategy
draws a ``Case``: the layer's constructor arguments and an NHWC (or (N, D))
input shape that the layer can take.
"""
from dataclasses import dataclass, field

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

from minidl.layers import AvgPool2D, Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Softmax

MAX_SPATIAL = 9
MAX_CHANNELS = 3
MAX_BATCH = 3


def examples(n):
    """``settings`` running ``n`` examples under the default profile, proportionally more
    under ``HYPOTHESIS_PROFILE=thorough`` (whose budget is 12x the default's 25)."""
    return settings(max_examples=max(1, n * settings.default.max_examples // 25))


@dataclass
class Case:
    """One layer configuration: ``make()`` builds a fresh layer for an input of ``shape``."""

    cls: type
    kwargs: dict
    shape: tuple
    training: bool = False
    extra: dict = field(default_factory=dict)

    def make(self, **overrides):
        return self.cls(**{**self.kwargs, **overrides})


def random_input(shape, seed, dtype=np.float64):
    """Standard normal values of ``shape``: continuous, so no ties in a pooling window
    and (almost surely) no input exactly at a ReLU threshold."""
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def forward_backward(layer, x, dy=None, *, training=False, seed=1):
    """Run ``layer`` forward on ``x`` and backward on ``dy`` (random if None).

    Returns ``(y, dy, dx, grads)`` with ``grads`` a copy of ``layer.grads``.
    """
    y = layer.forward(x, training=training)
    if dy is None:
        dy = random_input(y.shape, seed, dtype=y.dtype)
    dx = layer.backward(dy)
    return y, dy, dx, {k: v.copy() for k, v in layer.grads.items()}


seeds = st.integers(0, 2**32 - 1)
batches = st.integers(1, MAX_BATCH)
channels = st.integers(1, MAX_CHANNELS)


def _int_or_pair(draw, h, w):
    """``h`` (an int) when the pair is square and a coin says so, else the pair:
    both spellings of ``kernel_size``/``pool_size``/``strides`` get exercised."""
    if h == w and draw(st.booleans()):
        return h
    return (h, w)


@st.composite
def dense_cases(draw):
    shape = (draw(batches), draw(st.integers(1, 6)))
    return Case(Dense, {"units": draw(st.integers(1, 5))}, shape)


@st.composite
def conv_cases(draw, max_stride=2):
    """Kernels 1-5 (square or not), strides 1..max_stride (square or not), both paddings,
    odd and non-square inputs; with "valid" the input is at least as large as the kernel."""
    kh, kw = draw(st.integers(1, 5)), draw(st.integers(1, 5))
    sh, sw = draw(st.integers(1, max_stride)), draw(st.integers(1, max_stride))
    padding = draw(st.sampled_from(["valid", "same"]))
    min_h, min_w = (kh, kw) if padding == "valid" else (1, 1)
    shape = (
        draw(batches),
        draw(st.integers(min_h, MAX_SPATIAL)),
        draw(st.integers(min_w, MAX_SPATIAL)),
        draw(channels),
    )
    kwargs = {
        "filters": draw(st.integers(1, 3)),
        "kernel_size": _int_or_pair(draw, kh, kw),
        "strides": _int_or_pair(draw, sh, sw),
        "padding": padding,
    }
    return Case(Conv2D, kwargs, shape)


@st.composite
def pool_cases(draw, cls=MaxPool2D):
    """Pool sizes 1-3 (square or not), strides None (= pool size), smaller (overlapping
    windows) or larger (skipped pixels); input sizes need not be divisible by the pool."""
    ph, pw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if draw(st.booleans()):
        strides = None
    else:
        strides = _int_or_pair(draw, draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    shape = (
        draw(batches),
        draw(st.integers(ph, MAX_SPATIAL)),
        draw(st.integers(pw, MAX_SPATIAL)),
        draw(channels),
    )
    return Case(cls, {"pool_size": _int_or_pair(draw, ph, pw), "strides": strides}, shape)


@st.composite
def any_shapes(draw, min_rank=2, max_rank=4):
    """A batch-first shape of rank 2-4 with small dimensions."""
    rank = draw(st.integers(min_rank, max_rank))
    return (draw(batches),) + tuple(draw(st.integers(1, 5)) for _ in range(rank - 1))


@st.composite
def relu_cases(draw):
    threshold = draw(st.sampled_from([0.0, -0.5, 0.3]) | st.floats(-1, 1, allow_nan=False))
    return Case(ReLU, {"threshold": threshold}, draw(any_shapes()))


@st.composite
def softmax_cases(draw):
    return Case(Softmax, {}, (draw(batches), draw(st.integers(1, 6))))


@st.composite
def flatten_cases(draw):
    return Case(Flatten, {}, draw(any_shapes()))


@st.composite
def dropout_cases(draw):
    rate = draw(st.sampled_from([0.0, 0.5]) | st.floats(0.05, 0.9))
    return Case(Dropout, {"rate": rate}, draw(any_shapes()), training=True)


#: A few fixed, representative configurations of every layer (for the GPU parity tests).
FIXED_CASES = {
    "dense": Case(Dense, {"units": 4}, (3, 5)),
    "conv_valid": Case(Conv2D, {"filters": 3, "kernel_size": 3}, (2, 7, 6, 2)),
    "conv_same": Case(Conv2D, {"filters": 3, "kernel_size": 3, "padding": "same"}, (2, 6, 5, 2)),
    "conv_same_stride2": Case(Conv2D, {"filters": 2, "kernel_size": (4, 3), "strides": 2, "padding": "same"}, (2, 7, 8, 3)),
    "conv_nonsquare_stride": Case(Conv2D, {"filters": 2, "kernel_size": (2, 5), "strides": (2, 1)}, (1, 9, 6, 1)),
    "maxpool_tiled": Case(MaxPool2D, {"pool_size": 2}, (2, 6, 8, 3)),
    "maxpool_overlap": Case(MaxPool2D, {"pool_size": 3, "strides": 2}, (2, 7, 9, 2)),
    "maxpool_remainder": Case(MaxPool2D, {"pool_size": (2, 3)}, (1, 5, 7, 2)),
    "avgpool_tiled": Case(AvgPool2D, {"pool_size": 2}, (2, 6, 8, 3)),
    "avgpool_overlap": Case(AvgPool2D, {"pool_size": (3, 2), "strides": (1, 2)}, (2, 7, 9, 2)),
    "relu": Case(ReLU, {}, (2, 5, 4, 3)),
    "relu_threshold": Case(ReLU, {"threshold": 0.25}, (3, 7)),
    "softmax": Case(Softmax, {}, (4, 5)),
    "flatten": Case(Flatten, {}, (2, 3, 4, 2)),
}


def seeded_layer(case, x, seed):
    """``case.make()`` built for ``x`` from a seeded generator, with random (not zero) biases
    so that a comparison also exercises the bias."""
    layer = case.make()
    layer.rng = np.random.default_rng(seed)
    layer.check_input(x)
    if "b" in layer.params:
        layer.params["b"][...] = random_input(layer.params["b"].shape, seed + 7, x.dtype)
    return layer


def load_torch_reference():
    """The ``torch_reference`` helper module; skips the calling test when PyTorch is absent."""
    import pytest

    pytest.importorskip("torch")
    import torch_reference

    return torch_reference
