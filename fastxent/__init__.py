"""fastxent: exact, fast, bounded-memory cross entropy (log loss) over saved predictions.

Importing fastxent compiles nothing: the Numba kernels compile on first use (or load from the
on-disk cache).
"""

from __future__ import annotations

from ._errors import FastxentError, InvalidTypeError, InvalidValueError, SoftWarning, SourceError
from .accumulate import Accumulator, Score
from .losses import cross_entropy
from .scoring import score

__version__ = "0.1.0"

__all__ = [
    "Accumulator",
    "FastxentError",
    "InvalidTypeError",
    "InvalidValueError",
    "Score",
    "SoftWarning",
    "SourceError",
    "__version__",
    "cross_entropy",
    "score",
]
