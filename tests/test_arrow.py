"""Tests for fastxent.arrow: sources, layouts, error messages, prefetching, bounded memory."""

from __future__ import annotations

import decimal
import gc
import json
import os
import pickle
import re
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from fastxent._errors import FastxentError, InvalidTypeError, InvalidValueError, SourceError
from fastxent.arrow import (
    Piece,
    Source,
    default_batch_rows,
    iter_piece,
    matrix_from_column,
    matrix_from_wide,
    open_source,
    prefetch,
    resolve_columns,
    vector_from_column,
)

N_ROWS, N_CLASSES = 23, 5
FLOATS = [np.float16, np.float32, np.float64]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _scores(n: int = N_ROWS, c: int = N_CLASSES, dtype=np.float32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, c)).astype(dtype)


def _fsl(x: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])


def _list(x: np.ndarray, large: bool = False) -> pa.Array:
    n, c = x.shape
    offsets = pa.array(np.arange(n + 1) * c, pa.int64() if large else pa.int32())
    cls = pa.LargeListArray if large else pa.ListArray
    return cls.from_arrays(offsets, pa.array(x.ravel()))


def _tensor(x: np.ndarray) -> pa.ExtensionArray:
    typ = pa.fixed_shape_tensor(pa.from_numpy_dtype(x.dtype), [x.shape[1]])
    return pa.ExtensionArray.from_storage(typ, _fsl(x))


def _table(x: np.ndarray, labels: np.ndarray | None = None) -> pa.Table:
    if labels is None:
        labels = np.arange(len(x)) % x.shape[1]
    return pa.table({"id": np.arange(len(x)), "probs": _fsl(x), "label": labels})


def _read_all(source: Source, columns=("probs", "label"), batch_rows: int = 4):
    probs, labels, sizes = [], [], []
    row = 0
    for batch in source.iter_batches(list(columns), batch_rows):
        assert batch.schema.names == list(columns)
        sizes.append(batch.num_rows)
        probs.append(matrix_from_column(batch.column("probs"), name="probs", row_offset=row))
        labels.append(
            vector_from_column(batch.column("label"), name="label", row_offset=row, kind="label")
        )
        row += batch.num_rows
    assert all(0 < s <= batch_rows for s in sizes)
    return np.concatenate(probs), np.concatenate(labels)


def _address(arr: pa.Array) -> int:
    """Address of the first value of a primitive array, honouring its offset."""
    return arr.buffers()[1].address + arr.offset * arr.type.bit_width // 8


def _prefetch_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "fastxent-prefetch" and t.is_alive()]


# ---------------------------------------------------------------------------------------------
# Sources
# ---------------------------------------------------------------------------------------------


def test_parquet_file(tmp_path):
    x = _scores()
    path = tmp_path / "preds.parquet"
    pq.write_table(_table(x), path, row_group_size=10)
    source = open_source(path, ["probs", "label"])
    assert source.kind == "parquet"
    assert source.num_rows == N_ROWS
    assert source.column_names == ["id", "probs", "label"]
    assert source.schema.field("probs").type == pa.list_(pa.float32(), N_CLASSES)
    assert source.paths == (str(path),)
    for _ in range(2):  # files can be read again
        probs, labels = _read_all(source)
        np.testing.assert_array_equal(probs, x)
        np.testing.assert_array_equal(labels, np.arange(N_ROWS) % N_CLASSES)


def test_parquet_pieces_cover_all_rows_and_pickle(tmp_path):
    x = _scores(n=30)
    path = tmp_path / "preds.parquet"
    pq.write_table(_table(x), path, row_group_size=7)
    source = open_source(str(path))
    pieces = source.pieces(target_rows=15)
    assert [p.units for p in pieces] == [(0, 1), (2, 3), (4,)]
    assert [p.row_offset for p in pieces] == [0, 14, 28]
    assert sum(p.num_rows for p in pieces) == 30
    assert [len(p.units) for p in source.pieces()] == [1] * 5
    got = []
    for piece in pickle.loads(pickle.dumps(pieces)):
        rows = [b for b in iter_piece(piece, ["probs"], batch_rows=4)]
        assert sum(b.num_rows for b in rows) == piece.num_rows
        got.extend(matrix_from_column(b.column(0), name="probs") for b in rows)
    np.testing.assert_array_equal(np.concatenate(got), x)


