"""Shared fixtures and the hypothesis profile for the fastxent test suite."""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

# Numba compiles a kernel on its first call, so a per-example deadline would flag the first
# example of every property test; modest example counts keep the default run quick.
settings.register_profile(
    "fastxent",
    deadline=None,
    max_examples=50,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "fastxent-thorough", parent=settings.get_profile("fastxent"), max_examples=1000
)
settings.load_profile("fastxent")


@pytest.fixture
def rng(request):
    """A NumPy Generator seeded from the test's node id: reproducible, different per test."""
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)
