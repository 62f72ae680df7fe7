"""Numba kernels: arrays in, per-row losses and per-block partial sums out.

Kernels never raise and never see Python objects. They never index out of bounds, whatever
the labels hold: a label outside ``[0, n_classes)`` is recorded and the row is not read. Rows
whose values are unusable (NaN, +inf, a probability outside [0, 1], ...) are recorded too;
the caller (``losses.py``) turns the records into precise errors or warnings.

Work is split into fixed blocks of rows (``block_rows``), processed in parallel with
``prange``. Each block writes its own row of ``stats``; the caller adds the rows up in
float64 afterwards. Because the blocks do not depend on the thread count, the result is the
same bits for the same input on any number of threads.

Per-row loss (before the sample weight), with ``logq`` the log-probabilities of the row::

    labels:  (1 - eps) * w[y] * (-logq[y]) + (eps / C) * sum_j w[j] * (-logq[j]);  norm w[y]
    targets: -sum_j w[j] * t'[j] * logq[j],  t' = (1 - eps) * t + eps / C;        norm 1

and ``sample_weight[i]`` multiplies both the loss and the normaliser.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._config import EXACT_OPTIONS, HELPER_OPTIONS, HOT_OPTIONS, PARALLEL_OPTIONS
from ._fastmath import (
    bits_of,
    cast_like,
    fexp,
    fexp_sum,
    flat_rows,
    flog,
    flog1p_unit,
    flog_pos,
    fmax_of,
    log1p_f64,
    log_prob_for,
    no_bits,
    or_bits,
    pairs_of,
    pick_in_pair,
    prefetch2d,
    prefetch_span,
)

_HELPER = HELPER_OPTIONS
_HOT = HOT_OPTIONS
_EXACT = EXACT_OPTIONS

# Columns of the per-block ``stats`` array.
ST_LOSS = 0  # sum of a_i = s_i * loss_i
ST_NORM = 1  # sum of b_i = s_i * w[y_i] (labels) or s_i (targets)
ST_LOSS2 = 2  # sum of a_i ** 2       (for the standard error)
ST_LOSSNORM = 3  # sum of a_i * b_i
ST_NORM2 = 4  # sum of b_i ** 2
ST_ROWS = 5  # rows scored
ST_IGNORED = 6  # rows whose label is ignore_index
ST_CORRECT = 7  # scored rows whose first argmax equals the label
ST_SKIPPED = 8  # rows left out by nan_policy="omit"
ST_FIRST_NAN = 9  # first row with a NaN or infinite prediction / target (-1: none)
ST_FIRST_RANGE = 10  # first row with a probability outside [0, 1] or a negative target
ST_FIRST_LABEL = 11  # first row with a label outside [0, n_classes)
ST_PSUM_BAD = 12  # rows whose probabilities do not sum to 1 (within tolerance)
ST_PSUM_DEV = 13  # largest |sum - 1| of the predictions
ST_PSUM_FIRST = 14  # first such row
ST_TSUM_BAD = 15  # same for target distributions
ST_TSUM_DEV = 16
ST_TSUM_FIRST = 17
N_STATS = 18

# Row states inside a block (ordered: states up to _OUT_OF_RANGE have a valid label).
_FAST_HIT = 0  # u holds sum_{j != y} exp(x_j - x_y); argmax == label
_FAST_MISS = 1
_EXACT_HIT = 2  # u already holds the loss, computed by the exact fallback
_EXACT_MISS = 3
_NONFINITE = 4  # NaN / +inf prediction (or -inf probability), or non-finite target
_OUT_OF_RANGE = 5  # probability outside [0, 1], log-probability > 0, negative target
_IGNORED = 6
_BAD_LABEL = 7
_NEED_EXACT = 8  # transient: the fast path could not decide
_TIE = 9  # transient: the label's logit is the max but another class ties with it

# float32 terms are summed in runs of this length, then added in float64: accurate and fast.
_RUN = 1024
# A fast-path sum of exp terms below this may have lost terms to underflow (float32 exp is 0
# below ~1e-38): such rows are recomputed by the exact float64 path.
_TINY = 1e-30
# A fast-path sum above this may hold a term exp_sum_f32 clamped (it saturates at exp(88)):
# such rows, whose loss is above 69, are recomputed by the exact path too.
_HUGE = 1e30
# The smallest normal float32: clip bounds below it take the general probabilities loops.
_TINY_NORMAL = 1.1754943508222875e-38
# The O(N) gather asks for the entry this many rows ahead (see prefetch2d). Measured at
# 1M x 100 on Zen 3: 16 rows 9-27% faster than 64, 8 rows 7% slower, 32 no better than 64.
_PREFETCH_ROWS = 16
# Rows of at least this many classes ask for the next run's columns (4 KB of float32) before
# each run of the logits loops (see prefetch_span; in the spans of wide rows before the first
# run only, see _row_sumexp_wide): the hardware prefetcher alone left them
# waiting on memory (Zen 3, A/B against none, logits + labels: 1.4x at C = 512, 1.1-1.2x at
# 1,000, 1.04-1.14x at 32,000; neutral at 100 and 128, where the hardware keeps up. 8 KB
# ahead gained less at both; 2 KB less at 1,000 and about as much at 32,000. Soft targets:
# 1.1x at 512, 1.065x at 1,000, 1.02x at 32,000).
_PREFETCH_ROW_MIN = 256
# Rows are processed in chunks of this many columns (4 AVX2 vectors of float32).
_CHUNK = 32
# Rows of this many whole-chunk columns or more sum the chunks away from the label without
# the below / above split (:func:`_row_sumexp_wide`). Zen 3, single thread, against the
# split everywhere: 0.87x at 300 columns, 0.97x at 500, 1.08x at 700, 1.13x at 1,000.
_PLAIN_MIN = 640


_EMPTY_STATS = np.zeros(N_STATS)
_EMPTY_STATS[[ST_FIRST_NAN, ST_FIRST_RANGE, ST_FIRST_LABEL, ST_PSUM_FIRST, ST_TSUM_FIRST]] = -1


def new_stats(n_blocks: int) -> np.ndarray:
    """An empty ``stats`` array: sums at 0, first-row markers at -1."""
    stats = np.empty((n_blocks, N_STATS))
    stats[:] = _EMPTY_STATS
    return stats


#: The five running sums of a block, as :func:`_row_sums` starts them.
_NO_SUMS = (0.0, 0.0, 0.0, 0.0, 0.0)


@njit(**_HOT)
def _row_sums(sums, a, b):
    """``sums`` (of ``a``, ``b``, ``a*a``, ``a*b``, ``b*b``; see ``ST_*``) with one row's
    ``a_i = s_i * loss_i`` and ``b_i`` added. A tuple in, a tuple out: the hot loops keep the
    five sums in registers as if written out."""
    loss_sum, norm_sum, loss2, lossnorm, norm2 = sums
    return loss_sum + a, norm_sum + b, loss2 + a * a, lossnorm + a * b, norm2 + b * b


@njit(**_HELPER)
def _add_sums(st, sums, rows, correct):
    """Add a block's :func:`_row_sums` to its ``stats`` row ``st``."""
    loss_sum, norm_sum, loss2, lossnorm, norm2 = sums
    st[ST_LOSS] += loss_sum
    st[ST_NORM] += norm_sum
    st[ST_LOSS2] += loss2
    st[ST_LOSSNORM] += lossnorm
    st[ST_NORM2] += norm2
    st[ST_ROWS] += rows
    st[ST_CORRECT] += correct


@njit(**_HELPER)
def _finish_block(state, loss, norm, sw, omit_nan, out, st, r0):
    """Turn per-row losses and states into the block's ``stats`` row (and ``out``).

    ``loss[i]`` is the row loss before the sample weight, ``norm[i]`` its share of the
    normaliser (``w[y_i]`` for labels, 1 for targets). The main loop is branch-free so it
    vectorises; rows with problems are located in a second loop only when there are any.
    """
    has_sw = sw.shape[0] > 0
    want_out = out.shape[0] > 0
    sums = _NO_SUMS
    rows = 0.0
    ignored = 0.0
    correct = 0.0
    flagged = 0.0
    for i in range(state.shape[0]):
        k = state[i]
        scored = (k <= _EXACT_MISS) | ((k == _NONFINITE) & (not omit_nan))
        s = sw[i] if has_sw else 1.0
        a = s * loss[i] if (scored & (s != 0.0)) else 0.0
        b = s * norm[i] if scored else 0.0
        sums = _row_sums(sums, a, b)
        rows += 1.0 if scored else 0.0
        correct += 1.0 if ((k == _FAST_HIT) | (k == _EXACT_HIT)) else 0.0
        ignored += 1.0 if k == _IGNORED else 0.0
        flagged += 1.0 if ((k >= _NONFINITE) & (k != _IGNORED)) else 0.0
    if want_out:  # a loop of its own: the sums above keep the same order (and bits) either way
        for i in range(state.shape[0]):
            k = state[i]
            scored = (k <= _EXACT_MISS) | ((k == _NONFINITE) & (not omit_nan))
            s = sw[i] if has_sw else 1.0
            a = s * loss[i] if (scored & (s != 0.0)) else 0.0
            out[i] = a if scored else (0.0 if k == _IGNORED else np.nan)
    _add_sums(st, sums, rows, correct)
    st[ST_IGNORED] += ignored
    if flagged > 0.0:
        for i in range(state.shape[0]):
            k = state[i]
            if k == _NONFINITE:
                st[ST_SKIPPED] += 1.0 if omit_nan else 0.0
                _mark_first(st, ST_FIRST_NAN, r0 + i)
            elif k == _OUT_OF_RANGE:
                _mark_first(st, ST_FIRST_RANGE, r0 + i)
            elif k == _BAD_LABEL:
                _mark_first(st, ST_FIRST_LABEL, r0 + i)