def test_hive_directory_sorted_and_junk_ignored(tmp_path):
    root = tmp_path / "ds"
    parts = {"split=b/part-0.parquet": 1, "split=a/part-1.parquet": 0, "split=a/part-0.parquet": 2}
    data = {}
    for rel, seed in parts.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        data[rel] = _scores(n=5 + seed, seed=seed)
        pq.write_table(_table(data[rel]), root / rel, row_group_size=3)
    # Files a writer leaves behind, which must not be read.
    (root / "_SUCCESS").write_text("")
    (root / "split=a" / "_metadata").write_text("not parquet")
    (root / ".part-0.parquet.crc").write_text("not parquet")
    (root / "_temporary" / "0").mkdir(parents=True)
    (root / "_temporary" / "0" / "part-9.parquet").write_text("not parquet")

    source = open_source(root)
    order = sorted(parts)
    assert source.kind == "directory"
    assert source.paths == tuple(str(root / rel) for rel in order)
    assert source.num_rows == sum(len(d) for d in data.values())
    probs, _ = _read_all(source, batch_rows=4)
    np.testing.assert_array_equal(probs, np.concatenate([data[rel] for rel in order]))
    pieces = source.pieces()
    assert [p.row_offset for p in pieces] == list(np.cumsum([0] + [p.num_rows for p in pieces]))[
        :-1
    ]
    assert {p.path for p in pieces} == set(source.paths)


def test_directory_type_disagreement_names_both_files(tmp_path):
    pq.write_table(_table(_scores()), tmp_path / "a.parquet")
    pq.write_table(_table(_scores(dtype=np.float64)), tmp_path / "b.parquet")
    source = open_source(tmp_path)
    with pytest.raises(InvalidValueError, match="same type") as info:
        source.iter_batches(["probs"], 8)
    assert "a.parquet" in str(info.value) and "b.parquet" in str(info.value)
    source.iter_batches(["label"], 8)  # the other columns agree


def test_directory_list_length_disagreement_names_both_files(tmp_path):
    pq.write_table(pa.table({"probs": _list(_scores(c=3))}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"probs": _list(_scores(c=4))}), tmp_path / "b.parquet")
    source = open_source(tmp_path)
    with pytest.raises(InvalidValueError, match="same length in every file") as info:
        list(source.iter_batches(["probs"], 8))
    message = str(info.value)
    assert "a.parquet" in message and "b.parquet" in message and f"row {N_ROWS}" in message


def test_directory_list_field_names_and_nullability_do_not_matter(tmp_path):
    x = _scores()
    element = pa.list_(pa.field("element", pa.float32(), nullable=False))
    pq.write_table(pa.table({"probs": _list(x)}), tmp_path / "a.parquet")
    pq.write_table(pa.table({"probs": _list(x).cast(element)}), tmp_path / "b.parquet")
    got = [
        matrix_from_column(b.column(0), name="p")
        for b in open_source(tmp_path).iter_batches(["probs"], 100)
    ]
    np.testing.assert_array_equal(np.concatenate(got), np.concatenate([x, x]))


def test_directory_missing_column_in_one_file(tmp_path):
    pq.write_table(_table(_scores()), tmp_path / "a.parquet")
    pq.write_table(_table(_scores()).drop_columns(["label"]), tmp_path / "b.parquet")
    with pytest.raises(InvalidValueError, match=r"b\.parquet") as info:
        open_source(tmp_path, ["probs", "label"])
    assert "'probs'" in str(info.value)  # lists what exists


@pytest.mark.parametrize("suffix", [".arrow", ".feather", ".ipc", ".bin"])
def test_ipc_file_is_memory_mapped_and_zero_copy(tmp_path, suffix):
    x = _scores()
    path = tmp_path / f"preds{suffix}"
    table = _table(x)
    with ipc.new_file(path, table.schema) as writer:
        writer.write_table(table, max_chunksize=10)
    source = open_source(path)
    assert source.kind == "ipc_file"  # by magic bytes, whatever the suffix
    assert source.num_rows == N_ROWS
    batches = list(source.iter_batches(["probs"], batch_rows=4))
    assert [b.num_rows for b in batches] == [4, 4, 2, 4, 4, 2, 3]
    column = batches[1].column(0)
    matrix = matrix_from_column(column, name="probs", row_offset=4)
    assert not matrix.flags.writeable
    child = column.values.slice(column.offset * N_CLASSES, len(column) * N_CLASSES)
    assert matrix.ctypes.data == _address(child)
    assert [p.units for p in source.pieces(target_rows=20)] == [(0, 1), (2,)]
    got = [
        matrix_from_column(b.column(0), name="p")
        for p in source.pieces()
        for b in iter_piece(p, ["probs"], 100)
    ]
    np.testing.assert_array_equal(np.concatenate(got), x)


def test_feather_v2_compressed(tmp_path):
    x = _scores()
    path = tmp_path / "preds.feather"
    feather.write_feather(_table(x), path, compression="zstd")
    probs, _ = _read_all(open_source(path))
    np.testing.assert_array_equal(probs, x)


