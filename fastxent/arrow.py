"""Arrow, Parquet and Arrow IPC input: bounded-memory batch streaming and zero-copy 2-D views.

This module is the only place where fastxent touches pyarrow. It has two jobs:

1. **Streaming** (:func:`open_source`, :class:`Source`, :func:`iter_piece`, :func:`prefetch`):
   read the columns a loss needs from a Parquet file, a directory of Parquet files, an Arrow IPC
   file or stream, an in-memory table or any Arrow C stream (polars, duckdb, pandas), one record
   batch of at most ``batch_rows`` rows at a time, so memory stays about one batch whatever the
   size of the data.
2. **Conversion** (:func:`matrix_from_column`, :func:`matrix_from_wide`,
   :func:`vector_from_column`): turn the Arrow columns of one batch into the NumPy arrays the
   kernels take, zero-copy where the layout allows, and reject nulls, ragged rows and non-float
   data with an error that names the column and the global row.

Arrays returned without a copy are read-only views of Arrow buffers (memory-mapped for IPC
files); the kernels accept read-only arrays.

Examples
--------
>>> import numpy as np
>>> import pyarrow as pa
>>> probs = pa.FixedSizeListArray.from_arrays(pa.array(np.arange(6, dtype=np.float32)), 3)
>>> source = open_source(pa.table({"probs": probs, "label": [2, 0]}))
>>> for batch in source.iter_batches(["probs", "label"], batch_rows=1024):
...     matrix = matrix_from_column(batch.column("probs"), name="probs", row_offset=0)
...     labels = vector_from_column(batch.column("label"), name="label", row_offset=0,
...                                 kind="label")
>>> matrix
array([[0., 1., 2.],
       [3., 4., 5.]], dtype=float32)
>>> labels
array([2, 0])
"""

from __future__ import annotations

import fnmatch
import os
import queue
import threading
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from fastxent._errors import InvalidTypeError, InvalidValueError, SourceError

__all__ = [
    "DEFAULT_BATCH_BYTES",
    "Piece",
    "Prefetcher",
    "Source",
    "default_batch_rows",
    "iter_piece",
    "matrix_from_column",
    "matrix_from_wide",
    "open_source",
    "prefetch",
    "resolve_columns",
    "vector_from_column",
]

T = TypeVar("T")

#: Default size of one decoded batch of the score matrix: big enough that per-batch overhead
#: (a parallel region, a Python loop turn) is noise, small enough to stay in memory many times.
DEFAULT_BATCH_BYTES = 64 * 2**20

FileFormat = Literal["parquet", "ipc_file", "ipc_stream"]

_PARQUET_MAGIC = b"PAR1"
_ARROW_FILE_MAGIC = b"ARROW1"
# Since Arrow 0.15 every IPC stream message starts with this continuation marker.
_IPC_CONTINUATION = b"\xff\xff\xff\xff"
_IPC_SUFFIXES = frozenset({".arrow", ".arrows", ".feather", ".ipc"})
# pyarrow 26 pre-buffers by default, which held 1-3.5x the file in memory; without a read buffer
# a whole column chunk (a full row group, ~1M rows by default) is read at once. A small buffer
# streams pages instead, so memory stays about one batch at no measured cost in speed.
_PARQUET_BUFFER_BYTES = 2**20
# What pyarrow raises for unreadable data: ArrowInvalid, ArrowIOError (= OSError), ... and,
# for a corrupt column name, UnicodeDecodeError when the name is first decoded.
_READ_ERRORS = (pa.ArrowException, OSError, UnicodeDecodeError)
_FORMAT_NAMES = {
    "parquet": "Parquet",
    "ipc_file": "an Arrow IPC file",
    "ipc_stream": "an Arrow IPC stream",
}
_NULL_FIX = (
    "Drop or fill those rows before scoring (pyarrow.compute.drop_null, polars drop_nulls, "
    "pandas dropna)."
)


# --------------------------------------------------------------------------------------------
# Column names
# --------------------------------------------------------------------------------------------


def _format_names(names: Sequence[str], limit: int = 20) -> str:
    """Quote column names for an error message, eliding the tail of very wide schemas."""
    shown = ", ".join(repr(n) for n in names[:limit])
    if len(names) > limit:
        shown += f", ... ({len(names) - limit} more)"
    return f"[{shown}]"


def resolve_columns(schema: pa.Schema, pattern: str) -> list[str]:
    """Expand a column name or a glob pattern into the matching column names.

    Parameters
    ----------
    schema : pyarrow.Schema
        Schema of the data, for example :attr:`Source.schema`.
    pattern : str
        An exact column name, or an :mod:`fnmatch` glob such as ``"prob_*"`` selecting a wide
        layout with one float column per class. An exact name wins over a glob reading.

    Returns
    -------
    list of str
        Matching names in schema order (which is the class order of a wide layout).

    Raises
    ------
    InvalidValueError
        If nothing matches; the message lists the existing columns.

    Examples
    --------
    >>> schema = pa.schema([("id", pa.int64()), ("prob_0", pa.float32()),
    ...                     ("prob_1", pa.float32())])
    >>> resolve_columns(schema, "prob_*")
    ['prob_0', 'prob_1']
    >>> resolve_columns(schema, "id")
    ['id']
    """
    names = schema.names
    if pattern in names:
        matched = [pattern]
    else:
        # fnmatchcase: column names are case-sensitive on every platform.
        matched = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
    if not matched:
        raise InvalidValueError(
            f"column {pattern!r} must name a column or be a glob matching some, that is one of "
            f"{_format_names(names)}; got no match."
        )
    counts = Counter(names)
    for name in matched:
        if counts[name] > 1:
            raise _duplicate_error(name, counts[name], "the schema")
    return matched


def _dedupe(columns: Iterable[str]) -> list[str]:
    if isinstance(columns, str):
        raise InvalidTypeError(
            f"columns must be a list of column names; got the string {columns!r}. "
            f"Pass [{columns!r}]."
        )
    return list(dict.fromkeys(columns))