@njit(**_HELPER)
def _ones(n):
    """``np.ones(n)``; called from a parallel kernel, where Numba would make ``np.ones`` a
    parallel region of its own (a thread-team start for a few kilobytes)."""
    return np.ones(n)


@njit(**_HELPER)
def _all_ones(a):
    """True if every class weight is 1 (no weighting)."""
    ones = True
    for j in range(a.shape[0]):
        ones &= a[j] == 1.0
    return ones


@njit(**_HELPER)
def _total(a):
    """Sum of a small float64 array (the class weights)."""
    acc = 0.0
    for j in range(a.shape[0]):
        acc += a[j]
    return acc


@njit(**_HELPER)
def _mark_first(st, col, i):
    if st[col] < 0:
        st[col] = i


@njit(**_HOT)
def _note_sum(st, col_bad, col_dev, col_first, i, total, tol):
    """Record a probability row (or target row) whose sum is off 1 by more than ``tol``."""
    dev = abs(total - 1.0)
    if dev > tol:
        st[col_bad] += 1.0
        st[col_dev] = max(st[col_dev], dev)
        if st[col_first] < 0:
            st[col_first] = i


@njit(**_HOT)
def _label_state(lab, n_classes, has_ignore, ignore_index):
    """``_IGNORED``, ``_BAD_LABEL`` or -1 for a label that can be used."""
    if has_ignore and lab == ignore_index:
        return _IGNORED
    if lab < 0 or lab >= n_classes:
        return _BAD_LABEL
    return -1


@njit(**_HOT)
def _sumexp_run(xf, start, n, shift):
    """One vector loop over ``xf[start : start + n]`` (``n`` even): the sums of
    exp(x - shift) over the entries below ``shift`` and over the entries at or above it.

    The label's own entry (and a tie) contributes exactly 1 to the second sum, which stays
    1 on a row whose label is the strict argmax: the first never holds 1 + tiny, and the
    caller tells a hit, a tie and a miss apart from the second alone. Two sums split by one
    comparison are cheaper than counting entries above and equal to the shift (Zen 3: eight
    vector operations fewer per 16 entries). The two halves of the run are two independent
    streams, each with its own sum below the shift: the loop waits on the exp's dependency
    chain, and two chains per step keep more work in flight (four streams spill registers).
    Unsigned offsets instead of a slice: no wraparound checks in the loop and no reference
    counting per row.
    """
    zero = np.float32(0.0)  # float32 accumulators unify to float64 for float64 rows
    below = zero
    above = zero
    h = n >> 1
    for j in range(h):
        d = xf[start + np.uint64(j)] - shift
        d2 = xf[start + np.uint64(h + j)] - shift
        # Computed unconditionally: a conditional call stops the vectoriser. The caller
        # redoes rows whose sum is below _TINY or above _HUGE (see exp_sum_f32).
        e = fexp_sum(d)
        e2 = fexp_sum(d2)
        below += (e if d < 0 else zero) + (e2 if d2 < 0 else zero)
        above += (zero if d < 0 else e) + (zero if d2 < 0 else e2)
    return below, above


@njit(**_HOT)
def _plain_run(xf, start, n, shift):
    """``sum exp(x - shift)`` over ``xf[start : start + n]`` with no split, and the largest
    :func:`bits_of` ``x - shift``: above 0 if an entry is above ``shift``, 0 if one equals it
    (``shift`` not 0, so no difference is -0.0). For the part of a row away from its label:
    two vector operations fewer per 8 entries than :func:`_sumexp_run`, and one stream of
    accumulators that stays in registers (Zen 3, 2 threads: logits + labels 1.22x faster
    at 100,000 x 1,000, 1.23x at 10,000 x 32,000)."""
    total = cast_like(0.0, shift)
    hi = bits_of(cast_like(-np.inf, shift))
    for j in range(n):
        d = xf[start + np.uint64(j)] - shift
        total += fexp_sum(d)
        hi = max(hi, bits_of(d))
    return total, hi


@njit(**_HOT)
def _split_span(xf, start, c0, c1, shift, prefetch):
    """:func:`_sumexp_run` over columns ``c0 : c1`` (a whole number of chunks) of the row at
    ``start``: float32 terms summed in runs of ``_RUN``, the runs in float64."""
    below = 0.0
    above = 0.0
    for r0 in range(c0, c1, _RUN):
        if prefetch:  # the next run (for C < 1024 the next rows)
            prefetch_span(xf, start + np.uint64(r0 + _RUN), _RUN)
        b, a = _sumexp_run(xf, start + np.uint64(r0), min(_RUN, c1 - r0), shift)
        below += b
        above += a
    return below, above


@njit(**_HOT)
def _row_tail(xf, start, n_main, n, shift, tail, tstart, tstride):
    """How many of the entries past the last whole chunk (``n_main : n``) of the row at
    ``start`` are above / equal to ``shift``; their differences stored at ``tail[tstart + j *
    tstride]`` (0 differences as -inf) to be exponentiated with the block's other tails."""
    # The counts in float32, like a run's (float64 chains cost 3%).
    t_gt = np.float32(0.0)
    t_eq = np.float32(0.0)
    for j in range(n - n_main):
        d = xf[start + np.uint64(n_main + j)] - shift
        t_gt += np.float32(1.0) if d > 0 else np.float32(0.0)
        t_eq += np.float32(1.0) if d == 0 else np.float32(0.0)
        tail[tstart + np.uint64(j) * tstride] = d if d != 0 else -np.inf
    return t_gt, t_eq


@njit(**_HOT)
def _row_sumexp_main(xf, start, n, shift, tail, tstart, tstride):
    """``sum exp(x - shift)`` over the whole 32-chunks of the row ``xf[start : start + n]``,
    split into the entries below ``shift`` and those at or above it (see
    :func:`_sumexp_run`); how many of the remaining entries are above / equal to it.

    The last ``n % 32`` differences are stored at ``tail[tstart + j * tstride]`` (0
    differences as -inf; the block's tails column by column, so that they are summed in
    vector loops over the rows) and exponentiated later in one flat vector loop over the
    whole block: a scalar loop tail would cost more than the rest of a short row.
    """
    n_main = n - n % _CHUNK
    below, above = _split_span(xf, start, 0, n_main, shift, n >= _PREFETCH_ROW_MIN)
    t_gt, t_eq = _row_tail(xf, start, n_main, n, shift, tail, tstart, tstride)
    return below, above, t_gt, t_eq


@njit(**_HOT)
def _row_sumexp_wide(xf, start, n, shift, lab, tail, tstart, tstride):
    """:func:`_row_sumexp_main` for rows of ``_PLAIN_MIN`` whole-chunk columns or more, where
    only the chunk of the label ``lab`` takes the split: the label's exact 1 kept out of the
    sum of small terms keeps a confident row's loss exact, and the other chunks take
    :func:`_plain_run`, in float32 runs of ``_RUN``. A run's ties (a whole number of exact
    1s in its sum) move to the second sum as one: the row then reads as a tie, which the
    first-index scan settles. A ``shift`` of 0 keeps the split everywhere (see
    :func:`_plain_run`).
    """
    n_main = n - n % _CHUNK
    c0 = min(lab - lab % _CHUNK, n_main) if shift != 0 else 0
    c1 = min(c0 + _CHUNK, n_main) if shift != 0 else n_main
    below, above = _split_span(xf, start, c0, c1, shift, True)
    t_gt, t_eq = _row_tail(xf, start, n_main, n, shift, tail, tstart, tstride)
    for p in range(2):  # the columns before and after the label's chunk, in one loop
        p0 = 0 if p == 0 else c1
        p1 = c0 if p == 0 else n_main
        for r0 in range(p0, p1, _RUN):
            # The next run, asked for only where the span starts: the row's order (the
            # label's chunk, then the columns before it, then after) breaks the hardware's
            # stream there, and once a span streams the hardware keeps up on its own. A
            # request before every run cost more than it saved on Zen 4 (2 threads, A/B in
            # one process, logits + labels: 1.45-1.69x faster at 10,000 x 32,000 and 1.48x at
            # 2,000 x 128,000 this way; rows of up to 1,024 columns, one run per span, keep
            # every request). Not measured on Zen 3, where a request before every run gained
            # 1.04-1.14x at 32,000 (see _PREFETCH_ROW_MIN). At 40,000 x 4,000 on Zen 4 no
            # request at all was 1.27x faster than either, but 0.92-0.97x at 1,000 columns.
            if r0 == p0:
                prefetch_span(xf, start + np.uint64(r0 + _RUN), _RUN)
            total, hi = _plain_run(xf, start + np.uint64(r0), min(_RUN, p1 - r0), shift)
            tie = 1.0 if hi == 0 else 0.0
            below += total - tie
            above += tie
            t_gt += np.float32(1.0) if hi > 0 else np.float32(0.0)
    return below, above, t_gt, t_eq


@njit(**_HELPER)
def _label_is_first_argmax(row, lab):
    xy = row[lab]
    for j in range(row.shape[0]):
        if row[j] > xy or (j < lab and row[j] == xy):
            return False
    return True


@njit(**_EXACT)
def _logits_row_exact(row, lab):
    """Slow, careful ``logsumexp(row) - row[lab]`` in float64 for rows the fast path rejects.

    Returns ``(loss, state)``: a NaN or +inf logit makes the row ``_NONFINITE``; a true-class
    logit of -inf gives an infinite loss (never NaN).
    """
    n = row.shape[0]
    m = -np.inf
    arg = 0
    for j in range(n):
        v = np.float64(row[j])
        if v != v or v == np.inf:
            return np.nan, _NONFINITE
        if v > m:
            m = v
            arg = j
    if m == -np.inf:  # every logit is -inf: the row is no distribution at all
        return np.nan, _NONFINITE
    xy = np.float64(row[lab])
    state = _EXACT_HIT if arg == lab else _EXACT_MISS
    if xy == -np.inf:
        return np.inf, state
    # log-sum-exp = m + log1p(sum over j != first argmax): exact even when that sum is tiny.
    s = 0.0
    for j in range(n):
        s += math.exp(np.float64(row[j]) - m) if j != arg else 0.0
    return (m - xy) + math.log1p(s), state


