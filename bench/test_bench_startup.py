"""First-call cost in fresh processes: imports, cold compile, warm-cache first call.

Not collected by the default test run; enable benchmarks explicitly::

    python -m pytest bench/test_bench_startup.py --benchmark-enable

Every round starts a new interpreter (see ``_startup.py``). The benchmark time is that
process's whole wall time; the figure that matters, the seconds beyond ``import numba``
(``import fastxent`` plus the first ``cross_entropy`` call), is in ``extra_info``
(``--benchmark-json`` keeps it; ``compare.py`` prints it), with Numba's own first-use set-up
(``numba_setup_s``, part of it) apart. Cold rounds each get an empty
``NUMBA_CACHE_DIR``; warm rounds share one that an untimed process filled first.
"""

from __future__ import annotations

from statistics import median

import pytest
from _impls import PATHS
from _startup import first_call, import_seconds


def _record(benchmark, runs: list[dict[str, float]]) -> None:
    benchmark.extra_info.update(
        beyond_import_numba_s=median(r["beyond_numba"] for r in runs),
        import_numba_s=median(r["import_numba"] for r in runs),
        numba_setup_s=median(r["numba_setup"] for r in runs),
        import_fastxent_s=median(r["import_fastxent"] for r in runs),
        first_call_s=median(r["first_call"] for r in runs),
    )


@pytest.mark.parametrize("module", ["numba", "fastxent"])
def test_import(benchmark, module):
    seconds: list[float] = []
    benchmark.group = "startup: import"
    benchmark.pedantic(lambda: seconds.append(import_seconds(module)), rounds=3, iterations=1)
    benchmark.extra_info["import_s"] = median(seconds)


@pytest.mark.parametrize("path", PATHS)
def test_cold_first_call(benchmark, tmp_path_factory, path):
    runs: list[dict[str, float]] = []

    def empty_cache():
        return (str(tmp_path_factory.mktemp("numba-cache")),), {}

    benchmark.group = "startup: cold compile (empty cache)"
    benchmark.pedantic(
        lambda cache: runs.append(first_call(path, cache)),
        setup=empty_cache,
        rounds=1,
        iterations=1,
    )
    _record(benchmark, runs)


@pytest.mark.parametrize("path", PATHS)
def test_warm_first_call(benchmark, tmp_path, path):
    first_call(path, str(tmp_path))  # fills the cache
    runs: list[dict[str, float]] = []
    benchmark.group = "startup: first call, warm cache"
    benchmark.pedantic(lambda: runs.append(first_call(path, str(tmp_path))), rounds=3, iterations=1)
    _record(benchmark, runs)
