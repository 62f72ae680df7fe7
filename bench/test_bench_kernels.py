"""In-memory throughput: loss path x shape x implementation, with pytest-benchmark.

Not collected by the default test run (``testpaths = ["tests"]``), and the project's
``addopts`` disable benchmarks, so enable them explicitly::

    python -m pytest bench/test_bench_kernels.py --benchmark-enable
    FASTXENT_BENCH_SMALL=1 python -m pytest bench/test_bench_kernels.py --benchmark-enable

Each path (``probs+labels``, ``logits+labels``, ``soft+probs``, ``soft+logits``) runs
fastxent beside the baselines a user would otherwise use: the NumPy expression, torch's
``F.cross_entropy`` (logits, index or probability targets), sklearn's ``log_loss``
(probabilities and labels, up to 1e8 elements), a parallel Numba sum of the same float32
arrays (the memory-read ceiling) and, for logits, the same sum of fastxent's float32 exp
of every entry (the exp-throughput ceiling). The shapes are 4,000,000x2, 1,000,000x100,
100,000x1,000 and 10,000x32,000 float32 (rows / 100 with ``FASTXENT_BENCH_SMALL=1``);
their data is made once per shape from a fixed seed and freed before the next shape.
Benchmarks are grouped by path and shape; every call is warmed up (JIT compile) once
before timing. For one table of ratios, targets and machine facts use
``python bench/compare.py`` instead.
"""

from __future__ import annotations

import math

import pytest
from _impls import OURS, PATHS, impl_named, impls_for, relative_error, shape_id

CASES = [
    pytest.param(path, impl.name, id=f"{path}-{impl.name}")
    for path in PATHS
    for impl in impls_for(path)
]


@pytest.mark.parametrize(("path", "impl_name"), CASES)
def test_kernel(benchmark, shape_data, path, impl_name):
    impl = impl_named(impl_name)
    if impl.module is not None:
        pytest.importorskip(impl.module)
    reason = impl.skip_reason(shape_data.shape)
    if reason is not None:
        pytest.skip(reason)
    fn = impl.make(path, shape_data)
    warm = fn()  # compiles Numba kernels, faults in the pages of the inputs
    benchmark.group = f"{path} {shape_id(shape_data.shape)}"
    benchmark.extra_info.update(
        path=path,
        implementation=impl.note,
        n_rows=shape_data.n_rows,
        n_classes=shape_data.n_classes,
        pred_bytes=shape_data.pred_bytes,
    )
    got = benchmark(fn)
    assert got == pytest.approx(warm, rel=1e-12)
    if impl_name != OURS and not impl.ceiling:
        # A baseline that disagrees with fastxent is measuring something else.
        ours = impl_named(OURS).make(path, shape_data)()
        assert math.isfinite(got)
        assert relative_error(got, ours) < 1e-4
