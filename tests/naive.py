"""Obvious, slow, plain-NumPy float64 reference for :func:`fastxent.cross_entropy`.

Everything here favours being evidently right over being fast: inputs are upcast to float64
first, rows are handled one at a time, and every sum goes through :func:`math.fsum`, so the
reference is as close to the exact value as float64 allows and the package's own rounding is
what the tests measure. ``tests/test_naive.py`` shows that this file agrees with
``torch.nn.functional.cross_entropy`` / ``nll_loss`` and ``sklearn.metrics.log_loss``.

The formula, for every ``pred_kind``, is torch's written in terms of ``logq``::

    logits    -> logq = log_softmax(x)
    log_probs -> logq = x
    probs     -> logq = log(clip(p, eps, 1 - eps))      (no clipping when eps == 0)

    labels y, smoothing e, class weights w, row weights s:
        row_i  = s_i * [(1 - e) * w[y_i] * -logq[i, y_i] + (e / C) * sum_j w_j * -logq[i, j]]
        norm_i = s_i * w[y_i]                  (both 0 for rows whose label is ignore_index)
    targets t, t' = (1 - e) * t + e / C:
        row_i  = s_i * sum_j w_j * t'_ij * -logq[i, j]
        norm_i = s_i

    reduction: "none" -> row, "sum" -> sum(row), "mean" -> sum(row) / sum(norm)

A term whose coefficient is zero contributes zero even when its ``logq`` is ``-inf`` (the
``xlogy`` convention sklearn uses), so a zero probability on a class that carries no target
mass gives a finite loss, never NaN. torch would give NaN there (``0 * -inf``); the tests never
compare with torch on such inputs.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["log_softmax", "naive_cross_entropy", "one_hot", "softmax"]


def softmax(x):
    """Row-wise softmax of a 2-D array, in float64, shifted by the row maximum."""
    x = np.asarray(x, dtype=np.float64)
    z = np.exp(x - x.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def log_softmax(x):
    """Row-wise log-softmax of a 2-D array, in float64, shifted by the row maximum.

    ``log(sum_j exp(x_j - m))`` is taken as ``log1p`` of the terms other than the maximum's
    own 1, so a row whose true class dominates keeps its tiny loss (~1e-30, not 0).
    """
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    for i, row in enumerate(x):
        k = int(np.argmax(row))
        shifted = row - row[k]
        rest = np.exp(np.delete(shifted, k))
        out[i] = shifted - math.log1p(math.fsum(rest))
    return out


def one_hot(labels, n_classes):
    """(N,) integer labels -> (N, n_classes) float64 one-hot rows."""
    labels = np.asarray(labels)
    out = np.zeros((labels.shape[0], n_classes), dtype=np.float64)
    out[np.arange(labels.shape[0]), labels.astype(np.int64)] = 1.0
    return out


def _neg_dot(coef, logq_row):
    """-sum_j coef_j * logq_j over the terms whose coefficient is non-zero."""
    used = coef != 0
    return math.fsum(-(coef[used] * logq_row[used]))


def _logq(pred, pred_kind, eps, source_dtype):
    if pred_kind == "logits":
        return log_softmax(pred)
    if pred_kind == "log_probs":
        return pred.copy()
    if pred_kind == "probs":
        if isinstance(eps, str):
            if eps != "auto":
                raise ValueError(f"eps must be 'auto' or a float; got {eps!r}")
            dtype = source_dtype if np.issubdtype(source_dtype, np.floating) else np.float64
            eps = float(np.finfo(dtype).eps)
        eps = float(eps)
        p = np.clip(pred, eps, 1.0 - eps) if eps > 0 else pred
        with np.errstate(divide="ignore"):
            return np.log(p)
    raise ValueError(f"pred_kind must be 'probs', 'logits' or 'log_probs'; got {pred_kind!r}")


def naive_cross_entropy(
    pred,
    target,
    *,
    pred_kind="probs",
    reduction="mean",
    weight=None,
    sample_weight=None,
    ignore_index=None,
    label_smoothing=0.0,
    eps="auto",
):
    """Reference cross entropy; see the module docstring for the formula.

    Integer ``target`` of shape (N,) is read as labels, floating ``target`` of shape (N, C) as
    target distributions. Returns a Python float for "mean"/"sum" and a float64 (N,) array for
    "none". A "mean" whose normaliser is zero (every row ignored, or zero weights) is 0/0 and
    gives NaN, as in torch; zero rows raise ``ValueError``.
    """
    pred_in = np.asarray(pred)
    x = pred_in.astype(np.float64)
    if x.ndim != 2:
        raise ValueError(f"pred must be 2-D; got shape {x.shape}")
    n_rows, n_classes = x.shape
    if n_rows == 0:
        raise ValueError("pred has no rows")
    logq = _logq(x, pred_kind, eps, pred_in.dtype)

    w = np.ones(n_classes) if weight is None else np.asarray(weight, dtype=np.float64)
    s = np.ones(n_rows) if sample_weight is None else np.asarray(sample_weight, np.float64)
    e = float(label_smoothing)
    target = np.asarray(target)
    rows = np.zeros(n_rows)
    norms = np.zeros(n_rows)

    if np.issubdtype(target.dtype, np.integer):
        for i in range(n_rows):
            if ignore_index is not None and int(target[i]) == int(ignore_index):
                continue
            y = int(target[i])
            if not 0 <= y < n_classes:
                raise ValueError(f"row {i} has label {y}, outside [0, {n_classes})")
            coef = np.zeros(n_classes)
            coef[y] = (1.0 - e) * w[y]
            # Two separate sums, like torch: (1-e) * nll + (e/C) * smooth.
            loss = _neg_dot(coef, logq[i])
            if e > 0:
                loss += _neg_dot((e / n_classes) * w, logq[i])
            rows[i] = s[i] * loss if s[i] != 0 else 0.0
            norms[i] = s[i] * w[y]
    elif np.issubdtype(target.dtype, np.floating):
        t = target.astype(np.float64)
        if t.shape != x.shape:
            raise ValueError(f"target shape {t.shape} != pred shape {x.shape}")
        if ignore_index is not None:
            raise ValueError("ignore_index applies to integer labels only")
        t = (1.0 - e) * t + e / n_classes
        for i in range(n_rows):
            loss = _neg_dot(w * t[i], logq[i])
            rows[i] = s[i] * loss if s[i] != 0 else 0.0
            norms[i] = s[i]
    else:
        raise TypeError(f"target must be integer labels or float targets; got {target.dtype}")

    if reduction == "none":
        return rows
    if reduction == "sum":
        return math.fsum(rows)
    if reduction == "mean":
        total = math.fsum(rows)
        norm = math.fsum(norms)
        if norm == 0:
            return math.nan
        return total / norm
    raise ValueError(f"reduction must be 'mean', 'sum' or 'none'; got {reduction!r}")
