"""Canonicalise inputs (dtype, contiguity, shapes) or raise a precise error.

Messages follow one pattern: what the parameter must be, the requirement in the caller's own
numbers, what was received, and how to fix it.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._errors import InvalidTypeError, InvalidValueError

# A clip below this would hand a subnormal to the kernels' logs, which assume normal numbers.
_SMALLEST_NORMAL = float(np.finfo(np.float64).tiny)

PRED_KINDS = ("probs", "logits", "log_probs")
REDUCTIONS = ("mean", "sum", "none")
NAN_POLICIES = ("raise", "omit", "propagate")
FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
# Machine epsilon per storage dtype, looked up once: np.finfo costs microseconds per call.
_EPS = {dtype: float(np.finfo(dtype).eps) for dtype in FLOAT_DTYPES}


def _choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise InvalidValueError(f"{name} must be one of {listed}; got {value!r}.")
    return value


@dataclass(frozen=True)
class Options:
    """Validated options shared by :func:`cross_entropy`, the accumulator and the scorers."""

    pred_kind: str = "probs"
    weight: np.ndarray | None = None
    ignore_index: int | None = None
    label_smoothing: float = 0.0
    eps: float | str = "auto"
    nan_policy: str = "raise"
    strict: bool = False
    check_rows: bool | None = None

    @classmethod
    def make(
        cls,
        *,
        pred_kind: str = "probs",
        weight: Any = None,
        ignore_index: Any = None,
        label_smoothing: Any = 0.0,
        eps: Any = "auto",
        nan_policy: str = "raise",
        strict: bool = False,
        check_rows: bool | None = None,
    ) -> Options:
        _choice("pred_kind", pred_kind, PRED_KINDS)
        _choice("nan_policy", nan_policy, NAN_POLICIES)
        if ignore_index is not None:
            if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(
                ignore_index, numbers.Integral
            ):
                raise InvalidValueError(
                    f"ignore_index must be an integer or None; got {ignore_index!r}."
                )
            ignore_index = int(ignore_index)
        if isinstance(label_smoothing, (bool, np.bool_)) or not isinstance(
            label_smoothing, numbers.Real
        ):
            raise InvalidValueError(
                f"label_smoothing must be a number in [0, 1]; got {label_smoothing!r}."
            )
        label_smoothing = float(label_smoothing)
        if not 0.0 <= label_smoothing <= 1.0:
            raise InvalidValueError(f"label_smoothing must lie in [0, 1]; got {label_smoothing!r}.")
        if isinstance(eps, str):
            if eps != "auto":
                raise InvalidValueError(f"eps must be 'auto' or a number in [0, 0.5); got {eps!r}.")
        elif isinstance(eps, (bool, np.bool_)) or not isinstance(eps, numbers.Real):
            raise InvalidValueError(f"eps must be 'auto' or a number in [0, 0.5); got {eps!r}.")
        else:
            eps = float(eps)
            if not 0.0 <= eps < 0.5:
                raise InvalidValueError(f"eps must be 'auto' or a number in [0, 0.5); got {eps!r}.")
            if 0.0 < eps < _SMALLEST_NORMAL:
                raise InvalidValueError(
                    f"eps must be 0 or at least {_SMALLEST_NORMAL!r} (the smallest normal "
                    f"float64); got the subnormal {eps!r}. Use eps=0 to turn clipping off."
                )
        if weight is not None:
            weight = _as_vector(weight, "weight")
            bad = ~(np.isfinite(weight) & (weight >= 0))
            if bad.any():
                j = int(np.flatnonzero(bad)[0])
                raise InvalidValueError(
                    f"weight (class weights) must be finite and >= 0; class {j} has {weight[j]!r}."
                )
            weight.flags.writeable = False
        return cls(
            pred_kind=pred_kind,
            weight=weight,
            ignore_index=ignore_index,
            label_smoothing=label_smoothing,
            eps=eps,
            nan_policy=nan_policy,
            strict=bool(strict),
            check_rows=check_rows,
        )

    def clip_bounds(self, dtype: np.dtype) -> tuple[float, float]:
        """Probability clipping bounds for predictions stored as ``dtype``."""
        eps = machine_eps(dtype) if self.eps == "auto" else float(self.eps)
        return eps, 1.0 - eps

    def class_weight(self, n_classes: int) -> np.ndarray:
        """The class weights as float64 (C,), ones when none were given."""
        if self.weight is None:
            return _unit_weights(n_classes)
        if self.weight.shape[0] != n_classes:
            raise InvalidValueError(
                f"weight must have one entry per class, that is shape ({n_classes},); "
                f"got shape {self.weight.shape}."
            )
        return self.weight


@functools.lru_cache(maxsize=16)
def _unit_weights(n_classes: int) -> np.ndarray:
    """Read-only ones, shared by the calls with the same number of classes."""
    ones = np.ones(n_classes)
    ones.flags.writeable = False
    return ones


def check_reduction(reduction: Any) -> str:
    return _choice("reduction", reduction, REDUCTIONS)


def _as_vector(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.dtype.kind not in "iuf" or arr.dtype.kind == "b":
        raise InvalidTypeError(f"{name} must be a 1-D array of numbers; got dtype {arr.dtype}.")
    if arr.ndim != 1:
        raise InvalidValueError(f"{name} must be 1-D; got shape {arr.shape}.")
    return np.array(arr, dtype=np.float64)


def as_pred(pred: Any, name: str = "pred") -> np.ndarray:
    """A 2-D float array: float16/32/64 kept as stored (no copy), other numbers as float64."""
    arr = pred if isinstance(pred, np.ndarray) else np.asarray(pred)
    if arr.dtype not in FLOAT_DTYPES:
        if arr.dtype.kind not in "iuf" or arr.dtype.kind == "b":
            raise InvalidTypeError(
                f"{name} must hold numbers (float16, float32 or float64); got dtype {arr.dtype}."
            )
        arr = arr.astype(np.float64)
    if arr.ndim != 2:
        raise InvalidValueError(
            f"{name} must be 2-D, that is (n_rows, n_classes); got shape {arr.shape}."
        )
    n_rows, n_classes = arr.shape
    if n_classes < 2:
        raise InvalidValueError(
            f"{name} must have at least 2 classes (columns); got shape {arr.shape}. "
            "A single column of binary probabilities must be expanded to [1 - p, p]."
        )
    if n_rows == 0:
        raise InvalidValueError(
            f"{name} has no rows (shape {arr.shape}): there is nothing to score."
        )
    return arr


def as_target(
    target: Any, pred_shape: tuple[int, int], names: tuple[str, str] = ("pred", "target")
) -> tuple[str, np.ndarray]:
    """Classify ``target``: ``("labels", int64 (N,))`` or ``("dense", float (N, C))``."""
    arr = target if isinstance(target, np.ndarray) else np.asarray(target)
    pname, tname = names
    n_rows, n_classes = pred_shape
    if arr.dtype.kind in "iu" and arr.ndim == 1:
        if arr.shape[0] != n_rows:
            raise InvalidValueError(
                f"{tname} must have one label per row of {pname}, that is shape ({n_rows},); "
                f"got {tname} shape {arr.shape} for {pname} shape {pred_shape}."
            )
        if arr.dtype == np.uint64 and arr.size and arr.max() > np.iinfo(np.int64).max:
            i = int(np.argmax(arr > np.iinfo(np.int64).max))
            raise InvalidValueError(
                f"labels must lie in [0, n_classes) = [0, {n_classes}); row {i} has {arr[i]}."
            )
        return "labels", np.ascontiguousarray(arr, dtype=np.int64)
    if arr.dtype.kind == "f" and arr.ndim == 2:
        if arr.shape != pred_shape:
            raise InvalidValueError(
                f"{tname} (target distributions) must have the shape of {pname}, that is "
                f"{pred_shape}; got {tname} shape {arr.shape}."
            )
        return "dense", arr
    hint = ""
    if arr.dtype.kind == "f" and arr.ndim == 1:
        hint = " Float labels are not accepted: cast them, e.g. target.astype(np.int64)."
    raise InvalidTypeError(
        f"{tname} must be either integer class labels of shape ({n_rows},) or float target "
        f"distributions of shape {pred_shape}; got dtype {arr.dtype} with shape {arr.shape}." + hint
    )


def as_sample_weight(sample_weight: Any, n_rows: int) -> np.ndarray:
    """float64 (N,), finite and >= 0; an empty array stands for "no sample weights"."""
    if sample_weight is None:
        return np.empty(0)
    sw = _as_vector(sample_weight, "sample_weight")
    if sw.shape[0] != n_rows:
        raise InvalidValueError(
            f"sample_weight must have one weight per row, that is shape ({n_rows},); "
            f"got shape {sw.shape}."
        )
    bad = ~(np.isfinite(sw) & (sw >= 0))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidValueError(f"sample_weight must be finite and >= 0; row {i} has {sw[i]!r}.")
    return sw


def machine_eps(dtype: np.dtype) -> float:
    """``np.finfo(dtype).eps`` of a float storage dtype."""
    eps = _EPS.get(dtype)
    return float(np.finfo(dtype).eps) if eps is None else eps


def log_tolerance(dtype: np.dtype) -> float:
    """How far above 0 a log-probability stored as ``dtype`` may lie (rounding of log 1)."""
    return 8.0 * machine_eps(dtype)


def sum_tolerance(dtype: np.dtype) -> float:
    """How far a row of probabilities stored as ``dtype`` may sum away from 1 (sklearn's rule)."""
    return math.sqrt(machine_eps(dtype))
