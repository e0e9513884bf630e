"""Ray, started once per test session (2 CPUs, no dashboard) and shut down at the end."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="Ray is not installed (extra [scale])")
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             logging_level=logging.WARNING, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
