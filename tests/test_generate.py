"""Tests of the synthetic-file generator and of the bundled digits demo file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import accuracy_score, log_loss

import fastxent.generate as gen
from fastxent._errors import FastxentError, InvalidTypeError, InvalidValueError, SourceError
from fastxent.generate import OutputExistsError, generate

DEMO = Path(__file__).resolve().parents[1] / "fastxent" / "data" / "digits_predictions.parquet"


def _read(path: Path) -> pa.Table:
    if path.suffix in gen.IPC_SUFFIXES:
        with pa.memory_map(str(path)) as source:
            return pa.ipc.open_file(source).read_all()
    return pq.read_table(path)


def _matrix(table: pa.Table, name: str) -> np.ndarray:
    column = table[name].combine_chunks()
    return np.asarray(column.flatten()).reshape(len(column), column.type.list_size)


def _softmax64(x: np.ndarray) -> np.ndarray:
    z = x.astype(np.float64) - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _log_softmax64(x: np.ndarray) -> np.ndarray:
    z = x.astype(np.float64) - x.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


# --------------------------------------------------------------------------- schema, content


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
@pytest.mark.parametrize("soft", [False, True])
def test_schema_is_non_null_fixed_size_lists(tmp_path, dtype, soft):
    path = tmp_path / "p.parquet"
    info = generate(path, rows=50, classes=7, dtype=dtype, soft=soft, seed=1)
    assert info["path"] == str(path)
    assert (info["rows"], info["classes"], info["dtype"]) == (50, 7, dtype)
    assert info["bytes"] == path.stat().st_size > 0

    table = pq.read_table(path)
    names = ["row_id", "label", "pred"] + (["target"] if soft else [])
    assert table.column_names == names
    schema = table.schema
    for name in ("row_id", "label"):
        assert schema.field(name).type == pa.int64()
        assert not schema.field(name).nullable
    value_type = pa.from_numpy_dtype(np.dtype(dtype))
    for name in names[2:]:
        field = schema.field(name)
        assert field.type == pa.list_(pa.field("item", value_type, nullable=False), 7)
        assert not field.nullable
        assert not field.type.value_field.nullable
        assert table[name].null_count == 0
    np.testing.assert_array_equal(table["row_id"].to_numpy(), np.arange(50))
    labels = table["label"].to_numpy()
    assert labels.min() >= 0
    assert labels.max() < 7
    params = json.loads(schema.metadata[gen.METADATA_KEY])
    assert params["rows"] == 50
    assert params["classes"] == 7
    assert params["seed"] == 1


@pytest.mark.parametrize(
    ("dtype", "tol"), [("float16", 2e-3), ("float32", 1e-6), ("float64", 1e-12)]
)
def test_probs_and_soft_targets_sum_to_one(tmp_path, dtype, tol):
    path = tmp_path / "p.parquet"
    generate(path, rows=300, classes=50, dtype=dtype, soft=True, seed=2)
    table = pq.read_table(path)
    for name in ("pred", "target"):
        m = _matrix(table, name).astype(np.float64)
        assert (m >= 0).all()
        np.testing.assert_allclose(m.sum(axis=1), 1.0, rtol=0, atol=tol)
    # The soft target is a distribution peaked on the label.
    target = _matrix(table, "target")
    assert (np.argmax(target, axis=1) == table["label"].to_numpy()).mean() > 0.9


@pytest.mark.parametrize("classes", [2, 10, 300])
def test_predictions_are_a_noisy_classifier(tmp_path, classes):
    path = tmp_path / "p.parquet"
    generate(path, rows=4000, classes=classes, seed=3)
    table = pq.read_table(path)
    probs = _matrix(table, "pred")
    labels = table["label"].to_numpy()
    accuracy = (np.argmax(probs, axis=1) == labels).mean()
    assert abs(accuracy - gen.TARGET_ACCURACY) < 0.04
    # Every class occurs as a label and the loss is finite and better than chance.
    loss = -np.mean(np.log(probs[np.arange(len(labels)), labels].astype(np.float64)))
    assert np.isfinite(loss)
    assert 0 < loss < np.log(classes)


def test_logits_and_log_probs_are_views_of_the_same_predictions(tmp_path):
    tables = {}
    for kind in gen.KINDS:
        path = tmp_path / f"{kind}.parquet"
        info = generate(path, rows=500, classes=12, kind=kind, dtype="float64", seed=4)
        assert info["kind"] == kind
        tables[kind] = pq.read_table(path)
    labels = tables["probs"]["label"].to_numpy()
    for table in tables.values():
        np.testing.assert_array_equal(table["label"].to_numpy(), labels)
    logits = _matrix(tables["logits"], "pred")
    probs = _matrix(tables["probs"], "pred")
    log_probs = _matrix(tables["log_probs"], "pred")
    # Logits carry an arbitrary per-row offset, like a real network's.
    assert np.abs(logits.mean(axis=1)).max() > 1.0
    np.testing.assert_allclose(_softmax64(logits), probs, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(_log_softmax64(logits), log_probs, rtol=1e-12, atol=1e-12)
    assert (log_probs <= 0).all()
    np.testing.assert_allclose(np.exp(log_probs).sum(axis=1), 1.0, rtol=1e-12)


def test_log_probs_float32(tmp_path):
    path = tmp_path / "lp.parquet"
    generate(path, rows=200, classes=9, kind="log_probs", seed=5)
    log_probs = _matrix(pq.read_table(path), "pred")
    assert log_probs.dtype == np.float32
    np.testing.assert_allclose(np.exp(log_probs.astype(np.float64)).sum(axis=1), 1.0, atol=1e-5)


# --------------------------------------------------------------------------- formats, layout


@pytest.mark.parametrize("name", ["p.arrow", "p.feather", "p.ipc"])
def test_ipc_output_by_suffix(tmp_path, name):
    path = tmp_path / name
    info = generate(path, rows=123, classes=5, soft=True, seed=6)
    assert info["format"] == "arrow"
    with pa.memory_map(str(path)) as source:
        table = pa.ipc.open_file(source).read_all()
    assert table.num_rows == 123
    assert table.column_names == ["row_id", "label", "pred", "target"]
    assert not table.schema.field("pred").nullable


def test_ipc_by_fmt_holds_the_same_data_as_parquet(tmp_path):
    parquet = tmp_path / "p.parquet"
    ipc = tmp_path / "p.data"
    generate(parquet, rows=321, classes=6, soft=True, seed=7)
    info = generate(ipc, rows=321, classes=6, soft=True, seed=7, fmt="arrow", compression="zstd")
    assert info["format"] == "arrow"
    with pa.memory_map(str(ipc)) as source:
        table = pa.ipc.open_file(source).read_all()
    assert table.equals(pq.read_table(parquet))


def test_ipc_batches_are_sized_in_bytes(tmp_path):
    path = tmp_path / "p.arrow"
    bytes_per_row = 16 + 4 * 8
    info = generate(path, rows=1000, classes=8, seed=8, row_group_bytes=bytes_per_row * 300)
    with pa.memory_map(str(path)) as source:
        reader = pa.ipc.open_file(source)
        sizes = [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
    assert sizes == [300, 300, 300, 100]
    assert info["row_groups"] == 4


def test_same_seed_same_data_other_seed_other_data(tmp_path):
    a, b, c = (tmp_path / f"{x}.parquet" for x in "abc")
    generate(a, rows=400, classes=11, soft=True, seed=9)
    generate(b, rows=400, classes=11, soft=True, seed=9)
    generate(c, rows=400, classes=11, soft=True, seed=10)
    assert pq.read_table(a).equals(pq.read_table(b))
    assert a.read_bytes() == b.read_bytes()
    assert not np.array_equal(_matrix(pq.read_table(a), "pred"), _matrix(pq.read_table(c), "pred"))


def test_data_does_not_depend_on_row_group_size(tmp_path):
    small = tmp_path / "small.parquet"
    large = tmp_path / "large.parquet"
    generate(small, rows=777, classes=10, soft=True, seed=11, row_group_bytes=1000)
    generate(large, rows=777, classes=10, soft=True, seed=11, compression="snappy")
    assert pq.ParquetFile(small).metadata.num_row_groups > 1
    assert pq.ParquetFile(large).metadata.num_row_groups == 1
    assert pq.read_table(small).equals(pq.read_table(large))


def test_groups_straddling_blocks_match_the_blocks(tmp_path, monkeypatch):
    # 3 rows per block and 4 rows per group: every group boundary cuts a block.
    monkeypatch.setattr(gen, "BLOCK_ELEMENTS", 30)
    path = tmp_path / "p.parquet"
    info = generate(path, rows=17, classes=10, soft=True, seed=12, row_group_bytes=4 * 96)
    assert info["rows_per_group"] == 4
    table = pq.read_table(path)
    margin = gen._margin_for_accuracy(10, gen.TARGET_ACCURACY)
    blocks = [
        gen._block(
            i,
            min(3, 17 - 3 * i),
            classes=10,
            kind="probs",
            soft=True,
            dtype=np.dtype("float32"),
            seed=12,
            margin=margin,
        )
        for i in range(6)
    ]
    np.testing.assert_array_equal(table["label"].to_numpy(), np.concatenate([b[0] for b in blocks]))
    np.testing.assert_array_equal(_matrix(table, "pred"), np.concatenate([b[1] for b in blocks]))
    np.testing.assert_array_equal(_matrix(table, "target"), np.concatenate([b[2] for b in blocks]))


def test_row_groups_are_sized_in_bytes(tmp_path):
    path = tmp_path / "p.parquet"
    classes, rows = 20, 1000
    bytes_per_row = 8 + 8 + 2 * classes * 4  # row_id, label, pred, target
    info = generate(
        path, rows=rows, classes=classes, soft=True, seed=13, row_group_bytes=bytes_per_row * 128
    )
    assert info["rows_per_group"] == 128
    metadata = pq.ParquetFile(path).metadata
    sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    assert sizes == [128] * 7 + [rows - 7 * 128]
    assert info["row_groups"] == len(sizes)


def test_a_row_group_smaller_than_a_row_holds_one_row(tmp_path):
    path = tmp_path / "p.parquet"
    info = generate(path, rows=5, classes=1000, seed=14, row_group_bytes=10)
    assert info["rows_per_group"] == 1
    assert pq.ParquetFile(path).metadata.num_row_groups == 5


@pytest.mark.parametrize("compression", ["none", "zstd", "snappy"])
def test_parquet_writer_settings(tmp_path, compression):
    path = tmp_path / "p.parquet"
    generate(path, rows=200, classes=4, soft=True, seed=15, compression=compression)
    column_chunks = pq.ParquetFile(path).metadata.row_group(0)
    chunks = {
        column_chunks.column(i).path_in_schema: column_chunks.column(i)
        for i in range(column_chunks.num_columns)
    }
    for name in ("pred.list.element", "target.list.element"):
        chunk = chunks[name]
        codec = "UNCOMPRESSED" if compression == "none" else compression.upper()
        assert chunk.compression == codec
        assert not chunk.is_stats_set
        assert not any("DICTIONARY" in e for e in chunk.encodings)
        expected = "BYTE_STREAM_SPLIT" if compression != "none" else "PLAIN"
        assert expected in chunk.encodings
    for name in ("row_id", "label"):
        assert chunks[name].is_stats_set
        assert not any("DICTIONARY" in e for e in chunks[name].encodings)


# --------------------------------------------------------------------------- safety


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_writer_failure_leaves_no_file(tmp_path, monkeypatch):
    calls = {"n": 0}
    original = pq.ParquetWriter.write_table

    def failing(self, table, row_group_size=None):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("disk full (injected)")
        return original(self, table, row_group_size=row_group_size)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", failing)
    path = tmp_path / "p.parquet"
    with pytest.raises(OSError, match="injected"):
        generate(path, rows=1000, classes=4, seed=16, row_group_bytes=48 * 100)
    assert calls["n"] == 2
    assert _leftovers(tmp_path) == []


def test_generator_failure_leaves_no_ipc_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    path = tmp_path / "p.arrow"
    generate(path, rows=10, classes=3, seed=17)
    before = path.read_bytes()
    original = gen._block

    def failing(index, *args, **kwargs):
        if index == 2:
            raise KeyboardInterrupt
        return original(index, *args, **kwargs)

    monkeypatch.setattr(gen, "BLOCK_ELEMENTS", 30)
    monkeypatch.setattr(gen, "_block", failing)
    with pytest.raises(KeyboardInterrupt):
        generate(path, rows=100, classes=3, seed=18, row_group_bytes=100, overwrite=True)
    assert _leftovers(tmp_path) == ["p.arrow"]
    assert path.read_bytes() == before


def test_refuses_to_overwrite(tmp_path):
    path = tmp_path / "p.parquet"
    path.write_bytes(b"precious")
    with pytest.raises(OutputExistsError, match=r"already exists.*overwrite=True") as caught:
        generate(path, rows=10, classes=3)
    assert isinstance(caught.value, FileExistsError)
    assert isinstance(caught.value, FastxentError)
    assert path.read_bytes() == b"precious"
    assert _leftovers(tmp_path) == ["p.parquet"]

    info = generate(path, rows=10, classes=3, overwrite=True)
    assert pq.read_table(path).num_rows == 10
    assert info["bytes"] == path.stat().st_size
    assert _leftovers(tmp_path) == ["p.parquet"]


def test_file_appearing_during_the_write_is_not_clobbered(tmp_path, monkeypatch):
    path = tmp_path / "p.parquet"
    original = gen._write_parquet

    def racing(*args, **kwargs):
        result = original(*args, **kwargs)
        path.write_bytes(b"someone else's")
        return result

    monkeypatch.setattr(gen, "_write_parquet", racing)
    with pytest.raises(OutputExistsError):
        generate(path, rows=10, classes=3)
    assert path.read_bytes() == b"someone else's"
    assert _leftovers(tmp_path) == ["p.parquet"]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"rows": 0}, InvalidValueError, r"rows must be >= 1; got 0"),
        ({"rows": -5}, InvalidValueError, r"rows must be >= 1; got -5"),
        ({"rows": 2.0}, InvalidTypeError, r"rows must be an int; got float 2.0"),
        ({"rows": True}, InvalidTypeError, r"rows must be an int; got bool"),
        ({"classes": 1}, InvalidValueError, r"classes must be >= 2; got 1"),
        ({"seed": -1}, InvalidValueError, r"seed must be >= 0; got -1"),
        ({"row_group_bytes": 0}, InvalidValueError, r"row_group_bytes must be >= 1; got 0"),
        ({"kind": "scores"}, InvalidValueError, r"kind must be one of .*'probs'.*got 'scores'"),
        ({"dtype": "int32"}, InvalidValueError, r"dtype must be one of .*'float16'.*got 'int32'"),
        ({"dtype": "bfloat16"}, InvalidValueError, r"dtype must be one of .*got 'bfloat16'"),
        ({"compression": "gzip"}, InvalidValueError, r"compression must be one of .*got 'gzip'"),
        ({"fmt": "csv"}, InvalidValueError, r"fmt must be one of \('parquet', 'arrow'\); got"),
        ({"fmt": "arrow", "compression": "snappy"}, InvalidValueError, r"Arrow IPC"),
        ({"soft": "yes"}, InvalidTypeError, r"soft must be a bool"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, error, message):
    arguments = {"rows": 10, "classes": 3, **kwargs}
    with pytest.raises(error, match=message):
        generate(tmp_path / "p.parquet", **arguments)
    assert _leftovers(tmp_path) == []


def test_missing_directory(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        generate(tmp_path / "nope" / "p.parquet", rows=10, classes=3)


def test_numpy_dtype_objects_are_accepted(tmp_path):
    info = generate(tmp_path / "p.parquet", rows=10, classes=3, dtype=np.float16)
    assert info["dtype"] == "float16"


# --------------------------------------------------------------------------- demo file


def test_demo_file_columns_and_schema():
    assert DEMO.is_file()
    assert DEMO.stat().st_size < 2**20
    table = pq.read_table(DEMO)
    assert table.column_names == ["row_id", "label", "probs", "logits", "log_probs"]
    float_list = pa.list_(pa.field("item", pa.float32(), nullable=False), 10)
    for name in ("row_id", "label"):
        assert table.schema.field(name).type == pa.int64()
    for name in ("probs", "logits", "log_probs"):
        assert table.schema.field(name).type == float_list
        assert not table.schema.field(name).nullable
        assert not table.schema.field(name).type.value_field.nullable
    for name in table.column_names:
        assert table[name].null_count == 0
    info = json.loads(table.schema.metadata[b"fastxent.demo"])
    assert info["dataset"] == "sklearn.datasets.load_digits"
    assert info["n_test"] == table.num_rows
    assert {"model", "sklearn_version", "split"} <= info.keys()
    row_id = table["row_id"].to_numpy()
    assert (np.diff(row_id) > 0).all()
    assert row_id.min() >= 0
    assert row_id.max() < info["n_samples"]


def test_demo_labels_match_the_dataset():
    from sklearn.datasets import load_digits

    table = pq.read_table(DEMO)
    target = load_digits().target
    np.testing.assert_array_equal(table["label"].to_numpy(), target[table["row_id"].to_numpy()])


def test_demo_log_loss_agrees_with_sklearn():
    table = pq.read_table(DEMO)
    labels = table["label"].to_numpy()
    probs = _matrix(table, "probs")
    logits = _matrix(table, "logits")
    log_probs = _matrix(table, "log_probs")
    rows = np.arange(len(labels))

    got = -np.mean(np.log(probs[rows, labels].astype(np.float64)))
    expected = log_loss(labels, probs, labels=np.arange(10))
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    # The three columns describe the same predictions.
    np.testing.assert_allclose(-np.mean(log_probs[rows, labels].astype(np.float64)), got, rtol=1e-5)
    np.testing.assert_allclose(_softmax64(logits), probs, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(_log_softmax64(logits), log_probs, rtol=1e-4, atol=1e-5)
    # The metadata records what sklearn computed in float64 before the float32 cast.
    info = json.loads(table.schema.metadata[b"fastxent.demo"])
    np.testing.assert_allclose(got, info["test_log_loss_float64"], rtol=1e-5)
    accuracy = accuracy_score(labels, np.argmax(probs, axis=1))
    assert accuracy == pytest.approx(info["test_accuracy"])