def test_ipc_stream_file_can_be_read_repeatedly(tmp_path):
    x = _scores()
    path = tmp_path / "preds.arrows"
    table = _table(x)
    with ipc.new_stream(path, table.schema) as writer:
        writer.write_table(table, max_chunksize=6)
    source = open_source(path)
    assert source.kind == "ipc_stream"
    assert source.num_rows == N_ROWS
    for _ in range(2):
        np.testing.assert_array_equal(_read_all(source)[0], x)
    pieces = source.pieces(target_rows=12)
    assert [(p.units, p.row_offset) for p in pieces] == [((0, 1), 0), ((2, 3), 12)]
    got = [matrix_from_column(b.column(0), name="p") for b in iter_piece(pieces[1], ["probs"], 5)]
    np.testing.assert_array_equal(np.concatenate(got), x[12:])


def test_table_and_record_batch(tmp_path):
    x = _scores()
    table = pa.concat_tables([_table(x[:9]), _table(x[9:])])  # chunked columns
    source = open_source(table)
    assert source.kind == "table" and source.num_rows == N_ROWS and not source.is_stream
    for _ in range(2):
        np.testing.assert_array_equal(_read_all(source)[0], x)
    batch = _table(x).to_batches()[0]
    np.testing.assert_array_equal(_read_all(open_source(batch))[0], x)
    with pytest.raises(SourceError, match="file source"):
        source.pieces()


def test_record_batch_reader_is_one_shot():
    x = _scores()
    source = open_source(_table(x).to_reader(max_chunksize=10))
    assert source.kind == "stream" and source.num_rows is None and source.is_stream
    np.testing.assert_array_equal(_read_all(source)[0], x)
    with pytest.raises(SourceError, match="only once"):
        source.iter_batches(["probs"], 4)
    with pytest.raises(SourceError, match="file source"):
        source.pieces()


def test_stream_missing_column_does_not_consume_it():
    source = open_source(_table(_scores()).to_reader())
    with pytest.raises(InvalidValueError, match="nope"):
        source.iter_batches(["nope"], 4)
    assert len(_read_all(source)[0]) == N_ROWS


def test_polars_dataframe():
    pl = pytest.importorskip("polars")
    x = _scores()
    df = pl.from_arrow(_table(x))
    source = open_source(df)
    assert source.is_stream
    np.testing.assert_array_equal(_read_all(source)[0], x)


def test_duckdb_relation():
    duckdb = pytest.importorskip("duckdb")
    x = _scores()
    preds = _table(x)  # noqa: F841 -- found by duckdb's replacement scan
    relation = duckdb.sql("SELECT probs, label FROM preds ORDER BY id")
    np.testing.assert_array_equal(_read_all(open_source(relation))[0], x)
    # A variable-length list from SQL works too.
    relation = duckdb.sql("SELECT [0.25::FLOAT, 0.75::FLOAT] AS probs, 1 AS label")
    probs, labels = _read_all(open_source(relation))
    np.testing.assert_array_equal(probs, [[0.25, 0.75]])
    np.testing.assert_array_equal(labels, [1])


def test_pandas_dataframe_wide():
    pd = pytest.importorskip("pandas")
    if not hasattr(pd.DataFrame, "__arrow_c_stream__"):
        pytest.skip("pandas without the Arrow C stream interface")
    x = _scores(dtype=np.float64)
    df = pd.DataFrame({f"prob_{j}": x[:, j] for j in range(N_CLASSES)})
    source = open_source(df)
    names = resolve_columns(source.schema, "prob_*")
    got = [matrix_from_wide(b, names) for b in source.iter_batches(names, 10)]
    np.testing.assert_array_equal(np.concatenate(got), x)


def test_unsupported_source_type():
    with pytest.raises(InvalidTypeError, match="got int"):
        open_source(42)
    with pytest.raises(InvalidTypeError, match="single ChunkedArray"):
        open_source(pa.chunked_array([[1.0]]))


# ---------------------------------------------------------------------------------------------
# Source errors
# ---------------------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    path = tmp_path / "nope.parquet"
    with pytest.raises(SourceError, match=r"nope\.parquet") as info:
        open_source(path)
    assert isinstance(info.value, OSError) and isinstance(info.value, FastxentError)


def test_empty_directory(tmp_path):
    (tmp_path / "_SUCCESS").write_text("")
    with pytest.raises(SourceError, match="no data file"):
        open_source(tmp_path)


def test_not_a_parquet_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello, not parquet")
    with pytest.raises(SourceError, match=r"cannot read .*notes.txt as Parquet: .*magic"):
        open_source(path)


def test_truncated_parquet(tmp_path):
    path = tmp_path / "cut.parquet"
    pq.write_table(_table(_scores()), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match=r"cannot read .*cut\.parquet as Parquet"):
        open_source(path)


