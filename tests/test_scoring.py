"""Tests for fastxent.score: sources, layouts, options, per-row output, atomicity, memory."""

from __future__ import annotations

import io
import itertools
import json
import os
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastxent as fx
import fastxent.scoring as scoring
from fastxent._errors import (
    FastxentError,
    InvalidTypeError,
    InvalidValueError,
    SoftWarning,
    SourceError,
)
from fastxent._progress import Progress
from fastxent.accumulate import Accumulator
from fastxent.generate import OutputExistsError, generate

N_ROWS, N_CLASSES = 57, 5
LAYOUTS = ["fixed_size_list", "list", "large_list", "fixed_shape_tensor", "wide"]
SOURCES = ["parquet", "hive", "ipc", "ipc_stream", "table", "reader", "polars", "duckdb"]
REL = 1e-12


# ---------------------------------------------------------------------------------------------
# Data helpers
# ---------------------------------------------------------------------------------------------


def _probs(n: int, c: int, rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    x = rng.random((n, c)) + 0.05
    return (x / x.sum(axis=1, keepdims=True)).astype(dtype)


def _fsl(x: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])


def _pred_columns(name: str, x: np.ndarray, layout: str) -> dict[str, pa.Array]:
    n, c = x.shape
    if layout == "fixed_size_list":
        return {name: _fsl(x)}
    if layout in ("list", "large_list"):
        large = layout == "large_list"
        offsets = pa.array(np.arange(n + 1) * c, pa.int64() if large else pa.int32())
        cls = pa.LargeListArray if large else pa.ListArray
        return {name: cls.from_arrays(offsets, pa.array(x.ravel()))}
    if layout == "fixed_shape_tensor":
        typ = pa.fixed_shape_tensor(pa.from_numpy_dtype(x.dtype), [c])
        return {name: pa.ExtensionArray.from_storage(typ, _fsl(x))}
    assert layout == "wide"
    return {f"{name}_{j}": pa.array(x[:, j]) for j in range(c)}


def _pred_arg(name: str, layout: str) -> str:
    return f"{name}_*" if layout == "wide" else name


def _table(x, labels, *, layout="fixed_size_list", weights=None, targets=None) -> pa.Table:
    cols: dict[str, pa.Array] = {"id": pa.array(np.arange(len(x)) + 1000)}
    cols.update(_pred_columns("p", x, layout))
    if labels is not None:
        cols["y"] = pa.array(labels)
    if targets is not None:
        cols.update(_pred_columns("t", targets, layout))
    if weights is not None:
        cols["w"] = pa.array(weights)
    cols["tag"] = pa.array([f"r{i}" for i in range(len(x))])
    return pa.table(cols)


def _as_source(table: pa.Table, kind: str, tmp_path: Path):
    """The same rows as a source of the given kind (file sources keep the row order)."""
    if kind == "table":
        return table
    if kind == "reader":
        return pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=10))
    if kind == "parquet":
        path = tmp_path / "data.parquet"
        pq.write_table(table, path, row_group_size=20)
        return path
    if kind == "hive":
        root = tmp_path / "hive"
        cuts = [0, 15, 16, 40, table.num_rows]
        for k, (a, b) in enumerate(itertools.pairwise(cuts)):
            part = root / f"part={k}"
            part.mkdir(parents=True)
            pq.write_table(table.slice(a, b - a), part / "chunk.parquet", row_group_size=7)
        (root / "_SUCCESS").write_text("")
        return root
    if kind == "ipc":
        path = tmp_path / "data.arrow"
        with pa.OSFile(str(path), "wb") as sink, ipc.new_file(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=13):
                writer.write_batch(batch)
        return path
    if kind == "ipc_stream":
        path = tmp_path / "data.arrows"
        with pa.OSFile(str(path), "wb") as sink, ipc.new_stream(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=13):
                writer.write_batch(batch)
        return path
    if kind == "polars":
        pl = pytest.importorskip("polars")
        return pl.from_arrow(table)
    if kind == "duckdb":
        duckdb = pytest.importorskip("duckdb")
        return duckdb.from_arrow(table)
    raise AssertionError(kind)