@njit(**_EXACT)
def _smoothing_term(row, cw):
    """``sum_j w_j * (-log_softmax(row)_j)`` in float64, a zero weight counting 0 even where
    the log-probability is -inf (the label-smoothing term; not on the hot path)."""
    n = row.shape[0]
    m = -np.inf
    for j in range(n):
        v = np.float64(row[j])
        m = v if v > m else m
    s = 0.0
    for j in range(n):
        s += math.exp(np.float64(row[j]) - m)
    lse = m + math.log(s)
    acc = 0.0
    for j in range(n):
        w = cw[j]
        acc += w * (lse - np.float64(row[j])) if w != 0.0 else 0.0
    return acc


@njit(**_HOT)
def _mix(smoothing, main, smooth, n_classes):
    """``(1 - e) * main + (e / C) * smooth`` where a zero factor zeroes its term, even if the
    term is infinite (no 0 * inf = NaN)."""
    a = (1.0 - smoothing) * main if smoothing < 1.0 else 0.0
    b = (smoothing / n_classes) * smooth if smoothing > 0.0 else 0.0
    return a + b


@njit(**_HOT)
def _needs_exact(k, u):
    """A row the float64 path must redo: overflow of the shifted sum, NaN or infinite
    logits, or a sum so small that terms lost to float32 underflow could matter."""
    fast = (k <= _FAST_MISS) | (k == _TIE)
    return (k == _NEED_EXACT) | (fast & (not _TINY <= u < _HUGE))


@njit(**_HELPER)
def _two_class_pass(xf, labels, cw, has_ignore, ignore_index, loss, norm, state):
    """C == 2, branch-free so it vectorises across rows: loss = w[y] * log1p(exp(x_o - x_y)).

    ``xf`` is the block's rows flattened: 2-D indexing here defeats the vectoriser. Returns
    how many rows need the exact path (non-finite logits, a loss too tiny for float32).
    """
    n_exact = 0.0
    w0 = cw[0]
    w1 = cw[1]
    for i in range(labels.shape[0]):
        lab = labels[i]
        a = xf[2 * i]
        b = xf[2 * i + 1]
        d = b - a if lab == 0 else a - b
        xy = a if lab == 0 else b
        # log1p(exp(d)) = max(d, 0) + log1p(exp(-|d|)): the log1p only ever sees [0, 1].
        en = fexp_sum(-abs(d))  # in the storage precision: float32 rows take a float32 log1p
        hit = (d < 0) | ((d == 0) & (lab == 0))
        # A tiny exp(d) is a tiny loss that float32 cannot hold accurately: exact path.
        fast = (abs(xy) < np.inf) & (abs(d) < np.inf) & ((d > 0) | (np.float64(en) >= _TINY))
        ok = (lab == 0) | (lab == 1)
        ign = has_ignore & (lab == ignore_index)
        k = (_FAST_HIT if hit else _FAST_MISS) if fast else _NEED_EXACT
        k = k if ok else _BAD_LABEL
        k = _IGNORED if ign else k
        state[i] = k
        wy = w0 if lab == 0 else w1
        norm[i] = wy
        v = wy * ((np.float64(d) if d > 0 else 0.0) + np.float64(flog1p_unit(en)))
        loss[i] = v if wy != 0.0 else 0.0
        n_exact += 1.0 if k == _NEED_EXACT else 0.0
    return n_exact


@njit(**_HOT)
def _pair_labels(labels, has_ignore, ignore_index, take_b):
    """The label checks of the two-column fused loops, and the labels as int32 into
    ``take_b`` (64-bit compares in the loops over the rows would halve their vectors).
    False if some label is rejected or ignored."""
    # Every label is 0 or 1 exactly when their bitwise or is (a negative one sets the sign).
    acc = labels[0] & 0
    for i in range(labels.shape[0]):
        lab = labels[i]
        acc |= lab
        take_b[i] = np.int32(lab)
    if acc < 0 or acc > 1:
        return False
    if has_ignore and (ignore_index == 0 or ignore_index == 1):
        for i in range(labels.shape[0]):
            if labels[i] == ignore_index:
                return False
    return True


@njit(**_HOT)
def _add_loss_sums(st, losses, sw, correct):
    """The block's five float64 sums over per-row ``losses`` (any precision) and weights."""
    sums = _NO_SUMS
    for i in range(losses.shape[0]):
        s = sw[i]
        sums = _row_sums(sums, s * np.float64(losses[i]) if s != 0.0 else 0.0, s)
    _add_sums(st, sums, losses.shape[0], correct)


@njit(**_HELPER)
def _two_class_fused(xf, labels, sw, has_ignore, ignore_index, st):
    """The common case of :func:`_two_class_pass` (no class weights, no smoothing, no per-row
    output) straight into the block's sums and accuracy. Returns False, having added
    nothing, if some row needs the general path (a rejected or ignored label, a non-finite
    logit, a loss too tiny for float32). ``sw`` holds a weight for every row.

    Three loops: the label checks (and the labels as int32), the losses in the storage
    precision (8 rows per AVX2 vector for float32; loss error ~1e-7 relative, against the
    1e-6 float32 tolerance), then the five float64 sums over them. One loop doing all ran 4
    rows per vector (64-bit label compares, float64 sums), spilling registers: on Zen 3 at
    4M x 2 this split is 1.6-1.7x faster.
    """
    n = labels.shape[0]
    zero = cast_like(0.0, xf[0])  # counts in the storage precision: exact up to 2**24 rows
    one = cast_like(1.0, xf[0])
    tiny = cast_like(_TINY, zero)
    take_b = np.empty(n, np.int32)
    if not _pair_labels(labels, has_ignore, ignore_index, take_b):
        return False
    odd = zero
    correct = zero
    losses = np.empty(n, xf.dtype)
    for i in range(n):
        first = take_b[i] == 0
        a = xf[2 * i]
        b = xf[2 * i + 1]
        d = b - a if first else a - b
        xy = a if first else b
        en = fexp_sum(-abs(d))
        fast = (abs(xy) < np.inf) & (abs(d) < np.inf) & ((d > 0) | (en >= tiny))
        odd += zero if fast else one
        correct += one if ((d < 0) | ((d == 0) & first)) else zero
        losses[i] = (d if d > 0 else zero) + flog1p_unit(en)
    if odd > 0:
        return False
    _add_loss_sums(st, losses, sw, np.float64(correct))
    return True


@njit(**_HELPER)
def _apply_class_weights(labels, cw, loss, norm):
    """``loss *= w[y]``, ``norm = w[y]``; clamps the index so rejected labels stay in bounds."""
    top = cw.shape[0] - 1
    for i in range(labels.shape[0]):
        lab = labels[i]
        lab = 0 if lab < 0 else (top if lab > top else lab)
        wy = cw[lab]
        norm[i] = wy
        loss[i] = wy * loss[i] if wy != 0.0 else 0.0


def _make_sumexp_rows(wide):
    """The first pass over a block's rows for C > 2 (``u = sum_{j != y} exp(x_j - x_y)``
    and the row's state), summing rows with :func:`_row_sumexp_wide` if ``wide`` else
    :func:`_row_sumexp_main`: one loop each (with both row sums in one loop, even behind a
    branch on the width, the short rows' loop ran 9-12% slower at 100 columns)."""

    @njit(**_HOT)
    def sumexp_rows(xf, labels, n_classes, has_ignore, ignore_index, u, state, tail):
        n = labels.shape[0]
        for i in range(n):
            lab = labels[i]
            k = _label_state(lab, n_classes, has_ignore, ignore_index)
            start = np.uint64(i * n_classes)
            tstart = np.uint64(i)
            xy = xf[start + np.uint64(lab)] if k < 0 else xf[start]
            if k < 0 and abs(xy) < np.inf:
                if wide:
                    s, q, t_gt, t_eq = _row_sumexp_wide(
                        xf, start, n_classes, xy, lab, tail, tstart, np.uint64(n)
                    )
                else:
                    s, q, t_gt, t_eq = _row_sumexp_main(
                        xf, start, n_classes, xy, tail, tstart, np.uint64(n)
                    )
                # q: the label's 1, 1 per tie and exp(x_j - x_y) > 1 per entry above the
                # label (the tail's ties counted). A select, not s + (q - 1): reassociation
                # would compute (s + 1) - 1 and lose a small s.
                q += t_eq
                u[i] = s if q == 1.0 else s + (q - 1.0)
                # A whole q > 1 is ties, or terms above the label that add up to a whole
                # number (exp(d) rounds to 1 for d < 6e-8): the exact scan decides.
                miss = (t_gt > 0.0) | (q != np.floor(q))
                state[i] = _FAST_MISS if miss else (_FAST_HIT if q == 1.0 else _TIE)
            else:
                for j in range(n_classes % _CHUNK):
                    tail[j * n + i] = -np.inf
                u[i] = 0.0
                state[i] = k if k >= 0 else _NEED_EXACT

    return sumexp_rows


_sumexp_rows = _make_sumexp_rows(False)
_sumexp_rows_wide = _make_sumexp_rows(True)


