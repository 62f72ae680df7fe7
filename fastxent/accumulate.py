"""A mergeable streaming accumulator: ``update`` batches, ``merge`` accumulators, ``result``.

The accumulator keeps the exactly-rounded float64 partial sums of every update and adds them
with :func:`math.fsum` at the end, so a stream gives the same result (to ~1e-15 relative)
whatever its batch sizes, batch order or merge tree.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ._errors import InvalidValueError
from ._validate import Options, as_pred, as_sample_weight, as_target


@dataclass(frozen=True)
class Score:
    """The result of scoring a data set.

    Attributes
    ----------
    loss : float
        The mean loss: ``loss_sum / weight_sum``.
    loss_sum : float
        Sum of the row losses times their sample weight.
    weight_sum : float
        The normaliser: sum of ``sample_weight * class_weight[label]`` over scored rows
        (labels), or of ``sample_weight`` (target distributions).
    n_rows : int
        Rows seen, scored or not.
    n_scored : int
        Rows that contributed to the loss.
    n_ignored : int
        Rows whose label is ``ignore_index``.
    n_skipped : int
        Rows left out by ``nan_policy="omit"``.
    perplexity : float
        ``exp(loss)``.
    accuracy : float or None
        Fraction of scored rows whose first argmax is the label (unweighted); None for target
        distributions, and for probabilities scored without reading whole rows.
    stderr : float or None
        Standard error of ``loss`` (delta method for the ratio of sums; the plain standard
        error of the mean without weights); None with fewer than 2 scored rows.
    """

    loss: float
    loss_sum: float
    weight_sum: float
    n_rows: int
    n_scored: int
    n_ignored: int
    n_skipped: int
    perplexity: float
    accuracy: float | None
    stderr: float | None

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict (non-finite floats become strings)."""
        out: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                value = str(value)  # "inf" / "nan": JSON has no literal for them
            out[key] = value
        return out