def _type_key(typ: pa.DataType) -> object:
    """A comparison key for column types that ignores what does not change the numbers.

    Writers name list children differently ("item", "element", "l") and disagree on their
    nullability; list and large_list differ only in offset width. None of that matters here,
    while the float type, the layout and the fixed list size do.
    """
    if isinstance(typ, pa.BaseExtensionType):
        return ("extension", str(typ))
    if pa.types.is_fixed_size_list(typ):
        return ("fixed_size_list", typ.list_size, _type_key(typ.value_type))
    if pa.types.is_list(typ) or pa.types.is_large_list(typ):
        return ("list", _type_key(typ.value_type))
    return str(typ)


def _is_variable_list(typ: pa.DataType) -> bool:
    return pa.types.is_list(typ) or pa.types.is_large_list(typ)


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


@dataclass
class _FileInfo:
    """What :func:`open_source` learnt about one file from its footer or stream metadata."""

    path: str
    format: FileFormat
    schema: pa.Schema
    num_rows: int
    # Rows in each row group (Parquet) or record batch (IPC), the units a Piece selects;
    # None until pieces() asks, for IPC files (see unit_rows()).
    _unit_rows: tuple[int, ...] | None = None
    # Parquet footer, reused so iterating does not parse it again; None for IPC.
    metadata: Any = None

    def unit_rows(self) -> tuple[int, ...]:
        if self._unit_rows is None:
            # Only an IPC file's footer lacks per-batch row counts, and reading them
            # decompresses compressed batches, so it is left until pieces() needs them.
            try:
                with pa.memory_map(self.path) as mm:
                    reader = ipc.open_file(mm)
                    n = reader.num_record_batches
                    self._unit_rows = tuple(reader.get_batch(i).num_rows for i in range(n))
            except _READ_ERRORS as exc:
                raise _read_error(self.path, self.format, exc) from exc
        return self._unit_rows


def _read_error(path: str, fmt: FileFormat, exc: BaseException) -> SourceError:
    # pyarrow's reasons sometimes end in newlines (thrift errors); keep the message one line.
    reason = " ".join(str(exc).split())
    return SourceError(f"cannot read {path} as {_FORMAT_NAMES[fmt]}: {reason}")


