"""Tests for fastxent.dask: the same scores on a real Dask LocalCluster, per-row parts, faults.

One LocalCluster (2 worker processes, 1 thread each) serves the module; the whole file takes
about 20 s, so it runs in the default suite (deselect with ``-m "not dask"``).
"""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

distributed = pytest.importorskip("distributed")

import fastxent as fx  # noqa: E402
import fastxent.dask as fxd  # noqa: E402
import fastxent.scoring as scoring  # noqa: E402
from fastxent._errors import InvalidTypeError, InvalidValueError, SoftWarning  # noqa: E402
from fastxent.generate import OutputExistsError  # noqa: E402

pytestmark = pytest.mark.dask

N_CLASSES = 6
FILE_ROWS = (700, 1, 450, 900)  # one file of a single row; row groups of 128 rows
ROW_GROUP_ROWS = 128
N_ROWS = sum(FILE_ROWS)
REL = 1e-12
SCORE_FLOATS = ("loss", "loss_sum", "weight_sum", "perplexity", "accuracy", "stderr")
SCORE_COUNTS = ("n_rows", "n_scored", "n_ignored", "n_skipped")


# ---------------------------------------------------------------------------------------------
# Fixtures
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    """A real cluster: 2 worker processes (restarted by their nanny if killed), 1 thread each."""
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as c,
    ):
        yield c


class Data:
    def __init__(self, root: Path, x, labels, labels_ign, weights):
        self.root, self.x, self.labels, self.labels_ign = root, x, labels, labels_ign
        self.weights = weights


def _fsl(x: np.ndarray) -> pa.FixedSizeListArray:
    return pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), x.shape[1])


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Data:
    """A hive-partitioned dataset: 4 files of several row groups each, ~200 KB."""
    rng = np.random.default_rng(20260823)
    logits = rng.normal(size=(N_ROWS, N_CLASSES)) * 2
    x = np.exp(logits - logits.max(axis=1, keepdims=True))
    x = (x / x.sum(axis=1, keepdims=True)).astype(np.float32)
    labels = rng.integers(0, N_CLASSES, N_ROWS)
    labels[rng.choice(N_ROWS, 40, replace=False)] = -1  # for ignore_index
    weights = rng.random(N_ROWS) * 2
    targets = rng.dirichlet(np.ones(N_CLASSES), N_ROWS)
    table = pa.table(
        {
            "id": pa.array(np.arange(N_ROWS) + 10_000),
            "p": _fsl(x),
            "z": _fsl(logits.astype(np.float32)),
            "t": _fsl(targets),
            "y": pa.array(np.where(labels < 0, 0, labels)),
            "y_ign": pa.array(labels),
            "w": pa.array(weights),
        }
    )
    root = tmp_path_factory.mktemp("dask") / "hive"
    start = 0
    for k, n in enumerate(FILE_ROWS):
        part = root / f"split=s{k}"
        part.mkdir(parents=True)
        pq.write_table(table.slice(start, n), part / "data.parquet", row_group_size=ROW_GROUP_ROWS)
        start += n
    (root / "_SUCCESS").write_text("")
    return Data(root, x, np.where(labels < 0, 0, labels), labels, weights)


def _assert_same(got: fx.Score, expected: fx.Score) -> None:
    for name in SCORE_COUNTS:
        assert getattr(got, name) == getattr(expected, name), name
    for name in SCORE_FLOATS:
        want = getattr(expected, name)
        if want is None:
            assert getattr(got, name) is None, name
        else:
            assert getattr(got, name) == pytest.approx(want, rel=REL, abs=0), name


# ---------------------------------------------------------------------------------------------
# The same scores
# ---------------------------------------------------------------------------------------------

CASES = {
    "probs": {"pred": "p", "label": "y"},
    "weighted": {
        "pred": "p",
        "label": "y_ign",
        "weight": "w",
        "class_weight": [1.0, 2.0, 0.5, 1.0, 3.0, 1.0],
        "ignore_index": -1,
    },
    "logits_smoothed": {"pred": "z", "label": "y", "pred_kind": "logits", "label_smoothing": 0.1},
    "soft_targets": {"pred": "z", "target": "t", "pred_kind": "logits", "weight": "w"},
}


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("piece_rows", [1, None], ids=["row_group_tasks", "default_tasks"])
def test_equals_the_local_score(client, data, case, piece_rows):
    options = CASES[case]
    expected = fx.score(data.root, **options)
    got = fxd.score(data.root, client=client, piece_rows=piece_rows, batch_rows=50, **options)
    _assert_same(got, expected)
    assert got.n_rows == N_ROWS


def test_default_client_progress_and_merge_tree_of_many_pieces(client, data, capsys):
    # 19 row-group pieces: two levels of merge tasks (8 + 8 + 3, then 3).
    expected = fx.score(data.root, pred="p", label="y")
    got = fxd.score(data.root, pred="p", label="y", piece_rows=1, progress=True)
    _assert_same(got, expected)
    assert f"scored {N_ROWS:,} / {N_ROWS:,} rows (100.0%)" in capsys.readouterr().err