def _same_score(got: fx.Score, loss: float, n_rows: int) -> None:
    assert got.loss == pytest.approx(loss, rel=REL)
    assert got.n_rows == n_rows


@pytest.fixture
def data(rng):
    x = _probs(N_ROWS, N_CLASSES, rng)
    labels = rng.integers(0, N_CLASSES, N_ROWS)
    weights = rng.random(N_ROWS) * 2
    return x, labels, weights


# ---------------------------------------------------------------------------------------------
# Sources and layouts
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", SOURCES)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_source_and_layout_equals_cross_entropy(kind, layout, data, tmp_path):
    x, labels, weights = data
    if kind == "duckdb" and layout == "fixed_shape_tensor":
        pytest.skip("duckdb drops the tensor extension type (it reads back as fixed_size_list)")
    source = _as_source(_table(x, labels, layout=layout, weights=weights), kind, tmp_path)
    got = fx.score(source, pred=_pred_arg("p", layout), label="y", weight="w", batch_rows=11)
    expected = fx.cross_entropy(x, labels, sample_weight=weights)
    _same_score(got, expected, N_ROWS)
    assert got.weight_sum == pytest.approx(weights.sum(), rel=REL)
    assert got.accuracy == pytest.approx(np.mean(np.argmax(x, axis=1) == labels))


@pytest.mark.parametrize("kind", ["parquet", "table", "reader", "polars"])
@pytest.mark.parametrize("layout", ["fixed_size_list", "list", "wide"])
def test_default_batch_size(kind, layout, data, tmp_path):
    # No batch_rows: the width of a list column is learnt from the schema, by reading one row
    # (files, tables), or from the first batch (streams).
    x, labels, _ = data
    source = _as_source(_table(x, labels, layout=layout), kind, tmp_path)
    got = fx.score(source, pred=_pred_arg("p", layout), label="y")
    _same_score(got, fx.cross_entropy(x, labels), N_ROWS)


def test_stream_of_lists_is_sliced_to_the_batch_size(data, monkeypatch):
    # A stream's list width is only known from its first batch; batches are then sliced.
    x, labels, _ = data
    monkeypatch.setattr(scoring, "_rows_for", lambda n_classes, itemsize, plan: 4)
    sizes = []
    update = Accumulator.update

    def recording(self, pred, *args, **kwargs):
        sizes.append(len(pred))
        return update(self, pred, *args, **kwargs)

    monkeypatch.setattr(Accumulator, "update", recording)
    table = _table(x, labels, layout="list")
    reader = pa.RecordBatchReader.from_batches(table.schema, table.to_batches(max_chunksize=30))
    got = fx.score(reader, pred="p", label="y")
    _same_score(got, fx.cross_entropy(x, labels), N_ROWS)
    assert max(sizes) == 4 and sum(sizes) == N_ROWS


@pytest.mark.parametrize("pred_kind", ["logits", "log_probs"])
def test_pred_kinds(pred_kind, data, tmp_path):
    x, labels, _ = data
    z = np.log(x.astype(np.float64))
    if pred_kind == "logits":
        z = z + 3.0  # logits need not be normalised
    z = z.astype(np.float32)
    source = _as_source(_table(z, labels), "parquet", tmp_path)
    got = fx.score(source, pred="p", label="y", pred_kind=pred_kind, batch_rows=9)
    _same_score(got, fx.cross_entropy(z, labels, pred_kind=pred_kind), N_ROWS)


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
def test_float_widths(dtype, data, rng):
    _, labels, _ = data
    xd = _probs(N_ROWS, N_CLASSES, rng, dtype=dtype)
    got = fx.score(_table(xd, labels), pred="p", label="y", batch_rows=8)
    _same_score(got, fx.cross_entropy(xd, labels), N_ROWS)


