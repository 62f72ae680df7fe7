"""The in-memory API: :func:`cross_entropy`."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._errors import InvalidValueError
from ._validate import Options, as_pred, as_sample_weight, as_target, check_reduction


def cross_entropy(
    pred: Any,
    target: Any,
    *,
    pred_kind: str = "probs",
    reduction: str = "mean",
    weight: Any = None,
    sample_weight: Any = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    eps: float | str = "auto",
    nan_policy: str = "raise",
    strict: bool = False,
    check_rows: bool | None = None,
) -> float | np.ndarray:
    r"""Cross entropy (log loss) of predictions against labels or target distributions.

    .. math::

        H(p, q) = -\sum_x p(x) \log q(x)

    With an integer label ``y`` the sum collapses to :math:`-\log q_y`: the **gather path**
    reads one entry per row for probabilities and log-probabilities, and fuses the row's
    log-sum-exp with the gather for logits. With target distributions (soft labels, one-hot
    included) the **dense path** reads whole rows. Logs are natural; sums are accumulated in
    float64 whatever the storage dtype.

    Parameters
    ----------
    pred : array_like, shape (n_rows, n_classes)
        Predictions, float16, float32 or float64 (kept as stored, never fully upcast), any
        strides, read-only buffers accepted. Interpreted according to ``pred_kind``.
    target : array_like
        Either integer class labels, shape (n_rows,), or float target distributions of the
        shape of ``pred``.
    pred_kind : {"probs", "logits", "log_probs"}, default "probs"
        ``"probs"`` matches :func:`sklearn.metrics.log_loss` (probabilities are clipped, see
        ``eps``); ``"logits"`` matches :func:`torch.nn.functional.cross_entropy`;
        ``"log_probs"`` matches :func:`torch.nn.functional.nll_loss` (and ``-sum t log q``
        for target distributions).
    reduction : {"mean", "sum", "none"}, default "mean"
        ``"mean"`` and ``"sum"`` return a Python float. ``"mean"`` divides by the sum of the
        normalising weights: ``sum_i s_i w[y_i]`` over rows not ignored (labels), or
        ``sum_i s_i`` (target distributions). ``"none"`` returns a float64 array of the row
        losses (times their sample weight) with 0.0 for ignored rows and NaN for rows left out
        by ``nan_policy="omit"``.
    weight : array_like, shape (n_classes,), optional
        Class weights ``w``: the loss of a row with label ``y`` is multiplied by ``w[y]``;
        for target distributions each term ``t_j log q_j`` by ``w[j]`` (as in torch).
    sample_weight : array_like, shape (n_rows,), optional
        Row weights ``s``: multiply each row's loss and its share of the normaliser.
    ignore_index : int, optional
        Rows whose label equals it are skipped (loss 0, not in the normaliser). Labels only:
        with target distributions use ``sample_weight`` 0 instead.
    label_smoothing : float in [0, 1], default 0.0
        Mixes the target with the uniform distribution, as torch does: for labels the row
        loss becomes ``(1 - e) w[y] (-log q_y) + (e / C) sum_j w[j] (-log q_j)``; target
        distributions become ``(1 - e) t + e / C``.
    eps : "auto" or float, default "auto"
        Probability clipping for ``pred_kind="probs"``: probabilities are clipped to
        ``[eps, 1 - eps]``; ``"auto"`` uses ``np.finfo(pred.dtype).eps`` (sklearn's rule); a
        float must lie in ``[0, 0.5)`` and not be subnormal; ``0`` disables clipping, so a
        true-class probability of 0 gives ``inf`` (never NaN).
    nan_policy : {"raise", "omit", "propagate"}, default "raise"
        A prediction that is NaN or +inf (or ±inf for probabilities) where it reaches the
        loss: raise an error naming the row, skip the row, or return NaN. A logit or
        log-probability of -inf is a probability of 0: fine on a wrong class, an infinite
        loss on the true class.
    strict : bool, default False
        Make rows of probabilities (or target distributions) that do not sum to 1 an error
        instead of a warning.
    check_rows : bool, optional
        On the gather path over probabilities, also read every entry of each row to check it
        (finite, in range, sums to 1). Off by default there, because the gather path
        otherwise reads one entry per row; the dense path always checks.

    Returns
    -------
    float or numpy.ndarray
        The mean or sum as a float, or the per-row losses (float64, shape (n_rows,)).

    Raises
    ------
    ValueError
        For labels outside ``[0, n_classes)``, probabilities outside [0, 1], non-finite
        predictions (``nan_policy="raise"``), mismatched shapes, empty input or bad options;
        the message names the row (0-based) and the value.
    TypeError
        For a ``target`` that is neither integer labels nor float distributions.

    See Also
    --------
    fastxent.Accumulator : the same loss over a stream of batches.
    fastxent.score : the same loss over a Parquet / Arrow source, in bounded memory.

    Examples
    --------
    >>> import numpy as np
    >>> import fastxent as fx
    >>> round(fx.cross_entropy(np.array([[0.1, 0.5, 0.1, 0.1, 0.2]]), np.array([0])), 6)
    2.302585
    >>> round(fx.cross_entropy([[0.4, 0.4, 0.2]], [1]), 2)
    0.92
    >>> round(fx.cross_entropy([[0.1, 0.2, 0.7]], [2]), 2)
    0.36

    The dense path with a one-hot target gives the same number:

    >>> round(fx.cross_entropy([[0.1, 0.2, 0.7]], [[0.0, 0.0, 1.0]]), 2)
    0.36

    Logits, per row:

    >>> fx.cross_entropy([[2.0, 0.0], [0.0, 2.0]], [0, 0], pred_kind="logits",
    ...                  reduction="none").round(4)
    array([0.1269, 2.1269])
    """
    from ._engine import run  # the kernels load lazily: importing fastxent compiles nothing

    reduction = check_reduction(reduction)
    opts = Options.make(
        pred_kind=pred_kind,
        weight=weight,
        ignore_index=ignore_index,
        label_smoothing=label_smoothing,
        eps=eps,
        nan_policy=nan_policy,
        strict=strict,
        check_rows=check_rows,
    )
    pred_arr = as_pred(pred)
    target_kind, target_arr = as_target(target, pred_arr.shape)
    if target_kind == "dense" and opts.ignore_index is not None:
        raise InvalidValueError(
            "ignore_index applies to integer labels only; with target distributions give "
            "the rows to skip a sample_weight of 0."
        )
    sw = as_sample_weight(sample_weight, pred_arr.shape[0])
    out = np.empty(pred_arr.shape[0]) if reduction == "none" else None
    partials = run(
        pred_arr,
        target_kind,
        target_arr,
        opts,
        sample_weight=sw,
        out=out,
        full_rows=bool(opts.check_rows),
    )
    if out is not None:
        return out
    from . import _kernels as K

    loss_sum = partials[K.ST_LOSS]
    if reduction == "sum":
        return loss_sum
    norm = partials[K.ST_NORM]
    if norm == 0.0:
        if partials[K.ST_ROWS] == 0:
            raise InvalidValueError(
                "no row is left to average over: every row is ignored or skipped. "
                "Use reduction='sum', or check ignore_index / nan_policy."
            )
        raise InvalidValueError(
            "the mean is undefined: the normalising weights (sample_weight times the class "
            "weight of each row's label) sum to 0. Use reduction='sum'."
        )
    return loss_sum / norm