def test_one_piece(client, data):
    path = data.root / "split=s1" / "data.parquet"  # a single row
    _assert_same(
        fxd.score(path, client=client, pred="p", label="y"), fx.score(path, pred="p", label="y")
    )


def test_data_error_names_the_global_row(client, data, tmp_path):
    root = tmp_path / "bad"
    for k, n in enumerate((300, 200)):
        labels = np.zeros(n, dtype=np.int64)
        if k == 1:
            labels[57] = N_CLASSES + 3
        probs = _fsl(np.full((n, N_CLASSES), 1 / N_CLASSES))
        (root / f"k={k}").mkdir(parents=True)
        pq.write_table(pa.table({"p": probs, "y": labels}), root / f"k={k}" / "f.parquet")
    with pytest.raises(InvalidValueError) as local:
        fx.score(root, pred="p", label="y")
    out = tmp_path / "rows"
    with pytest.raises(InvalidValueError) as remote:
        fxd.score(root, client=client, pred="p", label="y", per_row=out)
    assert "row 357 has 9" in str(local.value)
    assert str(remote.value) == str(local.value)
    assert not out.exists()  # a failed run leaves no output behind


def test_soft_problems_warn_once(client, tmp_path):
    x = np.full((300, 4), 0.25)
    x[[10, 250]] *= 1.1  # rows that do not sum to 1, in two pieces
    path = tmp_path / "soft.parquet"
    pq.write_table(
        pa.table({"p": _fsl(x), "y": np.zeros(300, dtype=np.int64)}), path, row_group_size=100
    )
    with pytest.warns(SoftWarning) as record:
        fxd.score(path, client=client, pred="p", label="y", piece_rows=1)
    assert len(record) == 1
    assert "2 rows do not, the first is row 10" in str(record[0].message)  # totals, all pieces
    assert record[0].filename == __file__
    with pytest.raises(InvalidValueError, match="must sum to 1"):
        fxd.score(path, client=client, pred="p", label="y", strict=True)


# ---------------------------------------------------------------------------------------------
# Per-row parts
# ---------------------------------------------------------------------------------------------


def _read_parts(out: Path) -> pa.Table:
    return ds.dataset(out, format="parquet").to_table().sort_by("row")


def _check_parts(out: Path, data: Data, n_parts: int) -> pa.Table:
    names = sorted(os.listdir(out))
    assert len(names) == n_parts and all(fxd._PART_NAME.fullmatch(n) for n in names), names
    rows = _read_parts(out)
    np.testing.assert_array_equal(rows["row"].to_numpy(), np.arange(N_ROWS))  # each row once
    return rows


def test_per_row_parts(client, data, tmp_path):
    out = tmp_path / "rows"
    options = {"pred": "p", "label": "y_ign", "weight": "w", "ignore_index": -1}
    got = fxd.score(
        data.root, client=client, per_row=out, keep=["id"], piece_rows=1, batch_rows=50, **options
    )
    n_pieces = sum(math.ceil(n / ROW_GROUP_ROWS) for n in FILE_ROWS)
    rows = _check_parts(out, data, n_pieces)
    assert rows.column_names == ["row", "loss", "id"]
    expected = fx.cross_entropy(
        data.x, data.labels_ign, sample_weight=data.weights, ignore_index=-1, reduction="none"
    )
    np.testing.assert_allclose(rows["loss"].to_numpy(), expected, rtol=REL, atol=0)
    np.testing.assert_array_equal(rows["id"].to_numpy(), np.arange(N_ROWS) + 10_000)
    assert rows["loss"].to_numpy().sum() == pytest.approx(got.loss_sum, rel=REL)
    meta = json.loads(rows.schema.metadata[scoring.PER_ROW_METADATA_KEY])
    assert meta["pred"] == "p" and meta["label"] == "y_ign" and meta["weight"] == "w"
    first = pq.read_table(out / "part-000000000128.parquet")
    assert first["row"][0].as_py() == 128 and first.num_rows == ROW_GROUP_ROWS

    # An existing directory is refused; overwrite replaces the parts, stale ones included.
    with pytest.raises(OutputExistsError, match="not empty"):
        fxd.score(data.root, client=client, per_row=out, **options)
    fxd.score(data.root, client=client, per_row=out, overwrite=True, **options)
    _check_parts(out, data, len(FILE_ROWS))  # one default-sized piece per file now


