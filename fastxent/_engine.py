"""Pick the kernel for validated arrays, run it in bounded chunks, and read its records.

Shared by the in-memory :func:`fastxent.cross_entropy` and the streaming
:class:`fastxent.Accumulator`: both call :func:`run`, which returns the per-call partial sums
(:class:`Partials`) and raises the precise error for the first unusable row.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numba
import numpy as np

from . import _kernels as K
from ._config import BLOCK_ELEMENTS, CONVERT_ELEMENTS, MAX_BLOCK_ROWS, SERIAL_ELEMENTS
from ._errors import InvalidValueError, SoftWarning
from ._validate import Options, log_tolerance, sum_tolerance

# Columns of the stats array by how blocks combine (index arrays, for fancy indexing).
_FLOAT_SUMS = np.array([K.ST_LOSS, K.ST_NORM, K.ST_LOSS2, K.ST_LOSSNORM, K.ST_NORM2])
_COUNTS = np.array(
    [K.ST_ROWS, K.ST_IGNORED, K.ST_CORRECT, K.ST_SKIPPED, K.ST_PSUM_BAD, K.ST_TSUM_BAD]
)
_FIRSTS = np.array(
    [K.ST_FIRST_NAN, K.ST_FIRST_RANGE, K.ST_FIRST_LABEL, K.ST_PSUM_FIRST, K.ST_TSUM_FIRST]
)
_MAXES = np.array([K.ST_PSUM_DEV, K.ST_TSUM_DEV])
_KIND_CODES = {"logits": 0, "probs": 1, "log_probs": 2}


@dataclass(frozen=True)
class Partials:
    """Reduced ``stats`` of one call: float sums (exactly rounded), counts, first-row markers."""

    values: np.ndarray  # (N_STATS,), first markers already offset to global rows

    @staticmethod
    def reduce(stats: np.ndarray) -> Partials:
        if stats.shape[0] == 1:  # one block: its row is already the reduction
            return Partials(stats[0].copy())
        out = np.empty(K.N_STATS)
        for col, column in zip(_FLOAT_SUMS, stats[:, _FLOAT_SUMS].T.tolist(), strict=True):
            out[col] = math.fsum(column)
        out[_COUNTS] = stats[:, _COUNTS].sum(axis=0)
        firsts = stats[:, _FIRSTS]
        seen = np.where(firsts >= 0, firsts, np.inf).min(axis=0, initial=np.inf)
        out[_FIRSTS] = np.where(np.isinf(seen), -1.0, seen)
        out[_MAXES] = stats[:, _MAXES].max(axis=0, initial=0.0)
        return Partials(out)

    def __getitem__(self, col: int) -> float:
        return float(self.values[col])


def _offset_firsts(stats: np.ndarray, offset: int) -> None:
    """Shift the first-row markers of ``stats`` (rows of stats) that are set by ``offset``."""
    firsts = stats[:, _FIRSTS]
    stats[:, _FIRSTS] = np.where(firsts >= 0, firsts + offset, firsts)


def block_rows_for(n_classes: int) -> int:
    """Rows per block: about ``BLOCK_ELEMENTS`` entries, at least 1 row."""
    return max(1, min(MAX_BLOCK_ROWS, BLOCK_ELEMENTS // n_classes))


@contextmanager
def _threads_for(work: int) -> Iterator[None]:
    """One thread for small calls (results do not depend on the thread count)."""
    if work >= SERIAL_ELEMENTS:
        yield
        return
    before = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(before)


def _readonly(a: np.ndarray) -> np.ndarray:
    # One Numba specialisation per dtype instead of two (read-only Arrow buffers vs writable).
    # Every read-only kernel argument goes through here, the empty "no weights" array too: a
    # writable one made every kernel compile twice, once with weights and once without.
    if a.flags.writeable:
        a = a.view()
        a.flags.writeable = False
    return a


def _kernel_matrix(a: np.ndarray, contiguous: bool) -> np.ndarray:
    """float16 widened to float32 (kernels have float32/float64 versions only); made
    C-contiguous when the kernel streams whole rows."""
    if a.dtype == np.float16:
        return np.ascontiguousarray(a, dtype=np.float32)
    if contiguous and not a.flags.c_contiguous:
        return np.ascontiguousarray(a)
    return a


def run(
    pred: np.ndarray,
    target_kind: str,
    target: np.ndarray,
    opts: Options,
    *,
    sample_weight: np.ndarray,
    out: np.ndarray | None = None,
    full_rows: bool = False,
    row_offset: int = 0,
    names: tuple[str, str] = ("pred", "target"),
    warn: bool = True,
) -> Partials:
    """Score validated arrays; fill ``out`` (per-row losses) when given.

    ``full_rows`` makes the gather path over probabilities read every entry (row checks,
    accuracy). Raises for unusable rows according to ``opts``, and for soft problems (rows
    that do not sum to 1) with ``opts.strict``; otherwise warns for them if ``warn``. The
    returned partials number rows from ``row_offset`` (their first-row markers are global).
    """
    n_rows, n_classes = pred.shape
    gather_probs = target_kind == "labels" and opts.pred_kind != "logits"
    # The gather path over probabilities reads one entry per row: size its blocks in rows.
    block_rows = MAX_BLOCK_ROWS if gather_probs and not full_rows else block_rows_for(n_classes)
    cw = _readonly(opts.class_weight(n_classes))
    has_ignore = opts.ignore_index is not None
    ignore_index = opts.ignore_index if has_ignore else 0
    omit = opts.nan_policy == "omit"
    clip_lo, clip_hi = opts.clip_bounds(pred.dtype)
    sum_tol, tsum_tol = tolerances(pred.dtype, target_kind, target.dtype)
    log_tol = log_tolerance(pred.dtype)
    smoothing = opts.label_smoothing
    kind = opts.pred_kind
    # A copy is needed for float16 and, except on the gather path over probabilities, for
    # layouts that are not row-contiguous: make it chunk by chunk, in bounded memory.
    needs_copy = pred.dtype == np.float16 or (not gather_probs and not pred.flags.c_contiguous)
    if target_kind == "dense":
        needs_copy |= target.dtype != pred.dtype or not target.flags.c_contiguous
    if needs_copy:
        per_chunk = max(block_rows, (CONVERT_ELEMENTS // n_classes) // block_rows * block_rows)
    else:
        per_chunk = n_rows
    results = []
    for r0 in range(0, n_rows, per_chunk):
        r1 = min(n_rows, r0 + per_chunk)
        x = _readonly(_kernel_matrix(pred[r0:r1], contiguous=not gather_probs))
        sw = _readonly(sample_weight[r0:r1])  # empty (no weights) or the chunk's weights
        o = out[r0:r1] if out is not None else np.empty(0)
        stats = K.new_stats(-(-(r1 - r0) // block_rows))
        common = (cw, sw, *((has_ignore, ignore_index) if target_kind == "labels" else ()))
        if target_kind == "labels" and kind == "logits":
            kernel = K.xent_gather_logits
            args = (x, _readonly(target[r0:r1]), *common, smoothing, omit)
        elif target_kind == "labels":
            kernel = K.xent_gather_probs
            args = (x, _readonly(target[r0:r1]), *common, smoothing, omit, kind == "log_probs",
                    clip_lo, clip_hi, full_rows, sum_tol, log_tol)  # fmt: skip
        else:
            kernel = K.xent_dense
            t = _readonly(np.ascontiguousarray(target[r0:r1], dtype=x.dtype))
            args = (x, t, *common, smoothing, omit, _KIND_CODES[kind], clip_lo, clip_hi,
                    sum_tol, tsum_tol, log_tol)  # fmt: skip
        touched = (r1 - r0) * (1 if gather_probs and not full_rows else n_classes)
        with _threads_for(touched):
            kernel(*args, o, stats, block_rows)
        if r0:
            _offset_firsts(stats, r0)
        results.append(stats)
    partials = Partials.reduce(np.concatenate(results) if len(results) > 1 else results[0])
    _raise_problems(partials, pred, target_kind, target, opts, row_offset, names)
    if row_offset:
        values = partials.values.copy()
        _offset_firsts(values[None, :], row_offset)
        partials = Partials(values)
    if partials[K.ST_PSUM_BAD] == 0 and partials[K.ST_TSUM_BAD] == 0:
        return partials  # every row sums to 1: no soft problem to report
    messages = soft_messages(partials, names, (sum_tol, tsum_tol))
    if messages and opts.strict:
        raise InvalidValueError(messages[0] + " Normalise the rows, or drop strict=True.")
    if warn:
        for message in messages:
            warnings.warn(message + _SOFT_FIX, SoftWarning, stacklevel=4)
    return partials


_SOFT_FIX = " Pass strict=True to make this an error."


def tolerances(
    pred_dtype: np.dtype, target_kind: str, target_dtype: np.dtype
) -> tuple[float, float]:
    """How far rows of predictions and of target distributions may sum away from 1."""
    tol = sum_tolerance(pred_dtype)
    return tol, max(tol, sum_tolerance(target_dtype)) if target_kind == "dense" else tol


def soft_messages(p: Partials, names: tuple[str, str], tols: tuple[float, float]) -> list[str]:
    """The soft problems recorded in ``p`` (rows that do not sum to 1), one message per kind:
    how many rows, the first (global) row and the worst deviation."""
    pname, tname = names
    messages = []
    for col_bad, col_dev, col_first, what, within in (
        (K.ST_PSUM_BAD, K.ST_PSUM_DEV, K.ST_PSUM_FIRST, f"{pname} probability rows", tols[0]),
        (K.ST_TSUM_BAD, K.ST_TSUM_DEV, K.ST_TSUM_FIRST, f"{tname} distributions", tols[1]),
    ):
        n_bad = int(p[col_bad])
        if n_bad:
            messages.append(
                f"{what} must sum to 1 (within {within:.2g}); {n_bad} rows do not, the first "
                f"is row {int(p[col_first])}, the worst is off by {p[col_dev]:.3g}."
            )
    return messages


def _first_bad_entry(row: np.ndarray, bad: np.ndarray) -> tuple[int, float]:
    j = int(np.flatnonzero(bad)[0])
    return j, float(row[j])


def _raise_problems(p: Partials, pred, target_kind, target, opts: Options, row_offset, names):
    pname, tname = names
    n_classes = pred.shape[1]
    i = int(p[K.ST_FIRST_LABEL])
    if i >= 0:
        value = int(target[i])
        fix = (
            f" Pass ignore_index={value} to skip rows labelled {value}."
            if value < 0 and opts.ignore_index is None
            else " Check that the label column matches the prediction columns."
        )
        raise InvalidValueError(
            f"{tname} labels must lie in [0, n_classes) = [0, {n_classes}); "
            f"row {row_offset + i} has {value}.{fix}"
        )
    i = int(p[K.ST_FIRST_RANGE])
    if i >= 0:
        row = np.asarray(pred[i], dtype=np.float64)
        if target_kind == "dense":
            trow = np.asarray(target[i], dtype=np.float64)
            if (trow < 0).any():
                j, v = _first_bad_entry(trow, trow < 0)
                raise InvalidValueError(
                    f"{tname} distributions must be >= 0; "
                    f"row {row_offset + i}, class {j} has {v!r}."
                )
        if opts.pred_kind == "log_probs":
            j, v = _first_bad_entry(row, row > log_tolerance(pred.dtype))
            raise InvalidValueError(
                f"{pname} log-probabilities must be <= 0 (pred_kind='log_probs'); "
                f"row {row_offset + i}, class {j} has {v!r}. "
                "If these are logits, pass pred_kind='logits'."
            )
        j, v = _first_bad_entry(row, (row < 0) | (row > 1))
        raise InvalidValueError(
            f"{pname} probabilities must lie in [0, 1] (pred_kind='probs'); "
            f"row {row_offset + i}, class {j} has {v!r}. "
            "If these are logits or log-probabilities, pass pred_kind='logits' or 'log_probs'."
        )
    i = int(p[K.ST_FIRST_NAN])
    if i >= 0 and opts.nan_policy == "raise":
        row = np.asarray(pred[i], dtype=np.float64)
        if opts.pred_kind == "probs":
            bad = ~np.isfinite(row)
        else:
            bad = np.isnan(row) | (row == np.inf)
        if bad.any():
            j, v = _first_bad_entry(row, bad)
            what, where = pname, f"row {row_offset + i}, class {j} has {v!r}"
        elif target_kind == "dense" and not np.isfinite(np.asarray(target[i], float)).all():
            trow = np.asarray(target[i], dtype=np.float64)
            j, v = _first_bad_entry(trow, ~np.isfinite(trow))
            what, where = tname, f"row {row_offset + i}, class {j} has {v!r}"
        else:
            what, where = pname, f"row {row_offset + i} has every logit equal to -inf"
        raise InvalidValueError(
            f"{what} must be finite where it reaches the loss; {where}. "
            "Fix the data, or pass nan_policy='omit' to skip such rows "
            "(nan_policy='propagate' returns NaN)."
        )
