"""Fuzzing: corrupt files and random inputs never crash, hang or give a silent wrong number.

1. **Byte mutations.** The bytes of small valid Parquet and Arrow IPC files are truncated,
   bit-flipped or overwritten at many seeded positions. Each mutated file must give either a
   :class:`fastxent.FastxentError` (exit 2 and one line from the command line) or a score equal
   to :func:`fastxent.cross_entropy` on the arrays pyarrow reads from the mutated file, which is
   the original score when the mutation hit bytes the score does not use. The mutations run in
   child processes with a watchdog, so a segfault or a hang is a test failure naming the
   mutation, not a dead test run.
2. **Properties** (hypothesis): ``nan_policy="omit"`` and ``"propagate"`` against a reference
   that drops or propagates the rows, and streaming (every source kind and layout, any batch
   size) against the in-memory result.
"""

from __future__ import annotations

import contextlib
import faulthandler
import fnmatch
import io
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st
from naive import log_softmax, naive_cross_entropy, softmax

import fastxent as fx

N_ROWS, N_CLASSES = 30, 4

# ---------------------------------------------------------------------------------------------
# 1. Byte mutations
# ---------------------------------------------------------------------------------------------

# (format, layout, seed, mutations): about 300 mutations in all, a few seconds.
BATCHES = [
    ("parquet", "fixed_size_list", 1, 90),
    ("parquet", "wide", 2, 50),
    ("ipc_file", "fixed_size_list", 3, 60),
    ("ipc_file", "list", 4, 50),
    ("ipc_stream", "list", 5, 50),
]
CLI_EVERY = 5  # every 5th mutation is also run through the command line
WATCHDOG_SECONDS = 30  # per mutation


def _base_table(layout: str) -> pa.Table:
    rng = np.random.default_rng(0)
    x = rng.random((N_ROWS, N_CLASSES)) + 0.05
    x = (x / x.sum(axis=1, keepdims=True)).astype(np.float32)
    cols: dict[str, Any] = {"y": rng.integers(0, N_CLASSES, N_ROWS)}
    if layout == "wide":
        cols.update({f"p_{j}": x[:, j] for j in range(N_CLASSES)})
    elif layout == "list":
        offsets = pa.array(np.arange(N_ROWS + 1, dtype=np.int32) * N_CLASSES)
        cols["p"] = pa.ListArray.from_arrays(offsets, pa.array(x.ravel()))
    else:
        cols["p"] = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), N_CLASSES)
    cols["id"] = [f"row-{i}" for i in range(N_ROWS)]  # not scored: bytes the score never reads
    return pa.table(cols)


def _write(table: pa.Table, fmt: str, path: Path) -> None:
    if fmt == "parquet":
        pq.write_table(table, path, row_group_size=10)
        return
    new = ipc.new_file if fmt == "ipc_file" else ipc.new_stream
    with new(path, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=10):
            writer.write_batch(batch)


def _mutations(size: int, seed: int, count: int) -> list[tuple[str, int, int]]:
    """Seeded (operation, position, value) triples; half of them in the first and last bytes,
    where the headers, schemas and footers live."""
    rnd = random.Random(seed)
    out = []
    for k in range(count):
        if k % 2:
            pos = rnd.randrange(size)
        else:
            span = min(size, 400)
            pos = rnd.choice([rnd.randrange(span), size - 1 - rnd.randrange(span)])
        op = rnd.choice(["truncate", "flip", "byte"])
        value = rnd.randrange(8) if op == "flip" else rnd.randrange(256)
        out.append((op, pos, value))
    return out


def _mutate(data: bytes, op: str, pos: int, value: int) -> bytes:
    if op == "truncate":
        return data[:pos]
    buf = bytearray(data)
    buf[pos] = buf[pos] ^ (1 << value) if op == "flip" else value
    return bytes(buf)


def _pred_arg(layout: str) -> str:
    return "p_*" if layout == "wide" else "p"


def _reference(path: Path, fmt: str, layout: str) -> float | str:
    """cross_entropy on the arrays pyarrow reads from ``path``, or "invalid" if it cannot."""
    try:
        if fmt == "parquet":
            pf = pq.ParquetFile(path)
            schema = pf.schema_arrow
        else:
            with pa.memory_map(str(path)) as mm:
                opener = ipc.open_file if fmt == "ipc_file" else ipc.open_stream
                schema = opener(mm).schema
        # The columns the glob matches in the mutated file (a flipped name may still match).
        pred_cols = [n for n in schema.names if fnmatch.fnmatchcase(n, _pred_arg(layout))]
        columns = [*pred_cols, "y"]
        if fmt == "parquet":
            table = pf.read(columns=columns)
        else:
            with pa.memory_map(str(path)) as mm:
                # Only the scored columns: a corrupt buffer of another one does not matter.
                wanted = [schema.get_field_index(c) for c in columns]
                reader = opener(mm, options=ipc.IpcReadOptions(included_fields=wanted))
                table = reader.read_all().select(columns)
        table.validate(full=True)
        y = table["y"].to_numpy()
        if layout == "wide":
            x = np.column_stack([table[c].to_numpy() for c in pred_cols])
        else:
            p = table["p"].combine_chunks()
            x = np.asarray(p.flatten()).reshape(len(p), -1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fx.SoftWarning)
            return fx.cross_entropy(x, y, check_rows=True)
    except Exception as exc:  # whatever the reason: not a valid, scoreable file
        return f"invalid: {type(exc).__name__}: {exc}"


