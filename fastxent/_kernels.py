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

from ._config import FASTMATH, JIT_OPTIONS, PARALLEL_OPTIONS
from ._fastmath import fexp, log1p_f64, log_f64

_HELPER = {"fastmath": FASTMATH, "error_model": "numpy", "cache": JIT_OPTIONS["cache"]}
# Per-row helpers on the hot path are inlined at Numba's level: a call per row costs more
# than the arithmetic of a short row.
_HOT = {**_HELPER, "inline": "always"}

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
# Rows are processed in chunks of this many columns (4 AVX2 vectors of float32).
_CHUNK = 32


def new_stats(n_blocks: int) -> np.ndarray:
    """An empty ``stats`` array: sums at 0, first-row markers at -1."""
    stats = np.zeros((n_blocks, N_STATS))
    stats[:, [ST_FIRST_NAN, ST_FIRST_RANGE, ST_FIRST_LABEL, ST_PSUM_FIRST, ST_TSUM_FIRST]] = -1
    return stats


@njit(**_HELPER)
def _finish_block(state, loss, norm, sw, omit_nan, out, st, r0):
    """Turn per-row losses and states into the block's ``stats`` row (and ``out``).

    ``loss[i]`` is the row loss before the sample weight, ``norm[i]`` its share of the
    normaliser (``w[y_i]`` for labels, 1 for targets). The main loop is branch-free so it
    vectorises; rows with problems are located in a second loop only when there are any.
    """
    has_sw = sw.shape[0] > 0
    want_out = out.shape[0] > 0
    loss_sum = 0.0
    norm_sum = 0.0
    loss2 = 0.0
    lossnorm = 0.0
    norm2 = 0.0
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
        loss_sum += a
        norm_sum += b
        loss2 += a * a
        lossnorm += a * b
        norm2 += b * b
        rows += 1.0 if scored else 0.0
        correct += 1.0 if ((k == _FAST_HIT) | (k == _EXACT_HIT)) else 0.0
        ignored += 1.0 if k == _IGNORED else 0.0
        flagged += 1.0 if ((k >= _NONFINITE) & (k != _IGNORED)) else 0.0
        if want_out:
            out[i] = a if scored else (0.0 if k == _IGNORED else np.nan)
    st[ST_LOSS] += loss_sum
    st[ST_NORM] += norm_sum
    st[ST_LOSS2] += loss2
    st[ST_LOSSNORM] += lossnorm
    st[ST_NORM2] += norm2
    st[ST_ROWS] += rows
    st[ST_IGNORED] += ignored
    st[ST_CORRECT] += correct
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
def _mark_first(st, col, i):
    if st[col] < 0:
        st[col] = i


@njit(**_HELPER)
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
    """One vector loop over ``xf[start : start + n]``: the sum of exp(x - shift) over the
    entries that differ from ``shift``, and how many entries are above / equal to it.

    Entries equal to the shift (the label's own, and ties) contribute exactly 1 each; they are
    counted rather than summed so that a float32 sum never holds 1 + tiny. Counting with
    selects vectorises; a running max would not. Unsigned offsets instead of a slice: no
    wraparound checks in the loop and no reference counting per row.
    """
    acc = np.float32(0.0)  # unifies to float64 for float64 rows
    gt = np.float32(0.0)
    eq = np.float32(0.0)
    for j in range(n):
        d = xf[start + np.uint64(j)] - shift
        e = fexp(d)
        acc += e if d != 0 else np.float32(0.0)
        gt += np.float32(1.0) if d > 0 else np.float32(0.0)
        eq += np.float32(1.0) if d == 0 else np.float32(0.0)
    return acc, gt, eq


@njit(**_HOT)
def _row_sumexp_main(xf, start, n, shift, tail, tstart):
    """``sum exp(x - shift)`` over the whole 32-chunks of the row ``xf[start : start + n]``,
    excluding entries equal to ``shift``; the count of entries above and equal to it.

    The last ``n % 32`` differences are stored at ``tail[tstart:]`` (0 differences as -inf)
    and exponentiated later in one flat vector loop over the whole block: a scalar loop tail
    would cost more than the rest of a short row. float32 terms are summed in runs of
    ``_RUN`` and the runs in float64.
    """
    n_main = n - n % _CHUNK
    total = 0.0
    gt = 0.0
    eq = 0.0
    for c0 in range(0, n_main, _RUN):
        acc, g, q = _sumexp_run(xf, start + np.uint64(c0), min(_RUN, n_main - c0), shift)
        total += acc
        gt += g
        eq += q
    for j in range(n - n_main):
        d = xf[start + np.uint64(n_main + j)] - shift
        gt += 1.0 if d > 0 else 0.0
        eq += 1.0 if d == 0 else 0.0
        tail[tstart + np.uint64(j)] = d if d != 0 else -np.inf
    return total, gt, eq


