r"""Score saved predictions in a Parquet / Arrow source, in bounded memory: :func:`score`.

The source is read one batch of rows at a time (about 64 MiB of predictions by default). A
background thread decodes batch k+1 and converts it to NumPy while the ``nogil`` kernel scores
batch k, and every batch goes to one :class:`fastxent.Accumulator`, so the result equals
:func:`fastxent.cross_entropy` on the whole matrix (to ~1e-15 relative) whatever the batch size.

pyarrow is imported on first use, so ``import fastxent`` stays light.
"""

from __future__ import annotations

import json
import os
import secrets
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import (
    FastxentError,
    InvalidTypeError,
    InvalidValueError,
    SoftWarning,
    SourceError,
)
from .accumulate import Accumulator, Score

if TYPE_CHECKING:
    import pyarrow as pa

    from ._progress import Progress
    from .arrow import Source

# OutputExistsError is also available here, lazily (see __getattr__).
__all__ = ["demo_info", "demo_path", "score"]

#: Name of the bundled sample inside ``fastxent/data``.
DEMO_FILE = "digits_predictions.parquet"
#: Schema metadata key of the bundled sample (see ``scripts/make_demo_data.py``).
DEMO_METADATA_KEY = b"fastxent.demo"
#: Schema metadata key of a per-row output file.
PER_ROW_METADATA_KEY = b"fastxent.per_row"
#: A per-row file's row group is written once this many rows or bytes are pending.
PER_ROW_GROUP_ROWS = 2**20
PER_ROW_GROUP_BYTES = 64 * 2**20
#: Rows per batch when the width of variable-size list rows cannot be learnt up front.
_FALLBACK_BATCH_ROWS = 65_536
#: "Do not re-slice": an Arrow stream's own batches are already in memory.
_NATIVE_BATCH_ROWS = 2**62
_GLOB_CHARS = frozenset("*?[")