def _run_cli(argv: list[str]) -> tuple[int, str, str]:
    from fastxent.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def _check_one(path: Path, fmt: str, layout: str, out_dir: Path, cli: bool) -> dict[str, Any]:
    """Score one mutated file through the API (and the CLI); return what happened."""
    pred = _pred_arg(layout)
    per_row = out_dir / "rows.parquet"
    per_row.write_bytes(b"old")  # must survive every failure
    report: dict[str, Any] = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fx.SoftWarning)
            got = fx.score(path, pred=pred, label="y", per_row=per_row, overwrite=True)
    except fx.FastxentError as exc:
        report["outcome"] = "error"
        report["message"] = str(exc)
        if "\n" in str(exc):
            report["problem"] = "multi-line message"
        elif per_row.read_bytes() != b"old" or os.listdir(out_dir) != ["rows.parquet"]:
            report["problem"] = "a failure touched the per-row output"
    except Exception as exc:
        report["outcome"] = "crash"
        report["problem"] = f"not a FastxentError: {type(exc).__name__}: {exc}"
        return report
    else:
        report["outcome"] = "score"
        report["loss"] = got.loss
        expected = _reference(path, fmt, layout)
        if isinstance(expected, str):
            report["problem"] = f"scored {got.loss!r}, but pyarrow reads {expected}"
        elif not (math.isfinite(got.loss) and math.isclose(got.loss, expected, rel_tol=1e-12)):
            report["problem"] = f"scored {got.loss!r}, cross_entropy on the data is {expected!r}"
        elif pq.read_metadata(per_row).num_rows != got.n_rows:
            report["problem"] = "the per-row file does not hold every row"
    if cli and "problem" not in report:
        code, out, err = _run_cli(["score", str(path), "--pred", pred, "--label", "y", "--json"])
        if report["outcome"] == "error":
            if code != 2 or out or err.count("\n") != 1 or not err.startswith("fastxent: error"):
                report["problem"] = f"command line: exit {code}, stderr {err!r}"
        elif code != 0 or not math.isclose(json.loads(out)["loss"], report["loss"], rel_tol=1e-12):
            # Not bit-equal: asking for per-row losses (the API call) changes the summation
            # order inside a block, by an ulp or so.
            report["problem"] = f"command line: exit {code}, stdout {out!r}, stderr {err!r}"
    return report


def _child(fmt: str, layout: str, seed: int, count: int) -> None:
    """Run one batch of mutations; print one JSON line per mutation (after a "start" line)."""
    faulthandler.enable()
    with tempfile.TemporaryDirectory(prefix="fastxent-fuzz-") as tmp:
        work = Path(tmp)
        out_dir = work / "out"
        out_dir.mkdir()
        suffix = ".parquet" if fmt == "parquet" else ".arrow"
        original = work / f"original{suffix}"
        _write(_base_table(layout), fmt, original)
        data = original.read_bytes()
        pred = _pred_arg(layout)
        base_loss = fx.score(original, pred=pred, label="y").loss
        print(json.dumps({"base": base_loss, "size": len(data)}), flush=True)
        for k, (op, pos, value) in enumerate(_mutations(len(data), seed, count)):
            print(json.dumps({"start": k, "op": op, "pos": pos, "value": value}), flush=True)
            path = work / f"mutated{suffix}"
            path.write_bytes(_mutate(data, op, pos, value))
            faulthandler.dump_traceback_later(WATCHDOG_SECONDS, exit=True)  # a hang dies loudly
            report = _check_one(path, fmt, layout, out_dir, cli=k % CLI_EVERY == 0)
            faulthandler.cancel_dump_traceback_later()
            report["same_as_original"] = report.get("loss") == base_loss
            print(json.dumps({"done": k, **report}), flush=True)