def test_corrupt_parquet_fails_while_iterating(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(_table(_scores(n=40)), path, row_group_size=10)
    column = pq.ParquetFile(path).metadata.row_group(2).column(1)
    start = column.dictionary_page_offset or column.data_page_offset
    data = bytearray(path.read_bytes())
    data[start : start + 16] = b"\xff" * 16  # garble the first page header of row group 2
    path.write_bytes(bytes(data))
    source = open_source(path)  # the footer is intact
    rows = 0
    with pytest.raises(SourceError, match=r"cannot read .*bad\.parquet as Parquet") as info:
        for batch in source.iter_batches(["probs"], 5):
            rows += batch.num_rows
    assert rows == 20
    assert "\n" not in str(info.value)


def test_truncated_ipc_file_and_stream(tmp_path):
    table = _table(_scores())
    with ipc.new_file(tmp_path / "a.arrow", table.schema) as writer:
        writer.write_table(table)
    with ipc.new_stream(tmp_path / "a.arrows", table.schema) as writer:
        writer.write_table(table, max_chunksize=5)
    for name, what in (("a.arrow", "an Arrow IPC file"), ("a.arrows", "an Arrow IPC stream")):
        path = tmp_path / name
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(SourceError, match=f"cannot read .*{name} as {what}"):
            open_source(path)


def test_missing_column_lists_existing(tmp_path):
    path = tmp_path / "a.parquet"
    pq.write_table(_table(_scores()), path)
    with pytest.raises(InvalidValueError, match=r"\['id', 'probs', 'label'\]; got 'prob'"):
        open_source(path, ["prob"])
    with pytest.raises(InvalidValueError, match="got 'x'"):
        open_source(path).iter_batches(["probs", "x"], 4)


def test_bad_batch_rows():
    source = open_source(_table(_scores()))
    with pytest.raises(InvalidValueError, match="batch_rows must be at least 1"):
        source.iter_batches(["probs"], 0)
    with pytest.raises(InvalidTypeError, match="columns must be a list"):
        source.iter_batches("probs", 4)


# ---------------------------------------------------------------------------------------------
# Layouts -> matrices
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOATS)
def test_fixed_size_list_zero_copy_keeps_dtype(dtype):
    x = _scores(dtype=dtype)
    arr = _fsl(x)
    got = matrix_from_column(arr, name="probs", row_offset=0)
    assert got.dtype == dtype and got.shape == x.shape and got.flags.c_contiguous
    assert not got.flags.writeable
    assert got.ctypes.data == _address(arr.values)
    np.testing.assert_array_equal(got, x)


@pytest.mark.parametrize("large", [False, True])
@pytest.mark.parametrize("dtype", FLOATS)
def test_variable_lists(dtype, large):
    x = _scores(dtype=dtype)
    got = matrix_from_column(_list(x, large), name="probs", row_offset=0)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, x)


@pytest.mark.parametrize("dtype", FLOATS)
def test_fixed_shape_tensor(dtype):
    x = _scores(dtype=dtype)
    np.testing.assert_array_equal(matrix_from_column(_tensor(x), name="t", row_offset=0), x)


def test_fixed_shape_tensor_through_parquet_and_ipc(tmp_path):
    x = _scores()
    table = pa.table({"probs": _tensor(x), "label": np.zeros(N_ROWS, np.int64)})
    pq.write_table(table, tmp_path / "t.parquet")
    with ipc.new_file(tmp_path / "t.arrow", table.schema) as writer:
        writer.write_table(table)
    for name in ("t.parquet", "t.arrow"):
        source = open_source(tmp_path / name)
        assert isinstance(source.schema.field("probs").type, pa.FixedShapeTensorType)
        np.testing.assert_array_equal(_read_all(source)[0], x)


@pytest.mark.parametrize(
    "make",
    [_fsl, _list, lambda x: _list(x, large=True), _tensor],
    ids=["fsl", "list", "large", "t"],
)
def test_sliced_arrays_give_the_right_rows(make):
    x = _scores(n=12)
    arr = make(x)
    for start, length in [(0, 12), (3, 4), (11, 1), (5, 0)]:
        got = matrix_from_column(
            arr.slice(start, length), name="probs", row_offset=start, n_classes=N_CLASSES
        )
        assert got.shape == (length, N_CLASSES)
        np.testing.assert_array_equal(got, x[start : start + length])


def test_fixed_size_list_over_a_sliced_child():
    x = _scores(n=12)
    flat = pa.array(np.concatenate([np.full(7, -1, np.float32), x.ravel()])).slice(7)
    arr = pa.FixedSizeListArray.from_arrays(flat, N_CLASSES).slice(2, 5)
    np.testing.assert_array_equal(matrix_from_column(arr, name="p"), x[2:7])


