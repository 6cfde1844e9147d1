"""Weight initialisers.

Each initialiser is a function ``init(shape, rng) -> numpy.ndarray`` (float64;
the layer casts it) drawing from a seeded ``numpy.random.Generator``. Weights are
drawn on the CPU so that the same seed gives the same network on CPU and GPU.

Fans follow Keras: for a Dense kernel of shape ``(in, units)``,
``fan_in = in`` and ``fan_out = units``; for a Conv2D kernel of shape
``(kh, kw, in_channels, filters)`` the receptive field ``kh * kw`` multiplies
both, ``fan_in = kh*kw*in_channels`` and ``fan_out = kh*kw*filters``.
"""
import math

import numpy as np


def fans(shape):
    """``(fan_in, fan_out)`` of a kernel of ``shape``, counting the receptive field."""
    if len(shape) < 1:
        raise ValueError(f"fans: a kernel needs at least one axis, got shape {shape}")
    if len(shape) == 1:
        return shape[0], shape[0]
    receptive_field = math.prod(shape[:-2])
    return shape[-2] * receptive_field, shape[-1] * receptive_field


def glorot_uniform(shape, rng):
    """Glorot & Bengio (2010) as Keras implements it (thesis section 2.3.5).

    ``W ~ U[-limit, limit]`` with ``limit = sqrt(6 / (fan_in + fan_out))``,
    which keeps the variance of activations and of gradients roughly equal
    across layers: ``Var(W) = limit**2 / 3 = 2 / (fan_in + fan_out)``.
    """
    fan_in, fan_out = fans(shape)
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape)


def uniform_fan_in(shape, rng):
    """The thesis's first statement of the rule: ``W ~ U[-1/sqrt(n), 1/sqrt(n)]``, n = fan_in.

    This is the heuristic Glorot & Bengio start from (their equation 1), not
    what Keras's ``glorot_uniform`` computes; kept for the thesis's comparison.
    """
    fan_in, _ = fans(shape)
    limit = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-limit, limit, size=shape)


#: The standard deviation of N(0, 1) truncated to [-2, 2]: sqrt(1 - 4 phi(2) / (Phi(2) - Phi(-2))).
TRUNCATED_NORMAL_STD = 0.87962566103423978


def he_normal(shape, rng):
    """He et al. (2015): a truncated normal with variance ``2 / fan_in`` after truncation.

    Keras's ``he_normal`` draws from a normal with standard deviation
    ``sqrt(2 / fan_in) / TRUNCATED_NORMAL_STD`` (``0.8796...``) and redraws values
    beyond two of those standard deviations (the correction makes the truncated
    distribution's variance ``2 / fan_in``); minidl does the same.
    """
    fan_in, _ = fans(shape)
    stddev = math.sqrt(2.0 / fan_in) / TRUNCATED_NORMAL_STD
    values = rng.standard_normal(size=shape)
    outside = np.abs(values) > 2.0
    while outside.any():
        values[outside] = rng.standard_normal(size=int(outside.sum()))
        outside = np.abs(values) > 2.0
    return values * stddev


def zeros(shape, rng=None):
    """All zeros (biases)."""
    return np.zeros(shape)


_BY_NAME = {f.__name__: f for f in (glorot_uniform, uniform_fan_in, he_normal, zeros)}


def get(initializer, caller="initializers.get"):
    """Look up an initialiser by name, or return a callable unchanged.

    ``ValueError`` for an unknown name, ``TypeError`` for what is neither a
    name nor a function, each starting with ``caller``.
    """
    if callable(initializer):
        return initializer
    if not isinstance(initializer, str):
        raise TypeError(f"{caller}: an initializer is a name (str) or a function, got {initializer!r}")
    try:
        return _BY_NAME[initializer]
    except KeyError:
        raise ValueError(
            f"{caller}: unknown initializer {initializer!r}; choose one of {sorted(_BY_NAME)} or pass a function"
        ) from None


def name_of(initializer):
    """The registered name of ``initializer`` (for saving an architecture)."""
    for name, f in _BY_NAME.items():
        if f is initializer or name == initializer:
            return name
    raise ValueError(
        f"initializer {initializer!r} is not one of minidl's named initialisers and cannot be saved"
    )