def test_an_open_source_is_accepted_and_left_open(data):
    from fastxent.arrow import open_source

    x, labels, _ = data
    src = open_source(_table(x, labels))
    first = fx.score(src, pred="p", label="y")
    again = fx.score(src, pred="p", label="y")  # a table source can be read again
    assert first == again


# ---------------------------------------------------------------------------------------------
# Chunk invariance
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def invariance_case(tmp_path_factory):
    rng = np.random.default_rng(20240611)
    n, c = 203, 7
    x = _probs(n, c, rng)
    labels = rng.integers(0, c, n)
    weights = rng.random(n)
    path = tmp_path_factory.mktemp("invariance") / "p.parquet"
    pq.write_table(_table(x, labels, weights=weights), path, row_group_size=50)
    logits = (np.log(x.astype(np.float64)) * 1.7 - 0.3).astype(np.float32)
    path_logits = path.with_name("logits.parquet")
    pq.write_table(_table(logits, labels, weights=weights), path_logits, row_group_size=64)
    return {
        "probs": (path, fx.cross_entropy(x, labels, sample_weight=weights)),
        "logits": (
            path_logits,
            fx.cross_entropy(logits, labels, sample_weight=weights, pred_kind="logits"),
        ),
        "whole": {
            kind: fx.score(p, pred="p", label="y", weight="w", pred_kind=kind, batch_rows=n)
            for kind, p in (("probs", path), ("logits", path_logits))
        },
    }


@pytest.mark.parametrize("pred_kind", ["probs", "logits"])
@given(batch_rows=st.integers(min_value=1, max_value=260))
def test_result_does_not_depend_on_batch_size(invariance_case, pred_kind, batch_rows):
    path, expected = invariance_case[pred_kind]
    whole = invariance_case["whole"][pred_kind]
    got = fx.score(
        path, pred="p", label="y", weight="w", pred_kind=pred_kind, batch_rows=batch_rows
    )
    assert got.loss == pytest.approx(expected, rel=REL)
    assert got.loss_sum == pytest.approx(whole.loss_sum, rel=REL)
    assert got.weight_sum == pytest.approx(whole.weight_sum, rel=REL)
    assert (got.n_rows, got.n_scored, got.accuracy) == (
        whole.n_rows,
        whole.n_scored,
        whole.accuracy,
    )
    assert got.stderr == pytest.approx(whole.stderr, rel=1e-9)


# ---------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------


def test_ignore_index_class_weight_and_smoothing(data):
    x, labels, weights = data
    labels = labels.copy()
    labels[::4] = -100
    table = _table(x, labels, weights=weights)
    options = {"ignore_index": -100, "label_smoothing": 0.1}
    cw = [1.0, 2.0, 0.5, 1.0, 3.0]
    got = fx.score(table, pred="p", label="y", weight="w", class_weight=cw, batch_rows=6, **options)
    expected = fx.cross_entropy(x, labels, sample_weight=weights, weight=cw, **options)
    _same_score(got, expected, N_ROWS)
    assert got.n_ignored == len(labels[::4])
    assert got.n_scored == N_ROWS - got.n_ignored


@pytest.mark.parametrize("layout", ["fixed_size_list", "list", "wide"])
@pytest.mark.parametrize("pred_kind", ["probs", "logits"])
def test_soft_targets(layout, pred_kind, data, rng, tmp_path):
    x, _, weights = data
    t = _probs(N_ROWS, N_CLASSES, rng)
    pred = x if pred_kind == "probs" else np.log(x.astype(np.float64)).astype(np.float32)
    source = _as_source(
        _table(pred, None, layout=layout, weights=weights, targets=t), "parquet", tmp_path
    )
    got = fx.score(
        source,
        pred=_pred_arg("p", layout),
        target=_pred_arg("t", layout),
        weight="w",
        pred_kind=pred_kind,
        batch_rows=10,
    )
    expected = fx.cross_entropy(pred, t, sample_weight=weights, pred_kind=pred_kind)
    _same_score(got, expected, N_ROWS)
    assert got.accuracy is None