def _make_gather_logits_block(wide):
    """The block of :func:`xent_gather_logits`, made once for rows narrower than
    ``_PLAIN_MIN`` whole-chunk columns and once (``wide``) for the others: with both row
    loops in one block function, the short rows' loop ran 1-2% more instructions and 4-7%
    more cycles at 100 columns (single thread, Zen 3) than with no wide loop beside it; one
    block function per width runs as many instructions as before the wide loop existed."""

    @njit(**_HELPER)
    def gather_logits_block(
        x, labels, cw, cw_sum, has_ignore, ignore_index, smoothing, plain, u, norm, state, tail
    ):
        n, n_classes = x.shape
        xf = x.reshape(-1)
        n_tail = n_classes % _CHUNK
        # Pass 1: u = sum_{j != y} exp(x_j - x_y). Shifting by the true-class logit (not the max)
        # needs one read per row; a row where that overflows takes the exact path.
        if n_classes == 2:
            if _two_class_pass(xf, labels, cw, has_ignore, ignore_index, u, norm, state) > 0:
                for i in range(n):
                    if state[i] == _NEED_EXACT:
                        lab = labels[i]
                        loss, state[i] = _logits_row_exact(xf[2 * i : 2 * i + 2], lab)
                        u[i] = cw[lab] * loss if cw[lab] != 0.0 else 0.0
        else:
            if wide:
                _sumexp_rows_wide(xf, labels, n_classes, has_ignore, ignore_index, u, state, tail)
            else:
                _sumexp_rows(xf, labels, n_classes, has_ignore, ignore_index, u, state, tail)
            # The columns past the last whole chunk, exponentiated in one flat vector loop.
            for j in range(tail.shape[0]):
                tail[j] = fexp(tail[j])
            for j in range(n_tail):  # column by column: vector loops over the rows (-3.5% at C=100)
                for i in range(n):
                    u[i] += tail[j * n + i]
            # Rows the fast pass could not settle, found by a branch-free scan (usually none).
            n_odd = 0.0
            n_plain = 0.0
            for i in range(n):
                n_odd += 1.0 if _needs_exact(state[i], u[i]) | (state[i] == _TIE) else 0.0
                n_plain += 1.0 if state[i] <= _FAST_MISS else 0.0
            if plain and n_odd == 0.0 and n_plain == n:
                return True  # every row scored by the fast pass: the caller takes the logs
            if n_odd > 0.0:
                for i in range(n):
                    row = xf[i * n_classes : (i + 1) * n_classes]
                    if _needs_exact(state[i], u[i]):
                        loss, state[i] = _logits_row_exact(row, labels[i])
                        u[i] = loss
                    elif state[i] == _TIE:  # another class ties with the label: first index wins
                        hit = _label_is_first_argmax(row, labels[i])
                        state[i] = _FAST_HIT if hit else _FAST_MISS
            # Pass 2: one vectorised log over the block (kept apart from the gather of the class
            # weights, which would stop it vectorising), then class weights.
            for i in range(n):
                v = log1p_f64(u[i])
                u[i] = v if state[i] <= _FAST_MISS else u[i]
            _apply_class_weights(labels, cw, u, norm)
        if smoothing > 0.0:
            for i in range(n):
                if state[i] >= _NONFINITE:
                    continue
                row = xf[i * n_classes : (i + 1) * n_classes]
                u[i] = _mix(smoothing, u[i], _smoothing_term(row, cw), n_classes)
        return False

    return gather_logits_block


_gather_logits_block = _make_gather_logits_block(False)
_gather_logits_block_wide = _make_gather_logits_block(True)


@njit(**_HELPER)
def _plain_logits_sums(u, state, sw, st):
    """The block's sums straight from ``u = sum_{j != y} exp(x_j - x_y)`` when every row was
    scored by the fast pass with no class weights, smoothing or per-row output: the log, the
    sample weights and the sums of :func:`_finish_block` in one vector loop."""
    sums = _NO_SUMS
    correct = 0.0
    for i in range(u.shape[0]):
        s = sw[i]
        a = s * log1p_f64(u[i]) if s != 0.0 else 0.0
        sums = _row_sums(sums, a, s)
        correct += 1.0 if state[i] == _FAST_HIT else 0.0
    _add_sums(st, sums, u.shape[0], correct)


@njit(**PARALLEL_OPTIONS)
def xent_gather_logits(
    x, labels, cw, sw, has_ignore, ignore_index, smoothing, omit_nan, out, stats, block_rows
):
    """Integer labels, logits: ``logsumexp(x_i) - x_i[y_i]`` fused with the gather."""
    n = x.shape[0]
    cw_sum = _total(cw)
    plain = smoothing == 0.0 and out.shape[0] == 0 and _all_ones(cw)
    ones = _ones(block_rows if plain and sw.shape[0] == 0 else 0)  # as in xent_gather_probs
    wide = x.shape[1] - x.shape[1] % _CHUNK >= _PLAIN_MIN
    for b in prange(stats.shape[0]):
        r0 = b * block_rows
        r1 = min(n, r0 + block_rows)
        sw_b = sw[r0:r1] if sw.shape[0] > 0 else ones[: r1 - r0]
        if (
            plain
            and x.shape[1] == 2
            and _two_class_fused(
                x[r0:r1].reshape(-1), labels[r0:r1], sw_b, has_ignore, ignore_index, stats[b]
            )
        ):
            continue
        u = np.empty(r1 - r0)
        norm = np.empty(r1 - r0)
        state = np.empty(r1 - r0, np.int8)
        tail = np.empty((r1 - r0) * (x.shape[1] % _CHUNK), x.dtype)
        block = (x[r0:r1], labels[r0:r1], cw, cw_sum, has_ignore, ignore_index, smoothing, plain)
        if (
            _gather_logits_block_wide(*block, u, norm, state, tail)
            if wide
            else _gather_logits_block(*block, u, norm, state, tail)
        ):
            _plain_logits_sums(u, state, sw_b, stats[b])
            continue
        _finish_block(
            state,
            u,
            norm,
            sw[r0:r1] if sw.shape[0] > 0 else sw,
            omit_nan,
            out[r0:r1] if out.shape[0] > 0 else out,
            stats[b],
            r0,
        )


@njit(**_HELPER)
def _row_scan(row, is_log, log_tol):
    """Whole-row checks of predictions: ``(state, first argmax, sum of probabilities)``."""
    m = -np.inf
    arg = 0
    total = 0.0
    bad_nan = False
    bad_range = False
    for j in range(row.shape[0]):
        v = np.float64(row[j])
        if v != v or v == np.inf or (not is_log and v == -np.inf):
            bad_nan = True
        elif is_log:
            bad_range |= v > log_tol
            total += math.exp(v)
        else:
            bad_range |= (v < 0.0) | (v > 1.0)
            total += v
        if v > m:
            m = v
            arg = j
    if bad_nan:
        return _NONFINITE, arg, total
    if bad_range:
        return _OUT_OF_RANGE, arg, total
    return _FAST_HIT, arg, total


@njit(**_HOT)
def _probs_row_check(row, lab, is_log, log_tol):
    """Whole-row checks of a row of (log-)probabilities, vectorised: how many entries are
    invalid (NaN, infinite, outside [0, 1] / above 0), the sum of the probabilities, and
    whether ``lab`` is the row's first argmax."""
    n = row.shape[0]
    m = fmax_of(row, np.uint64(0), n)
    ltol = cast_like(log_tol, row[0])
    total = 0.0
    bad = 0.0
    for c0 in range(0, n, _RUN):
        acc = np.float32(0.0)  # unifies to float64 for float64 rows
        nb = np.float32(0.0)
        for j in range(min(_RUN, n - c0)):
            v = row[np.uint64(c0 + j)]
            if is_log:
                acc += fexp(v)
                nb += np.float32(0.0) if v <= ltol else np.float32(1.0)  # NaN counts as bad
            else:
                acc += v
                nb += np.float32(0.0) if ((v >= 0) & (v <= 1)) else np.float32(1.0)
        total += acc
        bad += nb
    hit = row[lab] == m
    if hit:  # the first argmax: no earlier entry equal to the max
        ties = np.float32(0.0)
        for j in range(lab):
            ties += np.float32(1.0) if row[np.uint64(j)] == m else np.float32(0.0)
        hit = ties == 0
    return bad, total, hit


@njit(**_HOT)
def _fused_terms(
    x, v, lab, labc, wy, s, has_ignore, ignore_index, is_log, clip_lo, clip_hi, log_tol
):
    """One row of :func:`_gather_probs_fused`: ``(bad, a, b)`` for the entry ``v`` read from ``x``
    at the clamped label ``labc``; ``bad`` is 1.0 if the row needs the general path."""
    # NaN fails every comparison; a log-probability of -inf (probability 0) is valid.
    good = (v <= log_tol) if is_log else ((v >= 0.0) & (v <= 1.0))
    good = good & (lab == labc) & (not (has_ignore & (lab == ignore_index)))
    lq = v if is_log else log_prob_for(x, min(max(v, clip_lo), clip_hi))
    b = s * wy
    a = -b * lq if b != 0.0 else 0.0
    return 0.0 if good else 1.0, a, b


@njit(**_HOT)
def _exact_like(lo, hi, like):
    """Whether the float64 clip bounds are exact and normal in the precision of the scalar
    ``like`` (the log of :func:`_two_class_probs_fused` takes positive normal numbers)."""
    exact = (np.float64(cast_like(lo, like)) == lo) & (np.float64(cast_like(hi, like)) == hi)
    return exact & (lo >= _TINY_NORMAL)


@njit(**_HELPER)
def _two_class_probs_fused(xf, labels, sw, has_ignore, ignore_index, clip_lo, clip_hi, st):
    """Two columns of probabilities (no class weights) straight into the block's sums, as
    :func:`_two_class_fused` does for logits: the label checks, then ``-log`` of the
    clipped entry in the storage precision (float32: 8 rows per AVX2 vector, 1 ulp, against
    the 1e-6 tolerance), then the float64 sums. Returns False, having added nothing, if a
    label or an entry needs the general path. The caller makes sure the clip bounds are
    exact in the storage precision, so clipping there is clipping in float64.
    """
    n = labels.shape[0]
    zero = cast_like(0.0, xf[0])
    one = cast_like(1.0, zero)
    lo = cast_like(clip_lo, zero)
    hi = cast_like(clip_hi, zero)
    take_b = np.empty(n, np.int32)
    if not _pair_labels(labels, has_ignore, ignore_index, take_b):
        return False
    odd = zero
    losses = np.empty(n, xf.dtype)
    for i in range(n):
        a = xf[2 * i]
        b = xf[2 * i + 1]
        v = a if take_b[i] == 0 else b  # both loaded: a blend, not a gather
        odd += zero if ((v >= zero) & (v <= one)) else one  # NaN fails both
        losses[i] = -flog_pos(min(max(v, lo), hi))
    if odd > 0:
        return False
    _add_loss_sums(st, losses, sw, 0.0)
    return True