def _sniff_format(path: str) -> FileFormat:
    """Tell Parquet from Arrow IPC by their magic bytes; the file name is only a tie-breaker."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
    if head.startswith(_ARROW_FILE_MAGIC):
        return "ipc_file"
    if head.startswith(_IPC_CONTINUATION):
        return "ipc_stream"
    if head.startswith(_PARQUET_MAGIC):
        return "parquet"
    if os.path.splitext(path)[1].lower() in _IPC_SUFFIXES:
        return "ipc_stream"
    # Anything else is tried as Parquet so the user sees pyarrow's own reason.
    return "parquet"


def _open_parquet(path: str, metadata: Any = None) -> pq.ParquetFile:
    return pq.ParquetFile(
        path, metadata=metadata, pre_buffer=False, buffer_size=_PARQUET_BUFFER_BYTES
    )


def _inspect_file(path: str, *, count_stream_rows: bool = True) -> _FileInfo:
    fmt = _sniff_format(path)
    try:
        info = _read_file_info(path, fmt, count_stream_rows)
        # Decode the column names now (pyarrow decodes them on access, strictly), so a corrupt
        # name is reported as a corrupt file rather than escaping later from a column lookup.
        info.schema.names  # noqa: B018
    except _READ_ERRORS as exc:
        raise _read_error(path, fmt, exc) from exc
    return info


def _read_file_info(path: str, fmt: FileFormat, count_stream_rows: bool) -> _FileInfo:
    if fmt == "parquet":
        with _open_parquet(path) as pf:
            meta = pf.metadata
            rows = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
            return _FileInfo(path, fmt, pf.schema_arrow, meta.num_rows, rows, meta)
    with pa.memory_map(path) as mm:
        if fmt == "ipc_file":
            reader = ipc.open_file(mm)
            # count_rows reads message metadata only, even for compressed files.
            return _FileInfo(path, fmt, reader.schema, reader.count_rows())
        stream = ipc.open_stream(mm)
        if not count_stream_rows:
            return _FileInfo(path, fmt, stream.schema, 0, ())
        # A stream has no footer: count its batches once now (cheap on an uncompressed
        # memory map, a full decode if compressed) so the size is known and pieces exist.
        rows = tuple(batch.num_rows for batch in stream)
        return _FileInfo(path, fmt, stream.schema, sum(rows), rows)


def _list_data_files(root: Path) -> list[str]:
    """Data files under a directory, recursively, in a deterministic order.

    Names starting with "." or "_" (``_SUCCESS``, ``_metadata``, ``_temporary/``, ``.crc``) are
    skipped at every level, as Spark and pyarrow.dataset do. Hive ``key=value`` directories are
    walked like any other; their partition columns are not needed for scoring.
    """
    found: list[tuple[tuple[str, ...], str]] = []

    def on_error(exc: OSError) -> None:
        raise SourceError(f"cannot list {exc.filename}: {exc.strerror or exc}") from exc

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "_"))]
        for name in filenames:
            if name.startswith((".", "_")):
                continue
            full = os.path.join(dirpath, name)
            if os.path.isfile(full):
                found.append((Path(full).relative_to(root).parts, full))
    found.sort()
    return [full for _, full in found]


def _slices(batch: pa.RecordBatch, batch_rows: int) -> Iterator[pa.RecordBatch]:
    # Slicing is zero-copy, so oversized batches from IPC or streams cost nothing to split.
    for start in range(0, batch.num_rows, batch_rows):
        yield batch.slice(start, batch_rows)


def _select(batch: pa.RecordBatch, columns: list[str]) -> pa.RecordBatch:
    return batch if batch.schema.names == columns else batch.select(columns)


def _iter_parquet(
    info: _FileInfo, columns: list[str], batch_rows: int, units: Sequence[int] | None
) -> Iterator[pa.RecordBatch]:
    try:
        pf = _open_parquet(info.path, info.metadata)
    except _READ_ERRORS as exc:
        raise _read_error(info.path, info.format, exc) from exc
    try:
        batches = pf.iter_batches(
            batch_size=batch_rows,
            row_groups=None if units is None else list(units),
            columns=columns,
            use_threads=True,
        )
        while True:
            # Only pyarrow's decoding is guarded: an exception thrown into this generator at
            # the yield below belongs to the consumer and must not be relabelled.
            try:
                batch = next(batches)
            except StopIteration:
                return
            except _READ_ERRORS as exc:
                raise _read_error(info.path, info.format, exc) from exc
            if batch.num_rows:
                yield _select(batch, columns)
    finally:
        pf.close()


def _iter_ipc(
    info: _FileInfo, columns: list[str], batch_rows: int, units: Sequence[int] | None
) -> Iterator[pa.RecordBatch]:
    # included_fields skips the other columns' buffers entirely (matters for compressed IPC);
    # it keeps schema order, so _select restores the requested order.
    options = ipc.IpcReadOptions(included_fields=[info.schema.get_field_index(c) for c in columns])
    wanted = None if units is None else frozenset(units)
    try:
        mm = pa.memory_map(info.path)
    except _READ_ERRORS as exc:
        raise _read_error(info.path, info.format, exc) from exc
    # Batches keep the mapped region alive after the map is closed, so the zero-copy arrays
    # handed to the caller stay valid.
    try:
        batches: Iterator[pa.RecordBatch]
        try:
            if info.format == "ipc_file":
                reader = ipc.open_file(mm, options=options)
                indices = range(reader.num_record_batches) if units is None else units
                batches = (reader.get_batch(i) for i in indices)
            else:
                stream = ipc.open_stream(mm, options=options)
                batches = (b for i, b in enumerate(stream) if wanted is None or i in wanted)
        except _READ_ERRORS as exc:
            raise _read_error(info.path, info.format, exc) from exc
        while True:
            try:
                batch = _select(next(batches), columns)
                # The IPC reader trusts the file's buffer lengths and offsets; a corrupt file
                # would otherwise give views past the end of a buffer (garbage numbers or a
                # crash). Checking them is cheap: O(1) per buffer, O(rows) for list offsets.
                batch.validate(full=True)
            except StopIteration:
                return
            except _READ_ERRORS as exc:
                raise _read_error(info.path, info.format, exc) from exc
            yield from _slices(batch, batch_rows)
    finally:
        mm.close()


def _iter_file(
    info: _FileInfo, columns: list[str], batch_rows: int, units: Sequence[int] | None = None
) -> Iterator[pa.RecordBatch]:
    if info.format == "parquet":
        return _iter_parquet(info, columns, batch_rows, units)
    return _iter_ipc(info, columns, batch_rows, units)


def _check_columns_exist(schema: pa.Schema, columns: list[str], where: str) -> None:
    names = schema.names
    counts = Counter(names)  # not `in names`: a wide layout can have 100k class columns
    for column in columns:
        if column not in counts:
            raise InvalidValueError(
                f"columns must exist in {where}, that is be among {_format_names(names)}; "
                f"got {column!r}. Check the spelling, or use a glob such as 'prob_*' for one "
                f"column per class."
            )
        if counts[column] > 1:
            raise _duplicate_error(column, counts[column], where)


def _duplicate_error(column: str, count: int, where: str) -> InvalidValueError:
    # Arrow and Parquet allow repeated names, but a lookup by name would then be ambiguous.
    return InvalidValueError(
        f"column {column!r} must appear once in {where}; it appears {count} times. Rename "
        f"the duplicates."
    )


class _ListLengthCheck:
    """Keep the row length of variable-size list columns equal across batches and files.

    ``matrix_from_column`` finds ragged rows inside one batch; this catches a file (or batch)
    whose lists all have another length than the first one, and names both files.
    """

    def __init__(self, schema: pa.Schema, columns: list[str]) -> None:
        self._columns = [c for c in columns if _is_variable_list(schema.field(c).type)]
        self._first: dict[str, tuple[int, str, int]] = {}

    def check(self, batch: pa.RecordBatch, origin: str, row_offset: int) -> None:
        if not self._columns or not batch.num_rows:
            return
        for column in self._columns:
            arr = batch.column(column)
            if not _is_variable_list(arr.type) or (arr.null_count and not arr[0].is_valid):
                continue  # a null first row is reported by matrix_from_column
            start, stop = arr.offsets.slice(0, 2).to_pylist()
            length = stop - start
            first = self._first.setdefault(column, (length, origin, row_offset))
            if length == first[0]:
                continue
            if origin == first[1]:
                where = f" of {origin}" if origin else ""
                raise InvalidValueError(
                    f"column {column!r} must hold lists of one length (the number of classes), "
                    f"that is {first[0]} values per row as in row {first[2]}; row {row_offset}"
                    f"{where} has {length}."
                )
            raise InvalidValueError(
                f"column {column!r} must hold lists of the same length in every file, that is "
                f"{first[0]} values per row as in {first[1]}; {origin} has {length} (row "
                f"{row_offset}). All files of a dataset must have the same number of classes."
            )


# --------------------------------------------------------------------------------------------
# Sources and pieces
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """A picklable slice of a file source, small enough to be read by one task.

    Attributes
    ----------
    path : str
        The file to read.
    format : {"parquet", "ipc_file", "ipc_stream"}
        How to read it.
    units : tuple of int
        Row groups (Parquet) or record batches (IPC) to read, in order.
    row_offset : int
        Global row number, in the whole source, of the piece's first row (for error messages
        and for aligning per-piece results).
    num_rows : int
        Number of rows in the piece.
    """

    path: str
    format: FileFormat
    units: tuple[int, ...]
    row_offset: int
    num_rows: int


def iter_piece(piece: Piece, columns: Sequence[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Stream the requested columns of one :class:`Piece`.

    Parameters
    ----------
    piece : Piece
        From :meth:`Source.pieces`, possibly in another process.
    columns : list of str
        Columns to read, in this order.
    batch_rows : int
        Maximum rows per batch.

    Yields
    ------
    pyarrow.RecordBatch
        Non-empty batches; the first row of the piece is global row ``piece.row_offset``.

    Raises
    ------
    SourceError
        If the file cannot be opened or decoded.
    InvalidValueError
        If a column is missing.
    """
    cols = _dedupe(columns)
    batch_rows = _check_batch_rows(batch_rows)
    info = _inspect_file(piece.path, count_stream_rows=False)
    _check_columns_exist(info.schema, cols, piece.path)
    checker = _ListLengthCheck(info.schema, cols)
    row = piece.row_offset
    for batch in _iter_file(info, cols, batch_rows, piece.units):
        checker.check(batch, piece.path, row)
        row += batch.num_rows
        yield batch