def test_soft_targets_default_batch_size(data, rng):
    x, _, _ = data
    t = _probs(N_ROWS, N_CLASSES, rng)
    got = fx.score(_table(x, None, targets=t, layout="list"), pred="p", target="t")
    _same_score(got, fx.cross_entropy(x, t), N_ROWS)


def test_nan_policy_omit(data):
    x, labels, _ = data
    x = x.copy()
    x[[3, 40]] = np.nan
    got = fx.score(_table(x, labels), pred="p", label="y", nan_policy="omit", batch_rows=10)
    _same_score(got, fx.cross_entropy(x, labels, nan_policy="omit"), N_ROWS)
    assert got.n_skipped == 2


def test_soft_problems_warn_once_for_the_whole_stream(data):
    x, labels, _ = data
    x = x.copy()
    x[[2, 30, 50]] *= 1.1  # rows that do not sum to 1, in three different batches
    with pytest.warns(SoftWarning) as record:
        fx.score(_table(x, labels), pred="p", label="y", batch_rows=10)
    assert len(record) == 1
    message = str(record[0].message)
    # Totals for the whole stream, not the first batch's count.
    assert "3 rows do not, the first is row 2, the worst is off by 0.1" in message
    assert record[0].filename == __file__
    with pytest.raises(InvalidValueError, match="must sum to 1"):
        fx.score(_table(x, labels), pred="p", label="y", batch_rows=10, strict=True)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_missing_column_lists_the_columns(data):
    x, labels, _ = data
    with pytest.raises(InvalidValueError, match=r"'prob'.*\['id', 'p', 'y', 'tag'\]"):
        fx.score(_table(x, labels), pred="prob", label="y")
    with pytest.raises(InvalidValueError, match="'label'"):
        fx.score(_table(x, labels), pred="p", label="label")


def test_bad_label_in_a_later_batch_names_the_column_and_global_row(data, tmp_path):
    x, labels, _ = data
    labels = labels.copy()
    labels[43] = N_CLASSES + 4
    path = _as_source(_table(x, labels), "parquet", tmp_path)
    match = r"y labels must lie in \[0, n_classes\) = \[0, 5\); row 43 has 9"
    with pytest.raises(InvalidValueError, match=match):
        fx.score(path, pred="p", label="y", batch_rows=10)


def test_null_prediction_names_the_global_row(data, tmp_path):
    x, labels, _ = data
    table = _table(x, labels)
    mask = np.zeros(N_ROWS, dtype=bool)
    mask[38] = True
    probs = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), N_CLASSES, mask=pa.array(mask))
    table = table.set_column(table.schema.get_field_index("p"), "p", probs)
    path = _as_source(table, "parquet", tmp_path)
    with pytest.raises(InvalidValueError, match=r"'p'.*row 38 is null"):
        fx.score(path, pred="p", label="y", batch_rows=10)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"pred": "p"}, InvalidValueError, "exactly one of label"),
        ({"pred": "p", "label": "y", "target": "p"}, InvalidValueError, "got both"),
        ({"pred": "p", "label": "y", "keep": ["id"]}, InvalidValueError, "needs per_row"),
        ({"pred": "p", "label": "y", "batch_rows": 0}, InvalidValueError, "batch_rows"),
        ({"pred": "p", "label": "y", "pred_kind": "prob"}, InvalidValueError, "pred_kind"),
        ({"pred": 3, "label": "y"}, InvalidTypeError, "pred must be a column name"),
        ({"pred": "p", "label": "*"}, InvalidValueError, "label must name one column"),
        ({"pred": "p", "label": "tag"}, InvalidTypeError, "integer column"),
        ({"pred": "*", "label": "y"}, InvalidTypeError, "must be float16, float32"),
        ({"pred": "y", "label": "y"}, InvalidTypeError, "one list of class scores"),
        ({"pred": "p", "label": "y", "class_weight": [1, 2]}, InvalidValueError, "one entry"),
    ],
)
def test_bad_arguments(kwargs, error, match, data):
    x, labels, _ = data
    with pytest.raises(error, match=match):
        fx.score(_table(x, labels), **kwargs)


