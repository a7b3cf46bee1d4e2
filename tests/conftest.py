"""Shared test fixtures: tiny model configs (2 layers, width 32) so compiles stay fast on CPU."""

from __future__ import annotations

import os

# Tests see 8 fake CPU devices so the sharded paths run on CPU (must precede importing jax).
# Backend optimisation level 0 halves XLA:CPU compile time of the tiny test models; the tests
# check properties, not speed.
os.environ.setdefault(
    "XLA_FLAGS", "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest  # noqa: E402
from tiny import tiny_model_config  # noqa: E402


@pytest.fixture(scope="session")
def tiny_config():
    return tiny_model_config()