def _check_batch_rows(batch_rows: int, name: str = "batch_rows") -> int:
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, (int, np.integer)):
        raise InvalidTypeError(f"{name} must be an integer; got {type(batch_rows).__name__}.")
    if batch_rows < 1:
        raise InvalidValueError(f"{name} must be at least 1; got {batch_rows}.")
    return int(batch_rows)


SourceKind = Literal["parquet", "ipc_file", "ipc_stream", "directory", "table", "stream"]


class Source:
    """Columns of prediction data that can be streamed in bounded memory.

    Create one with :func:`open_source`. File sources (Parquet, a directory of Parquet or IPC
    files, an Arrow IPC file or stream file) and tables can be iterated any number of times
    and split into :class:`Piece` objects. **Stream sources** (a ``pyarrow.RecordBatchReader``
    or any object exporting ``__arrow_c_stream__``: polars, duckdb, pandas) **can be iterated
    only once**; a second :meth:`iter_batches` raises :class:`SourceError`.

    Attributes
    ----------
    kind : str
        ``"parquet"``, ``"ipc_file"``, ``"ipc_stream"``, ``"directory"``, ``"table"`` or
        ``"stream"``.
    schema : pyarrow.Schema
        Full schema of the data (of the first file, for a directory).
    paths : tuple of str
        The files read, in order (empty for in-memory data).
    """

    def __init__(
        self,
        kind: SourceKind,
        schema: pa.Schema,
        *,
        files: Sequence[_FileInfo] = (),
        table: pa.Table | None = None,
        reader: pa.RecordBatchReader | None = None,
        description: str = "",
    ) -> None:
        # Private: use open_source(). Exactly one of files / table / reader is set.
        self.kind: SourceKind = kind
        self.schema: pa.Schema = schema
        self._files = tuple(files)
        self._table = table
        self._reader = reader
        self._consumed = False
        self._description = description
        self.paths: tuple[str, ...] = tuple(f.path for f in self._files)

    @property
    def column_names(self) -> list[str]:
        """Names of all columns, in schema order."""
        return list(self.schema.names)

    @property
    def decodes(self) -> bool:
        """Whether reading costs CPU time (Parquet decoding), not just a memory map."""
        return any(f.format == "parquet" for f in self._files)

    @property
    def num_rows(self) -> int | None:
        """Number of rows, or None when unknown before reading (stream sources)."""
        if self._reader is not None:
            return None
        if self._table is not None:
            return self._table.num_rows
        return sum(f.num_rows for f in self._files)

    @property
    def is_stream(self) -> bool:
        """True for one-shot stream sources, which :meth:`iter_batches` can read only once."""
        return self._reader is not None

    def __repr__(self) -> str:
        return (
            f"Source(kind={self.kind!r}, {self._description}, "
            f"columns={len(self.schema)}, num_rows={self.num_rows})"
        )

    def resolve_columns(self, pattern: str) -> list[str]:
        """:func:`resolve_columns` over the whole source.

        For a directory the pattern must match the same columns in every file: a glob such as
        ``'prob_*'`` matching one more class column in a later file would otherwise drop that
        class silently.

        Raises
        ------
        InvalidValueError
            If nothing matches, or two files give different matches (naming both files).

        Examples
        --------
        >>> open_source(pa.table({"p_0": [0.5], "p_1": [0.5]})).resolve_columns("p_*")
        ['p_0', 'p_1']
        """
        cols = resolve_columns(self.schema, pattern)
        if pattern in self.schema.names:
            return cols  # an exact name: check_columns() finds it missing from a later file
        for info in self._files[1:]:
            names = info.schema.names
            other = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
            if sorted(other) != sorted(cols):
                got = (
                    f"has {_format_names(other)}"
                    if other
                    else f"has none, its columns are {_format_names(names)}"
                )
                raise InvalidValueError(
                    f"column {pattern!r} must match the same columns in every file, that is "
                    f"{_format_names(cols)} as in {self._files[0].path}; {info.path} {got}. "
                    f"All files of a dataset must have the same number of classes."
                )
        return cols

    def check_columns(self, columns: Sequence[str]) -> list[str]:
        """Check that every column exists and, for a directory, agrees across files.

        Parameters
        ----------
        columns : list of str
            Column names.

        Returns
        -------
        list of str
            The names without duplicates, in the given order.

        Raises
        ------
        InvalidValueError
            If a column is missing (the message lists existing columns) or two files store it
            with different types (the message names both files).
        """
        cols = _dedupe(columns)
        where = self._files[0].path if self._files else f"the {self.kind}"
        _check_columns_exist(self.schema, cols, where)
        first = self._files[0] if self._files else None
        for info in self._files[1:]:
            _check_columns_exist(info.schema, cols, info.path)
            assert first is not None
            for column in cols:
                want, got = first.schema.field(column).type, info.schema.field(column).type
                if _type_key(want) != _type_key(got):
                    raise InvalidValueError(
                        f"column {column!r} must have the same type in every file, that is "
                        f"{want} as in {first.path}; {info.path} has {got}."
                    )
        return cols

    def iter_batches(self, columns: Sequence[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
        """Stream the requested columns, at most ``batch_rows`` rows per batch.

        Parameters
        ----------
        columns : list of str
            Columns to read; batches hold exactly these, in this order.
        batch_rows : int
            Maximum rows per batch; see :func:`default_batch_rows`.

        Yields
        ------
        pyarrow.RecordBatch
            Non-empty batches, in source order; count their rows for global row numbers.

        Raises
        ------
        InvalidValueError
            At call time if a column is missing or disagrees between files; while iterating
            if a list column changes length between files.
        SourceError
            If a file cannot be decoded, or a stream source is iterated a second time.
        """
        cols = self.check_columns(columns)
        batch_rows = _check_batch_rows(batch_rows)
        if self._reader is not None:
            if self._consumed:
                raise SourceError(
                    "this source is a one-shot Arrow stream (a RecordBatchReader or an object "
                    "exporting __arrow_c_stream__) and was already read; a stream can be "
                    "iterated only once. Open the data again, or pass a pyarrow.Table or a "
                    "file to read it several times."
                )
            self._consumed = True
            return self._iter_stream(self._reader, cols, batch_rows)
        if self._table is not None:
            return self._iter_table(self._table, cols, batch_rows)
        return self._iter_files(cols, batch_rows)

    def _iter_files(self, cols: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
        checker = _ListLengthCheck(self.schema, cols)
        row = 0
        for info in self._files:
            for batch in _iter_file(info, cols, batch_rows):
                checker.check(batch, info.path, row)
                row += batch.num_rows
                yield batch

    def _iter_table(
        self, table: pa.Table, cols: list[str], batch_rows: int
    ) -> Iterator[pa.RecordBatch]:
        checker = _ListLengthCheck(self.schema, cols)
        row = 0
        # to_batches aligns the columns' chunk boundaries without copying.
        for batch in table.select(cols).to_batches(max_chunksize=batch_rows):
            if batch.num_rows:
                checker.check(batch, "", row)
                row += batch.num_rows
                yield batch

    def _iter_stream(
        self, reader: pa.RecordBatchReader, cols: list[str], batch_rows: int
    ) -> Iterator[pa.RecordBatch]:
        checker = _ListLengthCheck(self.schema, cols)
        row = 0
        try:
            while True:
                try:
                    batch = reader.read_next_batch()
                except StopIteration:
                    return
                except _READ_ERRORS as exc:
                    if isinstance(exc, SourceError):
                        raise
                    raise SourceError(f"cannot read the Arrow stream: {exc}") from exc
                for piece in _slices(_select(batch, cols), batch_rows):
                    checker.check(piece, "", row)
                    row += piece.num_rows
                    yield piece
        finally:
            reader.close()

    def pieces(self, *, target_rows: int | None = None) -> list[Piece]:
        """Split a file source into picklable pieces for parallel readers.

        Parameters
        ----------
        target_rows : int, optional
            Pack consecutive row groups (record batches) of one file into a piece while it
            stays within this many rows; a larger row group is a piece of its own. By default
            every non-empty row group is a piece.

        Returns
        -------
        list of Piece
            In source order; ``row_offset`` of each is its first global row. Read one with
            :func:`iter_piece`.

        Raises
        ------
        SourceError
            For tables and streams, which have no file to hand to another process.
        """
        if not self._files:
            raise SourceError(
                f"pieces() needs a file source (Parquet or Arrow IPC); this source is a "
                f"{self.kind}, which cannot be reopened by another process. Write it to "
                f"Parquet first, or iterate it here with iter_batches()."
            )
        if target_rows is not None:
            target_rows = _check_batch_rows(target_rows, "target_rows")
        out: list[Piece] = []
        offset = 0
        for info in self._files:
            units: list[int] = []
            rows = 0
            start = offset
            for unit, n in enumerate(info.unit_rows()):
                if n == 0:
                    continue
                if units and (target_rows is None or rows + n > target_rows):
                    out.append(Piece(info.path, info.format, tuple(units), start, rows))
                    start += rows
                    units, rows = [], 0
                units.append(unit)
                rows += n
            if units:
                out.append(Piece(info.path, info.format, tuple(units), start, rows))
            offset += info.num_rows
        return out

    def close(self) -> None:
        """Release a stream's reader; file sources hold no open handle between iterations."""
        if self._reader is not None:
            self._reader.close()
            self._consumed = True

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_source(source: Any, columns: Sequence[str] | None = None) -> Source:
    """Open prediction data for bounded-memory streaming.

    Parameters
    ----------
    source : str, os.PathLike, pyarrow.Table, pyarrow.RecordBatch, pyarrow.RecordBatchReader, \
or object with ``__arrow_c_stream__``
        * a Parquet file;
        * a directory, searched recursively, of Parquet (or Arrow IPC) files, read in sorted
          path order; names starting with ``_`` or ``.`` (``_SUCCESS``, ``_metadata``) are
          skipped; hive ``key=value/`` directories are allowed, and their partition columns are
          ignored;
        * an Arrow IPC file (``.arrow``/``.feather``, recognised by its ``ARROW1`` magic) or
          IPC stream file, memory-mapped so batches are zero-copy views of the page cache;
        * a ``pyarrow.Table`` or ``RecordBatch``;
        * a ``pyarrow.RecordBatchReader`` or any object exporting the Arrow C stream interface
          (a polars DataFrame, a duckdb relation, a pandas DataFrame). Such **stream sources
          can be iterated only once**.
    columns : list of str, optional
        If given, checked now rather than at the first :meth:`Source.iter_batches`.

    Returns
    -------
    Source

    Raises
    ------
    SourceError
        If a path does not exist, a directory holds no data file, or a file is not readable
        Parquet / Arrow IPC (the message carries pyarrow's reason).
    InvalidValueError
        If a requested column is missing.
    InvalidTypeError
        If ``source`` is none of the above.

    Examples
    --------
    >>> src = open_source(pa.table({"p": [[0.2, 0.8]], "y": [1]}))
    >>> src.kind, src.num_rows, src.column_names
    ('table', 1, ['p', 'y'])
    """
    src = _open(source)
    if columns is not None:
        src.check_columns(columns)
    return src


def _open(source: Any) -> Source:
    if isinstance(source, Source):
        return source
    if isinstance(source, (str, os.PathLike)):
        return _open_path(Path(os.fspath(source)))
    if isinstance(source, pa.RecordBatch):
        source = pa.Table.from_batches([source])
    if isinstance(source, pa.Table):
        return Source("table", source.schema, table=source, description="in memory")
    if isinstance(source, pa.RecordBatchReader):
        return Source("stream", source.schema, reader=source, description="RecordBatchReader")
    if isinstance(source, (pa.Array, pa.ChunkedArray)):
        raise InvalidTypeError(
            f"source must be a table of named columns; got a single {type(source).__name__}. "
            f"Wrap it, e.g. pa.table({{'probs': column}})."
        )
    if hasattr(source, "__arrow_c_stream__"):
        try:
            reader = pa.RecordBatchReader.from_stream(source)
        except _READ_ERRORS as exc:
            raise SourceError(
                f"cannot read {type(source).__name__} as an Arrow stream: {exc}"
            ) from exc
        except TypeError as exc:
            # e.g. an array, whose stream is not one of record batches
            raise InvalidTypeError(
                f"source must export a stream of record batches (a table); "
                f"{type(source).__name__} does not: {exc}"
            ) from exc
        return Source("stream", reader.schema, reader=reader, description=type(source).__name__)
    raise InvalidTypeError(
        "source must be a path to a Parquet or Arrow IPC file or a directory of them, a "
        "pyarrow Table, RecordBatch or RecordBatchReader, or an object with "
        f"__arrow_c_stream__ (polars, duckdb, pandas); got {type(source).__name__}."
    )


def _open_path(path: Path) -> Source:
    if not path.exists():
        raise SourceError(f"{path} does not exist.")
    if path.is_dir():
        # Absolute paths, so pieces can be read by workers with another working directory.
        files = _list_data_files(Path(os.path.abspath(path)))
        if not files:
            raise SourceError(
                f"{path} is a directory with no data file in it (names starting with '_' or "
                f"'.' are ignored); it must hold Parquet or Arrow IPC files."
            )
        infos = [_inspect_file(f) for f in files]
        return Source(
            "directory", infos[0].schema, files=infos, description=f"{path}, {len(infos)} files"
        )
    if not path.is_file():
        # Opening a FIFO would block until a writer appears; a device is not a file format.
        raise SourceError(
            f"{path} must be a regular file or a directory; it is a FIFO, socket or device."
        )
    info = _inspect_file(os.path.abspath(path))
    return Source(info.format, info.schema, files=[info], description=str(path))


# --------------------------------------------------------------------------------------------
# Arrow arrays -> NumPy
# --------------------------------------------------------------------------------------------


def _chunks(arr: pa.Array | pa.ChunkedArray) -> list[pa.Array]:
    if isinstance(arr, pa.ChunkedArray):
        return list(arr.chunks)
    if isinstance(arr, pa.Array):
        return [arr]
    raise InvalidTypeError(f"expected a pyarrow Array or ChunkedArray; got {type(arr).__name__}.")


def _first_null(arr: pa.Array) -> int:
    # Error path only: is_null() materialises one bool per row.
    return int(np.argmax(arr.is_null().to_numpy(zero_copy_only=False)))


def _layout_error(name: str, typ: pa.DataType) -> InvalidTypeError:
    return InvalidTypeError(
        f"column {name!r} must hold one list of class scores per row, that is a "
        f"fixed_size_list, list or large_list of float16/float32/float64, or an "
        f"arrow.fixed_shape_tensor with shape [n_classes]; got {typ}. For one float column "
        f"per class, select them with a glob such as 'prob_*'."
    )


def matrix_from_column(
    arr: pa.Array | pa.ChunkedArray,
    *,
    name: str,
    row_offset: int = 0,
    n_classes: int | None = None,
) -> np.ndarray:
    """View a column of per-row float lists as an ``(n_rows, n_classes)`` matrix.

    Accepted layouts: ``fixed_size_list<float>[C]``, ``list<float>`` / ``large_list<float>``
    whose rows all have length C, and the canonical ``arrow.fixed_shape_tensor`` extension type
    with shape ``[C]``; floats may be float16, float32 or float64 and keep their type.

    A single chunk is returned without a copy, as a read-only view of the Arrow buffer (the
    slice offset of the array is honoured). A ChunkedArray with several chunks is copied into
    one array.

    Parameters
    ----------
    arr : pyarrow.Array or pyarrow.ChunkedArray
        The column of one batch.
    name : str
        Column name, for error messages.
    row_offset : int, default 0
        Global row number of ``arr[0]``, so errors point at the row in the whole source.
    n_classes : int, optional
        Expected C. Required to give an empty variable-size list column a width (otherwise it
        comes back as ``(0, 0)``); a different list length is an error.

    Returns
    -------
    numpy.ndarray
        Shape ``(len(arr), C)``, C-contiguous, dtype of the stored floats.

    Raises
    ------
    InvalidValueError
        For a null row, a null value inside a list, a row of another length (ragged list) or
        a list length other than ``n_classes``; the message names the column and global row.
    InvalidTypeError
        For any other layout or a non-float value type.

    Examples
    --------
    >>> col = pa.array([[0.1, 0.9], [0.7, 0.3], [0.5, 0.5]], pa.list_(pa.float32(), 2))
    >>> matrix_from_column(col.slice(1), name="probs", row_offset=0)
    array([[0.7, 0.3],
           [0.5, 0.5]], dtype=float32)
    """
    chunks = _chunks(arr)
    if len(chunks) == 1:
        return _matrix_from_array(chunks[0], name, row_offset, n_classes)
    if not chunks:
        return _matrix_from_array(arr.combine_chunks(), name, row_offset, n_classes)
    parts = []
    for chunk in chunks:
        part = _matrix_from_array(chunk, name, row_offset, n_classes)
        if len(chunk):
            # Later chunks must match the width of the first non-empty one.
            n_classes = part.shape[1]
            parts.append(part)
        row_offset += len(chunk)
    if not parts:
        return _matrix_from_array(chunks[0], name, row_offset, n_classes)
    return np.concatenate(parts)


def _matrix_from_array(
    arr: pa.Array, name: str, row_offset: int, n_classes: int | None
) -> np.ndarray:
    typ = arr.type
    storage = arr
    if isinstance(typ, pa.BaseExtensionType):
        if not (isinstance(typ, pa.FixedShapeTensorType) and len(typ.shape) == 1):
            raise _layout_error(name, typ)
        # .storage is the fixed_size_list, with the extension array's slice applied.
        storage = arr.storage
    styp = storage.type
    fixed = pa.types.is_fixed_size_list(styp)
    if not (fixed or _is_variable_list(styp)):
        raise _layout_error(name, typ)
    if not pa.types.is_floating(styp.value_type):
        raise InvalidTypeError(
            f"column {name!r} must hold floating-point class scores (float16, float32 or "
            f"float64); got {typ}. Cast it first, e.g. pyarrow.compute.cast(column, "
            f"pa.list_(pa.float32())), if the values are really scores."
        )
    n = len(storage)
    if storage.null_count:
        row = row_offset + _first_null(storage)
        raise InvalidValueError(
            f"column {name!r} must have a list of scores in every row; row {row} is null. "
            f"{_NULL_FIX}"
        )
    if fixed:
        width = styp.list_size
        if n_classes is not None and width != n_classes:
            raise InvalidValueError(
                f"column {name!r} must have {n_classes} values per row (the number of classes "
                f"seen so far); got fixed_size_list of {width}."
            )
        # FixedSizeListArray.values ignores the array's slice offset: apply it by hand.
        start = storage.offset * width
    else:
        # .offsets honours the slice (n + 1 entries); .values does not, so slice by offsets.
        offsets = storage.offsets.to_numpy(zero_copy_only=False)
        lengths = np.diff(offsets)
        width = n_classes if n_classes is not None else (int(lengths[0]) if n else 0)
        ragged = np.flatnonzero(lengths != width)
        if ragged.size and n_classes is None:
            # Row 0 may be the odd one out: report against the most common length instead.
            counts = np.unique(lengths, return_counts=True)
            width = int(counts[0][np.argmax(counts[1])])
            ragged = np.flatnonzero(lengths != width)
        if ragged.size:
            i = int(ragged[0])
            raise InvalidValueError(
                f"column {name!r} must hold lists of one length (the number of classes), that "
                f"is {width} values per row; row {row_offset + i} has {int(lengths[i])}. Fix "
                f"the rows, or store the column as fixed_size_list<float>[{width}] so the "
                f"writer enforces it."
            )
        start = int(offsets[0]) if n else 0
    values = storage.values.slice(start, n * width)
    if values.null_count:
        k = _first_null(values)
        raise InvalidValueError(
            f"column {name!r} must have no null inside its lists; row {row_offset + k // width} "
            f"has a null at class {k % width}. {_NULL_FIX}"
        )
    # zero_copy_only=True: a null we missed would raise rather than silently become NaN.
    return values.to_numpy(zero_copy_only=True).reshape(n, width)


def matrix_from_wide(
    batch: pa.RecordBatch | pa.Table, names: Sequence[str], *, row_offset: int = 0
) -> np.ndarray:
    """Stack one float column per class into an ``(n_rows, n_classes)`` matrix.

    This layout always needs a copy: the columns are separate buffers.

    Parameters
    ----------
    batch : pyarrow.RecordBatch or pyarrow.Table
        Holds the columns.
    names : list of str
        Class columns in class order, e.g. from ``resolve_columns(schema, "prob_*")``.
    row_offset : int, default 0
        Global row number of the batch's first row, for error messages.

    Returns
    -------
    numpy.ndarray
        C-contiguous, of the common float dtype of the columns (float16 and float32 give
        float32).

    Raises
    ------
    InvalidValueError
        If a column is missing or holds a null (naming the column and the global row).
    InvalidTypeError
        If a column is not float16/float32/float64.

    Examples
    --------
    >>> b = pa.record_batch({"p0": pa.array([0.25, 0.5], pa.float32()),
    ...                      "p1": pa.array([0.75, 0.5], pa.float32())})
    >>> matrix_from_wide(b, ["p0", "p1"])
    array([[0.25, 0.75],
           [0.5 , 0.5 ]], dtype=float32)
    """
    cols = list(names)
    if not cols:
        raise InvalidValueError("names must list at least one class column; got none.")
    _check_columns_exist(batch.schema, cols, "the batch")
    columns = [batch.column(c) for c in cols]
    dtypes = []
    for column_name, column in zip(cols, columns, strict=True):
        if not pa.types.is_floating(column.type):
            raise InvalidTypeError(
                f"column {column_name!r} must be float16, float32 or float64 to be a class "
                f"score column; got {column.type}. Check the glob does not match other columns."
            )
        dtypes.append(column.type.to_pandas_dtype())
    out = np.empty((batch.num_rows, len(cols)), dtype=np.result_type(*dtypes))
    for j, (column_name, column) in enumerate(zip(cols, columns, strict=True)):
        start = 0
        for chunk in _chunks(column):
            if chunk.null_count:
                row = row_offset + start + _first_null(chunk)
                raise InvalidValueError(
                    f"column {column_name!r} must have no nulls; row {row} is null. {_NULL_FIX}"
                )
            out[start : start + len(chunk), j] = chunk.to_numpy(zero_copy_only=True)
            start += len(chunk)
    return out


def vector_from_column(
    arr: pa.Array | pa.ChunkedArray,
    *,
    name: str,
    row_offset: int = 0,
    kind: Literal["label", "weight"],
) -> np.ndarray:
    """Convert a labels or weights column into a 1-D NumPy array.

    Parameters
    ----------
    arr : pyarrow.Array or pyarrow.ChunkedArray
        The column of one batch.
    name : str
        Column name, for error messages.
    row_offset : int, default 0
        Global row number of ``arr[0]``.
    kind : {"label", "weight"}
        ``"label"``: any integer type, returned as int64 (zero-copy when already int64).
        ``"weight"``: any integer, float or decimal type, returned as float64.

    Returns
    -------
    numpy.ndarray
        Shape ``(len(arr),)``.

    Raises
    ------
    InvalidValueError
        For a null (naming the global row), or a uint64 label beyond the int64 range.
    InvalidTypeError
        For labels that are not integers, or weights that are not numeric.

    Examples
    --------
    >>> vector_from_column(pa.array([3, 1], pa.uint8()), name="y", kind="label")
    array([3, 1])
    >>> vector_from_column(pa.array([1, 2], pa.int32()), name="w", kind="weight")
    array([1., 2.])
    """
    if kind not in ("label", "weight"):
        raise InvalidValueError(f"kind must be 'label' or 'weight'; got {kind!r}.")
    chunks = _chunks(arr)
    # Dictionary-encoded columns (categoricals) are checked by their value type.
    if pa.types.is_dictionary(arr.type):
        chunks = [c.dictionary_decode() for c in chunks]
    typ = chunks[0].type if chunks else arr.type
    if pa.types.is_dictionary(typ):
        typ = typ.value_type
    if kind == "label":
        if not pa.types.is_integer(typ):
            raise InvalidTypeError(
                f"labels column {name!r} must be an integer column (class indices in "
                f"[0, n_classes)); got {typ}. Map class names to indices, or cast whole-number "
                f"floats with pyarrow.compute.cast(column, pa.int64())."
            )
        dtype: type[np.generic] = np.int64
    else:
        if not (pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_decimal(typ)):
            raise InvalidTypeError(
                f"weights column {name!r} must be numeric (integer or float); got {typ}."
            )
        dtype = np.float64
    parts = []
    start = row_offset
    for chunk in chunks:
        if chunk.null_count:
            raise InvalidValueError(
                f"{kind}s column {name!r} must have no nulls; row "
                f"{start + _first_null(chunk)} is null. {_NULL_FIX}"
            )
        if pa.types.is_decimal(chunk.type):
            chunk = pc.cast(chunk, pa.float64())
        values = chunk.to_numpy(zero_copy_only=False)
        if values.dtype == np.uint64 and values.size and values.max() > np.iinfo(np.int64).max:
            i = int(np.argmax(values > np.iinfo(np.int64).max))
            raise InvalidValueError(
                f"labels column {name!r} must hold class indices that fit in int64; row "
                f"{start + i} has {values[i]}."
            )
        parts.append(values.astype(dtype, copy=False))
        start += len(chunk)
    if len(parts) == 1:
        return parts[0]
    if not parts:
        return np.empty(0, dtype=dtype)
    return np.concatenate(parts)


def default_batch_rows(
    n_classes: int, itemsize: int, target_bytes: int = DEFAULT_BATCH_BYTES
) -> int:
    """Rows per batch so that one decoded ``(rows, n_classes)`` matrix is about ``target_bytes``.

    Parameters
    ----------
    n_classes : int
        Values per row (C).
    itemsize : int
        Bytes per value (2, 4 or 8).
    target_bytes : int, default 64 MiB
        Wanted size of one batch's matrix.

    Returns
    -------
    int
        ``max(1, target_bytes // (n_classes * itemsize))``.

    Examples
    --------
    >>> default_batch_rows(1000, 4)
    16777
    """
    for arg, value in (
        ("n_classes", n_classes),
        ("itemsize", itemsize),
        ("target_bytes", target_bytes),
    ):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InvalidValueError(f"{arg} must be a positive integer; got {value!r}.")
    return max(1, int(target_bytes) // (int(n_classes) * int(itemsize)))


# --------------------------------------------------------------------------------------------
# Prefetching
# --------------------------------------------------------------------------------------------

_END = object()


class _Failure:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _put(q: queue.Queue[Any], stop: threading.Event, item: object) -> bool:
    # A bounded wait, so a producer blocked on a full queue notices that the consumer left.
    while not stop.is_set():
        try:
            q.put(item, timeout=0.05)
            return True
        except queue.Full:
            continue
    return False


def _produce(source: Iterator[Any], q: queue.Queue[Any], stop: threading.Event) -> None:
    # Runs in the prefetch thread. It must not hold a reference to the Prefetcher, or an
    # abandoned Prefetcher could never be collected and the thread never told to stop.
    try:
        while not stop.is_set():
            try:
                item = next(source)
            except StopIteration:
                _put(q, stop, _END)
                return
            if not _put(q, stop, item):
                return
    except BaseException as exc:  # handed over to the consumer, which re-raises it
        _put(q, stop, _Failure(exc))
    finally:
        # Close the source here, in the thread that ran it (a generator cannot be closed
        # while another thread is executing it), so file readers are released promptly.
        close = getattr(source, "close", None)
        if close is not None:
            try:
                close()
            except Exception:
                pass  # the consumer already has its outcome (or has left); cleanup is best-effort


class Prefetcher(Generic[T]):
    """Iterator returned by :func:`prefetch`; also a context manager that stops the thread."""

    def __init__(self, iterable: Iterable[T], depth: int) -> None:
        self._source = iter(iterable)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False

    def __iter__(self) -> Prefetcher[T]:
        return self

    def __next__(self) -> T:
        if self._closed:
            raise StopIteration
        if self._thread is None:
            # Started on first use, so a prefetcher that is never iterated owns no thread.
            self._thread = threading.Thread(
                target=_produce,
                args=(self._source, self._queue, self._stop),
                name="fastxent-prefetch",
                daemon=True,
            )
            self._thread.start()
        item = self._queue.get()
        if item is _END:
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.exc
        return item  # type: ignore[no-any-return]

    def close(self) -> None:
        """Tell the producer thread to stop, and wait for it. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        thread = self._thread
        if thread is None:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()
            return
        while thread.is_alive():
            # Empty the queue so a put in progress returns at once instead of timing out.
            try:
                while True:
                    self._queue.get_nowait()
            except queue.Empty:
                pass
            thread.join(timeout=0.05)
        # Drop prefetched batches now rather than when this object is collected.
        try:
            while True:
                self._queue.get_nowait()
        except queue.Empty:
            pass

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def prefetch(iterator: Iterable[T], depth: int = 2) -> Prefetcher[T]:
    """Produce items in a background thread while the caller consumes earlier ones.

    Arrow decoding releases the GIL, as do the ``nogil`` kernels, so reading batch k+1
    overlaps computing on batch k: the total time is about max(read, compute) instead of
    their sum. At most ``depth`` items wait in the queue, which bounds memory.

    Parameters
    ----------
    iterator : iterable
        Producer; it runs entirely in a daemon thread named ``fastxent-prefetch``.
    depth : int, default 2
        Maximum number of items produced ahead.

    Returns
    -------
    Prefetcher
        An iterator over the same items in the same order. An exception raised by the
        producer is re-raised, same type and object, by the consumer's ``next``. Leaving early
        (``close()``, a ``with`` block, or garbage collection) stops and joins the thread and
        closes the producer if it has a ``close`` method.

    Examples
    --------
    >>> with prefetch(iter(range(5)), depth=2) as items:
    ...     list(items)
    [0, 1, 2, 3, 4]
    """
    if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth < 1:
        raise InvalidValueError(f"depth must be a positive integer; got {depth!r}.")
    return Prefetcher(iterator, int(depth))