def __getattr__(name: str) -> Any:
    # One exception class for "the output exists" across fastxent; it lives in generate.py,
    # which imports pyarrow, so it is fetched only when asked for.
    if name == "OutputExistsError":
        from .generate import OutputExistsError

        return OutputExistsError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def score(
    source: Any,
    *,
    pred: str,
    label: str | None = None,
    target: str | None = None,
    weight: str | None = None,
    pred_kind: str = "probs",
    class_weight: Sequence[float] | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    eps: float | str = "auto",
    nan_policy: str = "raise",
    strict: bool = False,
    batch_rows: int | None = None,
    per_row: str | os.PathLike[str] | None = None,
    keep: Sequence[str] = (),
    overwrite: bool = False,
    progress: bool = False,
) -> Score:
    r"""Cross entropy of saved predictions, streamed from Parquet / Arrow in bounded memory.

    .. math::

        \text{loss} = \frac{\sum_i s_i\, w_{y_i}\, \ell_i}{\sum_i s_i\, w_{y_i}}, \qquad
        \ell_i = -\log q_{i, y_i}

    over the rows not ignored, with sample weights ``s`` (the ``weight`` column) and class
    weights ``w`` (``class_weight``); with target distributions ``t`` (the ``target`` column)
    :math:`\ell_i = -\sum_j w_j t_{ij} \log q_{ij}` and the denominator is :math:`\sum_i s_i`.
    The options mean what they mean for :func:`fastxent.cross_entropy`.

    Every value is read: rows of probabilities are checked (finite, in [0, 1], summing to 1)
    and the accuracy is reported.

    Parameters
    ----------
    source : str, os.PathLike, pyarrow.Table, pyarrow.RecordBatchReader, or Arrow C stream
        A Parquet file, a directory of Parquet / Arrow IPC files (hive ``key=value/`` layout
        allowed), an Arrow IPC file, an in-memory table, or any object exporting
        ``__arrow_c_stream__`` (a polars DataFrame, a duckdb relation), which is read once.
        See :func:`fastxent.arrow.open_source`.
    pred : str
        The predictions: one column holding a list of ``n_classes`` floats per row
        (``fixed_size_list``, ``list``, ``large_list`` or ``arrow.fixed_shape_tensor``), or a
        glob such as ``"prob_*"`` selecting one float column per class, in schema order.
    label : str, optional
        Integer class labels in ``[0, n_classes)``. Exactly one of ``label`` and ``target``.
    target : str, optional
        Target distributions (soft labels), laid out like ``pred`` (a list column or a glob).
    weight : str, optional
        A numeric column of per-row sample weights (finite, >= 0).
    pred_kind : {"probs", "logits", "log_probs"}, default "probs"
        What ``pred`` holds.
    class_weight : sequence of float, optional
        One weight per class.
    ignore_index : int, optional
        Rows with this label are skipped (labels only).
    label_smoothing : float in [0, 1], default 0.0
        As in torch.
    eps : "auto" or float, default "auto"
        Probability clipping (``pred_kind="probs"``).
    nan_policy : {"raise", "omit", "propagate"}, default "raise"
        What a non-finite prediction does.
    strict : bool, default False
        Make rows that do not sum to 1 an error instead of a :class:`fastxent.SoftWarning`.
    batch_rows : int, optional
        Rows per batch. By default about 64 MiB of decoded predictions (and targets) per
        batch; memory stays a few batches whatever the size of the source.
    per_row : str or os.PathLike, optional
        Also write the per-row losses to this Parquet file: columns ``row`` (int64, the input
        row number), ``loss`` (float64: the row loss times its sample weight, 0.0 for an
        ignored row, NaN for a row left out by ``nan_policy="omit"``) and the ``keep``
        columns. Written batch by batch under a temporary name in the same directory and
        renamed when scoring succeeds: a failure or an interrupt leaves no file behind.
    keep : sequence of str, default ()
        Input columns (names or globs) copied into the ``per_row`` file, e.g. an id column.
    overwrite : bool, default False
        Replace an existing ``per_row`` file instead of raising.
    progress : bool, default False
        Draw a progress line (rows done, MB/s of predictions) on stderr.

    Returns
    -------
    Score
        The loss, its sums, row counts, perplexity, accuracy (labels) and standard error.

    Raises
    ------
    InvalidValueError
        A missing column (the message lists the columns there are), a bad option, or bad
        data: the message names the column and the row number in the whole source.
    InvalidTypeError
        A column of an unusable type.
    SourceError
        The source cannot be opened or read.
    OutputExistsError
        ``per_row`` exists and ``overwrite`` is False (also a ``FileExistsError``).

    Notes
    -----
    Memory is a few batches, whatever the size of the source: the batch being scored, up to
    two decoded ahead, the one being decoded and pyarrow's decoding buffers. Measured on a
    526 MB Parquet file of 100 float32 classes: peak RSS grew by about 0.55 GB with the
    default 64 MiB batches, by about 0.15 GB with 16 MiB batches (``batch_rows=40_000``) at
    the same speed, and by about 13 MB with 2 MiB batches. Pass a smaller ``batch_rows`` to
    cap memory lower.

    See Also
    --------
    fastxent.cross_entropy : the same loss on in-memory arrays.
    fastxent.Accumulator : the streaming accumulator used here, for batches of your own.

    Examples
    --------
    The bundled sample holds a logistic regression's test-set predictions on scikit-learn's
    digits, as probabilities, logits and log-probabilities:

    >>> from fastxent.scoring import demo_path, score
    >>> s = score(demo_path(), pred="probs", label="label")
    >>> round(s.loss, 4), s.n_rows, round(s.accuracy, 4)
    (0.1652, 450, 0.9711)
    >>> round(score(demo_path(), pred="logits", label="label", pred_kind="logits").loss, 4)
    0.1652
    """
    from . import arrow

    pred, label, target, weight, keep = _check_args(
        pred=pred,
        label=label,
        target=target,
        weight=weight,
        keep=keep,
        per_row=per_row,
        batch_rows=batch_rows,
    )
    # Options are checked before any file is touched.
    acc = Accumulator(
        pred_kind=pred_kind,
        weight=class_weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        eps=eps,
        nan_policy=nan_policy,
        strict=strict,
    )
    out_path = None if per_row is None else _check_output(per_row, overwrite=bool(overwrite))

    owned = not isinstance(source, arrow.Source)
    src = arrow.open_source(source)
    try:
        if out_path is not None:
            _check_not_an_input(out_path, source, src)
        plan = _plan(src, pred=pred, label=label, target=target, weight=weight, keep=keep)
        rows_per_batch = batch_rows if batch_rows is not None else _default_batch_rows(src, plan)
        writer = None
        if out_path is not None:
            writer = _RowWriter(
                out_path,
                src.schema,
                plan.keep,
                metadata={
                    "pred": pred,
                    "label": label,
                    "target": target,
                    "weight": weight,
                    "pred_kind": pred_kind,
                },
            )
        try:
            _run(src, plan, acc, rows_per_batch, writer, progress=bool(progress))
            result = acc.result()
            if writer is not None:
                writer.commit(overwrite=bool(overwrite))
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
    finally:
        if owned:
            src.close()
    return result


