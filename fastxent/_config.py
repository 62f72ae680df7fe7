"""Every Numba option and ``FASTXENT_*`` environment override, in one place.

Kernels are compiled lazily on first use and cached on disk (``cache=True``), so
``import fastxent`` compiles nothing. Numba keeps the cache in ``__pycache__`` next to the
sources, or, where that is not writable (a read-only site-packages), under
``NUMBA_CACHE_DIR``. Set ``FASTXENT_CACHE=0`` to compile in memory only.
"""

from __future__ import annotations

import os
from typing import Any

#: Fast-math flags for the kernels. ``reassoc`` is the one that matters: without it sum and
#: max reductions do not vectorise. ``nnan``/``ninf`` are deliberately absent: they let LLVM
#: fold away the NaN and infinity checks the kernels rely on.
FASTMATH = {"reassoc", "nsz", "contract", "arcp", "afn"}

#: Cache compiled kernels on disk (``FASTXENT_CACHE=0`` turns it off).
CACHE = os.environ.get("FASTXENT_CACHE", "1").strip().lower() not in {"0", "false", "no", "off"}

#: Elements of the prediction matrix handled per block of rows. A block is the unit of
#: parallel work and of the per-block partial sums, so results do not depend on the thread count.
#: 2**18 (1 MiB of float32): measured against 2**14..2**19 with 2 threads, smaller blocks lose
#: up to 35% to per-block set-up and the final exact sums (logits + labels, 100k x 1000:
#: 11.4 ms vs 17.6 ms at 2**14); larger ones gain nothing more.
BLOCK_ELEMENTS = int(os.environ.get("FASTXENT_BLOCK_ELEMENTS", 1 << 18))

#: Upper bound on rows per block (keeps the per-block row arrays within L2 for short rows).
MAX_BLOCK_ROWS = int(os.environ.get("FASTXENT_MAX_BLOCK_ROWS", 16384))

#: Calls that touch fewer prediction entries than this run on one thread: starting the
#: thread team costs more than it saves, and far more on a busy machine.
SERIAL_ELEMENTS = int(os.environ.get("FASTXENT_SERIAL_ELEMENTS", 1 << 18))

#: Rows of a non-C-contiguous or float16 matrix converted at a time by the wrapper (bounded
#: memory instead of a full copy).
CONVERT_ELEMENTS = int(os.environ.get("FASTXENT_CONVERT_ELEMENTS", 1 << 23))

#: Per-row and per-block helpers (called from the parallel kernels).
HELPER_OPTIONS: dict[str, Any] = {"fastmath": FASTMATH, "error_model": "numpy", "cache": CACHE}
#: Helpers on the hot path, inlined at Numba's level: a call per row costs more than the
#: arithmetic of a short row.
HOT_OPTIONS: dict[str, Any] = {**HELPER_OPTIONS, "inline": "always"}
#: The exact float64 fallbacks order their operations on purpose ((m - x) + log1p(s) keeps a
#: tiny loss): no reassociation there.
EXACT_OPTIONS: dict[str, Any] = {**HELPER_OPTIONS, "fastmath": {"nsz", "contract"}}
#: The parallel kernels: release the GIL so Arrow decoding overlaps them.
PARALLEL_OPTIONS: dict[str, Any] = {**HELPER_OPTIONS, "nogil": True, "parallel": True}