def test_chunked_array_single_chunk_zero_copy_several_chunks_copied():
    x = _scores()
    one = pa.chunked_array([_fsl(x)])
    assert not matrix_from_column(one, name="p").flags.writeable
    several = pa.chunked_array([_list(x[:10]), _list(x[10:])])
    got = matrix_from_column(several, name="p", row_offset=0)
    assert got.flags.writeable and got.flags.c_contiguous
    np.testing.assert_array_equal(got, x)
    empty = pa.chunked_array([], type=pa.list_(pa.float32(), 3))
    assert matrix_from_column(empty, name="p").shape == (0, 3)


def test_empty_variable_list_takes_n_classes():
    empty = pa.array([], pa.list_(pa.float32()))
    assert matrix_from_column(empty, name="p", n_classes=7).shape == (0, 7)
    assert matrix_from_column(empty, name="p").shape == (0, 0)


@pytest.mark.parametrize("make", [_fsl, _list, _tensor], ids=["fsl", "list", "tensor"])
def test_null_row_names_column_and_global_row(make):
    x = _scores(n=10)
    arr = make(x)
    storage = arr.storage if isinstance(arr, pa.ExtensionArray) else arr
    mask = pa.array(np.arange(10) == 6)
    if pa.types.is_fixed_size_list(storage.type):
        nulled = pa.FixedSizeListArray.from_arrays(storage.values, N_CLASSES, mask=mask)
    else:
        nulled = pa.ListArray.from_arrays(storage.offsets, storage.values, mask=mask)
    if isinstance(arr, pa.ExtensionArray):
        nulled = pa.ExtensionArray.from_storage(arr.type, nulled)
    with pytest.raises(InvalidValueError, match=r"column 'probs'.*row 1006 is null\. Drop"):
        matrix_from_column(nulled, name="probs", row_offset=1000)
    # Sliced past the null row: fine; sliced to start at it: row number still global.
    matrix_from_column(nulled.slice(7), name="probs", row_offset=1007)
    with pytest.raises(InvalidValueError, match="row 1006 is null"):
        matrix_from_column(nulled.slice(4), name="probs", row_offset=1004)


@pytest.mark.parametrize("large", [False, True])
def test_null_inside_list(large):
    values = [[0.1, 0.2, 0.7]] * 4 + [[0.1, None, 0.9]]
    typ = pa.large_list(pa.float64()) if large else pa.list_(pa.float64())
    with pytest.raises(InvalidValueError, match=r"column 'p'.* row 504 has a null at class 1"):
        matrix_from_column(pa.array(values, typ), name="p", row_offset=500)
    fixed = pa.array(values, pa.list_(pa.float64(), 3))
    with pytest.raises(InvalidValueError, match="row 4 has a null at class 1"):
        matrix_from_column(fixed, name="p")
    # A slice that excludes the null is fine.
    assert matrix_from_column(fixed.slice(0, 4), name="p").shape == (4, 3)


def test_ragged_list_names_column_and_global_row():
    arr = pa.array([[0.5, 0.5], [0.2, 0.8], [1.0], [0.3, 0.7]], pa.list_(pa.float32()))
    with pytest.raises(InvalidValueError, match=r"column 'probs'.*2 values per row; row 12 has 1"):
        matrix_from_column(arr, name="probs", row_offset=10)
    chunked = pa.chunked_array([arr.slice(0, 2), arr.slice(2)])
    with pytest.raises(InvalidValueError, match="row 12 has 1"):
        matrix_from_column(chunked, name="probs", row_offset=10)
    odd_first = pa.array([[1.0], [0.5, 0.5], [0.2, 0.8]], pa.list_(pa.float32()))
    with pytest.raises(InvalidValueError, match="2 values per row; row 0 has 1"):
        matrix_from_column(odd_first, name="probs")
    with pytest.raises(InvalidValueError, match="3 values per row; row 0 has 2"):
        matrix_from_column(arr.slice(0, 2), name="probs", n_classes=3)
    with pytest.raises(InvalidValueError, match="must have 4 values per row"):
        matrix_from_column(_fsl(_scores()), name="probs", n_classes=4)


def test_ragged_lists_across_batches_of_one_file(tmp_path):
    arr = pa.array([[0.5, 0.5]] * 6 + [[0.2, 0.3, 0.5]] * 4, pa.list_(pa.float32()))
    pq.write_table(pa.table({"probs": arr}), tmp_path / "a.parquet")
    batches = open_source(tmp_path / "a.parquet").iter_batches(["probs"], 6)
    next(batches)
    with pytest.raises(InvalidValueError, match="2 values per row as in row 0; row 6"):
        next(batches)