@pytest.mark.parametrize(("fmt", "layout", "seed", "count"), BATCHES)
def test_mutated_files_fail_cleanly_or_score_what_they_hold(fmt, layout, seed, count):
    done = subprocess.run(
        [sys.executable, __file__, fmt, layout, str(seed), str(count)],
        capture_output=True,
        text=True,
        timeout=WATCHDOG_SECONDS * 4 + count,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                [str(Path(__file__).parent), os.environ.get("PYTHONPATH", "")]
            ),
        },
    )
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    started = [line for line in lines if "start" in line]
    finished = [line for line in lines if "done" in line]
    if done.returncode != 0 or len(finished) != count:
        last = started[-1] if started else None
        pytest.fail(
            f"the fuzz child died (exit {done.returncode}) at mutation {last} of "
            f"{fmt}/{layout} seed {seed}:\n{done.stderr[-3000:]}"
        )
    problems = [line for line in finished if "problem" in line]
    assert not problems, "\n".join(f"{started[p['done']]}: {p['problem']}" for p in problems[:10])
    outcomes = [line["outcome"] for line in finished]
    # The campaign exercised both sides: clean errors and (same or changed) valid scores.
    assert outcomes.count("error") >= count // 10, outcomes
    assert outcomes.count("score") >= count // 10, outcomes
    assert any(line["same_as_original"] for line in finished)


# ---------------------------------------------------------------------------------------------
# 2. Properties
# ---------------------------------------------------------------------------------------------


def _pred(rng: np.random.Generator, kind: str, n: int, c: int, dtype) -> np.ndarray:
    z = rng.normal(scale=2.0, size=(n, c))
    if kind == "probs":
        z = softmax(z)
    elif kind == "log_probs":
        z = log_softmax(z)
    return z.astype(dtype)


def _targets(rng: np.random.Generator, n: int, c: int) -> np.ndarray:
    t = rng.dirichlet(np.ones(c), size=n)
    return t / t.sum(axis=1, keepdims=True)


@st.composite
def poisoned(draw):
    """A valid problem, then NaN / inf written into some of the rows that are scored."""
    n = draw(st.integers(1, 30))
    c = draw(st.integers(2, 8))
    kind = draw(st.sampled_from(["probs", "logits", "log_probs"]))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    soft = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    pred = _pred(rng, kind, n, c, dtype)
    options: dict[str, Any] = {"pred_kind": kind}
    if soft:
        target = _targets(rng, n, c)
    else:
        target = rng.integers(0, c, n)
        if draw(st.booleans()):
            target[rng.random(n) < 0.2] = -100
            options["ignore_index"] = -100
    if draw(st.booleans()):
        options["sample_weight"] = rng.uniform(0.1, 2.0, n)
    if draw(st.booleans()):
        options["weight"] = rng.uniform(0.1, 3.0, c)
    options["label_smoothing"] = draw(st.sampled_from([0.0, 0.1]))
    scored = np.flatnonzero(target != -100) if not soft else np.arange(n)
    bad = rng.random(n) < draw(st.sampled_from([0.0, 0.2, 0.6]))
    bad[np.setdiff1d(np.arange(n), scored)] = False  # an ignored row's values never matter
    values = [np.nan, np.inf] + ([-np.inf] if kind == "probs" else [])
    for i in np.flatnonzero(bad):
        pred[i, rng.integers(0, c)] = values[rng.integers(0, len(values))]
    return pred, target, options, bad


def _reference_rows(pred, target, options, keep) -> np.ndarray:
    opts = dict(options)
    if "sample_weight" in opts:
        opts["sample_weight"] = opts["sample_weight"][keep]
    return naive_cross_entropy(pred[keep], target[keep], reduction="none", **opts)


def _reference_mean(pred, target, options, keep) -> float:
    opts = dict(options)
    if "sample_weight" in opts:
        opts["sample_weight"] = opts["sample_weight"][keep]
    return naive_cross_entropy(pred[keep], target[keep], **opts)


def _rtol(dtype) -> float:
    return 1e-12 if np.dtype(dtype) == np.float64 else 1e-6


@given(poisoned())
def test_property_nan_policy_omit_drops_exactly_the_bad_rows(problem):
    pred, target, options, bad = problem
    keep = ~bad
    rtol = _rtol(pred.dtype)
    rows = fx.cross_entropy(
        pred, target, nan_policy="omit", reduction="none", check_rows=True, **options
    )
    assert np.isnan(rows[bad]).all()
    if keep.any():
        expected = _reference_rows(pred, target, options, keep)
        np.testing.assert_allclose(rows[keep], expected, rtol=rtol, atol=rtol * expected.max())
    acc = fx.Accumulator(
        nan_policy="omit", **{k: v for k, v in options.items() if k != "sample_weight"}
    )
    acc.update(pred, target, options.get("sample_weight"))
    norm_left = keep.any() and not (np.asarray(target)[keep] == -100).all()
    if not norm_left:
        with pytest.raises(fx.InvalidValueError):
            fx.cross_entropy(pred, target, nan_policy="omit", check_rows=True, **options)
        return
    mean = fx.cross_entropy(pred, target, nan_policy="omit", check_rows=True, **options)
    assert mean == pytest.approx(_reference_mean(pred, target, options, keep), rel=rtol)
    result = acc.result()
    assert result.n_skipped == int(bad.sum())
    assert result.n_rows == pred.shape[0]
    assert result.loss == pytest.approx(mean, rel=1e-12)


