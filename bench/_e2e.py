"""End-to-end scoring of files, and pyarrow alone reading the same columns the same way.

Shared by ``test_bench_e2e.py`` and ``compare.py``. The files are logits written by
:func:`fastxent.generate.generate`: Parquet (``fixed_size_list<float32>``) uncompressed and
zstd, and an Arrow IPC file. The pyarrow-alone readers use the reader settings fastxent's
own Parquet reader uses (no pre-buffering, a 1 MiB read buffer, threads, the same batch
rows) and do nothing with the batches but take zero-copy NumPy views of the child values,
so ``ours / pyarrow`` is what scoring adds on top of decoding.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
from _impls import small_mode

import fastxent
from fastxent.arrow import default_batch_rows
from fastxent.generate import generate

FULL_SHAPE = (2_000_000, 100)  # 800 MB of float32 predictions
SMALL_DIVISOR = 100
COLUMNS = ["pred", "label"]
# The files: name -> (file name, compression). The order is the order of the report.
FILES = {
    "parquet-plain": ("logits-plain.parquet", "none"),
    "parquet-zstd": ("logits-zstd.parquet", "zstd"),
    "arrow-ipc": ("logits.arrow", "none"),
}
SEED = 7


def e2e_shape(small: bool | None = None) -> tuple[int, int]:
    small = small_mode() if small is None else small
    n, c = FULL_SHAPE
    return (max(1, n // SMALL_DIVISOR), c) if small else (n, c)


def score_missing() -> str | None:
    """Why the end-to-end benchmark cannot run, or None."""
    if not callable(getattr(fastxent, "score", None)):
        return (
            "fastxent.score does not exist yet (fastxent/scoring.py is being written); "
            "the end-to-end benchmark needs it"
        )
    return None


def write_files(directory: Path, shape: tuple[int, int]) -> dict[str, Path]:
    """Write the three files of logits (``rows x classes``) into ``directory``."""
    rows, classes = shape
    out = {}
    for name, (file_name, compression) in FILES.items():
        path = Path(directory) / file_name
        generate(
            path,
            rows=rows,
            classes=classes,
            kind="logits",
            seed=SEED,
            compression=compression,
            overwrite=True,
        )
        out[name] = path
    return out


def ours(path: Path) -> Callable[[], object]:
    return lambda: fastxent.score(str(path), pred="pred", label="label", pred_kind="logits")


def _touch(batch: pa.RecordBatch) -> None:
    # Zero-copy views only: fails loudly rather than copying, reads no values.
    batch.column(0).values.to_numpy(zero_copy_only=True)
    batch.column(1).to_numpy(zero_copy_only=True)


def pyarrow_parquet(path: Path, n_classes: int) -> Callable[[], int]:
    batch_rows = default_batch_rows(n_classes, 4)

    def run() -> int:
        pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20)
        try:
            rows = 0
            for batch in pf.iter_batches(batch_size=batch_rows, columns=COLUMNS, use_threads=True):
                _touch(batch)
                rows += batch.num_rows
            return rows
        finally:
            pf.close()

    return run


def pyarrow_ipc(path: Path, n_classes: int) -> Callable[[], int]:
    def run() -> int:
        with pa.memory_map(str(path)) as mm:
            reader = ipc.open_file(mm)
            fields = [reader.schema.get_field_index(c) for c in COLUMNS]
            reader = ipc.open_file(mm, options=ipc.IpcReadOptions(included_fields=fields))
            rows = 0
            for i in range(reader.num_record_batches):
                batch = reader.get_batch(i).select(COLUMNS)
                _touch(batch)
                rows += batch.num_rows
            return rows

    return run


def pyarrow_alone(name: str, path: Path, n_classes: int) -> Callable[[], int]:
    return (pyarrow_ipc if name == "arrow-ipc" else pyarrow_parquet)(path, n_classes)