# --------------------------------------------------------------------------------------------
# Planning: which columns, which layout, how many rows per batch
# --------------------------------------------------------------------------------------------


def _check_args(
    *,
    pred: Any,
    label: Any,
    target: Any,
    weight: Any,
    keep: Any,
    per_row: Any,
    batch_rows: Any,
) -> tuple[str, str | None, str | None, str | None, tuple[str, ...]]:
    """Check the column arguments and ``batch_rows``; return the column arguments."""
    pred = _column_arg("pred", pred)
    if (label is None) == (target is None):
        raise InvalidValueError(
            "score needs exactly one of label (integer class labels) and target (target "
            f"distributions); got {'both' if label is not None else 'neither'}."
        )
    label = None if label is None else _column_arg("label", label)
    target = None if target is None else _column_arg("target", target)
    weight = None if weight is None else _column_arg("weight", weight)
    if isinstance(keep, str):
        keep = (keep,)
    keep = tuple(_column_arg("keep", k) for k in keep)
    if keep and per_row is None:
        raise InvalidValueError(
            f"keep names columns to copy into the per_row file, so it needs per_row; got "
            f"keep={list(keep)} without per_row."
        )
    if batch_rows is not None and (
        isinstance(batch_rows, bool)
        or not isinstance(batch_rows, (int, np.integer))
        or batch_rows < 1
    ):
        raise InvalidValueError(
            f"batch_rows must be a positive integer or None; got {batch_rows!r}."
        )
    return pred, label, target, weight, keep


@dataclass(frozen=True)
class _Plan:
    pred: list[str]  # one list column, or the class columns of a wide layout
    pred_wide: bool
    pred_name: str  # what errors call the predictions
    target: list[str]  # label column, or target distribution column(s)
    target_kind: str  # "labels" or "dense"
    target_wide: bool
    target_name: str
    weight: str | None
    keep: list[str]

    @property
    def columns(self) -> list[str]:
        cols = [*self.pred, *self.target]
        if self.weight is not None:
            cols.append(self.weight)
        return list(dict.fromkeys([*cols, *self.keep]))


