"""Synthetic prediction files of any size, written in bounded memory.

:func:`generate` writes a Parquet (or Arrow IPC) file that looks like the saved output of a
mediocre classifier: a ``label`` per row and a ``pred`` row of ``n_classes`` logits,
probabilities or log-probabilities, optionally with a soft ``target`` distribution per row.
It is how the benchmarks and the large-file tests get their inputs.

The content depends only on ``(seed, rows, classes, kind, soft, dtype)``: rows are produced
in fixed blocks, each from its own random stream, so changing the row-group size, the
compression or the container format rewrites the same numbers.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from fastxent._errors import InvalidTypeError, InvalidValueError, SourceError
from fastxent.scoring import _create_temp

__all__ = ["OutputExistsError", "generate"]

KINDS = ("probs", "logits", "log_probs")
DTYPES = ("float16", "float32", "float64")
COMPRESSIONS = ("none", "zstd", "snappy")
FORMATS = ("parquet", "arrow")
IPC_SUFFIXES = (".arrow", ".feather", ".ipc")

#: Elements per generation block (one random stream each). Fixed, so the data does not
#: depend on the row-group size; it keeps each step well under 64 MiB of output
#: (4 MiB as float32) with float64 temporaries of 8 MiB each.
BLOCK_ELEMENTS = 2**20
#: pyarrow silently caps a row group at this many rows.
_MAX_ROWS_PER_GROUP = 64 * 2**20
#: Accuracy the synthetic classifier is tuned to, whatever the number of classes.
TARGET_ACCURACY = 0.7
#: Schema metadata key holding the generator's parameters as JSON.
METADATA_KEY = b"fastxent.generate"


class OutputExistsError(SourceError, FileExistsError):
    """The output file exists and ``overwrite=False``."""


def generate(
    path: str | os.PathLike[str],
    *,
    rows: int,
    classes: int,
    kind: str = "probs",
    soft: bool = False,
    dtype: str = "float32",
    seed: int = 0,
    compression: str = "none",
    row_group_bytes: int = 64 * 2**20,
    fmt: str | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write a synthetic predictions file of ``rows`` x ``classes`` in bounded memory.

    Each row has a true class ``label`` drawn uniformly from ``[0, classes)`` and logits

    .. math:: x_j = o + z_j + m\\,[j = \\text{label}], \\qquad z_j \\sim N(0, 1),\\;
              o \\sim N(0, 2^2)

    where the per-row offset ``o`` (real logits are not centred) cancels in the softmax and
    the margin ``m`` is chosen so that ``argmax x == label`` for about 70% of rows at any
    number of classes. ``kind`` selects what is stored in ``pred``: the logits, the softmax
    probabilities (computed in float64, cast, then the largest entry of each row absorbs the
    rounding so rows sum to 1 as closely as ``dtype`` allows) or the log-softmax.
    With ``soft=True`` a ``target`` column holds teacher distributions: the softmax of an
    independent, more confident noisy view of the same label.

    Parameters
    ----------
    path : str or os.PathLike
        Output file. Written under a temporary name in the same directory and renamed on
        success, so a failure never leaves a partial file.
    rows, classes : int
        Number of rows (>= 1) and classes (>= 2).
    kind : {"probs", "logits", "log_probs"}
        What the ``pred`` column holds.
    soft : bool
        Also write a ``target`` column of soft label distributions.
    dtype : {"float16", "float32", "float64"}
        Element type of ``pred`` (and ``target``).
    seed : int
        Non-negative seed; the same arguments and seed give the same data.
    compression : {"none", "zstd", "snappy"}
        Codec. Uncompressed Parquet decodes fastest; compressed float columns are written
        with BYTE_STREAM_SPLIT, which compresses them much better. Arrow IPC supports "none"
        and "zstd".
    row_group_bytes : int
        Target uncompressed size of a Parquet row group (or IPC record batch) in bytes:
        ``rows_per_group = max(1, row_group_bytes // bytes_per_row)``.
    fmt : {"parquet", "arrow"} or None
        Container. None means Arrow IPC when the path ends in .arrow, .feather or .ipc,
        Parquet otherwise.
    overwrite : bool
        Replace an existing file instead of raising :class:`OutputExistsError`.

    Returns
    -------
    dict
        ``path``, ``format``, ``rows``, ``classes``, ``kind``, ``soft``, ``dtype``,
        ``bytes`` (file size), ``rows_per_group`` and ``row_groups``.

    Notes
    -----
    Rows are generated in blocks of ``BLOCK_ELEMENTS`` (2**20) elements, or one row when a
    row is wider, and copied into the current row group. Memory does not grow with
    ``rows``: it is one row group of output, a few float64 block temporaries (~8 MiB each)
    and, for Parquet, pyarrow's own buffers for the row group being written (measured peak
    above baseline for a 575 MiB file of 1000 classes: ~135 MiB with 8 MiB groups or IPC,
    ~290 MiB with 64 MiB Parquet groups). pyarrow takes a row group whole in one
    ``write_table`` call, so ``row_group_bytes`` above 64 MiB costs proportionally more.

    Examples
    --------
    >>> import tempfile, os, pyarrow.parquet as pq
    >>> from fastxent.generate import generate
    >>> d = tempfile.mkdtemp()
    >>> info = generate(os.path.join(d, "p.parquet"), rows=1000, classes=10, seed=1)
    >>> info["rows"], pq.read_table(info["path"]).column_names
    (1000, ['row_id', 'label', 'pred'])
    """
    rows = _check_int("rows", rows, minimum=1)
    classes = _check_int("classes", classes, minimum=2)
    seed = _check_int("seed", seed, minimum=0)
    row_group_bytes = _check_int("row_group_bytes", row_group_bytes, minimum=1)
    kind = _check_choice("kind", kind, KINDS)
    dtype = _check_dtype(dtype)
    compression = _check_choice("compression", compression, COMPRESSIONS)
    if not isinstance(soft, bool | np.bool_):
        raise InvalidTypeError(f"soft must be a bool; got {type(soft).__name__} {soft!r}.")
    if not isinstance(overwrite, bool | np.bool_):
        raise InvalidTypeError(
            f"overwrite must be a bool; got {type(overwrite).__name__} {overwrite!r}."
        )
    out = Path(os.fspath(path))
    if fmt is None:
        fmt = "arrow" if out.suffix.lower() in IPC_SUFFIXES else "parquet"
    fmt = _check_choice("fmt", fmt, FORMATS)
    if fmt == "arrow" and compression == "snappy":
        raise InvalidValueError(
            "compression must be one of ('none', 'zstd') for Arrow IPC output; got 'snappy'. "
            "Use compression='zstd' or write Parquet."
        )
    directory = out.parent
    if not directory.is_dir():
        raise SourceError(f"output directory {str(directory)!r} does not exist.")
    if out.exists() and not out.is_file():
        # Publishing renames over the path: that would replace a directory's entry for a
        # device or FIFO (or fail on a directory) after all the work.
        raise SourceError(
            f"path must be a regular file path; {str(out)!r} is a directory, FIFO, socket or "
            f"device."
        )
    if out.exists() and not overwrite:
        raise OutputExistsError(
            f"output file {str(out)!r} already exists. Pass overwrite=True to replace it."
        )

    np_dtype = np.dtype(dtype)
    n_pred = 2 if soft else 1
    bytes_per_row = 16 + n_pred * classes * np_dtype.itemsize
    rows_per_group = max(1, min(row_group_bytes // bytes_per_row, _MAX_ROWS_PER_GROUP, rows))
    params = {
        "rows": rows,
        "classes": classes,
        "kind": kind,
        "soft": bool(soft),
        "dtype": dtype,
        "seed": seed,
        "target_accuracy": TARGET_ACCURACY,
        "margin": _margin_for_accuracy(classes, TARGET_ACCURACY),
        "block_elements": BLOCK_ELEMENTS,
        "generator": "fastxent.generate",
    }
    schema = _schema(classes, np_dtype, soft=bool(soft), metadata=params)

    # Not tempfile.mkstemp: its 0600 would be what the renamed output file keeps.
    tmp = _create_temp(out)
    try:
        groups = _groups(
            rows=rows,
            classes=classes,
            kind=kind,
            soft=bool(soft),
            dtype=np_dtype,
            seed=seed,
            rows_per_group=rows_per_group,
            schema=schema,
        )
        if fmt == "parquet":
            n_groups = _write_parquet(tmp, schema, groups, compression=compression, soft=soft)
        else:
            n_groups = _write_ipc(tmp, schema, groups, compression=compression)
        _publish(tmp, out, overwrite=bool(overwrite))
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {
        "path": str(out),
        "format": fmt,
        "rows": rows,
        "classes": classes,
        "kind": kind,
        "soft": bool(soft),
        "dtype": dtype,
        "bytes": out.stat().st_size,
        "rows_per_group": rows_per_group,
        "row_groups": n_groups,
    }


# --------------------------------------------------------------------------- validation


def _check_int(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        raise InvalidTypeError(f"{name} must be an int; got {type(value).__name__} {value!r}.")
    if value < minimum:
        raise InvalidValueError(f"{name} must be >= {minimum}; got {value}.")
    return int(value)


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str):
        raise InvalidTypeError(
            f"{name} must be one of {choices}; got {type(value).__name__} {value!r}."
        )
    lowered = value.lower()
    if lowered not in choices:
        raise InvalidValueError(f"{name} must be one of {choices}; got {value!r}.")
    return lowered


def _check_dtype(dtype: object) -> str:
    try:
        name = np.dtype(dtype).name  # type: ignore[call-overload]
    except (TypeError, ValueError):
        name = None
    if name not in DTYPES:
        raise InvalidValueError(f"dtype must be one of {DTYPES}; got {dtype!r}.")
    return name


# --------------------------------------------------------------------------- content


@functools.lru_cache(maxsize=64)
def _margin_for_accuracy(classes: int, accuracy: float) -> float:
    """Margin m with P(z_0 + m > max_{j>0} z_j) = accuracy for iid standard normals z."""
    z = np.linspace(-9.0, 9.0, 3601)
    dz = z[1] - z[0]
    pdf = np.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi)

    def top1(m: float) -> float:
        # log Phi(z + m), via erfc so the lower tail does not round to zero.
        cdf = np.array([0.5 * math.erfc(-(t + m) / math.sqrt(2.0)) for t in z])
        log_cdf = np.log(np.maximum(cdf, np.finfo(np.float64).tiny))
        return float(np.sum(pdf * np.exp((classes - 1) * log_cdf)) * dz)

    lo, hi = 0.0, 2.0
    while top1(hi) < accuracy:
        hi *= 2.0
    for _ in range(50):
        mid = 0.5 * (lo + hi)
        if top1(mid) < accuracy:
            lo = mid
        else:
            hi = mid
    return round(0.5 * (lo + hi), 6)


def _softmax64(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise (softmax, log_softmax) in float64; ``x`` is overwritten."""
    x -= x.max(axis=1, keepdims=True)
    e = np.exp(x)
    s = e.sum(axis=1, keepdims=True)
    e /= s
    x -= np.log(s)
    return e, x


def _cast_distribution(p: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast float64 rows summing to 1 so the cast rows still sum to 1 as well as possible.

    The largest entry absorbs the rounding of the others; its ulp bounds what is left.
    """
    q = p.astype(dtype)
    rows = np.arange(q.shape[0])
    top = np.argmax(q, axis=1)
    rest = q.sum(axis=1, dtype=np.float64) - q[rows, top].astype(np.float64)
    q[rows, top] = np.maximum(1.0 - rest, 0.0).astype(dtype)
    return q


def _block(
    index: int,
    block_rows: int,
    *,
    classes: int,
    kind: str,
    soft: bool,
    dtype: np.dtype,
    seed: int,
    margin: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Labels, pred and (optionally) target for one fixed block, from its own stream."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(index,))))
    labels = rng.integers(0, classes, size=block_rows, dtype=np.int64)
    rows = np.arange(block_rows)
    x = rng.standard_normal((block_rows, classes), dtype=np.float32).astype(np.float64)
    x[rows, labels] += margin
    x += 2.0 * rng.standard_normal((block_rows, 1))
    if kind == "logits":
        pred = x.astype(dtype)
    else:
        probs, log_probs = _softmax64(x)
        pred = _cast_distribution(probs, dtype) if kind == "probs" else log_probs.astype(dtype)
        del probs, log_probs
    del x
    target = None
    if soft:
        t = rng.standard_normal((block_rows, classes), dtype=np.float32).astype(np.float64)
        t[rows, labels] += 2.0 * margin
        target = _cast_distribution(_softmax64(t)[0], dtype)
    return labels, pred, target


def _groups(
    *,
    rows: int,
    classes: int,
    kind: str,
    soft: bool,
    dtype: np.dtype,
    seed: int,
    rows_per_group: int,
    schema: pa.Schema,
) -> Iterator[pa.Table]:
    """Yield tables of ``rows_per_group`` rows (the last may be shorter).

    Rows are generated one fixed block of ``BLOCK_ELEMENTS // classes`` rows at a time and
    copied into the current group's buffers, so only one block and one group are alive.
    """
    margin = _margin_for_accuracy(classes, TARGET_ACCURACY)
    block_rows = max(1, BLOCK_ELEMENTS // classes)
    list_type = schema.field("pred").type

    def blocks() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        index = 0
        start = 0
        while start < rows:
            n = min(block_rows, rows - start)
            yield _block(
                index,
                n,
                classes=classes,
                kind=kind,
                soft=soft,
                dtype=dtype,
                seed=seed,
                margin=margin,
            )
            index += 1
            start += n

    stream = blocks()
    pending: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None
    offset = 0  # rows of ``pending`` already used
    start = 0
    while start < rows:
        n = min(rows_per_group, rows - start)
        labels = np.empty(n, dtype=np.int64)
        pred = np.empty((n, classes), dtype=dtype)
        target = np.empty((n, classes), dtype=dtype) if soft else None
        filled = 0
        while filled < n:
            if pending is None or offset == len(pending[0]):
                pending = next(stream)
                offset = 0
            take = min(n - filled, len(pending[0]) - offset)
            labels[filled : filled + take] = pending[0][offset : offset + take]
            pred[filled : filled + take] = pending[1][offset : offset + take]
            if target is not None and pending[2] is not None:
                target[filled : filled + take] = pending[2][offset : offset + take]
            filled += take
            offset += take
        columns = [
            pa.array(np.arange(start, start + n, dtype=np.int64)),
            pa.array(labels),
            pa.FixedSizeListArray.from_arrays(pa.array(pred.reshape(-1)), type=list_type),
        ]
        if target is not None:
            columns.append(
                pa.FixedSizeListArray.from_arrays(pa.array(target.reshape(-1)), type=list_type)
            )
        table = pa.Table.from_arrays(columns, schema=schema)
        # Drop this group's buffers before the next one is allocated.
        del labels, pred, target, columns
        yield table
        del table
        start += n


def _schema(classes: int, dtype: np.dtype, *, soft: bool, metadata: dict[str, Any]) -> pa.Schema:
    value = pa.from_numpy_dtype(dtype)
    list_type = pa.list_(pa.field("item", value, nullable=False), classes)
    fields = [
        pa.field("row_id", pa.int64(), nullable=False),
        pa.field("label", pa.int64(), nullable=False),
        pa.field("pred", list_type, nullable=False),
    ]
    if soft:
        fields.append(pa.field("target", list_type, nullable=False))
    return pa.schema(fields, metadata={METADATA_KEY: json.dumps(metadata, sort_keys=True)})


# --------------------------------------------------------------------------- writing


def _write_parquet(
    path: Path,
    schema: pa.Schema,
    groups: Iterator[pa.Table],
    *,
    compression: str,
    soft: bool,
) -> int:
    float_columns = ["pred.list.element"] + (["target.list.element"] if soft else [])
    writer = pq.ParquetWriter(
        path,
        schema,
        # Dictionary encoding of floats only costs decode time; byte-stream-split (which
        # needs use_dictionary=False to take effect) only pays off under a codec.
        use_dictionary=False,
        compression=compression,
        use_byte_stream_split=float_columns if compression != "none" else False,
        # Min/max of a list leaf is useless for pruning and costs a pass at write time.
        write_statistics=["row_id", "label"],
    )
    n_groups = 0
    try:
        for table in groups:
            # One call per group: pyarrow starts a new row group per write_table call.
            writer.write_table(table, row_group_size=table.num_rows)
            n_groups += 1
            del table  # so the generator's next group is not allocated beside this one
    finally:
        writer.close()
    return n_groups


def _write_ipc(
    path: Path, schema: pa.Schema, groups: Iterator[pa.Table], *, compression: str
) -> int:
    options = pa.ipc.IpcWriteOptions(compression=None if compression == "none" else compression)
    n_batches = 0
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, schema, options=options) as w:
        for table in groups:
            batches = table.to_batches()[::-1]
            del table  # hold no reference while the generator builds the next group
            while batches:
                w.write_batch(batches.pop())
                n_batches += 1
    return n_batches


def _publish(tmp: Path, out: Path, *, overwrite: bool) -> None:
    """Move the finished file into place; without ``overwrite`` never clobber a file."""
    if overwrite:
        os.replace(tmp, out)
        return
    try:
        # A hard link fails if ``out`` appeared meanwhile, unlike a rename.
        os.link(tmp, out)
    except FileExistsError:
        raise OutputExistsError(
            f"output file {str(out)!r} already exists. Pass overwrite=True to replace it."
        ) from None
    except OSError:
        if out.exists():
            raise OutputExistsError(
                f"output file {str(out)!r} already exists. Pass overwrite=True to replace it."
            ) from None
        os.replace(tmp, out)
        return
    tmp.unlink()