@njit(**_HOT)
def _load_entries(x, labels, cw, with_weights, u, norm):
    """``u[i] = x[i, y_i]`` (the label clamped into range, so a bad label is never an index)
    and, ``with_weights``, ``norm[i] = cw[y_i]``: the O(N) gather's loads, in a loop of their
    own with the entry ``_PREFETCH_ROWS`` rows ahead requested into L2. The prefetch keeps
    the loop scalar; vectorised, it becomes a vector gather that holds few misses in flight
    (at 1M x 100 on Zen 4, this loop plus a vector loop over ``u`` took the gather from
    12.8 to 3.5 ms)."""
    n, n_classes = x.shape
    # The clamped labels first, in a vector loop: the loop of loads below then does no
    # index arithmetic but the row's (Zen 3, 1M x 100: 5% faster).
    cols = np.zeros(n + _PREFETCH_ROWS, np.int64)
    for i in range(n):
        cols[i] = min(max(labels[i], 0), n_classes - 1)
    for i in range(n):
        # Past the last row this asks for the next block's rows: a prefetch never faults.
        prefetch2d(x, i + _PREFETCH_ROWS, cols[i + _PREFETCH_ROWS])
        c = cols[i]
        u[i] = np.float64(x[i, c])
        if with_weights:
            norm[i] = cw[c]


@njit(**_HELPER)
def _gather_probs_fused(
    x, labels, cw, cw_ones, sw, has_ignore, ignore_index, is_log, clip_lo, clip_hi, log_tol, st,
    u, norm,
):  # fmt: skip
    """The common case of the O(N) gather in one vector loop straight into the block's sums:
    no smoothing, no per-row output, and every row usable (``sw`` holds a weight for every
    row, ones if none were given). Returns False, having added nothing, if some row is not
    (the caller then takes the general path for the block).

    Two columns: the entry is picked out of the whole row (a load from a label-dependent
    address is a slow vector gather). Probabilities (not logs) with no class weights and
    clip bounds exact in the storage precision (the default ``eps``) go to
    :func:`_two_class_probs_fused` (Zen 3, 4M x 2 float32: 1.6x this float64 loop); the rest
    of ``cw_ones`` runs a loop of its own (the class weight is the constant 1, 11% faster
    than selecting it). More columns: the entries (one cache line per row at an
    unpredictable offset) are loaded first into ``u`` (class weights into ``norm``) by
    :func:`_load_entries`; then the arithmetic runs as a vector loop over ``u``.
    """
    n, n_classes = x.shape
    if n_classes == 2 and cw_ones and not is_log and _exact_like(clip_lo, clip_hi, x[0, 0]):
        xf = flat_rows(x)
        return _two_class_probs_fused(
            xf, labels, sw, has_ignore, ignore_index, clip_lo, clip_hi, st
        )
    bad = 0.0
    sums = _NO_SUMS
    if n_classes == 2 and cw_ones:
        pairs = pairs_of(x)
        for i in range(n):
            lab = labels[i]
            labc = 0 if lab < 1 else 1
            v = np.float64(pick_in_pair(pairs, x, i, labc == 1))
            r, a, b = _fused_terms(
                x, v, lab, labc, 1.0, sw[i], has_ignore, ignore_index, is_log, clip_lo, clip_hi,
                log_tol,
            )  # fmt: skip
            bad += r
            sums = _row_sums(sums, a, b)
    elif n_classes == 2:
        pairs = pairs_of(x)
        w0 = cw[0]
        w1 = cw[1]
        for i in range(n):
            lab = labels[i]
            labc = 0 if lab < 1 else 1
            v = np.float64(pick_in_pair(pairs, x, i, labc == 1))
            r, a, b = _fused_terms(
                x, v, lab, labc, w1 if labc == 1 else w0, sw[i], has_ignore,
                ignore_index, is_log, clip_lo, clip_hi, log_tol,
            )  # fmt: skip
            bad += r
            sums = _row_sums(sums, a, b)
    else:
        _load_entries(x, labels, cw, not cw_ones, u, norm)
        for i in range(n):
            lab = labels[i]
            labc = 0 if lab < 0 else (n_classes - 1 if lab >= n_classes else lab)
            r, a, b = _fused_terms(
                x, u[i], lab, labc, 1.0 if cw_ones else norm[i], sw[i],
                has_ignore, ignore_index, is_log, clip_lo, clip_hi, log_tol,
            )  # fmt: skip
            bad += r
            sums = _row_sums(sums, a, b)
    if bad > 0.0:
        return False
    _add_sums(st, sums, n, 0.0)
    return True


@njit(**_HELPER)
def _gather_probs_pass(
    x, labels, cw, has_ignore, ignore_index, is_log, clip_lo, clip_hi, log_tol, u, norm, state
):
    """The O(N) gather: one entry per row, ``u = -w[y] log q_y``.

    Split into simple loops that vectorise: a loop holding only the loads keeps many cache
    misses in flight (checks mixed into it cost 2-3x). The label is clamped for the load, so
    a rejected label is never used as an index; rows are classified one by one only when a
    check failed somewhere in the block.
    """
    n, n_classes = x.shape
    rejected = 0
    for i in range(n):
        lab = labels[i]
        rejected += (lab < 0) | (lab >= n_classes) | (has_ignore & (lab == ignore_index))
    _load_entries(x, labels, cw, True, u, norm)
    flagged = 0.0
    for i in range(n):
        v = u[i]
        # NaN fails every comparison; a log-probability of -inf (probability 0) is valid.
        good = (v <= log_tol) if is_log else ((v >= 0.0) & (v <= 1.0))
        flagged += 0.0 if good else 1.0
        lq = v if is_log else log_prob_for(x, min(max(v, clip_lo), clip_hi))
        wy = norm[i]
        loss = -wy * lq
        u[i] = loss if wy != 0.0 else 0.0
    if rejected == 0 and flagged == 0.0:
        for i in range(n):
            state[i] = _FAST_MISS  # argmax unknown without reading the row
        return
    for i in range(n):
        lab = labels[i]
        k = _label_state(lab, n_classes, has_ignore, ignore_index)
        if k < 0:
            v = np.float64(x[i, lab])
            if v != v or v == np.inf or (not is_log and v == -np.inf):
                k = _NONFINITE
            elif (is_log and v > log_tol) or (not is_log and (v < 0.0 or v > 1.0)):
                k = _OUT_OF_RANGE
            else:
                k = _FAST_MISS
        state[i] = k
        if k == _NONFINITE:
            u[i] = np.nan  # nan_policy="propagate" must not see a clipped, finite loss


@njit(**_HELPER)
def _gather_probs_block(
    x,
    labels,
    cw,
    cw_sum,
    has_ignore,
    ignore_index,
    smoothing,
    is_log,
    clip_lo,
    clip_hi,
    full_rows,
    sum_tol,
    log_tol,
    st,
    r0,
    u,
    norm,
    state,
):
    n, n_classes = x.shape
    if not full_rows:
        _gather_probs_pass(
            x,
            labels,
            cw,
            has_ignore,
            ignore_index,
            is_log,
            clip_lo,
            clip_hi,
            log_tol,
            u,
            norm,
            state,
        )
        if smoothing > 0.0:
            _gather_probs_smoothing(x, labels, cw, is_log, clip_lo, clip_hi, smoothing, u, state)
        return
    for i in range(n):
        lab = labels[i]
        u[i] = 1.0
        k = _label_state(lab, n_classes, has_ignore, ignore_index)
        if k >= 0:
            state[i] = k
            continue
        v = np.float64(x[i, lab])
        if full_rows:
            row = x[i]
            bad, total, hit = _probs_row_check(row, lab, is_log, log_tol)
            if bad > 0:  # which problem, exactly: the slow scalar scan, for bad rows only
                k, _, _ = _row_scan(row, is_log, log_tol)
            else:
                k = _FAST_HIT if hit else _FAST_MISS
                _note_sum(st, ST_PSUM_BAD, ST_PSUM_DEV, ST_PSUM_FIRST, r0 + i, total, sum_tol)
        elif v != v or v == np.inf or (not is_log and v == -np.inf):
            k = _NONFINITE
        elif (is_log and v > log_tol) or (not is_log and (v < 0.0 or v > 1.0)):
            k = _OUT_OF_RANGE
        else:
            k = _FAST_MISS  # argmax unknown without reading the row
        state[i] = k
        if k <= _FAST_MISS:
            u[i] = v if is_log else min(max(v, clip_lo), clip_hi)
    if not is_log:
        for i in range(n):
            u[i] = log_prob_for(x, u[i])
    for i in range(n):
        k = state[i]
        if k > _NONFINITE:
            continue
        lab = labels[i]
        wy = cw[lab]
        norm[i] = wy
        loss = (-wy * u[i] if wy != 0.0 else 0.0) if k != _NONFINITE else np.nan
        u[i] = loss
    if smoothing > 0.0:
        _gather_probs_smoothing(x, labels, cw, is_log, clip_lo, clip_hi, smoothing, u, state)


