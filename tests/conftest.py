"""Shared test configuration: hypothesis profiles, the GPU marker, switching the backend."""
import os

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
