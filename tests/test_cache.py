"""Import compiles nothing; kernels compile on first use and load from the disk cache after."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

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


@pytest.mark.skipif(os.environ.get("FASTXENT_CACHE") == "0", reason="caching turned off")
def test_second_process_loads_kernels_from_the_cache(tmp_path):
    first = _probe(tmp_path)
    assert not first["numba_at_import"], "import fastxent must not import (or compile with) numba"
    assert first["misses"] >= 1 and first["hits"] == 0
    second = _probe(tmp_path)
    assert second["hits"] >= 1 and second["misses"] == 0
    # Loading from the cache is far cheaper than compiling.
    assert second["call_s"] < first["call_s"]


def test_cache_can_be_turned_off(tmp_path):
    _probe(tmp_path, FASTXENT_CACHE="0")
    again = _probe(tmp_path, FASTXENT_CACHE="0")
    assert again["hits"] == 0  # compiled again: nothing was stored or loaded
    assert not any(tmp_path.rglob("*.nbi"))