@njit(**_HELPER)
def _gather_probs_smoothing(x, labels, cw, is_log, clip_lo, clip_hi, smoothing, u, state):
    """Label smoothing reads whole rows: ``u = (1 - e) u + (e / C) sum_j w_j (-log q_j)``."""
    n, n_classes = x.shape
    for i in range(n):
        if state[i] >= _NONFINITE:
            continue
        acc = 0.0
        for j in range(n_classes):
            w = cw[j]
            v = np.float64(x[i, j])
            lq = v if is_log else log_prob_for(x, min(max(v, clip_lo), clip_hi))
            acc -= w * lq if w != 0.0 else 0.0
        u[i] = _mix(smoothing, u[i], acc, n_classes)


@njit(**PARALLEL_OPTIONS)
def xent_gather_probs(
    x,
    labels,
    cw,
    sw,
    has_ignore,
    ignore_index,
    smoothing,
    omit_nan,
    is_log,
    clip_lo,
    clip_hi,
    full_rows,
    sum_tol,
    log_tol,
    out,
    stats,
    block_rows,
):
    """Integer labels, probabilities or log-probabilities: reads one entry per row.

    With ``full_rows`` every entry is read as well, to check the row (finite, in range, sums
    to 1) and to find its argmax for the accuracy.
    """
    n = x.shape[0]
    cw_sum = _total(cw)
    fusable = not full_rows and smoothing == 0.0 and out.shape[0] == 0
    cw_ones = _all_ones(cw)
    # Sample weights of 1 when there are none: a load in the fused loop is cheaper than a
    # select on whether there are weights (which stops LLVM vectorising it well).
    ones = _ones(block_rows if fusable and sw.shape[0] == 0 else 0)
    for b in prange(stats.shape[0]):
        r0 = b * block_rows
        r1 = min(n, r0 + block_rows)
        sw_b = sw[r0:r1] if sw.shape[0] > 0 else ones[: r1 - r0]
        u = np.empty(r1 - r0)
        norm = np.empty(r1 - r0)
        if fusable and _gather_probs_fused(
            x[r0:r1], labels[r0:r1], cw, cw_ones, sw_b, has_ignore, ignore_index, is_log, clip_lo,
            clip_hi, log_tol, stats[b], u, norm,
        ):  # fmt: skip
            continue
        state = np.empty(r1 - r0, np.int8)
        _gather_probs_block(
            x[r0:r1],
            labels[r0:r1],
            cw,
            cw_sum,
            has_ignore,
            ignore_index,
            smoothing,
            is_log,
            clip_lo,
            clip_hi,
            full_rows,
            sum_tol,
            log_tol,
            stats[b],
            r0,
            u,
            norm,
            state,
        )
        _finish_block(
            state,
            u,
            norm,
            sw[r0:r1] if sw.shape[0] > 0 else sw,
            omit_nan,
            out[r0:r1] if out.shape[0] > 0 else out,
            stats[b],
            r0,
        )


@njit(**_HOT)
def _dense_logits_run(xf, tf, base, n, m):
    """One vector loop over the columns ``[base, base + n)`` of an unweighted row of logits
    (``m`` its max) and its targets: the sums ``_dense_logits_row`` needs, in the storage
    precision."""
    acc = np.float32(0.0)  # float32 accumulators unify to float64 for float64 rows
    cnt = np.float32(0.0)
    ts = np.float32(0.0)
    tx = np.float32(0.0)
    signs = no_bits(tf[base])
    for j in range(n):
        d = xf[base + np.uint64(j)] - m
        tj = tf[base + np.uint64(j)]
        e = fexp_sum(d)  # d <= 0; rows whose sum is below _TINY are redone
        acc += e if d != 0 else np.float32(0.0)
        cnt += np.float32(1.0) if d == 0 else np.float32(0.0)
        ts += tj
        signs = or_bits(signs, tj)  # negative if a target is (or is -0.0: checked later)
        # Unguarded: a 0 target on a -inf logit makes tx NaN, and the row is redone exactly.
        tx += tj * d
    return acc, cnt, ts, np.float32(1.0) if signs < 0 else np.float32(0.0), tx


@njit(**_HOT)
def _dense_logits_row(
    xf, tf, start, n_classes, cw, weighted, cw_sum, smoothing, tail, tstart, tstride
):
    """The terms of ``-sum_j w_j t'_j log_softmax(x)_j`` for the row
    ``xf[start : start + n_classes]`` (targets at the same offsets of ``tf``):
    ``(u, tw, twx, tsum, tneg)`` with loss = tw * log1p(u) - twx (see :func:`_dense_loss`),
    the target sum and the count of negative targets; ``u`` leaves out the exp terms of the
    differences it stores in ``tail``. ``u`` is NaN when the fast pass cannot decide
    (non-finite logits) and -1 when its float32 sum fell below _TINY (the block redoes it,
    :func:`_dense_logits_rare`); an unweighted row's ``tw`` and ``twx`` come without label
    smoothing, which the block mixes in.

    One fused vector pass after the row max: S = 1 + u = sum_j exp(x_j - max) and
    twx = sum_j w_j t_j (x_j - max), with no per-element log; the log of S is left to a
    vectorised pass over the block (a scalar float64 log per row cost a fifth of the time).
    Terms equal to the max contribute exactly 1 to S: they are counted instead of summed in
    float32, so log S = log1p(S - 1) keeps its precision.
    """
    m = fmax_of(xf, start, n_classes)
    mf = np.float64(m)
    total = 0.0
    hits = 0.0
    tw = 0.0
    twx = 0.0
    wx = 0.0
    tsum = 0.0
    tneg = 0.0
    # Unweighted rows run in whole 32-chunks; the last n_classes % 32 differences go to
    # ``tail[tstart + j * tstride]`` (0 as -inf), exponentiated later in one flat vector loop
    # over the block, as in the gather: a scalar loop tail cost 40% of a row of 100 classes.
    n_tail = _dense_tail(n_classes, weighted)
    n_main = n_classes - n_tail
    for c0 in range(0, n_main, _RUN):
        base = start + np.uint64(c0)
        if weighted:
            acc = np.float32(0.0)  # float32 accumulators unify to float64 for float64 rows
            cnt = np.float32(0.0)
            ts = np.float32(0.0)
            tx = np.float32(0.0)
            dx = np.float32(0.0)
            neg = np.float32(0.0)
            wts = 0.0
            for j in range(min(_RUN, n_classes - c0)):
                d = xf[base + np.uint64(j)] - m
                e = fexp_sum(d)  # d <= 0; rows whose sum is below _TINY are redone
                acc += e if d != 0 else np.float32(0.0)
                cnt += np.float32(1.0) if d == 0 else np.float32(0.0)
                tj = tf[base + np.uint64(j)]
                ts += tj
                neg += np.float32(1.0) if tj < 0 else np.float32(0.0)
                w = cw[c0 + j]
                wt = w * tj
                wts += wt
                tx += wt * d if wt != 0 else 0.0  # 0 * log 0 = 0
                dx += w * d if w != 0 else 0.0
            tw += wts
        else:
            if n_classes >= _PREFETCH_ROW_MIN:
                # The targets' next run, and the logits the next row's max pass will read.
                prefetch_span(tf, base + np.uint64(_RUN), _RUN)
                if n_classes <= _RUN:  # (and the rows after it, up to 4 KB)
                    prefetch_span(xf, base + np.uint64(n_classes), _RUN)
            acc, cnt, ts, neg, tx = _dense_logits_run(xf, tf, base, min(_RUN, n_main - c0), m)
            tw += ts
            dx = 0.0  # unweighted rows: the block sums the differences for smoothing
        total += acc
        hits += cnt
        tsum += ts
        twx += tx
        wx += dx
        tneg += neg
    # The tail's own sums in the storage precision, like a run's (float64 chains cost 4%).
    t_hits = np.float32(0.0)
    t_ts = np.float32(0.0)
    t_neg = np.float32(0.0)
    t_tx = np.float32(0.0)
    for j in range(n_tail):
        d = xf[start + np.uint64(n_main + j)] - m
        tj = tf[start + np.uint64(n_main + j)]
        t_hits += np.float32(1.0) if d == 0 else np.float32(0.0)
        t_ts += tj
        t_neg += np.float32(1.0) if tj < 0 else np.float32(0.0)
        t_tx += tj * d if tj != 0 else np.float32(0.0)  # 0 * log 0 = 0
        tail[tstart + np.uint64(j) * tstride] = d if d != 0 else -np.inf
    hits += t_hits
    tw += t_ts
    tsum += t_ts
    tneg += t_neg
    twx += t_tx
    if not (abs(mf) < np.inf and total < np.inf and twx == twx):
        return np.nan, 0.0, 0.0, tsum, tneg
    # The rare work that reads the row again is the block's: an unweighted row's smoothing
    # term (:func:`_logit_gaps_sum`) and a sum below _TINY, whose terms may have underflowed
    # float32 (-1 here, redone by :func:`_dense_logits_redo`). Done here, behind a branch,
    # it made Numba keep an atomic reference count of ``xf`` and ``tail`` per row (Zen 3,
    # soft targets at 100 classes: 4% more instructions, 4-7% more cycles).
    if smoothing > 0.0 and weighted:
        tw = _mix(smoothing, tw, cw_sum, n_classes)
        twx = _mix(smoothing, twx, wx, n_classes)
    return _sum_off_max(total, hits) if total >= _TINY else -1.0, tw, twx, tsum, tneg


@njit(**_HOT)
def _sum_off_max(total, hits):
    """``S - 1`` from ``total``, the sum of the terms below the max, and ``hits``, how many
    entries equal it (each adds exactly 1 to S). A select, not (hits - 1) + total alone:
    reassociation would round 1 + total first, which only matters when hits == 1."""
    return total if hits == 1.0 else (hits - 1.0) + total


