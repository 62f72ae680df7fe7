"""Import compiles nothing; kernels compile on first use and load from the disk cache after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

_PROBE = textwrap.dedent(
    """
    import json, sys, time
    t0 = time.perf_counter()
    import fastxent as fx
    t_import = time.perf_counter() - t0
    loaded_numba = "numba" in sys.modules
    import numpy as np
    from fastxent import _kernels as K
    x = np.random.default_rng(0).standard_normal((64, 5)).astype(np.float32)
    y = np.arange(64) % 5
    t0 = time.perf_counter()
    fx.cross_entropy(x, y, pred_kind="logits")
    t_call = time.perf_counter() - t0
    stats = K.xent_gather_logits.stats
    print(json.dumps({
        "import_s": t_import, "numba_at_import": loaded_numba, "call_s": t_call,
        "hits": sum(stats.cache_hits.values()), "misses": sum(stats.cache_misses.values()),
    }))
    """
)


def _probe(cache_dir, **env):
    full_env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), **env}
    done = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, env=full_env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _snapshot(cache_dir):
    return {(str(f), f.stat().st_mtime_ns, f.stat().st_size) for f in cache_dir.rglob("*")}


@pytest.fixture(scope="module")
def warm_cache(tmp_path_factory):
    """A cache directory filled by one process (a cold compile), and that process's probe."""
    cache_dir = tmp_path_factory.mktemp("numba-cache")
    return cache_dir, _probe(cache_dir, FASTXENT_CACHE="1")


def test_second_process_loads_kernels_from_the_cache(warm_cache):
    cache_dir, first = warm_cache
    assert not first["numba_at_import"], "import fastxent must not import (or compile with) numba"
    assert first["misses"] >= 1 and first["hits"] == 0
    second = _probe(cache_dir, FASTXENT_CACHE="1")
    assert second["hits"] >= 1 and second["misses"] == 0
    # Loading from the cache is far cheaper than compiling.
    assert second["call_s"] < first["call_s"]


def test_cache_can_be_turned_off(warm_cache):
    cache_dir, _ = warm_cache
    before = _snapshot(cache_dir)
    off = _probe(cache_dir, FASTXENT_CACHE="0")
    # Compiled, although a cache for this very call was there to load, and nothing written.
    assert off["hits"] == 0 and off["misses"] >= 1
    assert _snapshot(cache_dir) == before


def test_weights_or_none_share_one_compiled_kernel():
    # Each kernel compiles once per type of prediction matrix: with sample weights or without,
    # writable arrays or read-only ones (Arrow buffers). A second specialisation would cost a
    # user another cold compile (tens of seconds) the first time they pass weights.
    import fastxent as fx
    from fastxent import _kernels as K

    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    p = np.exp(x) / np.exp(x).sum(axis=1, keepdims=True)
    y = np.arange(40) % 6
    w = rng.random(40)
    read_only = x.copy()
    read_only.flags.writeable = False
    w_read_only = w.copy()
    w_read_only.flags.writeable = False
    for weights in (None, w, w_read_only):
        fx.cross_entropy(x, y, pred_kind="logits", sample_weight=weights)
        fx.cross_entropy(read_only, y, pred_kind="logits", sample_weight=weights)
        fx.cross_entropy(p, y, pred_kind="probs", sample_weight=weights)
        fx.cross_entropy(x, p, pred_kind="logits", sample_weight=weights)
    for kernel in (K.xent_gather_logits, K.xent_gather_probs, K.xent_dense):
        pred_types = [sig[0] for sig in kernel.signatures]
        assert len(pred_types) == len(set(pred_types)), kernel.signatures
