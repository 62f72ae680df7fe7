"""Fixtures of the pytest-benchmark suites in ``bench/``.

These suites are not part of the default test run (``testpaths = ["tests"]``) and the
project's ``addopts`` pass ``--benchmark-disable``, so run them with::

    python -m pytest bench --benchmark-enable                      # full shapes (minutes)
    FASTXENT_BENCH_SMALL=1 python -m pytest bench --benchmark-enable   # rows / 100, seconds

Pick a shape or an implementation with ``-k``, e.g. ``-k "1000000x100 and torch"``. Numba and
torch both get ``FASTXENT_BENCH_THREADS`` threads (default 2). ``python -m pytest
bench/test_compare.py`` checks ``compare.py``'s own logic (no timing) in seconds.
"""

from __future__ import annotations

import gc
import os

import pytest
from _impls import ShapeData, configure_threads, shape_id, shapes, small_mode


def pytest_report_header(config: pytest.Config) -> str:
    mode = "small (FASTXENT_BENCH_SMALL=1: rows / 100)" if small_mode() else "full"
    return f"fastxent bench: {mode} shapes {', '.join(shape_id(s) for s in shapes())}"


@pytest.fixture(scope="session", autouse=True)
def n_threads() -> int:
    return configure_threads(int(os.environ.get("FASTXENT_BENCH_THREADS", "2")))


@pytest.fixture(scope="session", params=shapes(), ids=shape_id)
def shape_data(request: pytest.FixtureRequest):
    """The inputs of one shape. Session-scoped and parametrised, so pytest runs every test of
    a shape together and tears the arrays down before building the next shape."""
    data = ShapeData(*request.param)
    yield data
    data.clear()
    gc.collect()