@njit(**_EXACT)
def _dense_logits_redo(xf, start, n_classes, tail, tstart, tstride, n_tail):
    """``u = S - 1`` of :func:`_dense_logits_row` for the row at ``start``, summed in float64
    (its float32 sum fell below _TINY); the row's entries in ``tail`` set to -inf, as their
    terms are in this sum."""
    mf = np.float64(fmax_of(xf, start, n_classes))
    total = 0.0
    hits = 0.0
    for j in range(n_classes):
        v = np.float64(xf[start + np.uint64(j)])
        total += math.exp(v - mf) if v != mf else 0.0
        hits += 1.0 if v == mf else 0.0
    for j in range(n_tail):
        tail[tstart + np.uint64(j) * tstride] = -np.inf
    return _sum_off_max(total, hits)


@njit(**_HOT)
def _logit_gaps_sum(xf, start, n_classes):
    """``sum_j (x_j - max x)`` over the row at ``start``: the smoothing term of an
    unweighted row of logits."""
    m = fmax_of(xf, start, n_classes)
    wx = 0.0
    for j in range(n_classes):
        wx += np.float64(xf[start + np.uint64(j)] - m)
    return wx


@njit(**_HOT)
def _dense_tail(n_classes, weighted):
    """How many columns at the end of a row of logits go to the block's tail buffer: the
    last ``n_classes % 32`` of unweighted rows of 32 or more classes (shorter rows are one
    loop; measured at C = 10, the buffer costs more than it saves)."""
    return n_classes % _CHUNK if (not weighted) and n_classes >= _CHUNK else 0


@njit(**_HELPER)
def _dense_loss(u, tw, twx):
    """``u = tw * log1p(u) - twx`` over a block's rows of logits, one vector loop (a NaN ``u``
    stays NaN: the row goes to the exact path)."""
    for i in range(u.shape[0]):
        v = u[i]
        loss = (tw[i] * log1p_f64(v) if tw[i] != 0.0 else 0.0) - twx[i]
        u[i] = loss if v == v else v


@njit(**_HOT)
def _clipped_log(v, lo, hi, pos):
    """``log`` of ``v`` clipped into [lo, hi]; ``pos``: ``lo`` is a positive normal number,
    so the log of positive normal numbers does (a constant at each inlined call site)."""
    c = min(max(v, lo), hi)
    return flog_pos(c) if pos else flog(c)


@njit(**_HOT)
def _probs_run(xf, tf, base, n, lo, hi, ltol, is_log, pos):
    """The unweighted sums of :func:`_dense_probs_row` over ``n`` entries from ``base``, in
    the storage precision. ``is_log`` and ``pos`` are constants at each call site: one
    vector loop per case, no invariant branch left in a loop for LLVM to unswitch."""
    at = cast_like(0.0, lo)  # sum_j t_j log q_j
    aw = at  # sum_j log q_j, for label smoothing
    ps = at
    nb = at
    ts = at
    tn = at
    one = cast_like(1.0, lo)
    zero = at
    for j in range(n):
        v = xf[base + np.uint64(j)]
        tj = tf[base + np.uint64(j)]
        if is_log:
            lq = v
            ps += fexp(v)
            nb += one if ((v > ltol) | (v != v)) else zero
        else:
            lq = _clipped_log(v, lo, hi, pos)
            ps += v
            nb += one if ((v < 0) | (v > 1) | (v != v)) else zero
        ts += tj
        tn += one if tj < 0 else zero
        at += tj * lq if tj != 0 else zero  # 0 * log 0 = 0
        aw += lq
    return at, aw, ps, nb, ts, tn


@njit(**_HOT)
def _dense_probs_row(
    xf, tf, start, n_classes, cw, weighted, is_log, clip_lo, clip_hi, log_tol, smoothing
):
    """``-sum_j w_j t'_j log q_j`` for probabilities (clipped) or log-probabilities, with
    the row checks fused in: returns (loss, prediction sum, count of bad predictions,
    target sum, count of negative targets). Vectorised in the storage precision, summed in
    runs of ``_RUN`` and then in float64."""
    first = xf[start]
    lo = cast_like(clip_lo, first)
    hi = cast_like(clip_hi, first)
    ltol = cast_like(log_tol, first)
    # A normal lower clip (eps="auto" and any eps >= 1.2e-38): the log of positive normal
    # numbers, without the special cases eps=0 needs (log 0 = -inf, subnormals).
    pos = np.float64(lo) >= _TINY_NORMAL
    acc_t = 0.0  # sum_j w_j t_j log q_j
    acc_w = 0.0  # sum_j w_j log q_j, for label smoothing
    psum = 0.0
    bad = 0.0
    tsum = 0.0
    tneg = 0.0
    for c0 in range(0, n_classes, _RUN):
        base = start + np.uint64(c0)
        m = min(_RUN, n_classes - c0)
        if weighted:
            at64 = 0.0
            aw64 = 0.0
            for j in range(m):
                v = xf[base + np.uint64(j)]
                tj = tf[base + np.uint64(j)]
                lq = v if is_log else _clipped_log(v, lo, hi, pos)
                w = cw[c0 + j]
                wt = w * tj
                at64 += wt * lq if wt != 0.0 else 0.0  # 0 * log 0 = 0
                aw64 += w * lq if w != 0.0 else 0.0
            acc_t += at64
            acc_w += aw64
        if is_log:
            at, aw, ps, nb, ts, tn = _probs_run(xf, tf, base, m, lo, hi, ltol, True, False)
        elif pos:
            at, aw, ps, nb, ts, tn = _probs_run(xf, tf, base, m, lo, hi, ltol, False, True)
        else:
            at, aw, ps, nb, ts, tn = _probs_run(xf, tf, base, m, lo, hi, ltol, False, False)
        if not weighted:
            acc_t += at
            acc_w += aw
        psum += ps
        bad += nb
        tsum += ts
        tneg += tn
    return -_mix(smoothing, acc_t, acc_w, n_classes), psum, bad, tsum, tneg


@njit(**_HELPER)
def _dense_two_class_logits(xf, tf, cw, cw_sum, smoothing, loss, tsum, flag):
    """C == 2 target distributions over logits, branch-free across rows (vectorises)."""
    w0 = cw[0]
    w1 = cw[1]
    for i in range(loss.shape[0]):
        a = xf[2 * i]
        b = xf[2 * i + 1]
        t0 = np.float64(tf[2 * i])
        t1 = np.float64(tf[2 * i + 1])
        hi_is_a = a >= b
        dn = b - a if hi_is_a else a - b  # <= 0, in the storage precision
        en = fexp_sum(dn)  # in the storage precision: float32 rows take a float32 log1p
        e = np.float64(en)
        d = np.float64(dn)
        log_s = np.float64(flog1p_unit(en)) if d != 0 else 0.6931471805599453
        tlo = t1 if hi_is_a else t0
        wlo = w1 if hi_is_a else w0
        tw = w0 * t0 + w1 * t1
        wt = wlo * tlo
        twx = wt * d if wt != 0.0 else 0.0  # 0 * log 0 = 0
        wx = wlo * d if wlo != 0.0 else 0.0
        tw = _mix(smoothing, tw, cw_sum, 2)
        twx = _mix(smoothing, twx, wx, 2)
        v = (tw * log_s if tw != 0.0 else 0.0) - twx
        ok = (abs(a) < np.inf) & (abs(b) < np.inf) & (e >= _TINY)
        loss[i] = v if ok else np.nan
        tsum[i] = t0 + t1
        flag[i] = 0 if ((t0 >= 0) & (t1 >= 0) & ok) else 1


@njit(**_HELPER)
def _dense_two_class_fused(xf, tf, sw, tsum_tol, st):
    """The common case of :func:`_dense_two_class_logits` (no class weights, no smoothing,
    no per-row output) straight into the block's sums. Returns False, having added
    nothing, if some row needs a closer look (the caller then takes the general path
    for the block): a non-finite logit, a loss the float32 sum cannot settle, a negative
    target or a target row that does not sum to 1. ``sw`` holds a weight for every row.

    Two loops, as in :func:`_two_class_fused`: the losses in the storage precision (8 rows
    per vector for float32), then the float64 target-sum check and sums over them.
    """
    n = sw.shape[0]
    zero = cast_like(0.0, xf[0])  # counts in the storage precision: exact up to 2**24 rows
    one = cast_like(1.0, xf[0])
    tiny = cast_like(_TINY, zero)
    log2 = cast_like(0.6931471805599453, zero)
    odd = zero
    losses = np.empty(n, xf.dtype)
    for i in range(n):
        a = xf[2 * i]
        b = xf[2 * i + 1]
        t0 = tf[2 * i]
        t1 = tf[2 * i + 1]
        hi_is_a = a >= b
        dn = b - a if hi_is_a else a - b  # <= 0, in the storage precision
        en = fexp_sum(dn)
        log_s = flog1p_unit(en) if dn != 0 else log2
        tlo = t1 if hi_is_a else t0
        losses[i] = (t0 + t1) * log_s - (tlo * dn if tlo != 0 else zero)  # 0 * log 0 = 0
        ok = (abs(a) < np.inf) & (abs(b) < np.inf) & (en >= tiny) & (t0 >= 0) & (t1 >= 0)
        odd += zero if ok else one
    if odd > 0:
        return False
    sums = _NO_SUMS
    bad_sum = 0.0
    for i in range(n):
        tw = np.float64(tf[2 * i]) + np.float64(tf[2 * i + 1])
        bad_sum += 0.0 if abs(tw - 1.0) <= tsum_tol else 1.0
        s = sw[i]
        sums = _row_sums(sums, s * np.float64(losses[i]), s)
    if bad_sum > 0.0:
        return False
    n64 = np.float64(n)
    # Every target row counts as correct, as in _finish_block (no accuracy for targets).
    _add_sums(st, sums, n64, n64)
    return True


