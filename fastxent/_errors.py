"""Exception types raised for problems with the caller's input.

Every error fastxent raises because of the caller's data, options or files derives from
:class:`FastxentError` *and* from the matching builtin (``ValueError``, ``TypeError``,
``OSError``), so ``except ValueError`` keeps working while the command line can tell a user
error (one line, exit 2) from a bug (a traceback).
"""

from __future__ import annotations


class FastxentError(Exception):
    """Base class of every error caused by the caller's input."""


class InvalidValueError(FastxentError, ValueError):
    """A value is out of range, a shape does not match, a label or probability is invalid."""


class InvalidTypeError(FastxentError, TypeError):
    """An argument or column has a type fastxent cannot use."""


class SourceError(FastxentError, OSError):
    """A file or dataset cannot be opened or read (missing, unreadable, corrupt)."""


class SoftWarning(UserWarning):
    """A soft data problem (for example rows that do not sum to 1); ``strict=True`` raises."""