@given(poisoned())
def test_property_nan_policy_propagate(problem):
    pred, target, options, bad = problem
    rows = fx.cross_entropy(
        pred, target, nan_policy="propagate", reduction="none", check_rows=True, **options
    )
    assert np.isnan(rows[bad]).all()
    assert not np.isnan(rows[~bad]).any()
    total = fx.cross_entropy(
        pred, target, nan_policy="propagate", reduction="sum", check_rows=True, **options
    )
    assert np.isnan(total) == bool(bad.any())


@given(poisoned())
def test_property_nan_policy_raise_names_the_first_bad_row(problem):
    pred, target, options, bad = problem
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        with pytest.raises(fx.InvalidValueError, match=rf"\brow {first}\b"):
            fx.cross_entropy(pred, target, check_rows=True, **options)


LAYOUTS = ["fixed_size_list", "list", "large_list", "wide"]


def _pred_columns(name: str, x: np.ndarray, layout: str) -> dict[str, pa.Array]:
    n, c = x.shape
    if layout == "wide":
        return {f"{name}_{j}": pa.array(x[:, j]) for j in range(c)}
    if layout == "fixed_size_list":
        return {name: pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), c)}
    large = layout == "large_list"
    offsets = pa.array(np.arange(n + 1) * c, pa.int64() if large else pa.int32())
    cls = pa.LargeListArray if large else pa.ListArray
    return {name: cls.from_arrays(offsets, pa.array(x.ravel()))}


@given(
    poisoned(),
    st.sampled_from(LAYOUTS),
    st.sampled_from(["table", "parquet", "ipc_file", "ipc_stream", "directory"]),
    st.integers(1, 12),
    st.sampled_from(["raise", "omit", "propagate"]),
)
def test_property_streaming_equals_in_memory(problem, layout, source_kind, batch_rows, policy):
    pred, target, options, bad = problem
    options = dict(options)
    sample_weight = options.pop("sample_weight", None)
    class_weight = options.pop("weight", None)
    cols: dict[str, Any] = {"i": np.arange(pred.shape[0])}
    cols.update(_pred_columns("p", pred, layout))
    soft = np.asarray(target).ndim == 2
    if soft:
        cols.update(_pred_columns("t", target.astype(pred.dtype), layout))
        target = target.astype(pred.dtype)  # as stored
    else:
        cols["y"] = target
    if sample_weight is not None:
        cols["w"] = sample_weight
    table = pa.table(cols)
    star = "_*" if layout == "wide" else ""
    kwargs: dict[str, Any] = {
        "pred": "p" + star,
        **({"target": "t" + star} if soft else {"label": "y"}),
        "weight": None if sample_weight is None else "w",
        "class_weight": class_weight,
        "nan_policy": policy,
        "batch_rows": batch_rows,
        **options,
    }
    memory: dict[str, Any] = {
        "nan_policy": policy,
        "check_rows": True,
        "weight": class_weight,
        "sample_weight": sample_weight,
        **options,
    }
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", fx.SoftWarning)
        source: Any = table
        if source_kind in ("parquet", "ipc_file", "ipc_stream"):
            source = Path(tmp) / f"data.{source_kind}"
            _write(table, source_kind, source)
        elif source_kind == "directory":
            source = Path(tmp) / "ds"
            source.mkdir()
            cut = pred.shape[0] // 2
            for k, part in enumerate([table.slice(0, cut), table.slice(cut)]):
                pq.write_table(part, source / f"part-{k}.parquet", row_group_size=3)
        try:
            expected = fx.cross_entropy(pred, target, **memory)
        except fx.InvalidValueError as exc:
            with pytest.raises(fx.InvalidValueError) as info:
                fx.score(source, **kwargs)
            # The same problem, named for the same row (the column names differ).
            row = re.search(r"\brow (\d+)\b", str(exc))
            if row:
                assert re.search(rf"\brow {row[1]}\b", str(info.value)), (exc, info.value)
            return
        out = Path(tmp) / "rows.parquet"
        got = fx.score(source, per_row=out, **kwargs)
        written = pq.read_table(out)["loss"].to_numpy()
    per_row = fx.cross_entropy(pred, target, reduction="none", **memory)
    if np.isnan(expected):
        assert np.isnan(got.loss)
    else:
        assert got.loss == pytest.approx(expected, rel=1e-12)
    assert got.n_rows == pred.shape[0]
    assert got.n_skipped == (int(bad.sum()) if policy == "omit" else 0)
    np.testing.assert_allclose(written, per_row, rtol=1e-12, atol=0, equal_nan=True)


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