@njit(**_HELPER)
def _dense_two_class_probs(
    xf, tf, cw, is_log, clip_lo, clip_hi, log_tol, smoothing, loss, psum, tsum, flag
):
    """C == 2 target distributions over (log-)probabilities, branch-free across rows."""
    w0 = cw[0]
    w1 = cw[1]
    lo = cast_like(clip_lo, xf[0])
    hi = cast_like(clip_hi, xf[0])
    ltol = cast_like(log_tol, xf[0])
    for i in range(loss.shape[0]):
        a = xf[2 * i]
        b = xf[2 * i + 1]
        t0 = np.float64(tf[2 * i])
        t1 = np.float64(tf[2 * i + 1])
        if is_log:
            la = np.float64(a)
            lb = np.float64(b)
            ps = np.float64(fexp(a)) + np.float64(fexp(b))
            bad = (a > ltol) | (b > ltol) | (a != a) | (b != b)
        else:
            la = np.float64(flog(min(max(a, lo), hi)))
            lb = np.float64(flog(min(max(b, lo), hi)))
            ps = np.float64(a) + np.float64(b)
            bad = (a < 0) | (a > 1) | (b < 0) | (b > 1) | (a != a) | (b != b)
        wt0 = w0 * t0
        wt1 = w1 * t1
        acc_t = (wt0 * la if wt0 != 0.0 else 0.0) + (wt1 * lb if wt1 != 0.0 else 0.0)
        acc_w = (w0 * la if w0 != 0.0 else 0.0) + (w1 * lb if w1 != 0.0 else 0.0)
        loss[i] = -_mix(smoothing, acc_t, acc_w, 2)
        psum[i] = ps
        tsum[i] = t0 + t1
        flag[i] = 1 if (bad | (t0 < 0) | (t1 < 0)) else 0


@njit(**_HELPER)
def _dense_logits_rare(xf, n_classes, weighted, cw_sum, smoothing, u, tw, twx, tail, n_tail):
    """The work :func:`_dense_logits_row` leaves to the block: rows whose sum it marked -1
    redone in float64, and label smoothing mixed into unweighted rows (NaN rows are left
    NaN)."""
    n = u.shape[0]
    n_redo = 0.0
    for i in range(n):  # branch-free: usually there is none
        n_redo += 1.0 if u[i] < 0.0 else 0.0
    if n_redo > 0.0:
        for i in range(n):
            if u[i] < 0.0:
                start = np.uint64(i * n_classes)
                u[i] = _dense_logits_redo(
                    xf, start, n_classes, tail, np.uint64(i), np.uint64(n), n_tail
                )
    if smoothing > 0.0 and not weighted:
        for i in range(n):
            if u[i] == u[i]:
                wx = _logit_gaps_sum(xf, np.uint64(i * n_classes), n_classes)
                tw[i] = _mix(smoothing, tw[i], cw_sum, n_classes)
                twx[i] = _mix(smoothing, twx[i], wx, n_classes)


@njit(**_HELPER)
def _dense_block(
    x,
    t,
    cw,
    cw_sum,
    smoothing,
    kind,
    clip_lo,
    clip_hi,
    sum_tol,
    tsum_tol,
    log_tol,
    st,
    r0,
    loss,
    norm,
    state,
):
    n, n_classes = x.shape
    xf = x.reshape(-1)
    tf = t.reshape(-1)
    weighted = not _all_ones(cw)
    is_log = kind == 2
    tsum = np.empty(n)
    psum = np.ones(n)
    flag = np.zeros(n, np.int8)
    tw = np.empty(n if kind == 0 and n_classes > 2 else 0)
    twx = np.empty(tw.shape[0])
    n_tail = _dense_tail(n_classes, weighted)
    tail = np.empty(n * n_tail if tw.shape[0] > 0 else 0, x.dtype)
    # Pass 1: the losses, the sums the checks need, and a flag for rows to look at again.
    if kind == 0 and n_classes == 2:
        _dense_two_class_logits(xf, tf, cw, cw_sum, smoothing, loss, tsum, flag)
    elif n_classes == 2:
        _dense_two_class_probs(
            xf, tf, cw, is_log, clip_lo, clip_hi, log_tol, smoothing, loss, psum, tsum, flag
        )
    else:
        for i in range(n):
            start = np.uint64(i * n_classes)
            if kind == 0:
                v, tw[i], twx[i], ts, tn = _dense_logits_row(
                    xf, tf, start, n_classes, cw, weighted, cw_sum, smoothing, tail,
                    np.uint64(i), np.uint64(n),
                )  # fmt: skip
                bad = 1.0 if v != v else 0.0
            else:
                v, ps, bad, ts, tn = _dense_probs_row(
                    xf,
                    tf,
                    start,
                    n_classes,
                    cw,
                    weighted,
                    is_log,
                    clip_lo,
                    clip_hi,
                    log_tol,
                    smoothing,
                )
                psum[i] = ps
            loss[i] = v
            tsum[i] = ts
            flag[i] = 1 if (bad > 0 or tn > 0) else 0
        if kind == 0:
            _dense_logits_rare(
                xf, n_classes, weighted, cw_sum, smoothing, loss, tw, twx, tail, n_tail
            )
            # The columns past the last whole chunk, exponentiated in one flat vector loop.
            for j in range(tail.shape[0]):
                tail[j] = fexp(tail[j])
            for j in range(n_tail):  # column by column: vector loops over the rows
                for i in range(n):
                    loss[i] += tail[j * n + i]
            _dense_loss(loss, tw, twx)
    # Pass 2: row states and the sum-to-1 records. A branch-free scan first: in the common
    # case (no flagged row, every sum within tolerance) it is all there is to do.
    n_odd = 0.0
    for i in range(n):
        norm[i] = 1.0
        state[i] = _FAST_HIT
        odd = (flag[i] != 0) | (not abs(tsum[i] - 1.0) <= tsum_tol)
        odd |= (kind != 0) & (not abs(psum[i] - 1.0) <= sum_tol)
        n_odd += 1.0 if odd else 0.0
    if n_odd == 0.0:
        return
    for i in range(n):
        ts = tsum[i]
        k = _FAST_HIT
        if not abs(ts) < np.inf:
            k = _NONFINITE
        elif flag[i] != 0:
            trow = t[i]
            neg = False
            for j in range(n_classes):
                neg |= trow[j] < 0
            if neg:
                k = _OUT_OF_RANGE
            elif loss[i] != loss[i] or kind != 0:
                # Decide why, slowly: NaN / +inf (or -inf probability), or out of range.
                k, _, _ = _row_scan(x[i], kind != 1, np.inf if kind == 0 else log_tol)
                if kind == 0 and k == _FAST_HIT:
                    # No NaN / +inf: -inf logits, or a sum that underflowed float32.
                    if fmax_of(xf, np.uint64(i * n_classes), n_classes) == -np.inf:
                        k = _NONFINITE  # every logit is -inf: there is no distribution
                    else:
                        loss[i] = _dense_logits_exact(x[i], t[i], cw, smoothing)
        if k == _NONFINITE:
            loss[i] = np.nan  # nan_policy="propagate" must not see a clipped, finite loss
        if k == _FAST_HIT:
            _note_sum(st, ST_TSUM_BAD, ST_TSUM_DEV, ST_TSUM_FIRST, r0 + i, ts, tsum_tol)
            if kind != 0:
                _note_sum(st, ST_PSUM_BAD, ST_PSUM_DEV, ST_PSUM_FIRST, r0 + i, psum[i], sum_tol)
        state[i] = k


@njit(**_EXACT)
def _dense_logits_exact(row, t, cw, smoothing):
    """Slow float64 dense loss over logits for rows the fast pass flagged (tiny sums)."""
    n = row.shape[0]
    m = -np.inf
    arg = 0
    for j in range(n):
        v = np.float64(row[j])
        if v > m:
            m = v
            arg = j
    s = 0.0
    for j in range(n):
        s += math.exp(np.float64(row[j]) - m) if j != arg else 0.0
    l1p = math.log1p(s)
    acc = 0.0
    for j in range(n):
        tj = _mix(smoothing, np.float64(t[j]), 1.0, n)
        wt = cw[j] * tj
        # -log q_j = (m - x_j) + log1p(s): keeps a tiny loss on the argmax exact.
        acc += wt * ((m - np.float64(row[j])) + l1p) if wt != 0.0 else 0.0
    return acc


@njit(**PARALLEL_OPTIONS)
def xent_dense(
    x,
    t,
    cw,
    sw,
    smoothing,
    omit_nan,
    kind,
    clip_lo,
    clip_hi,
    sum_tol,
    tsum_tol,
    log_tol,
    out,
    stats,
    block_rows,
):
    """Target distributions (soft labels): ``-sum_j w_j t'_j logq_j`` per row.

    ``kind``: 0 logits, 1 probabilities, 2 log-probabilities.
    """
    n, n_classes = x.shape
    cw_sum = _total(cw)
    fusable = kind == 0 and n_classes == 2 and _all_ones(cw) and smoothing == 0.0
    fusable &= out.shape[0] == 0
    ones = _ones(block_rows if fusable and sw.shape[0] == 0 else 0)  # as in xent_gather_probs
    for b in prange(stats.shape[0]):
        r0 = b * block_rows
        r1 = min(n, r0 + block_rows)
        sw_b = sw[r0:r1] if sw.shape[0] > 0 else ones[: r1 - r0]
        if fusable and _dense_two_class_fused(
            x[r0:r1].reshape(-1), t[r0:r1].reshape(-1), sw_b, tsum_tol, stats[b]
        ):
            continue
        loss = np.empty(r1 - r0)
        norm = np.empty(r1 - r0)
        state = np.empty(r1 - r0, np.int8)
        _dense_block(
            x[r0:r1],
            t[r0:r1],
            cw,
            cw_sum,
            smoothing,
            kind,
            clip_lo,
            clip_hi,
            sum_tol,
            tsum_tol,
            log_tol,
            stats[b],
            r0,
            loss,
            norm,
            state,
        )
        _finish_block(
            state,
            loss,
            norm,
            sw[r0:r1] if sw.shape[0] > 0 else sw,
            omit_nan,
            out[r0:r1] if out.shape[0] > 0 else out,
            stats[b],
            r0,
        )