@njit(**_HELPER)
def _label_is_first_argmax(row, lab):
    xy = row[lab]
    for j in range(row.shape[0]):
        if row[j] > xy or (j < lab and row[j] == xy):
            return False
    return True


@njit(**_HELPER)
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
    xy = np.float64(row[lab])
    state = _EXACT_HIT if (arg == lab and m > -np.inf) else _EXACT_MISS
    if xy == -np.inf:
        return np.inf, state
    # log-sum-exp = m + log1p(sum over j != first argmax): exact even when that sum is tiny.
    s = 0.0
    for j in range(n):
        s += math.exp(np.float64(row[j]) - m) if j != arg else 0.0
    return (m - xy) + math.log1p(s), state


@njit(**_HELPER)
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


@njit(**_HELPER)
def _mix(smoothing, main, smooth, n_classes):
    """``(1 - e) * main + (e / C) * smooth`` where a zero factor zeroes its term, even if the
    term is infinite (no 0 * inf = NaN)."""
    a = (1.0 - smoothing) * main if smoothing < 1.0 else 0.0
    b = (smoothing / n_classes) * smooth if smoothing > 0.0 else 0.0
    return a + b


@njit(**_HELPER)
def _two_class_pass(xf, labels, cw, has_ignore, ignore_index, loss, norm, state):
    """C == 2, branch-free so it vectorises across rows: loss = w[y] * log1p(exp(x_o - x_y)).

    ``xf`` is the block's rows flattened: 2-D indexing here defeats the vectoriser. Returns
    how many rows need the exact path (overflow, underflow, non-finite logits).
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
        e = np.float64(fexp(d))
        hit = (d < 0) | ((d == 0) & (lab == 0))
        fast = (abs(xy) < np.inf) & (e >= _TINY) & (e < np.inf)
        ok = (lab == 0) | (lab == 1)
        ign = has_ignore & (lab == ignore_index)
        k = (_FAST_HIT if hit else _FAST_MISS) if fast else _NEED_EXACT
        k = k if ok else _BAD_LABEL
        k = _IGNORED if ign else k
        state[i] = k
        wy = w0 if lab == 0 else w1
        norm[i] = wy
        v = wy * log1p_f64(e)
        loss[i] = v if wy != 0.0 else 0.0
        n_exact += 1.0 if k == _NEED_EXACT else 0.0
    return n_exact


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


@njit(**_HELPER)
def _gather_logits_block(x, labels, cw, cw_sum, has_ignore, ignore_index, smoothing,
                         u, norm, state, tail):
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
        for i in range(n):
            lab = labels[i]
            k = _label_state(lab, n_classes, has_ignore, ignore_index)
            start = np.uint64(i * n_classes)
            tstart = np.uint64(i * n_tail)
            xy = xf[start + np.uint64(lab)] if k < 0 else xf[start]
            if k < 0 and abs(xy) < np.inf:
                s, gt, eq = _row_sumexp_main(xf, start, n_classes, xy, tail, tstart)
                u[i] = s + (eq - 1.0)  # ties with the label count exactly 1 each
                state[i] = _FAST_MISS if gt > 0.0 else (_FAST_HIT if eq == 1.0 else _TIE)
            else:
                for j in range(n_tail):
                    tail[tstart + np.uint64(j)] = -np.inf
                u[i] = 0.0
                state[i] = k if k >= 0 else _NEED_EXACT
        # The columns past the last whole chunk, exponentiated in one flat vector loop.
        for j in range(tail.shape[0]):
            tail[j] = fexp(tail[j])
        for i in range(n):
            t = 0.0
            for j in range(n_tail):
                t += tail[i * n_tail + j]
            u[i] += t
        for i in range(n):
            k = state[i]
            if k == _NEED_EXACT or ((k <= _FAST_MISS or k == _TIE) and not _TINY <= u[i] < np.inf):
                # Overflow of the shifted sum, NaN or infinite logits, or a sum so small that
                # terms lost to float32 underflow could matter: recompute in float64.
                row = xf[i * n_classes : (i + 1) * n_classes]
                loss, state[i] = _logits_row_exact(row, labels[i])
                u[i] = loss
            elif k == _TIE:  # another class ties with the label: the first index wins
                row = xf[i * n_classes : (i + 1) * n_classes]
                state[i] = _FAST_HIT if _label_is_first_argmax(row, labels[i]) else _FAST_MISS
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


@njit(**PARALLEL_OPTIONS)
def xent_gather_logits(x, labels, cw, sw, has_ignore, ignore_index, smoothing, omit_nan,
                       out, stats, block_rows):
    """Integer labels, logits: ``logsumexp(x_i) - x_i[y_i]`` fused with the gather."""
    n = x.shape[0]
    cw_sum = 0.0
    for j in range(cw.shape[0]):
        cw_sum += cw[j]
    for b in prange(stats.shape[0]):
        r0 = b * block_rows
        r1 = min(n, r0 + block_rows)
        u = np.empty(r1 - r0)
        norm = np.empty(r1 - r0)
        state = np.empty(r1 - r0, np.int8)
        tail = np.empty((r1 - r0) * (x.shape[1] % _CHUNK), x.dtype)
        _gather_logits_block(x[r0:r1], labels[r0:r1], cw, cw_sum, has_ignore, ignore_index,
                             smoothing, u, norm, state, tail)
        _finish_block(state, u, norm, sw[r0:r1] if sw.shape[0] > 0 else sw, omit_nan,
                      out[r0:r1] if out.shape[0] > 0 else out, stats[b], r0)


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


@njit(**_HELPER)
def _gather_probs_block(x, labels, cw, cw_sum, has_ignore, ignore_index, smoothing, is_log,
                        clip_lo, clip_hi, full_rows, sum_tol, log_tol, st, r0, u, norm, state):
    n, n_classes = x.shape
    for i in range(n):
        lab = labels[i]
        u[i] = 1.0
        k = _label_state(lab, n_classes, has_ignore, ignore_index)
        if k >= 0:
            state[i] = k
            continue
        v = np.float64(x[i, lab])
        if full_rows:
            k, arg, total = _row_scan(x[i], is_log, log_tol)
            if k == _FAST_HIT:
                k = _FAST_HIT if arg == lab else _FAST_MISS
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
            u[i] = log_f64(u[i])
    for i in range(n):
        k = state[i]
        if k > _NONFINITE:
            continue
        lab = labels[i]
        wy = cw[lab]
        norm[i] = wy
        loss = (-wy * u[i] if wy != 0.0 else 0.0) if k != _NONFINITE else np.nan
        if smoothing > 0.0 and k != _NONFINITE:
            acc = 0.0
            for j in range(n_classes):
                w = cw[j]
                v = np.float64(x[i, j])
                lq = v if is_log else log_f64(min(max(v, clip_lo), clip_hi))
                acc -= w * lq if w != 0.0 else 0.0
            loss = _mix(smoothing, loss, acc, n_classes)
        u[i] = loss


@njit(**PARALLEL_OPTIONS)
def xent_gather_probs(x, labels, cw, sw, has_ignore, ignore_index, smoothing, omit_nan,
                      is_log, clip_lo, clip_hi, full_rows, sum_tol, log_tol, out, stats,
                      block_rows):
    """Integer labels, probabilities or log-probabilities: reads one entry per row.

    With ``full_rows`` every entry is read as well, to check the row (finite, in range, sums
    to 1) and to find its argmax for the accuracy.
    """
    n = x.shape[0]
    cw_sum = 0.0
    for j in range(cw.shape[0]):
        cw_sum += cw[j]
    for b in prange(stats.shape[0]):
        r0 = b * block_rows
        r1 = min(n, r0 + block_rows)
        u = np.empty(r1 - r0)
        norm = np.empty(r1 - r0)
        state = np.empty(r1 - r0, np.int8)
        _gather_probs_block(x[r0:r1], labels[r0:r1], cw, cw_sum, has_ignore, ignore_index,
                            smoothing, is_log, clip_lo, clip_hi, full_rows, sum_tol, log_tol,
                            stats[b], r0, u, norm, state)
        _finish_block(state, u, norm, sw[r0:r1] if sw.shape[0] > 0 else sw, omit_nan,
                      out[r0:r1] if out.shape[0] > 0 else out, stats[b], r0)


@njit(**_HELPER)
def _target_state(t):
    """State of a target row and its sum: non-finite, negative entries, or usable."""
    total = 0.0
    lowest = np.inf
    for j in range(t.shape[0]):
        v = np.float64(t[j])
        total += v
        lowest = v if v < lowest else lowest
    if not abs(total) < np.inf:
        return _NONFINITE, total
    if lowest < 0.0:
        return _OUT_OF_RANGE, total
    return _FAST_HIT, total


@njit(**_HELPER)
def _max_of(row):
    m = np.float32(-np.inf)  # unifies to float64 for float64 rows
    for j in range(row.shape[0]):
        v = row[j]
        m = v if v > m else m
    return m


@njit(**_HELPER)
def _dense_logits_row(row, t, cw, cw_sum, smoothing):
    """``-sum_j w_j t'_j log_softmax(row)_j``: one pass after the row max. NaN if unusable."""
    n_classes = row.shape[0]
    m = _max_of(row)
    mf = np.float64(m)
    if not abs(mf) < np.inf:
        return np.nan
    # Terms equal to the max contribute exactly 1: count them instead of summing them in
    # float32, so log(S) = log1p(S - 1) keeps its precision for confident rows.
    hits = 0.0
    tw = 0.0
    twx = 0.0
    wx = 0.0
    total = 0.0
    for c0 in range(0, n_classes, _RUN):
        part = row[c0 : min(n_classes, c0 + _RUN)]
        tpart = t[c0 : min(n_classes, c0 + _RUN)]
        wpart = cw[c0 : min(n_classes, c0 + _RUN)]
        acc = np.float32(0.0)
        cnt = np.float32(0.0)
        for j in range(part.shape[0]):
            d = part[j] - m
            e = fexp(d)
            acc += e if d != 0 else np.float32(0.0)
            cnt += np.float32(1.0) if d == 0 else np.float32(0.0)
        total += acc
        hits += cnt
        for j in range(part.shape[0]):
            dj = np.float64(part[j]) - mf
            wt = wpart[j] * np.float64(tpart[j])
            tw += wt
            # 0 * log 0 = 0: a class without target mass may have probability 0.
            twx += wt * dj if wt != 0.0 else 0.0
            wx += wpart[j] * dj if wpart[j] != 0.0 else 0.0
    if not total < np.inf:
        return np.nan
    if total < _TINY:  # terms may have underflowed float32: redo the sum in float64
        total = 0.0
        for j in range(n_classes):
            v = np.float64(row[j])
            total += math.exp(v - mf) if v != mf else 0.0
    log_s = log1p_f64((hits - 1.0) + total)
    if smoothing > 0.0:
        tw = _mix(smoothing, tw, cw_sum, n_classes)
        twx = _mix(smoothing, twx, wx, n_classes)
    return (tw * log_s if tw != 0.0 else 0.0) - twx