@pytest.mark.parametrize(
    "typ",
    [pa.list_(pa.int64()), pa.list_(pa.string()), pa.list_(pa.int32(), 2), pa.list_(pa.bool_())],
)
def test_non_float_values_are_a_type_error(typ):
    values = {pa.string(): [["a", "b"]], pa.bool_(): [[True, False]]}.get(typ.value_type, [[1, 0]])
    arr = pa.array(values, typ)
    with pytest.raises(
        InvalidTypeError, match=rf"column 'probs'.*floating.*got {re.escape(str(typ))}"
    ):
        matrix_from_column(arr, name="probs", row_offset=0)


@pytest.mark.parametrize(
    "arr",
    [
        pa.array([0.5, 0.25]),
        pa.array(["x"]),
        pa.array([{"a": 1.0}]),
        pa.ExtensionArray.from_storage(
            pa.fixed_shape_tensor(pa.float32(), [2, 2]), _fsl(_scores(n=2, c=4))
        ),
    ],
    ids=["float", "string", "struct", "tensor2d"],
)
def test_other_layouts_are_a_type_error(arr):
    with pytest.raises(InvalidTypeError, match="column 'probs' must hold one list"):
        matrix_from_column(arr, name="probs", row_offset=0)


# ---------------------------------------------------------------------------------------------
# Wide layout
# ---------------------------------------------------------------------------------------------


def test_resolve_columns():
    schema = pa.schema(
        [
            ("id", pa.int64()),
            ("prob_1", pa.float32()),
            ("label", pa.int8()),
            ("prob_0", pa.float32()),
        ]
    )
    assert resolve_columns(schema, "prob_*") == ["prob_1", "prob_0"]  # schema order
    assert resolve_columns(schema, "label") == ["label"]
    assert resolve_columns(pa.schema([("a*", pa.int8()), ("ab", pa.int8())]), "a*") == ["a*"]
    with pytest.raises(InvalidValueError, match=r"\['id', 'prob_1', 'label', 'prob_0'\]"):
        resolve_columns(schema, "score_*")
    wide = pa.schema([(f"c{i}", pa.float32()) for i in range(50)])
    with pytest.raises(InvalidValueError, match=r"\.\.\. \(30 more\)"):
        resolve_columns(wide, "nope")


def test_wide_layout_from_parquet(tmp_path):
    x = _scores(dtype=np.float64)
    columns = {f"prob_{j}": x[:, j].astype(np.float32 if j % 2 else np.float64) for j in range(5)}
    pq.write_table(pa.table({"id": np.arange(N_ROWS), **columns}), tmp_path / "w.parquet")
    source = open_source(tmp_path / "w.parquet")
    names = resolve_columns(source.schema, "prob_*")
    assert names == [f"prob_{j}" for j in range(5)]
    parts = [matrix_from_wide(b, names, row_offset=0) for b in source.iter_batches(names, 7)]
    got = np.concatenate(parts)
    assert got.dtype == np.float64 and all(p.flags.c_contiguous for p in parts)
    expected = np.stack([columns[n].astype(np.float64) for n in names], axis=1)
    np.testing.assert_array_equal(got, expected)


def test_wide_layout_keeps_float32_and_reads_chunked_tables():
    x = _scores(n=8, c=3)
    table = pa.concat_tables(
        [pa.table({f"p{j}": x[a:b, j] for j in range(3)}) for a, b in ((0, 3), (3, 8))]
    )
    got = matrix_from_wide(table, ["p0", "p1", "p2"])
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, x)


def test_wide_layout_errors():
    batch = pa.record_batch(
        {
            "p0": pa.array([0.5, 0.5, 0.1]),
            "p1": pa.array([0.5, None, 0.9]),
            "label": pa.array([0, 1, 1]),
        }
    )
    with pytest.raises(InvalidValueError, match=r"column 'p1' must have no nulls; row 41 is null"):
        matrix_from_wide(batch, ["p0", "p1"], row_offset=40)
    with pytest.raises(InvalidTypeError, match=r"column 'label'.*got int64"):
        matrix_from_wide(batch, ["p0", "label"])
    with pytest.raises(InvalidValueError, match="got 'p2'"):
        matrix_from_wide(batch, ["p0", "p2"])
    with pytest.raises(InvalidValueError, match="at least one"):
        matrix_from_wide(batch, [])


# ---------------------------------------------------------------------------------------------
# Labels and weights
# ---------------------------------------------------------------------------------------------

INT_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint16(), pa.uint32(),
             pa.uint64()]  # fmt: skip


@pytest.mark.parametrize("typ", INT_TYPES, ids=str)
def test_labels_any_integer_type(typ):
    arr = pa.array([0, 3, 1, 2], typ)
    got = vector_from_column(arr.slice(1), name="y", row_offset=0, kind="label")
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [3, 1, 2])