def _column_arg(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidTypeError(f"{name} must be a column name or glob (a str); got {value!r}.")
    return value


def _is_glob(schema: pa.Schema, pattern: str) -> bool:
    return pattern not in schema.names and any(ch in _GLOB_CHARS for ch in pattern)


def _one_column(schema: pa.Schema, name: str, pattern: str) -> str:
    from .arrow import resolve_columns

    cols = resolve_columns(schema, pattern)
    if len(cols) != 1:
        raise InvalidValueError(
            f"{name} must name one column; {pattern!r} matches {len(cols)}: {cols}."
        )
    return cols[0]


def _plan(
    src: Source,
    *,
    pred: str,
    label: str | None,
    target: str | None,
    weight: str | None,
    keep: tuple[str, ...],
) -> _Plan:
    schema = src.schema
    # src.resolve_columns: a glob must match the same columns in every file of a directory.
    pred_cols = src.resolve_columns(pred)
    pred_wide = _is_glob(schema, pred)
    if label is not None:
        target_cols, target_kind, target_wide = (
            [_one_column(schema, "label", label)],
            "labels",
            False,
        )
        target_name = target_cols[0]
    else:
        assert target is not None
        target_cols, target_kind = src.resolve_columns(target), "dense"
        target_wide = _is_glob(schema, target)
        target_name = target if target_wide else target_cols[0]
        if target_wide and pred_wide and len(target_cols) != len(pred_cols):
            raise InvalidValueError(
                f"target must have one column per class of pred, that is {len(pred_cols)} "
                f"columns as {pred!r} matches; {target!r} matches {len(target_cols)}."
            )
    weight_col = None if weight is None else _one_column(schema, "weight", weight)
    keep_cols: list[str] = []
    for pattern in keep:
        keep_cols.extend(src.resolve_columns(pattern))
    keep_cols = list(dict.fromkeys(keep_cols))
    clash = [c for c in keep_cols if c in ("row", "loss")]
    if clash:
        raise InvalidValueError(
            f"keep must not include columns named 'row' or 'loss', the per-row file's own "
            f"columns; got {clash}. Rename them in the source first."
        )
    plan = _Plan(
        pred=pred_cols,
        pred_wide=pred_wide,
        pred_name=pred if pred_wide else pred_cols[0],
        target=target_cols,
        target_kind=target_kind,
        target_wide=target_wide,
        target_name=target_name,
        weight=weight_col,
        keep=keep_cols,
    )
    src.check_columns(plan.columns)  # a directory's files must agree on every column
    n_classes, _ = _matrix_row(schema, plan.pred, plan.pred_wide)
    if n_classes is not None and n_classes < 2:
        # Known from the schema: say so now, in the source's terms, not a batch's shape.
        got = (
            f"{pred!r} matches {n_classes} column: {plan.pred}"
            if plan.pred_wide
            else f"column {pred!r} is {schema.field(plan.pred[0]).type}"
        )
        raise InvalidValueError(
            f"pred must have at least 2 classes; {got}. A single column of binary "
            f"probabilities must be expanded to [1 - p, p]."
        )
    return plan


def _float_bytes(typ: pa.DataType) -> int | None:
    import pyarrow as pa

    if not pa.types.is_floating(typ):
        return None
    # float16 is widened to float32 before the kernel runs: count the widened copy.
    return max(typ.bit_width // 8, 4)


def _list_shape(typ: pa.DataType) -> tuple[int | None, int | None]:
    """(n_classes or None, bytes per value or None) of a list-of-floats column type."""
    import pyarrow as pa

    if isinstance(typ, pa.BaseExtensionType):
        typ = typ.storage_type
    if pa.types.is_fixed_size_list(typ):
        return typ.list_size, _float_bytes(typ.value_type)
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return None, _float_bytes(typ.value_type)
    return None, None


def _first_list_length(src: Source, column: str) -> int | None:
    """Width of the first row of a variable-size list column (reads one row), or None."""
    batches = src.iter_batches([column], 1)
    try:
        for batch in batches:
            value = batch.column(0)[0]
            return len(value) if value.is_valid else None
        return None
    finally:
        batches.close()  # type: ignore[attr-defined]


def _default_batch_rows(src: Source, plan: _Plan) -> int | None:
    """About 64 MiB of decoded predictions (and targets) per batch.

    Returns None for an Arrow stream whose list width is unknown until its first batch
    arrives; :func:`_convert` then sizes batches from that batch.
    """
    from .arrow import default_batch_rows

    n_classes, itemsize = _matrix_row(src.schema, plan.pred, plan.pred_wide)
    if plan.target_kind == "dense":
        t_classes, t_itemsize = _matrix_row(src.schema, plan.target, plan.target_wide)
        n_classes = n_classes or t_classes
        itemsize = (itemsize or 8) + (t_itemsize or 8)
    if not itemsize:
        return _FALLBACK_BATCH_ROWS  # not floats: the conversion will say why
    if n_classes is None:  # a list or large_list column: its width is in the data
        if src.is_stream:
            return None
        n_classes = _first_list_length(src, plan.pred[0])
        if not n_classes:
            return _FALLBACK_BATCH_ROWS
    return default_batch_rows(n_classes, itemsize)


def _matrix_row(schema: pa.Schema, cols: list[str], wide: bool) -> tuple[int | None, int | None]:
    if wide:
        sizes = [_float_bytes(schema.field(c).type) for c in cols]
        return len(cols), max((s for s in sizes if s), default=None)
    return _list_shape(schema.field(cols[0]).type)


# --------------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------------


@dataclass
class _Batch:
    row: int  # global row number of the first row
    pred: np.ndarray
    target: np.ndarray
    sample_weight: np.ndarray | None
    keep: pa.RecordBatch | None


def _matrix(
    batch: pa.RecordBatch, cols: list[str], wide: bool, row: int, n_classes: int | None
) -> np.ndarray:
    from .arrow import matrix_from_column, matrix_from_wide

    if wide:
        return matrix_from_wide(batch, cols, row_offset=row)
    return matrix_from_column(
        batch.column(cols[0]), name=cols[0], row_offset=row, n_classes=n_classes
    )


def _convert(
    batches: Iterable[pa.RecordBatch],
    plan: _Plan,
    batch_rows: int | None,
    with_keep: bool,
    *,
    row_offset: int = 0,
    n_classes: int | None = None,
) -> Iterator[_Batch]:
    """Slice Arrow batches to ``batch_rows`` and convert them to NumPy.

    Runs in the prefetch thread, so it overlaps the kernel. ``row_offset`` is the global row
    number of the first row (error messages and the per-row file count from it); ``n_classes``,
    if known, is the width every row must have.
    """
    from .arrow import vector_from_column

    row = row_offset
    try:
        for big in batches:
            if batch_rows is None:
                # An Arrow stream of variable-size lists: size the slices from its first row.
                first = _matrix(big.slice(0, 1), plan.pred, plan.pred_wide, row, None)
                batch_rows = _rows_for(first.shape[1], first.dtype.itemsize, plan)
            step = batch_rows
            for start in range(0, big.num_rows, step):
                batch = big.slice(start, step) if big.num_rows > step else big
                pred = _matrix(batch, plan.pred, plan.pred_wide, row, n_classes)
                n_classes = pred.shape[1]
                if plan.target_kind == "labels":
                    target = vector_from_column(
                        batch.column(plan.target[0]),
                        name=plan.target[0],
                        row_offset=row,
                        kind="label",
                    )
                else:
                    target = _matrix(batch, plan.target, plan.target_wide, row, n_classes)
                sw = None
                if plan.weight is not None:
                    sw = vector_from_column(
                        batch.column(plan.weight), name=plan.weight, row_offset=row, kind="weight"
                    )
                kept = batch.select(plan.keep) if with_keep and plan.keep else None
                yield _Batch(row, pred, target, sw, kept)
                row += batch.num_rows
    finally:
        # Release the file readers now, in this (the prefetch) thread.
        close = getattr(batches, "close", None)
        if close is not None:
            close()


def _rows_for(n_classes: int, itemsize: int, plan: _Plan) -> int:
    from .arrow import default_batch_rows

    itemsize = max(itemsize, 4)
    if plan.target_kind == "dense":
        itemsize *= 2
    return default_batch_rows(max(n_classes, 1), itemsize)


def _run(
    src: Source,
    plan: _Plan,
    acc: Accumulator,
    batch_rows: int | None,
    writer: _RowWriter | None,
    *,
    progress: bool,
) -> None:
    from ._progress import Progress

    bar = Progress(src.num_rows) if progress else None
    try:
        batches = src.iter_batches(plan.columns, batch_rows or _NATIVE_BATCH_ROWS)
        with _kernel_threads(decoding=src.decodes):
            _score_batches(batches, plan, acc, batch_rows=batch_rows, writer=writer, bar=bar)
    finally:
        if bar is not None:
            bar.close()
    for message in acc.soft_problems():
        # Once for the whole stream; stacklevel 3: the caller of score().
        warnings.warn(message + _SOFT_FIX, SoftWarning, stacklevel=3)


@contextmanager
def _kernel_threads(*, decoding: bool) -> Iterator[None]:
    """Leave a core to the decoder while streaming Parquet.

    The prefetch thread decodes batch k+1 while the kernels score batch k. When decoding costs
    CPU, kernels on every core would take turns with it instead of running beside it (the
    sum of the two times, not the larger); memory-mapped Arrow IPC decodes nothing.
    """
    import numba

    before = numba.get_num_threads()
    if not decoding or before < 2:
        yield
        return
    numba.set_num_threads(before - 1)  # thread-local: only this thread's kernel calls
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _score_batches(
    batches: Iterable[pa.RecordBatch],
    plan: _Plan,
    acc: Accumulator,
    *,
    batch_rows: int | None,
    row_offset: int = 0,
    n_classes: int | None = None,
    writer: _RowWriter | None = None,
    bar: Progress | None = None,
    kernel_lock: AbstractContextManager[Any] | None = None,
) -> None:
    """Score a stream of Arrow batches into ``acc``: the loop shared by every way of scoring.

    Each batch is sliced to ``batch_rows``, converted to NumPy in a prefetch thread (so
    decoding overlaps the kernel) and added with :meth:`Accumulator.update`, numbered from
    ``row_offset``, the global row number of the first row: errors name rows of the whole
    source and the per-row ``writer`` gets global row numbers. ``kernel_lock``, if given, is
    held around each update (tasks sharing a process take turns in the kernels). Rows that do
    not sum to 1 are only recorded in ``acc``: the caller warns once, with the totals
    (:meth:`Accumulator.soft_problems`).
    """
    from .arrow import prefetch

    names = (plan.pred_name, plan.target_name)
    lock = kernel_lock if kernel_lock is not None else nullcontext()
    converted = _convert(
        batches, plan, batch_rows, writer is not None, row_offset=row_offset, n_classes=n_classes
    )
    with prefetch(converted) as items:
        for b in items:
            with lock:
                rows = acc.update(
                    b.pred,
                    b.target,
                    b.sample_weight,
                    return_rows=writer is not None,
                    row_offset=b.row,
                    names=names,
                    warn=False,
                )
            if writer is not None:
                assert rows is not None
                writer.write(b.row, rows, b.keep)
            if bar is not None:
                bar.update(b.pred.shape[0], b.pred.nbytes)


#: What a soft-problem warning tells the user to do about it.
_SOFT_FIX = " Pass strict=True (--strict) to make this an error."


# --------------------------------------------------------------------------------------------
# Per-row output
# --------------------------------------------------------------------------------------------


def _exists_error(path: Path) -> Exception:
    from .generate import OutputExistsError

    return OutputExistsError(
        f"output file {str(path)!r} already exists. Pass overwrite=True (--overwrite) to "
        f"replace it."
    )


def _check_output(per_row: Any, *, overwrite: bool) -> Path:
    if not isinstance(per_row, (str, os.PathLike)):
        raise InvalidTypeError(f"per_row must be a path (str or os.PathLike); got {per_row!r}.")
    path = Path(os.fspath(per_row))
    if not path.parent.is_dir():
        raise SourceError(f"output directory {str(path.parent)!r} does not exist.")
    if path.is_dir():
        raise SourceError(f"per_row must be a file path; {str(path)!r} is a directory.")
    if path.exists() and not path.is_file():
        # Publishing renames over the path: that would replace a device or FIFO with a file.
        raise SourceError(
            f"per_row must be a regular file path; {str(path)!r} is a FIFO, socket or device."
        )
    if path.exists() and not overwrite:
        raise _exists_error(path)
    return path


def _check_not_an_input(path: Path, source: Any, src: Source) -> None:
    """The per-row file must not replace an input file, nor land among a directory's data
    files (it would be read as data by the next run)."""
    out = Path(os.path.realpath(path))
    if out in {Path(os.path.realpath(p)) for p in src.paths}:
        raise InvalidValueError(
            f"per_row must not be an input file; got {str(path)!r}, which is part of the "
            f"source. Write the per-row losses to another path."
        )
    if isinstance(source, (str, os.PathLike)):
        root = Path(os.path.realpath(os.fspath(source)))
        if root.is_dir() and root in out.parents:
            # The directory listing skips names starting with "_" or ".": those are safe.
            if not any(part.startswith(("_", ".")) for part in out.relative_to(root).parts):
                raise InvalidValueError(
                    f"per_row must not be inside the source directory {str(source)!r}, where "
                    f"the next run would read it as data; got {str(path)!r}. Write it "
                    f"elsewhere, or give it a name starting with '_'."
                )


def _create_temp(path: Path) -> Path:
    """A new hidden file beside ``path``, created with the umask's permissions.

    ``tempfile.mkstemp`` would create it 0600, and the rename would hand the user an output
    file nobody else can read.
    """
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"cannot create a temporary file beside {str(path)!r}.")


@contextmanager
def _writing(path: Path) -> Iterator[None]:
    """Report a failure to write the per-row file (disk full, no permission) as a
    :class:`SourceError` naming the file: an environment problem, not a bug."""
    import pyarrow as pa

    try:
        yield
    except FastxentError:
        raise
    except (OSError, pa.ArrowException) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SourceError(
            f"cannot write the per-row file {str(path)!r}: {' '.join(reason.split())}"
        ) from exc


class _RowWriter:
    """Writes ``row, loss, *keep`` to a temporary Parquet file; :meth:`commit` publishes it.

    Batches are buffered up to ``PER_ROW_GROUP_ROWS`` rows or ``PER_ROW_GROUP_BYTES`` bytes,
    then written as one row group, so memory stays bounded and row groups are not tiny.
    """

    def __init__(
        self, path: Path, schema: pa.Schema, keep: list[str], metadata: dict[str, Any]
    ) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        from . import __version__

        self.path = path
        fields = [pa.field("row", pa.int64(), nullable=False), pa.field("loss", pa.float64())]
        fields += [schema.field(c) for c in keep]
        meta = {
            **{k: v for k, v in metadata.items() if v is not None},
            "fastxent_version": __version__,
        }
        self.schema = pa.schema(fields, metadata={PER_ROW_METADATA_KEY: json.dumps(meta)})
        self._pending: list[pa.Table] = []
        self._pending_rows = 0
        self._pending_bytes = 0
        self.rows_written = 0
        with _writing(path):
            self._tmp = _create_temp(path)
        try:
            with _writing(path):
                self._writer: Any = pq.ParquetWriter(self._tmp, self.schema)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def write(self, row: int, losses: np.ndarray, keep: pa.RecordBatch | None) -> None:
        import pyarrow as pa

        n = losses.shape[0]
        columns = [pa.array(np.arange(row, row + n, dtype=np.int64)), pa.array(losses)]
        if keep is not None:
            columns += list(keep.columns)
        table = pa.Table.from_arrays(columns, schema=self.schema)
        self._pending.append(table)
        self._pending_rows += n
        self._pending_bytes += table.nbytes
        if self._pending_rows >= PER_ROW_GROUP_ROWS or self._pending_bytes >= PER_ROW_GROUP_BYTES:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if not self._pending:
            return
        table = pa.concat_tables(self._pending)
        self._pending, self._pending_rows, self._pending_bytes = [], 0, 0
        with _writing(self.path):
            self._writer.write_table(table, row_group_size=min(table.num_rows, PER_ROW_GROUP_ROWS))
        self.rows_written += table.num_rows

    def commit(self, *, overwrite: bool) -> None:
        """Finish the file and move it into place; never clobber a file without ``overwrite``."""
        with _writing(self.path):
            self._publish(overwrite)

    def _publish(self, overwrite: bool) -> None:
        self._flush()
        self._writer.close()
        if overwrite:
            os.replace(self._tmp, self.path)
            return
        try:
            # Unlike a rename, a hard link fails if the output appeared meanwhile.
            os.link(self._tmp, self.path)
        except FileExistsError:
            raise _exists_error(self.path) from None
        except OSError:
            # No hard links here (some network or FAT file systems): check, then rename.
            if self.path.exists():
                raise _exists_error(self.path) from None
            os.replace(self._tmp, self.path)
            return
        self._tmp.unlink()

    def abort(self) -> None:
        """Drop the temporary file. Safe to call after a failed commit."""
        self._pending = []
        try:
            self._writer.close()
        except BaseException:
            pass  # the file is being discarded; its writer's state does not matter
        self._tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# The bundled sample
# --------------------------------------------------------------------------------------------


def demo_path() -> Path:
    """Path of the bundled sample: real predictions of a model on scikit-learn's digits.

    450 test rows, 10 classes; columns ``row_id``, ``label`` and ``probs``, ``logits``,
    ``log_probs`` (``fixed_size_list<float32>[10]``). See :func:`demo_info`.

    Examples
    --------
    >>> demo_path().name
    'digits_predictions.parquet'
    """
    ref = resources.files("fastxent").joinpath("data").joinpath(DEMO_FILE)
    path = Path(str(ref))
    if not path.is_file():
        raise SourceError(
            f"the bundled sample {DEMO_FILE} is not a file on disk ({ref}); reinstall fastxent "
            f"from a wheel or a source checkout."
        )
    return path


def demo_info() -> dict[str, Any]:
    """What the bundled sample is: the JSON stored under its ``fastxent.demo`` metadata key.

    Examples
    --------
    >>> info = demo_info()
    >>> info["dataset"], info["n_test"]
    ('sklearn.datasets.load_digits', 450)
    """
    import pyarrow.parquet as pq

    metadata = pq.read_schema(demo_path()).metadata or {}
    raw = metadata.get(DEMO_METADATA_KEY)
    if raw is None:
        raise SourceError(f"{demo_path()} has no {DEMO_METADATA_KEY.decode()} metadata.")
    info: dict[str, Any] = json.loads(raw)
    return info