def test_per_row_refusals(client, data, tmp_path):
    out = tmp_path / "rows"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="did not write"):
        fxd.score(data.root, client=client, pred="p", label="y", per_row=out, overwrite=True)
    assert os.listdir(out) == ["notes.txt"]
    with pytest.raises(OSError, match="is a file"):
        fxd.score(data.root, client=client, pred="p", label="y", per_row=out / "notes.txt")
    with pytest.raises(InvalidValueError, match="inside the source directory"):
        fxd.score(data.root, client=client, pred="p", label="y", per_row=data.root / "rows")
    assert not (data.root / "rows").exists()
    with pytest.raises(InvalidValueError, match="needs per_row"):
        fxd.score(data.root, client=client, pred="p", label="y", keep=["id"])


# ---------------------------------------------------------------------------------------------
# A worker dies mid-run
# ---------------------------------------------------------------------------------------------


class KillOnce(distributed.WorkerPlugin):
    """Kill the worker process the first time any worker moves a piece task ``start -> finish``.

    ``executing -> memory`` is the hard case: the task has finished and written its per-row
    part, but its result dies with the process, so the task runs again elsewhere.
    """

    def __init__(self, marker: str, start: str | None, finish: str) -> None:
        self.marker, self.start, self.finish = marker, start, finish

    def transition(self, key, start, finish, **kwargs):
        name = key[0] if isinstance(key, tuple) else key
        if not str(name).startswith("fastxent-piece") or finish != self.finish:
            return
        if self.start is not None and start != self.start:
            return
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return  # once only, across processes
        os.write(fd, repr(key).encode())
        os.close(fd)
        os._exit(1)


@pytest.mark.parametrize(
    ("start", "finish"),
    [(None, "executing"), ("executing", "memory")],
    ids=["before_running", "after_writing_its_part"],
)
def test_a_worker_killed_mid_run(client, data, tmp_path, start, finish):
    marker = tmp_path / "killed"
    pids_before = set(client.run(os.getpid).values())
    name = f"kill-once-{finish}"
    client.register_plugin(KillOnce(str(marker), start, finish), name=name)
    try:
        out = tmp_path / "rows"
        got = fxd.score(
            data.root,
            client=client,
            pred="p",
            label="y",
            piece_rows=1,
            batch_rows=50,
            per_row=out,
        )
    finally:
        client.unregister_worker_plugin(name)
    assert marker.exists()  # a worker did die
    _assert_same(got, fx.score(data.root, pred="p", label="y"))
    rows = _check_parts(out, data, sum(math.ceil(n / ROW_GROUP_ROWS) for n in FILE_ROWS))
    np.testing.assert_allclose(
        rows["loss"].to_numpy(), fx.cross_entropy(data.x, data.labels, reduction="none"), rtol=REL
    )
    client.wait_for_workers(2, timeout=60)
    assert set(client.run(os.getpid).values()) != pids_before  # the nanny started a new one


# ---------------------------------------------------------------------------------------------
# Clients, sources, command line, imports
# ---------------------------------------------------------------------------------------------


def test_in_memory_sources_are_refused(client, data):
    table = pa.table({"p": _fsl(data.x), "y": data.labels})
    with pytest.raises(InvalidTypeError, match=r"fastxent\.score"):
        fxd.score(table, client=client, pred="p", label="y")


@pytest.mark.parametrize("bad", ["local:0", "local:x", 3])
def test_bad_client(data, bad):
    with pytest.raises((InvalidValueError, InvalidTypeError), match="client"):
        fxd.score(data.root, client=bad, pred="p", label="y")


def test_unreachable_scheduler(data):
    import dask

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free once closed: nobody listens there
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(fxd.ClusterError, match=f"tcp://127.0.0.1:{port}"):
            fxd.score(data.root, client=f"tcp://127.0.0.1:{port}", pred="p", label="y")


def _python(code: str, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        **kwargs,
    )


def test_cli_dask_local(data, tmp_path):
    out = tmp_path / "rows"
    argv = ["score", str(data.root), "--pred", "p", "--label", "y", "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "fastxent", *argv, "--dask", "local:2", "--per-row", str(out)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    expected = fx.score(data.root, pred="p", label="y").to_dict()
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == (pytest.approx(value, rel=REL) if isinstance(value, float) else value)
    assert _read_parts(out).num_rows == N_ROWS


def test_no_default_client_and_no_dask_import(data):
    proc = _python(
        f"""
        import sys
        import fastxent
        s = fastxent.score({str(data.root)!r}, pred="p", label="y")
        assert s.n_rows == {N_ROWS}
        assert not [m for m in sys.modules if m == "dask" or m.startswith("dask.")], "dask"
        assert "distributed" not in sys.modules
        import fastxent.dask
        try:
            fastxent.dask.score({str(data.root)!r}, pred="p", label="y")
        except ValueError as exc:
            print(exc)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert "no default client" in proc.stdout


def test_missing_dask_names_the_extra():
    proc = _python(
        """
        import sys
        sys.modules["distributed"] = None  # as if not installed
        try:
            import fastxent.dask
        except ImportError as exc:
            print(type(exc).__name__, exc)
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert 'pip install "fastxent[dask]"' in proc.stdout
    assert proc.stdout.startswith("MissingDependencyError")
