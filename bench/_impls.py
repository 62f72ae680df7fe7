"""One registry of implementations, shared by the pytest-benchmark suites and ``compare.py``.

For every loss path (integer labels or target distributions, over probabilities or logits)
it lists fastxent and the baselines a user would otherwise reach for, each as a factory
``make(data) -> fn`` where ``fn()`` computes the mean loss of that shape's arrays. Beside them
sit the inputs (:class:`ShapeData`, generated once per shape from a fixed seed), a float64
reference for the accuracy checks, and the memory-bandwidth reference: a parallel Numba sum
over the same float32 arrays, which is the floor no loss over them can beat.
"""

from __future__ import annotations

import importlib.util
import inspect
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from numba import njit, prange

ROOT = Path(__file__).resolve().parent.parent
if importlib.util.find_spec("fastxent") is None:  # `python bench/compare.py` from anywhere
    sys.path.insert(0, str(ROOT))

import fastxent  # noqa: E402
from fastxent._fastmath import fexp_sum  # noqa: E402  (the exp the kernels use)

#: Shapes of the issue: 8M, 100M, 100M and 320M float32 predictions.
FULL_SHAPES = ((4_000_000, 2), (1_000_000, 100), (100_000, 1_000), (10_000, 32_000))
#: ``FASTXENT_BENCH_SMALL=1`` divides the rows by this, for quick checks.
SMALL_DIVISOR = 100
#: sklearn's log_loss one-hot encodes the labels and works on float64 copies of the whole
#: matrix: above this many elements it takes minutes and gigabytes, so it is left out there.
SKLEARN_MAX_ELEMENTS = 100_000_000
#: numba threads = torch threads, so every implementation gets the same two cores.
DEFAULT_THREADS = 2
SEED = 20_240_601

PATHS = ("probs+labels", "logits+labels", "soft+probs", "soft+logits")

# The flags fastxent uses; ``reassoc`` is what lets the sum vectorise.
_FASTMATH = {"reassoc", "nsz", "contract", "arcp", "afn"}
# Elements generated or referenced per step, so float64 temporaries stay ~32 MiB.
_CHUNK_ELEMENTS = 1 << 22
# Elements per block of the parallel sum, as fastxent's kernels (whole rows per block).
_SUM_BLOCK_ELEMENTS = 16_384


def small_mode() -> bool:
    """True when ``FASTXENT_BENCH_SMALL`` asks for shapes divided by 100."""
    return os.environ.get("FASTXENT_BENCH_SMALL", "").strip().lower() in {"1", "true", "yes", "on"}