def test_labels_int64_zero_copy_and_chunked():
    arr = pa.array(np.arange(10))
    got = vector_from_column(arr.slice(2), name="y", kind="label")
    assert got.ctypes.data == _address(arr.slice(2))
    chunked = pa.chunked_array([arr.slice(0, 4), arr.slice(4)])
    np.testing.assert_array_equal(
        vector_from_column(chunked, name="y", kind="label"), np.arange(10)
    )
    codes = pa.array([1, 0, 1]).dictionary_encode()
    np.testing.assert_array_equal(vector_from_column(codes, name="y", kind="label"), [1, 0, 1])


@pytest.mark.parametrize(
    "arr", [pa.array([1.0, 2.0]), pa.array(["cat", "dog"]), pa.array([True, False])], ids=str
)
def test_labels_must_be_integers(arr):
    with pytest.raises(InvalidTypeError, match="labels column 'y' must be an integer column"):
        vector_from_column(arr, name="y", row_offset=0, kind="label")


def test_label_nulls_name_global_row():
    chunked = pa.chunked_array([pa.array([0, 1, 2]), pa.array([1, None])])
    with pytest.raises(InvalidValueError, match=r"labels column 'y' must have no nulls; row 104"):
        vector_from_column(chunked, name="y", row_offset=100, kind="label")


def test_uint64_label_out_of_int64_range():
    arr = pa.array([1, 2**63 + 5], pa.uint64())
    with pytest.raises(InvalidValueError, match="row 1 has 9223372036854775813"):
        vector_from_column(arr, name="y", kind="label")


@pytest.mark.parametrize(
    "arr",
    [
        pa.array([1, 2, 3], pa.int16()),
        pa.array([1, 2, 3], pa.uint32()),
        pa.array(np.array([1, 2, 3], np.float16)),
        pa.array([1.0, 2.0, 3.0], pa.float32()),
        pa.array([decimal.Decimal("1.0"), decimal.Decimal("2"), decimal.Decimal("3.00")]),
    ],
    ids=str,
)
def test_weights_any_numeric(arr):
    got = vector_from_column(arr, name="w", row_offset=0, kind="weight")
    assert got.dtype == np.float64
    np.testing.assert_array_equal(got, [1.0, 2.0, 3.0])


def test_weight_errors():
    with pytest.raises(InvalidTypeError, match="weights column 'w' must be numeric"):
        vector_from_column(pa.array(["heavy"]), name="w", kind="weight")
    with pytest.raises(InvalidValueError, match="weights column 'w' must have no nulls; row 8"):
        vector_from_column(pa.array([1.0, None]), name="w", row_offset=7, kind="weight")
    with pytest.raises(InvalidValueError, match="kind must be"):
        vector_from_column(pa.array([1.0]), name="w", kind="target")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Batch size
# ---------------------------------------------------------------------------------------------


def test_default_batch_rows():
    assert default_batch_rows(1000, 4) == 64 * 2**20 // 4000
    assert default_batch_rows(2, 8, target_bytes=160) == 10
    assert default_batch_rows(10**9, 8) == 1
    for bad in [(0, 4), (10, 0), (10, -4), (2.5, 4)]:
        with pytest.raises(InvalidValueError, match="positive integer"):
            default_batch_rows(*bad)


# ---------------------------------------------------------------------------------------------
# Prefetch
# ---------------------------------------------------------------------------------------------


class _BoomError(Exception):
    pass


def test_prefetch_yields_everything_in_order():
    assert list(prefetch(iter(range(100)), depth=3)) == list(range(100))
    assert list(prefetch([])) == []
    assert not _prefetch_threads()


def test_prefetch_reraises_producer_exception_with_its_type():
    def producer():
        yield 1
        yield 2
        raise _BoomError("decode failed")

    got = []
    with pytest.raises(_BoomError, match="decode failed"):
        for item in prefetch(producer()):
            got.append(item)
    assert got == [1, 2]
    assert not _prefetch_threads()