@njit(**_HELPER)
def _dense_block(x, t, cw, cw_sum, smoothing, kind, clip_lo, clip_hi, sum_tol, tsum_tol,
                 log_tol, st, r0, loss, norm, state):
    n, n_classes = x.shape
    for i in range(n):
        row = x[i]
        trow = t[i]
        norm[i] = 1.0
        loss[i] = np.nan
        k, tsum = _target_state(trow)
        if k == _FAST_HIT:
            _note_sum(st, ST_TSUM_BAD, ST_TSUM_DEV, ST_TSUM_FIRST, r0 + i, tsum, tsum_tol)
            if kind == 0:  # logits
                v = _dense_logits_row(row, trow, cw, cw_sum, smoothing)
                if v != v:  # decide why: NaN / +inf logit, or every logit -inf
                    k, _, _ = _row_scan(row, True, np.inf)
                    k = _NONFINITE if k == _FAST_HIT else k
                loss[i] = v
            else:
                is_log = kind == 2
                k, _, total = _row_scan(row, is_log, log_tol)
                if k == _FAST_HIT:
                    _note_sum(st, ST_PSUM_BAD, ST_PSUM_DEV, ST_PSUM_FIRST, r0 + i, total,
                              sum_tol)
                    acc = 0.0
                    for j in range(n_classes):
                        v = np.float64(row[j])
                        lq = v if is_log else log_f64(min(max(v, clip_lo), clip_hi))
                        tj = _mix(smoothing, np.float64(trow[j]), 1.0, n_classes)
                        wt = cw[j] * tj
                        acc += wt * lq if wt != 0.0 else 0.0  # 0 * log 0 = 0
                    loss[i] = -acc
        state[i] = k


@njit(**PARALLEL_OPTIONS)
def xent_dense(x, t, cw, sw, smoothing, omit_nan, kind, clip_lo, clip_hi, sum_tol, tsum_tol,
               log_tol, out, stats, block_rows):
    """Target distributions (soft labels): ``-sum_j w_j t'_j logq_j`` per row.

    ``kind``: 0 logits, 1 probabilities, 2 log-probabilities.
    """
    n = x.shape[0]
    cw_sum = 0.0
    for j in range(cw.shape[0]):
        cw_sum += cw[j]
    for b in prange(stats.shape[0]):
        r0 = b * block_rows
        r1 = min(n, r0 + block_rows)
        loss = np.empty(r1 - r0)
        norm = np.empty(r1 - r0)
        state = np.empty(r1 - r0, np.int8)
        _dense_block(x[r0:r1], t[r0:r1], cw, cw_sum, smoothing, kind, clip_lo, clip_hi,
                     sum_tol, tsum_tol, log_tol, stats[b], r0, loss, norm, state)
        _finish_block(state, loss, norm, sw[r0:r1] if sw.shape[0] > 0 else sw, omit_nan,
                      out[r0:r1] if out.shape[0] > 0 else out, stats[b], r0)