def shapes(small: bool | None = None) -> tuple[tuple[int, int], ...]:
    """The benchmark shapes ``(n_rows, n_classes)``; rows divided by 100 in small mode."""
    small = small_mode() if small is None else small
    if not small:
        return FULL_SHAPES
    return tuple((max(1, n // SMALL_DIVISOR), c) for n, c in FULL_SHAPES)


def shape_id(shape: tuple[int, int]) -> str:
    return f"{shape[0]}x{shape[1]}"


def configure_threads(n_threads: int = DEFAULT_THREADS) -> int:
    """Give numba and (if installed) torch the same number of threads; return it."""
    import numba

    n_threads = max(1, min(n_threads, numba.config.NUMBA_NUM_THREADS))
    numba.set_num_threads(n_threads)
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(n_threads)
    return n_threads


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------


def _softmax_cast(x64: np.ndarray) -> np.ndarray:
    """float64 softmax rows cast to float32 so they still sum to 1 as closely as float32 allows
    (the largest entry absorbs the rounding): fastxent and sklearn check the row sums."""
    x64 = x64 - x64.max(axis=1, keepdims=True)
    np.exp(x64, out=x64)
    x64 /= x64.sum(axis=1, keepdims=True)
    q = x64.astype(np.float32)
    rows = np.arange(q.shape[0])
    top = np.argmax(q, axis=1)
    rest = q.sum(axis=1, dtype=np.float64) - q[rows, top].astype(np.float64)
    q[rows, top] = np.maximum(1.0 - rest, 0.0).astype(np.float32)
    return q


class ShapeData:
    """Inputs of one shape, float32, C-contiguous, each made on first use from a fixed seed.

    ``logits`` are ``N(0, 1)`` plus a margin on the label and a per-row offset (real logits
    are not centred); ``probs`` is their softmax; ``targets`` are soft labels, the softmax of
    an independent, more confident view of the same label. :meth:`clear` frees them.
    """

    def __init__(self, n_rows: int, n_classes: int, seed: int = SEED) -> None:
        self.n_rows = n_rows
        self.n_classes = n_classes
        self.seed = seed
        # Large enough that the label is the argmax for most rows at any number of classes.
        self.margin = math.sqrt(2.0 * math.log(n_classes)) + 1.0

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.n_classes)

    @property
    def elements(self) -> int:
        return self.n_rows * self.n_classes

    def _chunks(self):
        step = max(1, _CHUNK_ELEMENTS // self.n_classes)
        for k, r0 in enumerate(range(0, self.n_rows, step)):
            yield k, r0, min(self.n_rows, r0 + step)

    def _rng(self, stream: int, chunk: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.n_rows, self.n_classes, stream, chunk])

    @cached_property
    def labels(self) -> np.ndarray:
        return self._rng(0).integers(0, self.n_classes, size=self.n_rows, dtype=np.int64)

    @cached_property
    def logits(self) -> np.ndarray:
        out = np.empty(self.shape, dtype=np.float32)
        labels = self.labels
        for k, r0, r1 in self._chunks():
            rng = self._rng(1, k)
            x = rng.standard_normal((r1 - r0, self.n_classes), dtype=np.float32)
            x[np.arange(r1 - r0), labels[r0:r1]] += np.float32(self.margin)
            x += 2.0 * rng.standard_normal((r1 - r0, 1), dtype=np.float32)
            out[r0:r1] = x
        return out

    @cached_property
    def probs(self) -> np.ndarray:
        out = np.empty(self.shape, dtype=np.float32)
        logits = self.logits
        for _, r0, r1 in self._chunks():
            out[r0:r1] = _softmax_cast(logits[r0:r1].astype(np.float64))
        return out

    @cached_property
    def targets(self) -> np.ndarray:
        out = np.empty(self.shape, dtype=np.float32)
        labels = self.labels
        for k, r0, r1 in self._chunks():
            t = self._rng(2, k).standard_normal((r1 - r0, self.n_classes))
            t[np.arange(r1 - r0), labels[r0:r1]] += 2.0 * self.margin
            out[r0:r1] = _softmax_cast(t)
        return out

    def pred(self, path: str) -> np.ndarray:
        """The prediction matrix a path reads."""
        return self.logits if "logits" in path else self.probs

    def inputs(self, path: str) -> tuple[np.ndarray, np.ndarray]:
        """``(pred, target)`` of a path: labels or target distributions."""
        return self.pred(path), (self.targets if path.startswith("soft") else self.labels)

    @property
    def pred_bytes(self) -> int:
        """Bytes of one prediction matrix (what GB/s figures count)."""
        return self.elements * np.dtype(np.float32).itemsize

    def clear(self) -> None:
        """Free the arrays made so far."""
        for name in ("labels", "logits", "probs", "targets"):
            self.__dict__.pop(name, None)


# --------------------------------------------------------------------------------------------
# The float64 reference (accuracy)
# --------------------------------------------------------------------------------------------


def _row_chunks(n_rows: int, n_classes: int):
    step = max(1, _CHUNK_ELEMENTS // n_classes)
    for r0 in range(0, n_rows, step):
        yield r0, min(n_rows, r0 + step)


def _log_softmax64(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x -= x.max(axis=1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=1, keepdims=True))
    return x


def reference(path: str, pred: np.ndarray, target: np.ndarray) -> float:
    """The mean loss computed in float64 from the same float32 values, chunk by chunk.

    Probabilities are clipped to ``[eps, 1 - eps]`` with float32's eps, as fastxent (and
    sklearn) do by default, so only rounding differs.
    """
    n_rows, n_classes = pred.shape
    eps = float(np.finfo(pred.dtype).eps)
    sums = []
    for r0, r1 in _row_chunks(n_rows, n_classes):
        x = pred[r0:r1]
        if path == "probs+labels":
            p = x[np.arange(r1 - r0), target[r0:r1]].astype(np.float64)
            sums.append(-np.log(np.clip(p, eps, 1.0 - eps)).sum())
        elif path == "logits+labels":
            sums.append(-_log_softmax64(x)[np.arange(r1 - r0), target[r0:r1]].sum())
        elif path == "soft+probs":
            logq = np.log(np.clip(x.astype(np.float64), eps, 1.0 - eps))
            sums.append(-(target[r0:r1].astype(np.float64) * logq).sum())
        elif path == "soft+logits":
            sums.append(-(target[r0:r1].astype(np.float64) * _log_softmax64(x)).sum())
        else:
            raise ValueError(f"unknown path {path!r}")
    return math.fsum(sums) / n_rows


def relative_error(got: float, expected: float) -> float:
    return abs(got - expected) / abs(expected) if expected else abs(got - expected)


# --------------------------------------------------------------------------------------------
# The ceilings: the memory-bandwidth reference and the exp-throughput reference
# --------------------------------------------------------------------------------------------


def _make_parallel_sum(term):
    """A parallel sum of ``term(v)`` over a flat float32 array, prange over blocks of whole
    rows as fastxent's kernels; float32 sums inside a block (they vectorise under reassoc),
    float64 across blocks."""

    @njit(parallel=True, nogil=True, fastmath=_FASTMATH)
    def parallel_sum_of(flat, block):
        n = flat.shape[0]
        n_blocks = (n + block - 1) // block
        partial = np.empty(n_blocks)
        for b in prange(n_blocks):
            part = flat[b * block : min(n, (b + 1) * block)]
            acc = np.float32(0.0)
            for j in range(part.shape[0]):
                acc += term(part[j])
            partial[b] = acc
        total = 0.0
        for b in range(n_blocks):
            total += partial[b]
        return total

    return parallel_sum_of


@njit(inline="always")
def _itself(v):
    return v


_parallel_sum = _make_parallel_sum(_itself)
# fastxent's own float32 exp, with no shift, log or check: the logits here are small enough
# not to overflow.
_parallel_exp_sum = _make_parallel_sum(fexp_sum)


def _block(x: np.ndarray) -> int:
    return max(1, _SUM_BLOCK_ELEMENTS // x.shape[1]) * x.shape[1]


def parallel_sum(x: np.ndarray) -> float:
    """Sum of a C-contiguous float32 matrix, parallel over blocks of rows: the read ceiling."""
    return float(_parallel_sum(x.reshape(-1), _block(x)))


def parallel_exp_sum(x: np.ndarray) -> float:
    """Sum of ``exp`` over a C-contiguous float32 matrix, parallel over blocks of rows: one
    exp per entry is the least an exact loss over logits computes, so this is the
    exp-throughput ceiling, as :func:`parallel_sum` is the read ceiling."""
    return float(_parallel_exp_sum(x.reshape(-1), _block(x)))


# --------------------------------------------------------------------------------------------
# Implementations
# --------------------------------------------------------------------------------------------


def _numpy_log_softmax(x: np.ndarray) -> np.ndarray:
    s = x - x.max(axis=1, keepdims=True)
    s -= np.log(np.exp(s).sum(axis=1, keepdims=True))
    return s


def _fastxent(path: str, d: ShapeData) -> Callable[[], float]:
    pred, target = d.inputs(path)
    kind = "logits" if "logits" in path else "probs"
    return lambda: float(fastxent.cross_entropy(pred, target, pred_kind=kind))


def _numpy(path: str, d: ShapeData) -> Callable[[], float]:
    pred, target = d.inputs(path)
    rows = np.arange(d.n_rows)
    if path == "probs+labels":
        return lambda: float(-np.log(pred[rows, target]).mean())
    if path == "logits+labels":
        return lambda: float(-_numpy_log_softmax(pred)[rows, target].mean())
    if path == "soft+probs":
        return lambda: float(-(target * np.log(pred)).sum(1).mean())
    return lambda: float(-(target * _numpy_log_softmax(pred)).sum(1).mean())


def _torch(path: str, d: ShapeData) -> Callable[[], float]:
    import torch
    import torch.nn.functional as F

    pred, target = d.inputs(path)
    # from_numpy shares memory: no copy is timed. Index targets for labels, probability
    # targets for soft labels.
    x, t = torch.from_numpy(pred), torch.from_numpy(target)

    def run() -> float:
        with torch.inference_mode():
            return float(F.cross_entropy(x, t))

    return run


def _sklearn(path: str, d: ShapeData) -> Callable[[], float]:
    from sklearn.metrics import log_loss

    pred, target = d.inputs(path)
    labels = np.arange(d.n_classes)  # not every class need occur in a sample of the rows
    # sklearn 1.9 renamed y_pred to y_proba; the positional form warns there.
    key = "y_proba" if "y_proba" in inspect.signature(log_loss).parameters else "y_pred"
    return lambda: float(log_loss(target, **{key: pred}, labels=labels))


def _sum(path: str, d: ShapeData) -> Callable[[], float]:
    pred, target = d.inputs(path)
    if path.startswith("soft"):  # the dense path reads both matrices
        return lambda: parallel_sum(pred) + parallel_sum(target)
    return lambda: parallel_sum(pred)


def _exp_sum(path: str, d: ShapeData) -> Callable[[], float]:
    pred, _ = d.inputs(path)
    return lambda: parallel_exp_sum(pred)


@dataclass(frozen=True)
class Impl:
    """One implementation of a path: ``make(path, data)`` returns the zero-argument call."""

    name: str
    make: Callable[[str, ShapeData], Callable[[], float]]
    paths: tuple[str, ...]
    module: str | None = None  # optional dependency
    max_elements: int | None = None
    note: str = ""
    ceiling: bool = False  # a reference amount of work, not a loss: no accuracy check

    def fits(self, shape: tuple[int, int]) -> bool:
        """Whether this shape is within the sizes the implementation is run at."""
        return self.max_elements is None or shape[0] * shape[1] <= self.max_elements

    def skip_reason(self, shape: tuple[int, int]) -> str | None:
        if self.module is not None and importlib.util.find_spec(self.module) is None:
            return f"{self.module} is not installed"
        if not self.fits(shape):
            return f"{self.name} left out above {self.max_elements:.0e} elements (too slow)"
        return None


OURS = "fastxent"
SUM = "parallel-sum"
EXP = "exp-sum"

IMPLS = (
    Impl(OURS, _fastxent, PATHS, note="fastxent.cross_entropy"),
    Impl("numpy", _numpy, PATHS, note="plain NumPy expression"),
    Impl(
        "torch",
        _torch,
        ("logits+labels", "soft+logits"),
        module="torch",
        note="torch.nn.functional.cross_entropy",
    ),
    Impl(
        "sklearn",
        _sklearn,
        ("probs+labels",),
        module="sklearn",
        max_elements=SKLEARN_MAX_ELEMENTS,
        note="sklearn.metrics.log_loss",
    ),
    Impl(
        SUM, _sum, PATHS, note="parallel numba sum of the same arrays (read ceiling)", ceiling=True
    ),
    Impl(
        EXP,
        _exp_sum,
        ("logits+labels", "soft+logits"),
        note="parallel numba sum of fastxent's float32 exp of the same logits (exp ceiling)",
        ceiling=True,
    ),
)


def impls_for(path: str) -> list[Impl]:
    return [impl for impl in IMPLS if path in impl.paths]


def impl_named(name: str) -> Impl:
    return next(impl for impl in IMPLS if impl.name == name)
