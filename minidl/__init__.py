"""minidl: a deep-learning library written from scratch on NumPy, running unchanged on CuPy.

Every layer writes its own forward and backward pass; there is no autograd.
"""
from . import gradcheck, initializers, metrics
from ._version import __version__
from .backend import get_array_module, set_backend, to_numpy
from .model import Sequential

__all__ = ["Sequential", "set_backend", "get_array_module", "to_numpy", "gradcheck", "initializers", "metrics",
           "__version__"]