def test_prefetch_reraises_source_error_from_a_file(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(_table(_scores(n=40)), path, row_group_size=10)
    column = pq.ParquetFile(path).metadata.row_group(1).column(1)
    data = bytearray(path.read_bytes())
    start = column.dictionary_page_offset or column.data_page_offset
    data[start : start + 16] = b"\xff" * 16
    path.write_bytes(bytes(data))
    with pytest.raises(SourceError, match=r"bad\.parquet"):
        for _ in prefetch(open_source(path).iter_batches(["probs"], 4)):
            pass


def test_prefetch_runs_ahead_of_the_consumer_but_bounded():
    produced = []
    second_started = threading.Event()

    def producer():
        for i in range(50):
            if i == 1:
                second_started.set()
            produced.append(i)
            yield i

    with prefetch(producer(), depth=2) as items:
        assert next(items) == 0
        # The producer works while the consumer holds item 0: this is the overlap.
        assert second_started.wait(timeout=5)
        time.sleep(0.2)
        # 2 queued + 1 in hand waiting for room; never the whole input.
        assert len(produced) <= 1 + 2 + 1
        assert list(items) == list(range(1, 50))


@pytest.mark.parametrize("how", ["close", "break", "consumer_error", "garbage"])
def test_prefetch_early_exit_stops_and_joins_the_thread(how):
    state = {"closed": False, "produced": 0}

    def endless():
        try:
            while True:
                state["produced"] += 1
                yield state["produced"]
        finally:
            state["closed"] = True

    if how == "close":
        items = prefetch(endless())
        assert [next(items) for _ in range(3)] == [1, 2, 3]
        items.close()
        items.close()  # idempotent
        with pytest.raises(StopIteration):
            next(items)
    elif how == "break":
        with prefetch(endless()) as items:
            for item in items:
                if item == 5:
                    break
    elif how == "consumer_error":
        with pytest.raises(_BoomError), prefetch(endless()) as items:
            for _ in items:
                raise _BoomError
    else:
        items = prefetch(endless())
        next(items)
        del items
        gc.collect()
    assert not _prefetch_threads()
    assert state["closed"]  # the producer generator was closed too
    produced = state["produced"]
    time.sleep(0.05)
    assert state["produced"] == produced  # and nothing runs any more


def test_prefetch_never_started_owns_no_thread():
    closed = []

    def producer():
        try:
            yield 1
        finally:
            closed.append(True)

    gen = producer()
    items = prefetch(gen)
    assert not _prefetch_threads()
    items.close()
    with pytest.raises(StopIteration):
        next(gen)


def test_prefetch_bad_depth():
    with pytest.raises(InvalidValueError, match="depth must be a positive integer"):
        prefetch(iter([]), depth=0)


def test_prefetch_with_a_source_reads_everything(tmp_path):
    x = _scores(n=100)
    pq.write_table(_table(x), tmp_path / "a.parquet", row_group_size=30)
    batches = prefetch(open_source(tmp_path / "a.parquet").iter_batches(["probs"], 8))
    got = [matrix_from_column(b.column(0), name="probs") for b in batches]
    np.testing.assert_array_equal(np.concatenate(got), x)


# ---------------------------------------------------------------------------------------------
# Bounded memory
# ---------------------------------------------------------------------------------------------

_RSS_CHILD = textwrap.dedent(
    """
    import json, sys
    import psutil, pyarrow as pa
    from fastxent.arrow import matrix_from_column, open_source

    path, warm, batch_rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
    proc = psutil.Process()

    def consume(p):
        peak, rows = 0, 0
        for batch in open_source(p).iter_batches(["probs"], batch_rows):
            m = matrix_from_column(batch.column(0), name="probs", row_offset=rows)
            rows += len(m)
            peak = max(peak, proc.memory_info().rss)
        return peak, rows

    consume(warm)  # loads code and allocator arenas before the baseline
    base = proc.memory_info().rss
    peak, rows = consume(path)
    print(json.dumps({"rss_growth": peak - base, "rows": rows,
                      "pool_peak": pa.default_memory_pool().max_memory()}))
    """
)


def test_parquet_streaming_memory_is_bounded(tmp_path):
    # One 80 MB row group, as writers produce by default (1M rows), read in 2 MB batches. With
    # pyarrow's default pre-buffering the Arrow pool peaked at ~89 MB and RSS grew by ~92 MB;
    # streamed, the pool peaks at ~9 MB and RSS grows by 4-18 MB (allocator retention varies).
    n_rows, n_classes, batch_rows = 200_000, 100, 5_000
    x = np.arange(n_rows * n_classes, dtype=np.float32)
    big, warm = tmp_path / "big.parquet", tmp_path / "warm.parquet"
    options = {"compression": "none", "use_dictionary": False, "row_group_size": n_rows}
    for path, values in ((big, x), (warm, x[: 2_000 * n_classes])):
        probs = pa.FixedSizeListArray.from_arrays(values, n_classes)
        pq.write_table(pa.table({"probs": probs}), path, **options)
    del x, probs
    file_bytes = big.stat().st_size
    assert file_bytes > 75 * 2**20
    # A fresh process, so the baseline is not blurred by memory other tests left behind.
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(big), str(warm), str(batch_rows)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    report = json.loads(out.stdout)
    assert report["rows"] == n_rows
    assert report["pool_peak"] < file_bytes / 4, report
    assert report["rss_growth"] < file_bytes / 2, report


def test_piece_is_frozen_and_small():
    piece = Piece("/data/a.parquet", "parquet", (0, 1), 0, 10)
    with pytest.raises(AttributeError):
        piece.row_offset = 5  # type: ignore[misc]
    assert len(pickle.dumps(piece)) < 300
