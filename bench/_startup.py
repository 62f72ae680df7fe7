"""First-call cost, measured in fresh Python processes.

Shared by ``test_bench_startup.py`` and ``compare.py``. Each measurement runs a new
interpreter that builds a tiny input first (NumPy only), then times ``import numba`` and,
separately, ``import fastxent`` plus the first ``cross_entropy`` call of one path. What is
reported is that second figure: the seconds a user waits **beyond** ``import numba``, which
every Numba program pays anyway.

``NUMBA_CACHE_DIR`` points at a directory of our own, which takes precedence over the
``__pycache__`` beside fastxent's sources: an empty one gives a cold compile, and a second
process with the same directory loads what the first one cached (the warm first call).
Python's own bytecode cache is left on (``PYTHONDONTWRITEBYTECODE`` is dropped from the
child's environment): an installed package carries its ``.pyc`` files, and the first
(cold) process writes them for a source checkout.

The seconds beyond ``import numba`` are split into Numba's own first-use set-up (the
registries of its typing and lowering, loaded once per process before anything is
compiled or loaded from the cache; when SciPy is installed, Numba's BLAS probe imports
``scipy.linalg`` there) and the rest, fastxent's share: its import and the first call.
The set-up is timed by running it just before ``import fastxent``; the first call then
finds it done, so the total is what a user waits either way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from statistics import median

from _impls import DEFAULT_THREADS, PATHS, ROOT

_KIND = {
    "probs+labels": "probs",
    "logits+labels": "logits",
    "soft+probs": "probs",
    "soft+logits": "logits",
}

_PROCESS = """
import json, time
import numpy as np
rng = np.random.default_rng(0)
x = rng.standard_normal((1000, 10)).astype(np.float32)
p = np.exp(x - x.max(1, keepdims=True)); p = (p / p.sum(1, keepdims=True)).astype(np.float32)
labels = rng.integers(0, 10, 1000)
targets = np.full((1000, 10), 0.1, dtype=np.float32)
pred = {pred}
target = {target}
import importlib.util
scipy = importlib.util.find_spec("scipy") is not None
t0 = time.perf_counter()
import numba
t1 = time.perf_counter()
try:  # Numba's once-per-process set-up, which its first compile or cache load would run
    from numba.core.registry import cpu_target
    cpu_target.typing_context.refresh()
    cpu_target.target_context.refresh()
    setup = time.perf_counter() - t1
except Exception:  # an internal API: if it moves, the split is not reported
    setup = float("nan")
t1b = time.perf_counter()
import fastxent
t2 = time.perf_counter()
loss = fastxent.cross_entropy(pred, target, pred_kind={kind!r})
t3 = time.perf_counter()
print(json.dumps({{"import_numba": t1 - t0, "numba_setup": setup, "import_fastxent": t2 - t1b,
                  "first_call": t3 - t2, "beyond_numba": t3 - t1, "scipy": scipy,
                  "loss": float(loss)}}))
"""

_IMPORT_ONLY = """
import json, time
t0 = time.perf_counter()
import {module}
t1 = time.perf_counter()
print(json.dumps({{"seconds": t1 - t0}}))
"""


def _env(cache_dir: str | None, n_threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["NUMBA_NUM_THREADS"] = str(n_threads)
    env.pop("FASTXENT_CACHE", None)  # the default: cache on
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: bytecode cached (see above)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    return env


def _run(code: str, env: dict[str, str]) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"the measuring process failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def import_seconds(
    module: str, *, n_threads: int = DEFAULT_THREADS, cache_dir: str | None = None
) -> float:
    """Seconds of ``import module`` in a fresh process."""
    return _run(_IMPORT_ONLY.format(module=module), _env(cache_dir, n_threads))["seconds"]


def first_call(path: str, cache_dir: str, *, n_threads: int = DEFAULT_THREADS) -> dict[str, float]:
    """One fresh process: ``import numba``, then ``import fastxent`` + the first call."""
    soft = path.startswith("soft")
    code = _PROCESS.format(
        pred="x" if _KIND[path] == "logits" else "p",
        target="targets" if soft else "labels",
        kind=_KIND[path],
    )
    return _run(code, _env(cache_dir, n_threads))


@dataclass
class Startup:
    path: str
    import_numba: float  # median over the processes of this path
    cold: float  # first call with an empty cache, seconds beyond ``import numba``
    warm: float  # first call in a new process with the cache filled (median)
    warm_numba_setup: float  # of ``warm``: Numba's own first-use set-up (median)
    scipy: bool  # SciPy installed: Numba's set-up imports scipy.linalg


def measure(path: str, *, warm_runs: int = 3, n_threads: int = DEFAULT_THREADS) -> Startup:
    """Cold (empty cache) then ``warm_runs`` warm processes for one path."""
    with tempfile.TemporaryDirectory(prefix="fastxent-numba-cache-") as cache_dir:
        cold = first_call(path, cache_dir, n_threads=n_threads)
        warm = [first_call(path, cache_dir, n_threads=n_threads) for _ in range(warm_runs)]
    runs = [cold, *warm]
    return Startup(
        path=path,
        import_numba=median(r["import_numba"] for r in runs),
        cold=cold["beyond_numba"],
        warm=median(r["beyond_numba"] for r in warm),
        warm_numba_setup=median(r["numba_setup"] for r in warm),
        scipy=bool(cold["scipy"]),
    )


def measure_all(*, warm_runs: int = 3, n_threads: int = DEFAULT_THREADS) -> list[Startup]:
    return [measure(path, warm_runs=warm_runs, n_threads=n_threads) for path in PATHS]