class Accumulator:
    """Cross entropy over a stream of batches, with the options of :func:`cross_entropy`.

    Parameters
    ----------
    pred_kind, weight, ignore_index, label_smoothing, eps, nan_policy, strict
        As for :func:`fastxent.cross_entropy`.
    check_rows : bool, default True
        Read whole rows on the gather path over probabilities: checks every entry (finite,
        in range, rows sum to 1) and gives the accuracy.

    Examples
    --------
    >>> import numpy as np, fastxent as fx
    >>> acc = fx.Accumulator(pred_kind="probs")
    >>> acc.update(np.array([[0.4, 0.4, 0.2]]), np.array([1]))
    >>> other = fx.Accumulator(pred_kind="probs")
    >>> other.update(np.array([[0.1, 0.2, 0.7]]), np.array([2]))
    >>> acc.merge(other)
    >>> score = acc.result()
    >>> round(score.loss, 4), score.n_rows, score.accuracy
    (0.6365, 2, 0.5)
    """

    def __init__(
        self,
        *,
        pred_kind: str = "probs",
        weight: Any = None,
        ignore_index: int | None = None,
        label_smoothing: float = 0.0,
        eps: float | str = "auto",
        nan_policy: str = "raise",
        strict: bool = False,
        check_rows: bool = True,
    ) -> None:
        self.options = Options.make(
            pred_kind=pred_kind,
            weight=weight,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            eps=eps,
            nan_policy=nan_policy,
            strict=strict,
            check_rows=check_rows,
        )
        self._parts: list[np.ndarray] = []
        self._rows = 0
        self._names = ("pred", "target")  # what messages call the data
        self._tols = (0.0, 0.0)  # sum-to-1 tolerances of predictions and targets
        self._n_classes: int | None = None
        self._target_kind: str | None = None

    @property
    def n_rows(self) -> int:
        """Rows seen so far (the row number the next update starts at)."""
        return self._rows

    def update(
        self,
        pred: Any,
        target: Any,
        sample_weight: Any = None,
        *,
        return_rows: bool = False,
        row_offset: int | None = None,
        names: tuple[str, str] = ("pred", "target"),
        warn: bool = True,
    ) -> np.ndarray | None:
        """Add a batch. With ``return_rows`` also return its per-row losses (float64).

        ``row_offset`` is the input row number of the batch's first row, used in error
        messages; by default, the number of rows seen before. ``names`` are what the
        prediction and target are called in messages (column names when streaming). With
        ``warn=False`` rows that do not sum to 1 are only recorded, to be reported once for
        the whole stream by :meth:`soft_problems`.
        """
        from ._engine import run, tolerances

        pred_arr = as_pred(pred, names[0])
        kind, target_arr = as_target(target, pred_arr.shape, names)
        n_classes = pred_arr.shape[1]
        if self._n_classes is None:
            self._n_classes, self._target_kind = n_classes, kind
        elif n_classes != self._n_classes:
            raise InvalidValueError(
                f"{names[0]} must have the same number of classes in every batch, that is "
                f"{self._n_classes}; this batch (rows from {self._offset(row_offset)}) has "
                f"{n_classes}."
            )
        elif kind != self._target_kind:
            raise InvalidValueError(
                f"{names[1]} must be of one form in every batch; earlier batches had "
                f"{self._target_kind}, this one has {kind}."
            )
        if kind == "dense" and self.options.ignore_index is not None:
            raise InvalidValueError(
                "ignore_index applies to integer labels only; with target distributions give "
                "the rows to skip a sample_weight of 0."
            )
        sw = as_sample_weight(sample_weight, pred_arr.shape[0])
        out = np.empty(pred_arr.shape[0]) if return_rows else None
        partials = run(
            pred_arr,
            kind,
            target_arr,
            self.options,
            sample_weight=sw,
            out=out,
            full_rows=bool(self.options.check_rows),
            row_offset=self._offset(row_offset),
            names=names,
            warn=warn,
        )
        self._names = names
        self._tols = tolerances(pred_arr.dtype, kind, target_arr.dtype)
        self._parts.append(partials.values)
        self._rows += pred_arr.shape[0]
        return out

    def _offset(self, row_offset: int | None) -> int:
        return self._rows if row_offset is None else int(row_offset)

    def merge(self, other: Accumulator) -> None:
        """Add another accumulator's batches (same options) into this one."""
        if not isinstance(other, Accumulator):
            raise TypeError(f"can only merge an Accumulator; got {type(other).__name__}.")
        if not _same_options(self.options, other.options):
            raise InvalidValueError(
                "can only merge accumulators created with the same options; got "
                f"{self.options} and {other.options}."
            )
        if other._n_classes is not None:
            if self._n_classes is None:
                self._n_classes, self._target_kind = other._n_classes, other._target_kind
            elif (other._n_classes, other._target_kind) != (self._n_classes, self._target_kind):
                raise InvalidValueError(
                    f"can only merge accumulators of the same shape of data; got "
                    f"{self._n_classes} classes ({self._target_kind}) and {other._n_classes} "
                    f"classes ({other._target_kind})."
                )
        if not self._parts:
            self._names, self._tols = other._names, other._tols
        self._parts.extend(other._parts)
        self._rows += other._rows

    def soft_problems(self) -> list[str]:
        """Rows that do not sum to 1, over everything added: one message per kind (predictions,
        targets) with how many rows, the first row and the worst deviation; [] if none."""
        from ._engine import Partials, soft_messages

        if not self._parts:
            return []
        return soft_messages(Partials.reduce(np.array(self._parts)), self._names, self._tols)

    def result(self) -> Score:
        """The :class:`Score` of everything added so far."""
        from . import _kernels as K

        if not self._parts or self._rows == 0:
            raise InvalidValueError("no rows were scored: the input is empty.")
        parts = np.array(self._parts)

        def total(col: int) -> float:
            return math.fsum(parts[:, col])

        loss_sum = total(K.ST_LOSS)
        norm = total(K.ST_NORM)
        n_scored = int(parts[:, K.ST_ROWS].sum())
        if norm == 0.0:
            raise InvalidValueError(
                "the mean loss is undefined: no row carries weight "
                f"({self._rows} rows, {n_scored} scored, "
                f"{int(parts[:, K.ST_IGNORED].sum())} ignored, "
                f"{int(parts[:, K.ST_SKIPPED].sum())} skipped)."
            )
        loss = loss_sum / norm
        stderr = None
        if n_scored > 1:
            # Delta method for R = sum(a) / sum(b): var ~ sum((a - R b)^2) n / (n - 1) / sum(b)^2
            spread = total(K.ST_LOSS2) - 2.0 * loss * total(K.ST_LOSSNORM)
            spread += loss * loss * total(K.ST_NORM2)
            if math.isfinite(spread):
                stderr = math.sqrt(max(spread, 0.0) * n_scored / (n_scored - 1)) / norm
        accuracy = None
        reads_rows = self.options.pred_kind == "logits" or bool(self.options.check_rows)
        if self._target_kind == "labels" and reads_rows and n_scored:
            accuracy = float(parts[:, K.ST_CORRECT].sum()) / n_scored
        try:
            perplexity = math.exp(loss)
        except OverflowError:
            perplexity = math.inf
        return Score(
            loss=loss,
            loss_sum=loss_sum,
            weight_sum=norm,
            n_rows=self._rows,
            n_scored=n_scored,
            n_ignored=int(parts[:, K.ST_IGNORED].sum()),
            n_skipped=int(parts[:, K.ST_SKIPPED].sum()),
            perplexity=perplexity,
            accuracy=accuracy,
            stderr=stderr,
        )


def _same_options(a: Options, b: Options) -> bool:
    if (a.weight is None) != (b.weight is None):
        return False
    if a.weight is not None and b.weight is not None and not np.array_equal(a.weight, b.weight):
        return False
    fields = (
        "pred_kind",
        "ignore_index",
        "label_smoothing",
        "eps",
        "nan_policy",
        "strict",
        "check_rows",
    )
    return all(getattr(a, f) == getattr(b, f) for f in fields)
