"""Bad input, corrupt files and faults: a clear error, nothing lost, never a silent wrong number.

The catalogue: one case per kind of bad input, each run through the Python API
(:func:`fastxent.score`, and :func:`fastxent.cross_entropy` where the item applies to arrays)
and through the command line (:func:`fastxent.cli.main`). Every failing case must

* raise a :class:`fastxent.FastxentError` whose one-line message names the column and the row
  (numbered from 0 across the whole source, as in the per-row output);
* exit 2 from the command line with exactly one line on stderr and nothing on stdout;
* leave no ``--per-row`` file behind and never clobber an existing one, even with
  ``--overwrite``;
* leave its input files and arrays byte-for-byte unchanged.

The cases that are not errors (``nan_policy="omit"`` and ``"propagate"``, -inf logits, rows
that do not sum to 1, a huge number of classes) are checked for the right number instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest
from naive import naive_cross_entropy

import fastxent as fx
import fastxent.arrow as fx_arrow
from fastxent._errors import FastxentError, InvalidTypeError, InvalidValueError, SourceError
from fastxent.cli import EXIT_USER_ERROR, main
from fastxent.generate import generate

N_ROWS, N_CLASSES = 24, 4
BATCH_ROWS = 5  # several batches per file: errors must still name the row in the whole source


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _probs(n: int = N_ROWS, c: int = N_CLASSES, seed: int = 0, dtype=np.float32) -> np.ndarray:
    x = np.random.default_rng(seed).random((n, c)) + 0.05
    return (x / x.sum(axis=1, keepdims=True)).astype(dtype)


def _labels(n: int = N_ROWS, c: int = N_CLASSES, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, c, n)


def _fsl(x: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])


def _rows(x: np.ndarray) -> list[list[float] | None]:
    return [list(map(float, r)) for r in x]


def _parquet(path: Path, columns: dict[str, Any], row_group_size: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def _arrow_file(path: Path, table: pa.Table, batch_rows: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with ipc.new_file(path, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=batch_rows):
            writer.write_batch(batch)
    return path


def _digest(path: Path) -> str:
    """Hash of a file, or of every file under a directory (names and bytes); "" if absent."""
    h = hashlib.sha256()
    if not os.path.lexists(path):
        return ""
    if path.is_dir():
        for p in sorted(path.rglob("*")):
            h.update(str(p.relative_to(path)).encode())
            if p.is_file():
                h.update(p.read_bytes())
        return h.hexdigest()
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        return f"special {st.st_mode}"  # a FIFO: reading it would block
    try:
        h.update(path.read_bytes())
    except PermissionError:  # chmod 000 when not root: the size and times must not change
        return f"unreadable {st.st_size} {st.st_mtime_ns}"
    return h.hexdigest()


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _one_line_error(code: int, out: str, err: str) -> str:
    """The command failed as a user error should: exit 2, one line on stderr, nothing else."""
    assert code == EXIT_USER_ERROR, (code, err)
    assert out == ""
    assert err.startswith("fastxent: error: ") and err.endswith("\n"), err
    assert err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


_FLAGS = {
    "pred": "--pred",
    "label": "--label",
    "target": "--target",
    "weight": "--weight",
    "pred_kind": "--pred-kind",
    "nan_policy": "--nan-policy",
    "ignore_index": "--ignore-index",
    "batch_rows": "--batch-rows",
}


def _argv(source: Path, kwargs: dict[str, Any]) -> list[str]:
    """``fastxent score`` arguments equivalent to ``fx.score(source, **kwargs)``."""
    argv = ["score", str(source)]
    for key, value in kwargs.items():
        if key == "strict":
            argv += ["--strict"] if value else []
        else:
            argv += [_FLAGS[key], str(value)]
    return argv


# ---------------------------------------------------------------------------------------------
# The catalogue of failing inputs: streaming API and command line
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """``build(dir, monkeypatch)`` writes the input under ``dir``; returns it and score kwargs."""

    build: Callable[[Path, pytest.MonkeyPatch], tuple[Path, dict[str, Any]]]
    error: type[FastxentError]
    needles: tuple[str, ...]  # in the API message and the command line's error line
    kwargs: dict[str, Any] = field(default_factory=dict)


def _with(x=None, y=None, **more):
    """A builder of one Parquet file with predictions ``p`` and labels ``y``."""

    def build(d: Path, _mp) -> tuple[Path, dict[str, Any]]:
        cols = {"p": _fsl(_probs() if x is None else x), "y": _labels() if y is None else y}
        cols.update(more)
        return _parquet(d / "data.parquet", cols), {"pred": "p", "label": "y"}

    return build


def _set(a: np.ndarray, index, value) -> np.ndarray:
    a = a.copy()
    a[index] = value
    return a


def _labels_with(row: int, value) -> np.ndarray:
    return _set(_labels(), row, value)


def _list_build(rows: list) -> Callable:
    def build(d: Path, _mp):
        cols = {"p": pa.array(rows, pa.list_(pa.float32())), "y": _labels()}
        return _parquet(d / "data.parquet", cols), {"pred": "p", "label": "y"}

    return build


def _nullable_labels(d: Path, _mp):
    y = pa.array([None if i == 17 else int(v) for i, v in enumerate(_labels())], pa.int64())
    return _parquet(d / "data.parquet", {"p": _fsl(_probs()), "y": y}), {"pred": "p", "label": "y"}


def _null_pred_row(d: Path, _mp):
    mask = np.zeros(N_ROWS, dtype=bool)
    mask[13] = True
    p = pa.FixedSizeListArray.from_arrays(
        pa.array(_probs().ravel()), N_CLASSES, mask=pa.array(mask)
    )
    return _parquet(d / "data.parquet", {"p": p, "y": _labels()}), {"pred": "p", "label": "y"}


def _wide_null(d: Path, _mp):
    x = _probs()
    cols: dict[str, Any] = {f"p_{j}": pa.array(x[:, j]) for j in range(N_CLASSES)}
    cols["p_2"] = pa.array([None if i == 21 else float(v) for i, v in enumerate(x[:, 2])])
    cols["y"] = _labels()
    return _parquet(d / "data.parquet", cols), {"pred": "p_*", "label": "y"}


def _directory(*files: dict[str, Any]) -> Callable:
    def build(d: Path, _mp):
        for k, cols in enumerate(files):
            _parquet(d / "ds" / f"part-{k}.parquet", cols)
        return d / "ds", {"pred": "p", "label": "y"}

    return build


def _wide_directory(d: Path, _mp):
    root = d / "ds"
    for k, c in enumerate((3, 4)):  # a later file has one more class column
        x = _probs(6, c, seed=k)
        cols: dict[str, Any] = {f"p_{j}": x[:, j] for j in range(c)}
        cols["y"] = _labels(6, 3, seed=k)
        _parquet(root / f"part-{k}.parquet", cols)
    return root, {"pred": "p_*", "label": "y", "pred_kind": "logits"}


def _split_labels(d: Path, _mp):
    # Three files of 8 rows; the bad label is row 3 of the second file: row 11 of the source.
    x, y = _probs(), _labels_with(11, N_CLASSES)
    for k in range(3):
        sl = slice(8 * k, 8 * k + 8)
        _parquet(d / "ds" / f"part-{k}.parquet", {"p": _fsl(x[sl]), "y": y[sl]}, 3)
    return d / "ds", {"pred": "p", "label": "y"}


def _not_parquet(d: Path, _mp):
    d.mkdir(parents=True)
    (d / "notes.parquet").write_text("this is not a parquet file\n" * 10)
    return d / "notes.parquet", {"pred": "p", "label": "y"}


def _truncated(d: Path, _mp):
    path = _with()(d, _mp)[0]
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    return path, {"pred": "p", "label": "y"}


def _flipped_footer(d: Path, _mp):
    path = _with()(d, _mp)[0]
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little")
    for pos in range(len(data) - 8 - footer, len(data) - 8, 7):
        data[pos] ^= 0xFF  # garble the footer (thrift metadata)
    path.write_bytes(bytes(data))
    return path, {"pred": "p", "label": "y"}


def _flipped_page(d: Path, _mp):
    path = _parquet(d / "data.parquet", {"p": _fsl(_probs()), "y": _labels()}, 8)
    column = pq.ParquetFile(path).metadata.row_group(2).column(0)
    start = column.dictionary_page_offset or column.data_page_offset
    data = bytearray(path.read_bytes())
    data[start : start + 16] = b"\xff" * 16  # garble a page header of the third row group
    path.write_bytes(bytes(data))
    return path, {"pred": "p", "label": "y"}


def _corrupt_ipc_offsets(d: Path, _mp):
    # List offsets pointing past the end of the values: without validation the reader would
    # hand out views past the end of the buffer.
    x = _probs()
    p = pa.ListArray.from_arrays(
        pa.array(np.arange(N_ROWS + 1, dtype=np.int32) * N_CLASSES), x.ravel()
    )
    path = _arrow_file(d / "data.arrow", pa.table({"p": p, "y": _labels()}), batch_rows=N_ROWS)
    data = bytearray(path.read_bytes())
    offsets = (np.arange(N_ROWS + 1, dtype="<i4") * N_CLASSES).tobytes()
    at = data.index(offsets)
    data[at : at + len(offsets)] = (np.frombuffer(offsets, "<i4") + 3 * N_CLASSES).tobytes()
    path.write_bytes(bytes(data))
    return path, {"pred": "p", "label": "y"}


def _unreadable(d: Path, mp: pytest.MonkeyPatch):
    path = _with()(d, mp)[0]
    path.chmod(0)
    if os.geteuid() == 0:
        # root reads any file whatever its mode: simulate what open() does for anyone else.
        def denied(file, *args, **kwargs):
            raise PermissionError(13, "Permission denied", str(file))

        mp.setattr(fx_arrow, "open", denied, raising=False)
    return path, {"pred": "p", "label": "y"}


def _unlistable(d: Path, mp: pytest.MonkeyPatch):
    root = _with()(d / "ds", mp)[0].parent
    root.joinpath("sub").mkdir()
    root.joinpath("sub").chmod(0)
    if os.geteuid() == 0:
        walk = os.walk

        def denied(top, onerror=None, **kwargs):
            for entry in walk(top, onerror=onerror, **kwargs):
                if entry[0].endswith("sub"):
                    onerror(PermissionError(13, "Permission denied", entry[0]))
                    return
                yield entry

        mp.setattr(fx_arrow.os, "walk", denied)
    return root, {"pred": "p", "label": "y"}


def _empty_dir(d: Path, _mp):
    (d / "ds" / "part=0").mkdir(parents=True)
    (d / "ds" / "_SUCCESS").write_text("")
    (d / "ds" / ".part-0.crc").write_text("")
    return d / "ds", {"pred": "p", "label": "y"}


def _duplicate_names(d: Path, _mp):
    x = _probs()
    table = pa.Table.from_arrays(
        [pa.array(x[:, j]) for j in (0, 1, 2, 2)] + [pa.array(_labels())],
        names=["p_0", "p_1", "p_2", "p_2", "y"],  # Arrow and Parquet allow repeated names
    )
    path = d / "data.parquet"
    d.mkdir(parents=True)
    pq.write_table(table, path)
    return path, {"pred": "p_*", "label": "y"}


def _corrupt_column_name(d: Path, _mp):
    table = pa.table({"p": _fsl(_probs()), "y": _labels(), "zz_id": np.arange(N_ROWS)})
    path = _arrow_file(d / "data.arrow", table)
    # A column name that is not UTF-8 (in the schema message and in the footer).
    path.write_bytes(path.read_bytes().replace(b"zz_id", b"\xfd\xfe_id"))
    return path, {"pred": "p", "label": "y"}


def _wide_one_class(d: Path, _mp):
    cols = {"p_0": np.ones(N_ROWS, np.float32), "y": np.zeros(N_ROWS, np.int64)}
    return _parquet(d / "data.parquet", cols), {"pred": "p_*", "label": "y"}


def _fifo(d: Path, _mp):
    d.mkdir(parents=True)
    os.mkfifo(d / "pipe.parquet")  # opening it would block until a writer appears
    return d / "pipe.parquet", {"pred": "p", "label": "y"}


def _zero_rows(d: Path, _mp):
    cols = {"p": _fsl(_probs(0)), "y": pa.array([], pa.int64())}
    _parquet(d / "ds" / "a.parquet", cols)
    _parquet(d / "ds" / "b.parquet", cols)
    return d / "ds", {"pred": "p", "label": "y"}


def _nan_probs():
    return _set(_probs(), (19, 2), np.nan)


CASES: dict[str, Case] = {
    # Non-finite predictions (nan_policy="raise", the default).
    "nan": Case(
        _with(_nan_probs()), InvalidValueError, ("p must be finite", "row 19, class 2 has nan")
    ),
    "plus-inf-logit": Case(
        _with(_set(_probs(), (9, 1), np.inf)),
        InvalidValueError,
        ("p must be finite", "row 9, class 1 has inf"),
        {"pred_kind": "logits"},
    ),
    "minus-inf-probability": Case(
        _with(_set(_probs(), (9, 1), -np.inf)), InvalidValueError, ("p ", "row 9, class 1 has -inf")
    ),
    # Probabilities out of [0, 1], and rows that do not sum to 1 under strict.
    "probability-above-1": Case(
        _with(_set(_probs(), (7, 0), 1.5)),
        InvalidValueError,
        ("p probabilities", "row 7, class 0 has 1.5"),
    ),
    "probability-below-0": Case(
        _with(_set(_probs(), (22, 3), -0.25)),
        InvalidValueError,
        ("p probabilities", "row 22, class 3 has -0.25"),
    ),
    "rows-not-summing-to-1-strict": Case(
        _with(_set(_probs(), [3, 16], _probs()[[3, 16]] * 1.2)),
        InvalidValueError,
        ("p probability rows must sum to 1", "the first is row 3", "off by 0.2"),
        {"strict": True},
    ),
    "log-probability-above-0": Case(
        _with(_set(np.log(_probs()), (5, 1), 0.5)),
        InvalidValueError,
        ("log-probabilities", "row 5, class 1 has 0.5"),
        {"pred_kind": "log_probs"},
    ),
    # Labels.
    "label-too-large": Case(
        _with(y=_labels_with(15, 9)), InvalidValueError, ("y labels", "[0, 4)", "row 15 has 9")
    ),
    "label-negative": Case(
        _with(y=_labels_with(4, -1)),
        InvalidValueError,
        ("y labels", "row 4 has -1", "ignore_index=-1"),
    ),
    "label-other-negative-than-ignore-index": Case(
        _with(y=_set(_labels_with(4, -100), 6, -1)),
        InvalidValueError,
        ("y labels", "row 6 has -1"),
        {"ignore_index": -100},
    ),
    "label-null": Case(_nullable_labels, InvalidValueError, ("'y'", "row 17 is null")),
    "label-float": Case(
        _with(y=_labels().astype(np.float64)), InvalidTypeError, ("'y'", "integer", "double")
    ),
    "label-string": Case(
        _with(y=[str(v) for v in _labels()]), InvalidTypeError, ("'y'", "integer", "string")
    ),
    "label-bool": Case(_with(y=_labels() > 1), InvalidTypeError, ("'y'", "integer", "bool")),
    "label-in-a-later-file": Case(_split_labels, InvalidValueError, ("y labels", "row 11 has 4")),
    # Predictions column: nulls, ragged, wrong type, missing, one class.
    "pred-null-row": Case(_null_pred_row, InvalidValueError, ("'p'", "row 13 is null")),
    "pred-null-in-list": Case(
        _list_build([*_rows(_probs()[:8]), [0.5, None, 0.25, 0.25], *_rows(_probs()[9:])]),
        InvalidValueError,
        ("'p'", "row 8 has a null at class 1"),
    ),
    "pred-null-list-row": Case(
        _list_build([*_rows(_probs()[:12]), None, *_rows(_probs()[13:])]),
        InvalidValueError,
        ("'p'", "row 12 is null"),
    ),
    "pred-ragged": Case(
        _list_build([*_rows(_probs()[:18]), [0.5, 0.5], *_rows(_probs()[19:])]),
        InvalidValueError,
        ("'p'", "4 values per row", "row 18 has 2"),
    ),
    "pred-wide-null": Case(_wide_null, InvalidValueError, ("'p_2'", "row 21 is null")),
    "pred-string-column": Case(
        _with(q=[str(v) for v in range(N_ROWS)]),
        InvalidTypeError,
        ("'q'", "list of class scores", "string"),
        {"pred": "q"},
    ),
    "pred-integer-lists": Case(
        _with(q=pa.array([[1, 0, 0, 0]] * N_ROWS, pa.list_(pa.int64(), 4))),
        InvalidTypeError,
        ("'q'", "floating-point"),
        {"pred": "q"},
    ),
    "pred-missing-column": Case(
        _with(), InvalidValueError, ("'probs'", "['p', 'y']"), {"pred": "probs"}
    ),
    "label-missing-column": Case(
        _with(), InvalidValueError, ("'label'", "['p', 'y']"), {"label": "label"}
    ),
    "one-class": Case(
        _with(np.ones((N_ROWS, 1), np.float32), np.zeros(N_ROWS, np.int64)),
        InvalidValueError,
        ("pred must have at least 2 classes", "column 'p' is fixed_size_list", "[1]"),
    ),
    # A directory whose files disagree.
    "directory-different-n-classes": Case(
        _directory(
            {"p": _fsl(_probs(6)), "y": _labels(6)},
            {"p": _fsl(_probs(6, 5)), "y": _labels(6)},
        ),
        InvalidValueError,
        ("'p'", "same type in every file", "[4]", "[5]", "part-0.parquet", "part-1.parquet"),
    ),
    "directory-different-list-lengths": Case(
        _directory(
            {"p": pa.array(_rows(_probs(6))), "y": _labels(6)},
            {"p": pa.array(_rows(_probs(6, 5))), "y": _labels(6)},
        ),
        InvalidValueError,
        ("'p'", "same length in every file", "part-1.parquet has 5 (row 6)"),
    ),
    "directory-different-label-types": Case(
        _directory(
            {"p": _fsl(_probs(6)), "y": _labels(6)},
            {"p": _fsl(_probs(6)), "y": _labels(6).astype(np.float64)},
        ),
        InvalidValueError,
        ("'y'", "same type in every file", "int64", "double", "part-1.parquet"),
    ),
    "directory-missing-column": Case(
        _directory(
            {"p": _fsl(_probs(6)), "y": _labels(6)}, {"q": _fsl(_probs(6)), "y": _labels(6)}
        ),
        InvalidValueError,
        ("'p'", "part-1.parquet", "['q', 'y']"),
    ),
    "directory-glob-matches-more-classes": Case(
        _wide_directory,
        InvalidValueError,
        ("'p_*'", "same columns in every file", "'p_3'", "part-1.parquet"),
    ),
    "directory-no-data": Case(_empty_dir, SourceError, ("no data file",)),
    "zero-rows": Case(_zero_rows, InvalidValueError, ("no rows",)),
    # Files.
    "missing-path": Case(
        lambda d, mp: (d / "nope.parquet", {"pred": "p", "label": "y"}),
        SourceError,
        ("nope.parquet", "does not exist"),
    ),
    "not-parquet": Case(_not_parquet, SourceError, ("notes.parquet", "as Parquet")),
    "truncated": Case(_truncated, SourceError, ("data.parquet", "as Parquet")),
    "flipped-footer": Case(_flipped_footer, SourceError, ("data.parquet", "as Parquet")),
    "flipped-page-header": Case(_flipped_page, SourceError, ("data.parquet", "as Parquet")),
    "ipc-offsets-past-the-end": Case(
        _corrupt_ipc_offsets, SourceError, ("data.arrow", "as an Arrow IPC file", "out of bounds")
    ),
    "unreadable-file": Case(_unreadable, SourceError, ("data.parquet", "Permission denied")),
    "unlistable-subdirectory": Case(_unlistable, SourceError, ("sub", "Permission denied")),
    "fifo": Case(_fifo, SourceError, ("pipe.parquet", "regular file")),
    "duplicate-column-names": Case(_duplicate_names, InvalidValueError, ("'p_2'", "2 times")),
    "column-name-not-utf8": Case(_corrupt_column_name, SourceError, ("data.arrow", "utf-8")),
    "one-class-wide": Case(
        _wide_one_class, InvalidValueError, ("at least 2 classes", "'p_*' matches 1", "'p_0'")
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_catalogue(name, tmp_path, capsys, monkeypatch):
    case = CASES[name]
    source, kwargs = case.build(tmp_path / "in", monkeypatch)
    kwargs = {**kwargs, "batch_rows": BATCH_ROWS, **case.kwargs}
    before = _digest(source)

    # The API: the error type, a message naming the column and the row, on one line.
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a failing case must fail, not warn
        with pytest.raises(case.error) as info:
            fx.score(source, **kwargs)
    message = str(info.value)
    for needle in case.needles:
        assert needle in message, (needle, message)
    assert "\n" not in message

    # The command line, asked to replace an existing per-row file: it must survive.
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    existing = out_dir / "rows.parquet"
    existing.write_bytes(b"precious")
    argv = _argv(source, kwargs)
    code, out, err = _cli(capsys, *argv, "--per-row", existing, "--overwrite")
    line = _one_line_error(code, out, err)
    for needle in case.needles:
        assert needle in line, (needle, line)
    assert existing.read_bytes() == b"precious"
    # ... and, writing a new per-row file, nothing is left behind.
    code, out, err = _cli(capsys, *argv, "--per-row", out_dir / "new.parquet")
    assert _one_line_error(code, out, err) == line
    assert sorted(os.listdir(out_dir)) == ["rows.parquet"]

    assert _digest(source) == before  # the input is never modified


def test_the_catalogue_is_one_line_from_a_real_process(tmp_path):
    """The console script itself (not just main()): exit 2 and one line, for a corrupt file."""
    exe = shutil.which("fastxent")
    argv = [exe] if exe else [sys.executable, "-m", "fastxent"]
    source, _ = _truncated(tmp_path, None)
    done = subprocess.run(
        [*argv, "score", str(source), "--pred", "p", "--label", "y"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith("fastxent: error: cannot read ") and done.stderr.count("\n") == 1


# ---------------------------------------------------------------------------------------------
# The catalogue for in-memory arrays: fastxent.cross_entropy
# ---------------------------------------------------------------------------------------------


def _memory_cases() -> dict[str, tuple[Any, Any, dict[str, Any], type[Exception], tuple[str, ...]]]:
    x, y = _probs(dtype=np.float64), _labels()
    logits = np.log(x)
    return {
        "nan": (_set(x, (19, 2), np.nan), y, {}, InvalidValueError, ("row 19, class 2 has nan",)),
        "plus-inf-logit": (
            _set(logits, (9, 1), np.inf),
            y,
            {"pred_kind": "logits"},
            InvalidValueError,
            ("row 9, class 1 has inf",),
        ),
        "probability-above-1": (
            _set(x, (7, 0), 1.5),
            y,
            {},
            InvalidValueError,
            ("probabilities must lie in [0, 1]", "row 7, class 0 has 1.5"),
        ),
        "probability-below-0": (
            _set(x, (22, 3), -0.25),
            y,
            {},
            InvalidValueError,
            ("row 22, class 3 has -0.25",),
        ),
        "rows-not-summing-to-1-strict": (
            _set(x, [3, 16], x[[3, 16]] * 1.2),
            y,
            {"strict": True},
            InvalidValueError,
            ("2 rows", "row 3", "off by 0.2"),
        ),
        "label-too-large": (x, _labels_with(15, 9), {}, InvalidValueError, ("row 15 has 9",)),
        "label-negative": (x, _labels_with(4, -1), {}, InvalidValueError, ("row 4 has -1",)),
        "label-other-negative-than-ignore-index": (
            x,
            _set(_labels_with(4, -100), 6, -1),
            {"ignore_index": -100},
            InvalidValueError,
            ("row 6 has -1",),
        ),
        "label-float": (x, y.astype(np.float64), {}, InvalidTypeError, ("integer",)),
        "label-null": (
            x,
            np.array([*y[:3], None, *y[4:]], dtype=object),
            {},
            InvalidTypeError,
            ("object",),
        ),
        "label-string": (x, y.astype(str), {}, InvalidTypeError, ("integer",)),
        "pred-string": (x.astype(str), y, {}, InvalidTypeError, ("pred must hold numbers",)),
        "one-class": (
            np.ones((N_ROWS, 1)),
            np.zeros(N_ROWS, np.int64),
            {},
            InvalidValueError,
            ("at least 2 classes",),
        ),
        "zero-rows": (x[:0], y[:0], {}, InvalidValueError, ("no rows",)),
        "wrong-number-of-labels": (x, y[:-1], {}, InvalidValueError, ("(24,)", "(23,)")),
    }


@pytest.mark.parametrize("name", list(_memory_cases()))
def test_catalogue_in_memory(name):
    pred, target, kwargs, error, needles = _memory_cases()[name]
    pred, target = np.asarray(pred), np.asarray(target)
    before = (pred.tobytes(), target.tobytes())
    # check_rows=True: read every entry on the gather path too, as streaming does.
    with pytest.raises(error) as info:
        fx.cross_entropy(pred, target, check_rows=True, **kwargs)
    for needle in needles:
        assert needle in str(info.value), (needle, str(info.value))
    assert "\n" not in str(info.value)
    assert isinstance(info.value, FastxentError)
    assert (pred.tobytes(), target.tobytes()) == before


def test_row_checks_can_be_switched_off_on_the_gather_path():
    """check_rows=False reads one entry per row: off-label problems are not seen (by design)."""
    x, y = _probs(dtype=np.float64), _labels()
    bad = _set(x, (7, (y[7] + 1) % N_CLASSES), 1.5)  # not the labelled class
    with pytest.raises(InvalidValueError, match="row 7"):
        fx.cross_entropy(bad, y, check_rows=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = fx.cross_entropy(bad, y, check_rows=False)
    assert got == pytest.approx(naive_cross_entropy(bad, y), rel=1e-12)
    # A problem on the labelled entry itself is always caught.
    with pytest.raises(InvalidValueError, match="row 7"):
        fx.cross_entropy(_set(x, (7, y[7]), 1.5), y, check_rows=False)


# ---------------------------------------------------------------------------------------------
# Not errors: the right number, through the API and the command line
# ---------------------------------------------------------------------------------------------


def _score_json(capsys, source: Path, *extra: str) -> dict[str, Any]:
    code, out, err = _cli(capsys, "score", source, "--json", *extra)
    assert code == 0, err
    return json.loads(out)


def test_nan_policy_omit_skips_and_counts_the_rows(tmp_path, capsys):
    x, y = _probs(), _labels()
    x[[2, 19]] = np.nan
    x[11, 3] = np.inf
    source = _parquet(tmp_path / "data.parquet", {"p": _fsl(x), "y": y}, 7)
    got = fx.score(source, pred="p", label="y", nan_policy="omit", batch_rows=BATCH_ROWS)
    keep = np.ones(N_ROWS, dtype=bool)
    keep[[2, 11, 19]] = False
    assert got.n_skipped == 3 and got.n_scored == N_ROWS - 3 and got.n_rows == N_ROWS
    assert got.loss == pytest.approx(naive_cross_entropy(x[keep], y[keep]), rel=1e-12)
    # The same batches (float sums depend on their grouping): the very same result.
    batches = ("--batch-rows", str(BATCH_ROWS))
    doc = _score_json(
        capsys, source, "--pred", "p", "--label", "y", "--nan-policy", "omit", *batches
    )
    assert doc == got.to_dict()
    # In memory too, reading whole rows as streaming does (the gather path otherwise reads only
    # the labelled entry, and the inf in row 11 is not on it).
    in_memory = fx.cross_entropy(x, y, nan_policy="omit", check_rows=True)
    assert in_memory == pytest.approx(got.loss, rel=1e-12)


def test_nan_policy_propagate_gives_nan(tmp_path, capsys):
    x, y = _probs(), _labels()
    x[19, 2] = np.nan
    source = _parquet(tmp_path / "data.parquet", {"p": _fsl(x), "y": y})
    got = fx.score(source, pred="p", label="y", nan_policy="propagate")
    assert np.isnan(got.loss) and got.n_skipped == 0
    doc = _score_json(capsys, source, "--pred", "p", "--label", "y", "--nan-policy", "propagate")
    assert doc["loss"] == "nan"
    assert np.isnan(fx.cross_entropy(x, y, nan_policy="propagate", check_rows=True))


@pytest.mark.parametrize("kind", ["logits", "log_probs"])
def test_minus_inf_on_a_wrong_class_is_fine_and_on_the_true_class_is_inf(kind, tmp_path, capsys):
    x, y = _probs(dtype=np.float64), _labels()
    pred = np.log(x)
    wrong = (y[5] + 1) % N_CLASSES
    pred[5, wrong] = -np.inf
    if kind == "log_probs":  # keep the row a distribution: its mass moves to the true class
        pred[5, y[5]] = np.log(x[5, y[5]] + x[5, wrong])
    source = _parquet(tmp_path / "a.parquet", {"p": _fsl(pred), "y": y})
    expected = naive_cross_entropy(pred, y, pred_kind=kind)
    assert np.isfinite(expected)
    got = fx.score(source, pred="p", label="y", pred_kind=kind)
    assert got.loss == pytest.approx(expected, rel=1e-12)
    doc = _score_json(capsys, source, "--pred", "p", "--label", "y", "--pred-kind", kind)
    assert doc["loss"] == pytest.approx(expected, rel=1e-12)

    if kind == "log_probs":  # a distribution with no mass on the true class
        row = _set(x[9], y[9], 0.0)
        with np.errstate(divide="ignore"):
            pred[9] = np.log(row / row.sum())
    else:
        pred[9, y[9]] = -np.inf
    source = _parquet(tmp_path / "b.parquet", {"p": _fsl(pred), "y": y})
    for policy in ("raise", "omit", "propagate"):
        got = fx.score(source, pred="p", label="y", pred_kind=kind, nan_policy=policy)
        assert got.loss == np.inf and got.n_skipped == 0, policy
        rows = fx.cross_entropy(pred, y, pred_kind=kind, nan_policy=policy, reduction="none")
        assert rows[9] == np.inf and np.isfinite(np.delete(rows, 9)).all()
    doc = _score_json(capsys, source, "--pred", "p", "--label", "y", "--pred-kind", kind)
    assert doc["loss"] == "inf" and doc["perplexity"] == "inf"


def test_rows_not_summing_to_1_warn_with_count_and_worst_deviation(tmp_path, capsys):
    x, y = _probs(), _labels()
    x[[3, 16]] *= 1.2
    x[20] *= 0.9
    source = _parquet(tmp_path / "data.parquet", {"p": _fsl(x), "y": y}, 7)
    with pytest.warns(fx.SoftWarning) as record:
        got = fx.score(source, pred="p", label="y", batch_rows=BATCH_ROWS)
    assert len(record) == 1
    message = str(record[0].message)
    assert "3 rows" not in message or "first is row 3" in message
    assert "first is row 3" in message and "off by 0.2" in message
    assert got.loss == pytest.approx(naive_cross_entropy(x, y), rel=1e-12)
    code, out, err = _cli(capsys, "score", source, "--pred", "p", "--label", "y", "--json")
    assert code == 0 and json.loads(out)["loss"] == pytest.approx(got.loss, rel=1e-12)
    assert err.startswith("fastxent: warning: ") and err.count("\n") == 1
    assert "first is row 3" in err and "off by 0.2" in err
    # In memory, one warning for the whole array, with the number of rows.
    with pytest.warns(fx.SoftWarning, match=r"3 rows do not, the first is row 3.*off by 0\.2"):
        fx.cross_entropy(x, y, check_rows=True)


def test_rows_are_numbered_across_the_whole_source_as_in_the_per_row_file(tmp_path, capsys):
    # Three files, several row groups and batches each; the NaN is in row 1 of the third file.
    x, y = _probs(), _labels()
    bad_row = 17
    x[bad_row] = np.nan
    root = tmp_path / "ds"
    for k, (a, b) in enumerate([(0, 7), (7, 16), (16, 24)]):
        _parquet(root / f"part={k}" / "data.parquet", {"p": _fsl(x[a:b]), "y": y[a:b]}, 3)
    out = tmp_path / "rows.parquet"
    fx.score(root, pred="p", label="y", nan_policy="omit", batch_rows=2, per_row=out)
    rows = pq.read_table(out)
    assert rows["row"].to_pylist() == list(range(N_ROWS))
    assert np.flatnonzero(np.isnan(rows["loss"].to_numpy())).tolist() == [bad_row]
    with pytest.raises(InvalidValueError, match=rf"row {bad_row}, class 0 has nan"):
        fx.score(root, pred="p", label="y", batch_rows=2)
    code, out_, err = _cli(
        capsys, "score", root, "--pred", "p", "--label", "y", "--batch-rows", "2"
    )
    assert f"row {bad_row}, class 0 has nan" in _one_line_error(code, out_, err)


def test_huge_number_of_classes_in_memory():
    rng = np.random.default_rng(5)
    n_classes = 150_000
    logits = rng.normal(scale=3.0, size=(3, n_classes)).astype(np.float32)
    labels = np.array([0, n_classes - 1, 77_777])
    expected = naive_cross_entropy(logits, labels, pred_kind="logits")
    got = fx.cross_entropy(logits, labels, pred_kind="logits")
    assert got == pytest.approx(expected, rel=1e-6)
    with pytest.raises(InvalidValueError, match=r"\[0, 150000\); row 1 has 150000"):
        fx.cross_entropy(logits, np.array([0, n_classes, 1]), pred_kind="logits")


_HUGE_CHILD = textwrap.dedent(
    """
    import contextlib, io, json, sys
    import psutil
    import fastxent as fx
    from fastxent.accumulate import Accumulator
    from fastxent.cli import main

    big, warm, batch_rows = sys.argv[1], sys.argv[2], sys.argv[3]
    proc = psutil.Process()
    peak = [0]
    update = Accumulator.update

    def sampling(self, *args, **kwargs):
        peak[0] = max(peak[0], proc.memory_info().rss)
        return update(self, *args, **kwargs)

    Accumulator.update = sampling
    fx.score(warm, pred="pred", label="label")  # loads the kernels, grows the allocators
    base = peak[0] = proc.memory_info().rss
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["score", big, "--pred", "pred", "--label", "label", "--json",
                     "--batch-rows", batch_rows])
    print(json.dumps({"code": code, "growth": peak[0] - base, "score": json.loads(out.getvalue())}))
    """
)


def test_huge_number_of_classes_streams_in_bounded_memory(tmp_path):
    # 160 rows x 150,000 classes of float32: a 96 MB file, scored from the command line in
    # batches of 4 rows (2.4 MB). Memory must stay a few batches, not the file.
    n_rows, n_classes = 160, 150_000
    big, warm = tmp_path / "big.parquet", tmp_path / "warm.parquet"
    generate(big, rows=n_rows, classes=n_classes, seed=1)
    generate(warm, rows=4, classes=n_classes, seed=2)
    file_bytes = big.stat().st_size
    assert file_bytes > 90e6
    done = subprocess.run(
        [sys.executable, "-c", _HUGE_CHILD, str(big), str(warm), "4"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["code"] == 0
    assert report["growth"] < 0.6 * file_bytes, report
    table = pq.read_table(big)
    pred = np.asarray(table["pred"].combine_chunks().flatten()).reshape(n_rows, n_classes)
    expected = fx.cross_entropy(pred, table["label"].to_numpy(), check_rows=True)
    assert report["score"]["loss"] == pytest.approx(expected, rel=1e-12)
    assert report["score"]["n_rows"] == n_rows


# ---------------------------------------------------------------------------------------------
# Output files: never partial, never clobbered, never an input
# ---------------------------------------------------------------------------------------------


def test_per_row_is_never_an_input_file(tmp_path, capsys):
    source = _with()(tmp_path, None)[0]
    before = _digest(source)
    with pytest.raises(InvalidValueError, match="per_row must not be an input file"):
        fx.score(source, pred="p", label="y", per_row=source, overwrite=True)
    code, out, err = _cli(
        capsys, "score", source, "--pred", "p", "--label", "y", "--per-row", source, "--overwrite"
    )
    assert "must not be an input file" in _one_line_error(code, out, err)
    assert _digest(source) == before


def test_per_row_is_never_among_a_directorys_data_files(tmp_path, capsys):
    root = _with()(tmp_path / "ds", None)[0].parent
    inside = root / "sub" / "rows.parquet"
    inside.parent.mkdir()
    before = _digest(root)
    with pytest.raises(InvalidValueError, match="inside the source directory"):
        fx.score(root, pred="p", label="y", per_row=inside)
    code, out, err = _cli(capsys, "score", root, "--pred", "p", "--label", "y", "--per-row", inside)
    assert "inside the source directory" in _one_line_error(code, out, err)
    assert _digest(root) == before
    # A name the directory listing skips is fine, and the next run does not read it.
    hidden = root / "_rows.parquet"
    first = fx.score(root, pred="p", label="y", per_row=hidden)
    assert hidden.exists()
    assert fx.score(root, pred="p", label="y").loss == first.loss


def test_per_row_is_never_a_device(tmp_path, capsys):
    source = _with()(tmp_path, None)[0]
    with pytest.raises(SourceError, match="regular file"):
        fx.score(source, pred="p", label="y", per_row=os.devnull, overwrite=True)
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)


def test_failure_after_the_last_batch_keeps_the_old_per_row_file(tmp_path, capsys):
    # Every row is skipped: the stream completes, then the mean is undefined.
    source = _parquet(
        tmp_path / "in.parquet", {"p": _fsl(np.full((6, 3), np.nan, np.float32)), "y": [0] * 6}
    )
    existing = tmp_path / "rows.parquet"
    existing.write_bytes(b"precious")
    with pytest.raises(InvalidValueError, match="no row carries weight"):
        fx.score(source, pred="p", label="y", nan_policy="omit", per_row=existing, overwrite=True)
    code, out, err = _cli(
        capsys,
        "score",
        source,
        "--pred",
        "p",
        "--label",
        "y",
        "--nan-policy",
        "omit",
        "--per-row",
        existing,
        "--overwrite",
    )
    assert "no row carries weight" in _one_line_error(code, out, err)
    assert existing.read_bytes() == b"precious"
    assert sorted(os.listdir(tmp_path)) == ["in.parquet", "rows.parquet"]


def test_unwritable_per_row_is_a_source_error(tmp_path, capsys, monkeypatch):
    import fastxent.scoring as scoring

    source = _with()(tmp_path, None)[0]

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(scoring, "_create_temp", no_space)
    with pytest.raises(SourceError, match=r"cannot write the per-row file .*No space left"):
        fx.score(source, pred="p", label="y", per_row=tmp_path / "rows.parquet")
    code, out, err = _cli(
        capsys,
        "score",
        source,
        "--pred",
        "p",
        "--label",
        "y",
        "--per-row",
        tmp_path / "rows.parquet",
    )
    assert "No space left on device" in _one_line_error(code, out, err)


def test_a_closed_stderr_keeps_exit_status_2(tmp_path):
    exe = shutil.which("fastxent")
    argv = [exe] if exe else [sys.executable, "-m", "fastxent"]
    done = subprocess.run(
        [*argv, "score", str(tmp_path / "nope.parquet"), "--pred", "p", "--label", "y"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        timeout=120,
        preexec_fn=lambda: os.close(2),
    )
    assert done.returncode == 2


@pytest.mark.skipif(os.name != "posix", reason="POSIX permission bits")
@pytest.mark.parametrize("name", ["g.parquet", "g.arrow"])
def test_generated_files_get_the_umask_permissions(tmp_path, name):
    umask = os.umask(0o022)
    try:
        info = generate(tmp_path / name, rows=10, classes=3)
    finally:
        os.umask(umask)
    assert os.stat(info["path"]).st_mode & 0o777 == 0o644


# ---------------------------------------------------------------------------------------------
# Rows that are no distribution, and infinite probabilities under nan_policy="propagate"
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ["raise", "omit", "propagate"])
def test_a_row_of_only_minus_inf_logits_is_not_a_distribution(policy):
    logits = np.array([[0.0, 1.0, 2.0], [-np.inf, -np.inf, -np.inf]])
    labels = np.array([0, 1])
    dense = np.eye(3)[labels]
    if policy == "raise":
        for target in (dense, labels):
            with pytest.raises(InvalidValueError, match="row 1 has every logit equal to -inf"):
                fx.cross_entropy(logits, target, pred_kind="logits")
        return
    for target in (dense, labels):
        rows = fx.cross_entropy(
            logits, target, pred_kind="logits", nan_policy=policy, reduction="none"
        )
        assert np.isnan(rows[1]), (target.ndim, rows)


@pytest.mark.parametrize(
    ("kind", "value", "soft"),
    [
        ("probs", np.inf, False),
        ("probs", -np.inf, False),
        ("log_probs", np.inf, False),
        ("probs", np.inf, True),
        ("probs", -np.inf, True),
        ("log_probs", np.inf, True),
    ],
)
def test_propagate_with_infinite_probabilities(kind, value, soft):
    p = np.array([[0.5, 0.5], [0.9, 0.1]])
    pred = np.log(p) if kind == "log_probs" else p
    pred[1, 1] = value  # on the labelled class
    target = np.array([[0.5, 0.5], [0.2, 0.8]]) if soft else np.array([0, 1])
    with pytest.raises(InvalidValueError, match=r"row 1, class 1 has -?inf"):
        fx.cross_entropy(pred, target, pred_kind=kind)  # raise: right
    rows = fx.cross_entropy(pred, target, pred_kind=kind, nan_policy="propagate", reduction="none")
    assert np.isnan(rows[1]), rows
