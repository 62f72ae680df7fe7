"""A one-line progress report on stderr for long scoring runs."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    """Rows done (of the total when known) and throughput, redrawn in place with ``\\r``.

    Redraws at most once per ``interval`` seconds, so the cost per batch is one clock read.
    :meth:`close` draws the final state and ends the line, so whatever is printed next (the
    result, or an error) starts on a fresh line.

    Parameters
    ----------
    total_rows : int or None
        Rows expected, or None when unknown (an Arrow stream).
    stream : file-like, optional
        Where to draw; default ``sys.stderr``.
    interval : float, default 0.25
        Minimum seconds between redraws.
    clock : callable, default time.monotonic
        Returns seconds; injectable for tests.

    Examples
    --------
    >>> import io
    >>> out = io.StringIO()
    >>> with Progress(10, stream=out, clock=lambda: 1.0) as bar:
    ...     bar.update(10, 0)
    >>> out.getvalue().split("\\r")[-1]
    'scored 10 / 10 rows (100.0%)\\n'
    """

    def __init__(
        self,
        total_rows: int | None,
        *,
        stream: TextIO | None = None,
        interval: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total_rows = total_rows
        self.rows = 0
        self.nbytes = 0
        self._stream = stream if stream is not None else sys.stderr
        self._interval = interval
        self._clock = clock
        self._start = clock()
        self._last_draw: float | None = None
        self._drawn_rows = -1
        self._width = 0
        self._closed = False

    def update(self, rows: int, nbytes: int) -> None:
        """Add ``rows`` rows and ``nbytes`` bytes of predictions; redraw if it is time."""
        self.rows += int(rows)
        self.nbytes += int(nbytes)
        now = self._clock()
        if self._last_draw is None or now - self._last_draw >= self._interval:
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        """The report as text, without ``\\r`` or newline."""
        now = self._clock() if now is None else now
        text = f"scored {self.rows:,}"
        if self.total_rows is not None:
            text += f" / {self.total_rows:,} rows"
            if self.total_rows:
                text += f" ({100.0 * self.rows / self.total_rows:.1f}%)"
        else:
            text += " rows"
        elapsed = now - self._start
        if elapsed > 0 and self.nbytes:
            rate = self.nbytes / elapsed / 1e6
            digits = 0 if rate >= 100 else 1 if rate >= 1 else 3
            text += f", {rate:,.{digits}f} MB/s of predictions"
        if elapsed >= 1.0:
            text += f", {elapsed:.0f} s"
        return text

    def _draw(self, now: float) -> None:
        text = self.line(now)
        # Pad over the tail of a longer previous line (the rate can shrink in width).
        padded = text.ljust(self._width)
        self._width = len(text)
        self._last_draw = now
        self._drawn_rows = self.rows
        try:
            self._stream.write("\r" + padded)
            self._stream.flush()
        except (OSError, ValueError, AttributeError):
            pass  # a closed, broken or missing (None) stderr must not stop the computation

    def close(self) -> None:
        """Draw the final state and end the line. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._drawn_rows != self.rows or self._last_draw is None:
            self._draw(self._clock())
        try:
            self._stream.write("\n")
            self._stream.flush()
        except (OSError, ValueError, AttributeError):
            pass

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
