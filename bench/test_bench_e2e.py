"""End to end: ``fastxent.score`` over files vs pyarrow alone reading the same columns.

Not collected by the default test run; enable benchmarks explicitly::

    python -m pytest bench/test_bench_e2e.py --benchmark-enable
    FASTXENT_BENCH_SMALL=1 python -m pytest bench/test_bench_e2e.py --benchmark-enable

A session temporary directory gets 2,000,000 x 100 float32 logits (800 MB of predictions;
rows / 100 with ``FASTXENT_BENCH_SMALL=1``) written by ``fastxent.generate.generate`` as
Parquet uncompressed, Parquet zstd and Arrow IPC. ``fastxent.score(path, pred="pred",
label="label", pred_kind="logits")`` is timed beside pyarrow alone: ``ParquetFile(path,
pre_buffer=False, buffer_size=1 << 20).iter_batches(...)`` over the same columns and batch
rows (or the memory-mapped IPC file), consuming every batch and taking zero-copy views of
the child values. The files sit in the page cache after the warm-up call, so this measures
decoding and scoring, not the disk. Everything is skipped while ``fastxent.score`` does not
exist.
"""

from __future__ import annotations

import pytest
from _e2e import FILES, e2e_shape, ours, pyarrow_alone, score_missing, write_files
from _impls import shape_id


@pytest.fixture(scope="session")
def e2e_files(tmp_path_factory):
    reason = score_missing()
    if reason is not None:  # before writing gigabytes of files
        pytest.skip(reason)
    files = write_files(tmp_path_factory.mktemp("e2e"), e2e_shape())
    yield files
    for path in files.values():
        path.unlink(missing_ok=True)


@pytest.mark.parametrize("impl", ["fastxent", "pyarrow"])
@pytest.mark.parametrize("name", list(FILES))
def test_e2e(benchmark, e2e_files, name, impl):
    n_rows, n_classes = shape = e2e_shape()
    path = e2e_files[name]
    fn = ours(path) if impl == "fastxent" else pyarrow_alone(name, path, n_classes)
    fn()  # JIT compile, page cache
    benchmark.group = f"e2e {name} {shape_id(shape)}"
    benchmark.extra_info.update(
        file=name,
        file_bytes=path.stat().st_size,
        pred_bytes=n_rows * n_classes * 4,
    )
    benchmark(fn)