def test_missing_file_is_a_source_error(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        fx.score(tmp_path / "nope.parquet", pred="p", label="y")


def test_empty_source_is_an_error(data):
    x, labels, _ = data
    with pytest.raises(InvalidValueError, match="no rows"):
        fx.score(_table(x, labels).slice(0, 0), pred="p", label="y")


def test_failure_stops_the_prefetch_thread(data):
    x, labels, _ = data
    labels = labels.copy()
    labels[30] = 99
    with pytest.raises(InvalidValueError):
        fx.score(_table(x, labels), pred="p", label="y", batch_rows=5)
    assert not [t for t in threading.enumerate() if t.name == "fastxent-prefetch"]


# ---------------------------------------------------------------------------------------------
# Per-row output
# ---------------------------------------------------------------------------------------------


def test_per_row_file(data, tmp_path, monkeypatch):
    monkeypatch.setattr(scoring, "PER_ROW_GROUP_ROWS", 16)  # several row groups
    x, labels, weights = data
    labels = labels.copy()
    labels[5] = -1
    table = _table(x, labels, weights=weights)
    out = tmp_path / "rows.parquet"
    got = fx.score(
        table,
        pred="p",
        label="y",
        weight="w",
        ignore_index=-1,
        batch_rows=7,
        per_row=out,
        keep=["id", "tag"],
    )
    rows = pq.read_table(out)
    assert rows.column_names == ["row", "loss", "id", "tag"]
    assert rows.schema.field("row").type == pa.int64()
    assert rows.schema.field("loss").type == pa.float64()
    np.testing.assert_array_equal(rows["row"].to_numpy(), np.arange(N_ROWS))
    expected = fx.cross_entropy(x, labels, sample_weight=weights, ignore_index=-1, reduction="none")
    np.testing.assert_allclose(rows["loss"].to_numpy(), expected, rtol=REL, atol=0)
    assert rows["loss"][5].as_py() == 0.0
    assert rows["id"].equals(table["id"])
    assert rows["tag"].to_pylist() == table["tag"].to_pylist()
    assert pq.ParquetFile(out).metadata.num_row_groups > 1
    meta = json.loads(rows.schema.metadata[scoring.PER_ROW_METADATA_KEY])
    assert meta["pred"] == "p" and meta["label"] == "y"
    assert np.nansum(rows["loss"].to_numpy()) == pytest.approx(got.loss_sum, rel=REL)
    assert sorted(os.listdir(tmp_path)) == ["rows.parquet"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
def test_per_row_file_gets_the_umask_permissions(data, tmp_path):
    x, labels, _ = data
    umask = os.umask(0o022)
    os.umask(umask)
    out = tmp_path / "rows.parquet"
    fx.score(_table(x, labels), pred="p", label="y", per_row=out)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask


def test_per_row_keep_glob_and_nan_rows(data, tmp_path):
    x, labels, _ = data
    x = x.copy()
    x[12] = np.nan
    out = tmp_path / "rows.parquet"
    fx.score(
        _table(x, labels, layout="wide"),
        pred="p_*",
        label="y",
        nan_policy="omit",
        per_row=out,
        keep="p_*",
    )
    rows = pq.read_table(out)
    assert rows.column_names == ["row", "loss", *(f"p_{j}" for j in range(N_CLASSES))]
    assert np.isnan(rows["loss"][12].as_py())


def test_per_row_keep_must_not_shadow_its_columns(data, tmp_path):
    x, labels, _ = data
    table = _table(x, labels).append_column("loss", pa.array(np.zeros(N_ROWS)))
    with pytest.raises(InvalidValueError, match="'row' or 'loss'"):
        fx.score(table, pred="p", label="y", per_row=tmp_path / "o.parquet", keep=["loss"])
    assert os.listdir(tmp_path) == []


def _bad_label_source(data, tmp_path):
    x, labels, _ = data
    labels = labels.copy()
    labels[50] = 77  # in a late batch: earlier batches have been written by then
    source_dir = tmp_path / "in"
    source_dir.mkdir()
    path = source_dir / "p.parquet"
    pq.write_table(_table(x, labels), path, row_group_size=10)
    return path


def test_failure_mid_stream_leaves_no_file(data, tmp_path, monkeypatch):
    monkeypatch.setattr(scoring, "PER_ROW_GROUP_ROWS", 8)  # row groups were flushed already
    path = _bad_label_source(data, tmp_path)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(InvalidValueError, match="row 50"):
        fx.score(path, pred="p", label="y", batch_rows=5, per_row=out_dir / "rows.parquet")
    assert os.listdir(out_dir) == []


def test_interrupt_mid_stream_leaves_no_file(data, tmp_path, monkeypatch):
    x, labels, _ = data
    calls = []
    update = Accumulator.update

    def interrupted(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return update(self, *args, **kwargs)

    monkeypatch.setattr(Accumulator, "update", interrupted)
    with pytest.raises(KeyboardInterrupt):
        fx.score(
            _table(x, labels), pred="p", label="y", batch_rows=5, per_row=tmp_path / "rows.parquet"
        )
    assert os.listdir(tmp_path) == []


def test_existing_file_is_not_replaced_without_overwrite(data, tmp_path):
    x, labels, _ = data
    out = tmp_path / "rows.parquet"
    out.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match="already exists") as info:
        fx.score(_table(x, labels), pred="p", label="y", per_row=out)
    assert isinstance(info.value, FastxentError)
    assert isinstance(info.value, FileExistsError)
    assert scoring.OutputExistsError is OutputExistsError
    assert out.read_bytes() == b"precious"
    assert os.listdir(tmp_path) == ["rows.parquet"]
    fx.score(_table(x, labels), pred="p", label="y", per_row=out, overwrite=True)
    assert pq.read_table(out).num_rows == N_ROWS
    assert os.listdir(tmp_path) == ["rows.parquet"]


def test_failed_overwrite_keeps_the_old_file(data, tmp_path):
    path = _bad_label_source(data, tmp_path)
    out = tmp_path / "rows.parquet"
    out.write_bytes(b"old")
    with pytest.raises(InvalidValueError):
        fx.score(path, pred="p", label="y", batch_rows=5, per_row=out, overwrite=True)
    assert out.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["in", "rows.parquet"]


def test_file_appearing_during_the_run_is_not_clobbered(data, tmp_path, monkeypatch):
    x, labels, _ = data
    out = tmp_path / "rows.parquet"
    result = Accumulator.result

    def racing(self):
        out.write_bytes(b"someone else's")
        return result(self)

    monkeypatch.setattr(Accumulator, "result", racing)
    with pytest.raises(OutputExistsError):
        fx.score(_table(x, labels), pred="p", label="y", per_row=out)
    assert out.read_bytes() == b"someone else's"
    assert os.listdir(tmp_path) == ["rows.parquet"]


def test_per_row_directory_must_exist(data, tmp_path):
    x, labels, _ = data
    with pytest.raises(SourceError, match="does not exist"):
        fx.score(_table(x, labels), pred="p", label="y", per_row=tmp_path / "no" / "o.parquet")


# ---------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------


def test_progress_line_on_stderr(data, capsys):
    x, labels, _ = data
    fx.score(_table(x, labels), pred="p", label="y", batch_rows=10, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("\r") and captured.err.endswith("\n")
    assert captured.err.count("\n") == 1
    assert f"scored {N_ROWS} / {N_ROWS} rows (100.0%)" in captured.err.split("\r")[-1]


def test_progress_redraws_at_most_once_per_interval():
    now = [0.0]
    out = io.StringIO()
    bar = Progress(None, stream=out, interval=0.5, clock=lambda: now[0])
    for _ in range(10):
        now[0] += 0.25
        bar.update(100, 4_000_000)
    bar.close()
    draws = out.getvalue().split("\r")[1:]
    assert len(draws) == 5 + 1  # at 0.25, 0.75, 1.25, 1.75, 2.25 s, then close
    assert draws[-1] == "scored 1,000 rows, 16.0 MB/s of predictions, 2 s\n"
    assert out.getvalue().endswith("\n")
    bar.close()  # idempotent
    assert out.getvalue().count("\n") == 1


def test_progress_pads_over_a_longer_previous_line():
    out = io.StringIO()
    times = iter([0.0, 1.0, 2.0, 3.0])
    bar = Progress(1000, stream=out, interval=0.0, clock=lambda: next(times))
    bar.update(999, 10**9)  # "... 999.0 MB/s"
    bar.update(1, 0)
    first, second = out.getvalue().split("\r")[1:]
    assert len(second) >= len(first)


# ---------------------------------------------------------------------------------------------
# Demo file
# ---------------------------------------------------------------------------------------------


def test_demo_path_and_info():
    path = scoring.demo_path()
    assert path.is_file()
    info = scoring.demo_info()
    assert info["n_test"] == 450 and info["n_classes"] == 10
    got = fx.score(path, pred="probs", label="label")
    assert got.loss == pytest.approx(info["test_log_loss_float64"], rel=1e-6)
    assert got.accuracy == pytest.approx(info["test_accuracy"])


def test_importing_fastxent_stays_light():
    code = "import sys, fastxent; print(sorted({'numba', 'pyarrow'} & set(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_child_env()
    )
    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------------------------
# Bounded memory
# ---------------------------------------------------------------------------------------------


def _child_env() -> dict[str, str]:
    repo = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}


_RSS_CHILD = textwrap.dedent(
    """
    import json, sys
    import psutil
    import fastxent as fx
    from fastxent.accumulate import Accumulator

    big, warm, out_dir, batch_rows = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    proc = psutil.Process()
    peak = [0]
    update = Accumulator.update

    def sampling(self, *args, **kwargs):
        peak[0] = max(peak[0], proc.memory_info().rss)
        return update(self, *args, **kwargs)

    Accumulator.update = sampling

    def run(path, name):
        return fx.score(path, pred="pred", label="label", batch_rows=batch_rows,
                        per_row=f"{out_dir}/{name}.parquet", keep=["row_id"])

    run(warm, "warm")  # compiles or loads the kernels, grows allocator arenas
    base = proc.memory_info().rss
    peak[0] = base
    result = run(big, "big")
    print(json.dumps({"rss_growth": peak[0] - base, "rows": result.n_rows}))
    """
)


def test_scoring_memory_is_bounded(tmp_path):
    # 200k rows x 100 classes of float32: an 80 MB file in one 64 MB row group, scored in
    # 2 MB batches while writing per-row losses. Memory must stay a few batches, not the file.
    n_rows, n_classes, batch_rows = 200_000, 100, 5_000
    big, warm = tmp_path / "big.parquet", tmp_path / "warm.parquet"
    generate(big, rows=n_rows, classes=n_classes, seed=1)
    generate(warm, rows=20_000, classes=n_classes, seed=2)
    file_bytes = big.stat().st_size
    assert file_bytes > 75 * 2**20
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(big), str(warm), str(out_dir), str(batch_rows)],
        capture_output=True,
        text=True,
        env=_child_env(),
        timeout=300,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["rows"] == n_rows
    # Independent of the file size: about batch_bytes * (prefetch depth + 2) + allocator slack.
    assert report["rss_growth"] < 40 * 2**20, report
    assert pq.read_metadata(out_dir / "big.parquet").num_rows == n_rows


def test_warnings_from_other_code_pass_through(data, monkeypatch):
    x, labels, _ = data
    update = Accumulator.update

    def noisy(self, *args, **kwargs):
        warnings.warn("unrelated", RuntimeWarning, stacklevel=1)
        return update(self, *args, **kwargs)

    monkeypatch.setattr(Accumulator, "update", noisy)
    with pytest.warns(RuntimeWarning, match="unrelated"):
        fx.score(_table(x, labels), pred="p", label="y", batch_rows=20)
