"""Tests for the fastxent command line (fastxent.cli, python -m fastxent)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import log_loss

import fastxent as fx
import fastxent.scoring as scoring
from fastxent.cli import EXIT_INTERRUPTED, EXIT_USER_ERROR, main

N_ROWS, N_CLASSES = 40, 4
SCORE_FIELDS = [
    "loss",
    "loss_sum",
    "weight_sum",
    "n_rows",
    "n_scored",
    "n_ignored",
    "n_skipped",
    "perplexity",
    "accuracy",
    "stderr",
]


def _child_env() -> dict[str, str]:
    repo = str(Path(__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")])}


def _write(tmp_path: Path, labels: np.ndarray | None = None, *, scale: float = 1.0) -> Path:
    rng = np.random.default_rng(7)
    x = rng.random((N_ROWS, N_CLASSES)) + 0.1
    x = (x / x.sum(axis=1, keepdims=True) * scale).astype(np.float32)
    if labels is None:
        labels = rng.integers(0, N_CLASSES, N_ROWS)
    probs = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), N_CLASSES)
    table = pa.table(
        {
            "id": np.arange(N_ROWS),
            "probs": probs,
            "label": labels,
            "w": rng.random(N_ROWS),
        }
    )
    path = tmp_path / "preds.parquet"
    pq.write_table(table, path, row_group_size=16)
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_error(code: int, err: str) -> str:
    assert code == EXIT_USER_ERROR
    assert err.startswith("fastxent: error: ")
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


# ---------------------------------------------------------------------------------------------
# score
# ---------------------------------------------------------------------------------------------


def test_score_json(tmp_path, capsys):
    path = _write(tmp_path)
    code, out, err = _run(
        capsys,
        "score",
        str(path),
        "--pred",
        "probs",
        "--label",
        "label",
        "--weight",
        "w",
        "--json",
        "--batch-rows",
        "7",
    )
    assert code == 0
    assert err == ""
    doc = json.loads(out)
    assert list(doc) == SCORE_FIELDS
    expected = fx.score(path, pred="probs", label="label", weight="w")
    assert doc["loss"] == pytest.approx(expected.loss, rel=1e-12)
    assert doc["n_rows"] == N_ROWS


def test_score_options_reach_the_library(tmp_path, capsys):
    labels = np.arange(N_ROWS) % N_CLASSES
    labels[::5] = -1
    path = _write(tmp_path, labels)
    code, out, _ = _run(
        capsys,
        "score",
        str(path),
        "--pred",
        "probs",
        "--label",
        "label",
        "--class-weight",
        "1,2,3,4",
        "--ignore-index",
        "-1",
        "--label-smoothing",
        "0.1",
        "--eps",
        "1e-6",
        "--json",
    )
    assert code == 0
    expected = fx.score(
        path,
        pred="probs",
        label="label",
        class_weight=[1, 2, 3, 4],
        ignore_index=-1,
        label_smoothing=0.1,
        eps=1e-6,
    )
    assert json.loads(out) == expected.to_dict()


def test_score_human_table(tmp_path, capsys):
    path = _write(tmp_path)
    code, out, _ = _run(capsys, "score", str(path), "--pred", "probs", "--label", "label")
    assert code == 0
    lines = out.splitlines()
    keys = [line.split()[0] for line in lines]
    assert keys == [*SCORE_FIELDS, "source"]
    expected = fx.score(path, pred="probs", label="label")
    assert lines[0].split()[1] == f"{expected.loss:.6g}"
    assert lines[-1].split(maxsplit=1)[1] == str(path)
    # The numbers are right-aligned in one column.
    assert len({len(line) for line in lines[:-1]}) == 1


def test_score_per_row_and_keep(tmp_path, capsys):
    path = _write(tmp_path)
    out_path = tmp_path / "rows.parquet"
    code, out, _ = _run(
        capsys,
        "score",
        str(path),
        "--pred",
        "probs",
        "--label",
        "label",
        "--per-row",
        str(out_path),
        "--keep",
        "id",
        "w",
    )
    assert code == 0
    assert out.splitlines()[-1].split() == ["per_row", str(out_path)]
    rows = pq.read_table(out_path)
    assert rows.column_names == ["row", "loss", "id", "w"]
    # Again without --overwrite: refused, the file is kept.
    before = out_path.read_bytes()
    code, _, err = _run(
        capsys,
        "score",
        str(path),
        "--pred",
        "probs",
        "--label",
        "label",
        "--per-row",
        str(out_path),
    )
    assert "already exists" in _assert_one_line_error(code, err)
    assert out_path.read_bytes() == before
    code, _, _ = _run(
        capsys,
        "score",
        str(path),
        "--pred",
        "probs",
        "--label",
        "label",
        "--per-row",
        str(out_path),
        "--overwrite",
    )
    assert code == 0


def test_missing_file(tmp_path, capsys):
    missing = tmp_path / "nope.parquet"
    code, out, err = _run(capsys, "score", str(missing), "--pred", "probs", "--label", "label")
    assert out == ""
    assert str(missing) in _assert_one_line_error(code, err)


def test_missing_column_lists_the_columns(tmp_path, capsys):
    path = _write(tmp_path)
    code, _, err = _run(capsys, "score", str(path), "--pred", "prob", "--label", "label")
    err = _assert_one_line_error(code, err)
    assert "'prob'" in err and "['id', 'probs', 'label', 'w']" in err


def test_bad_label_names_the_row(tmp_path, capsys):
    labels = np.zeros(N_ROWS, dtype=np.int64)
    labels[33] = 12
    path = _write(tmp_path, labels)
    code, _, err = _run(
        capsys, "score", str(path), "--pred", "probs", "--label", "label", "--batch-rows", "10"
    )
    err = _assert_one_line_error(code, err)
    assert "row 33 has 12" in err and "label" in err


def test_directory_instead_of_a_file_in_per_row(tmp_path, capsys):
    path = _write(tmp_path)
    code, _, err = _run(
        capsys,
        "score",
        str(path),
        "--pred",
        "probs",
        "--label",
        "label",
        "--per-row",
        str(tmp_path),
    )
    assert "directory" in _assert_one_line_error(code, err)


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["score", "{path}", "--pred", "probs"], "one of the arguments --label --target"),
        (["score", "{path}", "--label", "label"], "--pred"),
        (
            ["score", "{path}", "--pred", "probs", "--label", "label", "--pred-kind", "odds"],
            "invalid choice: 'odds'",
        ),
        (
            ["score", "{path}", "--pred", "probs", "--label", "label", "--class-weight", "1,x"],
            "comma-separated numbers",
        ),
        (
            ["score", "{path}", "--pred", "probs", "--label", "label", "--batch-rows", "0"],
            "positive integer",
        ),
        (
            ["score", "{path}", "--pred", "probs", "--label", "label", "--eps", "tiny"],
            "'auto' or a number",
        ),
        (
            ["score", "{path}", "--pred", "probs", "--label", "label", "--target", "probs"],
            "not allowed with argument",
        ),
        (
            ["score", "{path}", "--pred", "probs", "--label", "label", "--bogus"],
            "unrecognized arguments: --bogus",
        ),
        (
            ["score", "{path}", "--pred", "probs", "--label", "label", "--eps", "0.7"],
            "eps must be 'auto' or a number in [0, 0.5)",
        ),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        ([], "required: COMMAND"),
    ],
)
def test_bad_options_are_one_line(argv, match, tmp_path, capsys):
    path = _write(tmp_path)
    code, out, err = _run(capsys, *(a.replace("{path}", str(path)) for a in argv))
    assert out == ""
    assert match in _assert_one_line_error(code, err)


def test_soft_warning_is_one_line_and_strict_makes_it_an_error(tmp_path, capsys):
    path = _write(tmp_path, scale=1.01)  # rows sum to 1.01
    code, out, err = _run(
        capsys,
        "score",
        str(path),
        "--pred",
        "probs",
        "--label",
        "label",
        "--json",
        "--batch-rows",
        "10",
    )
    assert code == 0
    assert json.loads(out)["n_rows"] == N_ROWS
    assert err.startswith("fastxent: warning: ") and err.count("\n") == 1
    assert "must sum to 1" in err
    code, _, err = _run(
        capsys, "score", str(path), "--pred", "probs", "--label", "label", "--strict"
    )
    assert "must sum to 1" in _assert_one_line_error(code, err)


def test_progress_flags(tmp_path, capsys):
    path = _write(tmp_path)
    base = ["score", str(path), "--pred", "probs", "--label", "label", "--json"]
    code, _, err = _run(capsys, *base)  # stderr is not a terminal here: no bar by default
    assert code == 0 and err == ""
    code, _, err = _run(capsys, *base, "--progress")
    assert code == 0 and f"{N_ROWS} / {N_ROWS} rows" in err and err.endswith("\n")
    code, _, err = _run(capsys, *base, "--no-progress")
    assert code == 0 and err == ""


def test_progress_by_default_on_a_terminal(tmp_path, capsys, monkeypatch):
    path = _write(tmp_path)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    code, _, err = _run(capsys, "score", str(path), "--pred", "probs", "--label", "label", "--json")
    assert code == 0 and "rows (100.0%)" in err
    code, _, err = _run(
        capsys, "score", str(path), "--pred", "probs", "--label", "label", "--json", "--no-progress"
    )
    assert code == 0 and err == ""


def test_keyboard_interrupt_exits_130(tmp_path, capsys, monkeypatch):
    path = _write(tmp_path)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(scoring, "score", interrupted)
    code, out, err = _run(capsys, "score", str(path), "--pred", "probs", "--label", "label")
    assert code == EXIT_INTERRUPTED == 130
    assert out == "" and err == "fastxent: interrupted\n"


def test_permission_error_is_one_line(tmp_path, capsys, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/data/secret.parquet")

    monkeypatch.setattr(scoring, "score", denied)
    code, _, err = _run(capsys, "score", "x", "--pred", "probs", "--label", "label")
    assert _assert_one_line_error(code, err) == (
        "fastxent: error: Permission denied: /data/secret.parquet\n"
    )


def test_a_bug_keeps_its_traceback(capsys, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(scoring, "score", broken)
    with pytest.raises(ZeroDivisionError):
        main(["score", "x", "--pred", "probs", "--label", "label"])


# ---------------------------------------------------------------------------------------------
# demo
# ---------------------------------------------------------------------------------------------


def _demo_reference() -> tuple[float, float]:
    table = pq.read_table(scoring.demo_path())
    probs = table["probs"].combine_chunks()
    x = np.asarray(probs.flatten()).reshape(len(probs), 10)
    y = table["label"].to_numpy()
    return log_loss(y, x, labels=np.arange(10)), float(np.mean(np.argmax(x, axis=1) == y))


def test_demo_json_equals_sklearn(capsys):
    code, out, err = _run(capsys, "demo", "--json")
    assert code == 0 and err == ""
    doc = json.loads(out)
    assert set(doc) == {"source", "description", "scores"}
    assert "load_digits" in doc["description"]
    loss, accuracy = _demo_reference()
    for kind in ("probs", "logits"):
        assert list(doc["scores"][kind]) == SCORE_FIELDS
        assert doc["scores"][kind]["n_rows"] == 450
        assert doc["scores"][kind]["accuracy"] == pytest.approx(accuracy)
    assert doc["scores"]["probs"]["loss"] == pytest.approx(loss, rel=1e-6)
    assert doc["scores"]["logits"]["loss"] == pytest.approx(loss, rel=1e-6)


def test_demo_human(capsys):
    code, out, _ = _run(capsys, "demo")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("data: test-set predictions of a standardised logistic")
    assert lines[1] == f"file: {scoring.demo_path()}"
    assert lines[3].split() == ["pred=probs", "pred=logits"]
    loss_line = next(line for line in lines if line.startswith("loss "))
    loss, _ = _demo_reference()
    assert [float(v) for v in loss_line.split()[1:]] == pytest.approx([loss, loss], rel=1e-5)


# ---------------------------------------------------------------------------------------------
# generate
# ---------------------------------------------------------------------------------------------


def test_generate_then_score(tmp_path, capsys):
    out_path = tmp_path / "gen.parquet"
    code, out, err = _run(
        capsys,
        "generate",
        str(out_path),
        "--rows",
        "500",
        "--classes",
        "6",
        "--logits",
        "--dtype",
        "float64",
        "--seed",
        "3",
        "--row-group-mb",
        "0.01",
    )
    assert code == 0 and err == ""
    assert out.startswith(f"wrote {out_path} (Parquet, ")
    assert "500 rows x 6 classes of float64 logits" in out
    meta = pq.read_metadata(out_path)
    assert meta.num_rows == 500 and meta.num_row_groups > 1
    code, out, _ = _run(
        capsys,
        "score",
        str(out_path),
        "--pred",
        "pred",
        "--pred-kind",
        "logits",
        "--label",
        "label",
        "--json",
    )
    assert code == 0 and json.loads(out)["n_rows"] == 500
    # Existing output: refused without --overwrite.
    code, _, err = _run(capsys, "generate", str(out_path), "--rows", "5", "--classes", "2")
    assert "already exists" in _assert_one_line_error(code, err)
    code, out, _ = _run(
        capsys,
        "generate",
        str(out_path),
        "--rows",
        "5",
        "--classes",
        "2",
        "--overwrite",
        "--soft",
        "--json",
    )
    info = json.loads(out)
    assert code == 0 and info["rows"] == 5 and info["soft"] is True


def test_generate_arrow_and_bad_values(tmp_path, capsys):
    code, out, _ = _run(
        capsys,
        "generate",
        str(tmp_path / "g.arrow"),
        "--rows",
        "20",
        "--classes",
        "3",
        "--log-probs",
        "--compression",
        "zstd",
    )
    assert code == 0 and "(Arrow IPC, " in out and "log_probs" in out
    code, _, err = _run(
        capsys, "generate", str(tmp_path / "g.parquet"), "--rows", "20", "--classes", "1"
    )
    assert "classes must be >= 2" in _assert_one_line_error(code, err)
    code, _, err = _run(
        capsys,
        "generate",
        str(tmp_path / "g.parquet"),
        "--rows",
        "20",
        "--classes",
        "3",
        "--logits",
        "--log-probs",
    )
    assert "not allowed with argument" in _assert_one_line_error(code, err)


# ---------------------------------------------------------------------------------------------
# Help, version, entry points
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [[], ["score"], ["demo"], ["generate"]])
def test_help(command, capsys):
    code, out, err = _run(capsys, *command, "--help")
    assert code == 0 and err == ""
    assert "usage: fastxent" in out
    assert "example" in out


def test_version(capsys):
    code, out, _ = _run(capsys, "--version")
    assert code == 0 and out == f"fastxent {fx.__version__}\n"


def test_python_dash_m(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "fastxent", "--help"],
        capture_output=True,
        text=True,
        env=_child_env(),
        timeout=60,
    )
    assert out.returncode == 0
    for command in ("score", "demo", "generate"):
        assert command in out.stdout
    missing = str(tmp_path / "nope.parquet")
    out = subprocess.run(
        [sys.executable, "-m", "fastxent", "score", missing, "--pred", "p", "--label", "y"],
        capture_output=True,
        text=True,
        env=_child_env(),
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr == f"fastxent: error: {missing} does not exist.\n"


def test_python_dash_m_demo():
    out = subprocess.run(
        [sys.executable, "-m", "fastxent", "demo", "--json"],
        capture_output=True,
        text=True,
        env=_child_env(),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    loss, _ = _demo_reference()
    assert json.loads(out.stdout)["scores"]["probs"]["loss"] == pytest.approx(loss, rel=1e-6)


def _console_script() -> str | None:
    """The installed ``fastxent`` command: beside this interpreter (a venv used without
    activating it, as the README's test command does), else on PATH."""
    beside = Path(sys.executable).with_name("fastxent")
    return str(beside) if beside.exists() else shutil.which("fastxent")


@pytest.mark.skipif(_console_script() is None, reason="the fastxent command is not installed")
def test_console_script():
    out = subprocess.run(
        [_console_script(), "--version"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and out.stdout.startswith("fastxent ")
