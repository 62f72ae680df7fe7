"""Score a Parquet / Arrow IPC dataset on a Dask cluster: :func:`score`.

:func:`fastxent.dask.score` takes the options of :func:`fastxent.score` and gives the same
:class:`fastxent.Score` (to ~1e-15 relative: the partial sums are exactly rounded, so how the
rows are split and merged does not matter). It needs the optional dependencies
(``pip install "fastxent[dask]"``: dask and distributed); ``import fastxent`` never imports
them.

How it works
------------
1. The client opens the source and splits it into :class:`fastxent.arrow.Piece` objects: runs
   of consecutive row groups (Parquet) or record batches (Arrow IPC) of one file, about one
   batch of rows each (``piece_rows``); a row group is never split, so a file of one row group
   is one task. No data is read on the client beyond file footers (and one row when the width
   of variable-size lists must be learnt).
   ``dask.dataframe`` is not involved (it would turn list columns into object columns).
2. One task per piece streams it with the same bounded-memory reader as :func:`fastxent.score`
   (a few batches in memory, decoding overlapping the kernel) into its own
   :class:`fastxent.Accumulator`, numbering rows from the piece's global row offset, so an
   error names the row in the whole dataset.
3. The accumulators are merged **on the cluster by a tree of merge tasks**, up to 8 inputs per
   merge (depth ``ceil(log8(n_pieces))``); merges are submitted up front and run as soon as
   their inputs exist, while other pieces are still being scored. The client fetches only the
   root, and watches the piece tasks as they complete, to draw progress and to stop at the
   first error (the remaining tasks are cancelled).

Tasks reference module-level functions of fastxent (pickled by name, not by value) and the
options travel once, as a task of their own, however many pieces there are. Each worker
process imports fastxent on its first task and loads the compiled Numba kernels from the
on-disk cache; later tasks in that process reuse them. Tasks sharing a worker process take
turns in the kernels, which use every Numba thread anyway.

Failures
--------
When a worker dies (out of memory, a killed process, a lost machine), the scheduler reruns the
tasks whose results it held, elsewhere (up to ``distributed.scheduler.allowed-failures`` times
per task, 3 by default, before failing with ``KilledWorker``). A rerun piece is counted once:
a result exists only once a task has finished, and a lost result is recomputed, not added.
An error in the data (a bad label, a null) fails the call with the same exception and message
as :func:`fastxent.score`.

Per-row output
--------------
With ``per_row=DIR`` every task writes the losses of its piece to its own file,
``DIR/part-<row offset, 12 digits>.parquet``, under a temporary name renamed when complete.
The name depends only on the piece, so a task rerun after a worker died replaces its file
rather than adding a second one. Parts are written into a hidden staging directory inside DIR
and moved into DIR only when every task has succeeded: a failed run leaves DIR as it was.
``pyarrow.dataset.dataset(DIR)`` then reads one dataset holding every input row exactly once
(column ``row`` is the global input row number; the parts are in row order). DIR must be on a
file system the client and every worker see under the same path; so must the source.

Workers and the Numba cache
---------------------------
Kernels compile on first use and are cached on disk. Where the installed fastxent is not
writable (a read-only site-packages, a container image), point every worker at a writable
cache **before the first fastxent task runs in the worker process** (Numba fixes a kernel's
cache directory when the kernel module is imported), or each worker process compiles the
kernels again (seconds per kernel) whenever it starts or restarts:

* in the environment of the worker command::

      NUMBA_CACHE_DIR=/shared/numba-cache dask worker tcp://scheduler:8786

* through Dask's configuration, which the nanny applies to each worker process it starts
  (restarted ones included)::

      export DASK_DISTRIBUTED__NANNY__ENVIRON='{"NUMBA_CACHE_DIR": "/shared/numba-cache"}'

* for a cluster started from Python, ``LocalCluster(env={"NUMBA_CACHE_DIR": ...})`` (passed
  to each worker's nanny).

A ``WorkerPlugin`` whose ``setup`` sets ``os.environ["NUMBA_CACHE_DIR"]`` also works if it is
registered before any task imports Numba in the worker (plugins are set up on restarted
workers too); ``client.run`` reaches only the workers running now. Several worker processes
on one machine should also share its cores: ``NUMBA_NUM_THREADS`` = cores / processes
(``client="local:N"`` sets this unless ``NUMBA_NUM_THREADS`` is already set).
"""

from __future__ import annotations

import copy
import os
import re
import secrets
import shutil
import threading
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import scoring
from ._errors import FastxentError, InvalidTypeError, InvalidValueError, SoftWarning, SourceError
from .accumulate import Accumulator, Score


class MissingDependencyError(FastxentError, ImportError):
    """fastxent.dask was imported without dask and distributed installed."""


class ClusterError(FastxentError, ConnectionError):
    """The Dask scheduler cannot be reached."""


try:
    import distributed
except ImportError as exc:  # pragma: no cover - exercised in a subprocess by the tests
    raise MissingDependencyError(
        f"fastxent.dask needs dask and distributed ({exc}); install them with "
        f'pip install "fastxent[dask]".'
    ) from exc

if TYPE_CHECKING:
    import pyarrow as pa

    from ._progress import Progress
    from .arrow import Piece

__all__ = ["ClusterError", "MissingDependencyError", "score"]

#: Accumulators merged by one merge task.
MERGE_FANIN = 8
#: Worker processes of ``client="local"``.
DEFAULT_LOCAL_WORKERS = 2
_PART_NAME = re.compile(r"part-\d{12,}\.parquet")
_STAGING_PREFIX = ".fastxent-staging-"
# Tasks running in one worker process take turns in the kernels: each kernel call already
# uses every Numba thread, and Numba's workqueue threading layer must not be entered by two
# threads at once.
_KERNEL_LOCK = threading.Lock()


def score(
    source: Any,
    *,
    client: Any = None,
    pred: str,
    label: str | None = None,
    target: str | None = None,
    weight: str | None = None,
    pred_kind: str = "probs",
    class_weight: Sequence[float] | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    eps: float | str = "auto",
    nan_policy: str = "raise",
    strict: bool = False,
    batch_rows: int | None = None,
    per_row: str | os.PathLike[str] | None = None,
    keep: Sequence[str] = (),
    overwrite: bool = False,
    progress: bool = False,
    piece_rows: int | None = None,
) -> Score:
    """Cross entropy of saved predictions, scored in parallel on a Dask cluster.

    The same loss, options and result as :func:`fastxent.score`; the pieces of the source
    (runs of row groups) are scored by tasks on the cluster's workers and their accumulators
    merged by a tree of tasks. See the module documentation for how, and for what happens
    when a worker dies.

    Parameters
    ----------
    source : str or os.PathLike
        A Parquet file, a directory of Parquet / Arrow IPC files (hive ``key=value/`` layout
        allowed) or an Arrow IPC file, readable under this path by the client and every
        worker. In-memory tables and streams cannot be sent to workers: use
        :func:`fastxent.score` for them.
    client : distributed.Client, str or None, default None
        Where to run. None: the current default client (:func:`distributed.get_client`).
        A scheduler address such as ``"tcp://127.0.0.1:8786"``: connect for this call.
        ``"local"`` or ``"local:N"``: start a ``LocalCluster`` of N worker processes (default
        2) with one thread each for this call, and close it afterwards.
    pred, label, target, weight, pred_kind, class_weight, ignore_index, label_smoothing, eps, \
nan_policy, strict, keep, overwrite, progress
        As for :func:`fastxent.score`. ``progress`` counts rows as pieces finish.
    batch_rows : int, optional
        Rows per batch within a task; by default about 64 MiB of decoded predictions.
    per_row : str or os.PathLike, optional
        A **directory** to write the per-row losses to, one Parquet file per piece (columns
        ``row``, ``loss`` and the ``keep`` columns, as for :func:`fastxent.score`). Created
        if missing; a non-empty directory is refused unless ``overwrite`` is True, and then
        only fastxent's own ``part-*.parquet`` files are replaced (other files are an error,
        as they would be read as part of the dataset). Read it back with
        ``pyarrow.dataset.dataset(per_row)``.
    piece_rows : int, optional
        Rows per task: consecutive row groups of one file are packed into a task while it
        stays within this many rows; a larger row group is a task of its own. By default one
        batch (``batch_rows``). ``piece_rows=1`` makes every row group a task.

    Returns
    -------
    Score
        Equal to :func:`fastxent.score` on the same source and options to ~1e-15 relative
        (the row counts exactly).

    Raises
    ------
    InvalidValueError, InvalidTypeError, SourceError
        As :func:`fastxent.score`, with the same messages (raised on the client, re-raised
        from the worker that found the problem); also for a bad ``client`` or no default
        client.
    OutputExistsError
        ``per_row`` is a non-empty directory and ``overwrite`` is False.
    ClusterError
        The scheduler at ``client`` cannot be reached.

    Examples
    --------
    >>> import fastxent.dask
    >>> from fastxent.scoring import demo_path
    >>> s = fastxent.dask.score(demo_path(), client="local:2", pred="probs",
    ...                         label="label")  # doctest: +SKIP
    >>> round(s.loss, 4), s.n_rows  # doctest: +SKIP
    (0.1652, 450)
    """
    from . import arrow

    pred, label, target, weight, keep = scoring._check_args(
        pred=pred,
        label=label,
        target=target,
        weight=weight,
        keep=keep,
        per_row=per_row,
        batch_rows=batch_rows,
    )
    if piece_rows is not None and (
        isinstance(piece_rows, bool)
        or not isinstance(piece_rows, (int, np.integer))
        or piece_rows < 1
    ):
        raise InvalidValueError(
            f"piece_rows must be a positive integer or None; got {piece_rows!r}."
        )
    options: dict[str, Any] = {
        "pred_kind": pred_kind,
        "weight": class_weight,
        "ignore_index": ignore_index,
        "label_smoothing": label_smoothing,
        "eps": eps,
        "nan_policy": nan_policy,
        "strict": strict,
    }
    empty = Accumulator(**options)  # checks the options before anything else happens
    out_dir = None if per_row is None else _check_output_dir(per_row, overwrite=bool(overwrite))
    if isinstance(source, (str, os.PathLike)):
        source = os.path.abspath(os.fspath(source))  # workers may run in another directory
    src = arrow.open_source(source)
    if src.kind in ("table", "stream"):
        raise InvalidTypeError(
            f"source must be a Parquet or Arrow IPC file or directory that every worker can "
            f"open; got an in-memory {src.kind}. Score it with fastxent.score, or write it to "
            f"Parquet first."
        )
    if out_dir is not None:
        scoring._check_not_an_input(out_dir, source, src)  # not among the data files
    plan = scoring._plan(src, pred=pred, label=label, target=target, weight=weight, keep=keep)
    rows_per_batch = (
        batch_rows if batch_rows is not None else scoring._default_batch_rows(src, plan)
    )
    assert rows_per_batch is not None  # None only for streams
    n_classes, row_bytes = _row_shape(src, plan)
    pieces = [
        replace(p, path=os.path.abspath(p.path))
        for p in src.pieces(target_rows=piece_rows if piece_rows is not None else rows_per_batch)
    ]
    if not pieces:
        empty.result()  # raises: "no rows were scored: the input is empty."
    job = _Job(
        plan=plan,
        options=options,
        batch_rows=int(rows_per_batch),
        n_classes=n_classes,
        part_dir=None,
        keep_schema=None,
        metadata={},
    )

    with _connect(client) as dask_client:
        parts = None
        try:
            if out_dir is not None:
                import pyarrow as pa

                parts = _PartsDir(out_dir, overwrite=bool(overwrite))
                job = replace(
                    job,
                    part_dir=str(parts.staging),
                    keep_schema=pa.schema([src.schema.field(c) for c in plan.keep]),
                    metadata={
                        "pred": pred,
                        "label": label,
                        "target": target,
                        "weight": weight,
                        "pred_kind": pred_kind,
                    },
                )
            total = _run_tasks(
                dask_client, pieces, job, progress=bool(progress), row_bytes=row_bytes
            )
            result = total.acc.result()
            expected = sum(p.num_rows for p in pieces)
            if result.n_rows != expected or (parts is not None and total.rows_written != expected):
                raise RuntimeError(
                    f"fastxent bug: the merged result counts {result.n_rows} rows "
                    f"({total.rows_written} written per row); the pieces hold {expected}."
                )
            if parts is not None:
                parts.commit([_part_name(p) for p in pieces])
        except BaseException:
            if parts is not None:
                parts.abort()
            raise
    for message in total.acc.soft_problems():
        # Once, with the totals over every piece; stacklevel 2: the caller of score().
        warnings.warn(message + scoring._SOFT_FIX, SoftWarning, stacklevel=2)
    return result


# --------------------------------------------------------------------------------------------
# Tasks: module-level, so they are pickled by reference
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Job:
    """What every piece task needs besides its piece; sent to the cluster once."""

    plan: scoring._Plan
    options: dict[str, Any]  # Accumulator options
    batch_rows: int
    n_classes: int | None  # the width every row must have, when known up front
    part_dir: str | None  # where tasks write per-row parts (the staging directory)
    keep_schema: pa.Schema | None  # types of the keep columns
    metadata: dict[str, Any]  # per-row file metadata


@dataclass(frozen=True)
class _Partial:
    """A piece task's result, or the merge of several."""

    acc: Accumulator
    rows_written: int


def _pass_job(job: _Job) -> _Job:
    return job


def _score_piece(piece: Piece, job: _Job) -> _Partial:
    """Score one piece into a new accumulator (and write its per-row part)."""
    from .arrow import iter_piece

    acc = Accumulator(**job.options)
    writer = None
    if job.part_dir is not None:
        assert job.keep_schema is not None
        path = Path(job.part_dir) / _part_name(piece)
        writer = scoring._RowWriter(path, job.keep_schema, job.plan.keep, job.metadata)
    try:
        scoring._score_batches(
            iter_piece(piece, job.plan.columns, job.batch_rows),
            job.plan,
            acc,
            batch_rows=job.batch_rows,
            row_offset=piece.row_offset,
            n_classes=job.n_classes,
            writer=writer,
            kernel_lock=_KERNEL_LOCK,
        )
        if acc.n_rows != piece.num_rows:
            raise SourceError(
                f"{piece.path} changed while it was being scored: its row groups {piece.units} "
                f"held {piece.num_rows} rows when the work was planned and {acc.n_rows} when "
                f"read."
            )
        if writer is not None:
            # A replace, not a create: a rerun of this task (its worker died after writing)
            # replaces the part instead of adding a second copy.
            writer.commit(overwrite=True)
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return _Partial(acc=acc, rows_written=0 if writer is None else writer.rows_written)


def _merge_partials(*partials: _Partial) -> _Partial:
    """Merge piece results. Inputs are left untouched: a rerun must not count them twice."""
    acc = copy.deepcopy(partials[0].acc)
    for p in partials[1:]:
        acc.merge(p.acc)
    return _Partial(acc=acc, rows_written=sum(p.rows_written for p in partials))


def _part_name(piece: Piece) -> str:
    return f"part-{piece.row_offset:012d}.parquet"


# --------------------------------------------------------------------------------------------
# Client side
# --------------------------------------------------------------------------------------------


def _row_shape(src: Any, plan: scoring._Plan) -> tuple[int | None, int]:
    """(n_classes if known, bytes per row of predictions or 0) of the source."""
    n_classes, itemsize = scoring._matrix_row(src.schema, plan.pred, plan.pred_wide)
    if n_classes is None and itemsize:
        n_classes = scoring._first_list_length(src, plan.pred[0]) or None
    return n_classes, (n_classes or 0) * (itemsize or 0)


def _run_tasks(
    client: distributed.Client,
    pieces: list[Piece],
    job: _Job,
    *,
    progress: bool,
    row_bytes: int,
) -> _Partial:
    """Submit the piece tasks and the merge tree; wait for the root."""
    from ._progress import Progress

    token = secrets.token_hex(6)
    # The options go to the scheduler once, as a task the pieces depend on, instead of once
    # per piece (class weights can be large); a lost copy is recomputed like any result.
    job_future = client.submit(_pass_job, job, key=f"fastxent-job-{token}")
    futures = [
        client.submit(_score_piece, piece, job_future, key=(f"fastxent-piece-{token}", i))
        for i, piece in enumerate(pieces)
    ]
    rows_of = {f.key: p.num_rows for f, p in zip(futures, pieces, strict=True)}
    root = _merge_tree(client, futures, token)
    bar: Progress | None = Progress(sum(rows_of.values())) if progress else None
    finished = distributed.as_completed(futures, loop=client.loop)
    # Only the root is held from here on: as_completed holds each piece until it finishes,
    # then only the merges (and the pieces only the job) need them, so memory is freed as the
    # tree is reduced.
    del futures, job_future
    try:
        for future in finished:
            if future.status != "finished":
                future.result()  # raises the task's exception, with its traceback
            if bar is not None:
                rows = rows_of[future.key]
                bar.update(rows, rows * row_bytes)
        total: _Partial = root.result()
    except BaseException:
        # Stop the rest: release the pieces still waiting and cancel the root, which releases
        # the tree under it. Only the root is cancelled: distributed (2026.8) fails an
        # assertion when a cancel reaches dependents that no client holds, and drops the
        # client's connection.
        finished.clear()
        client.cancel([root])
        raise
    finally:
        if bar is not None:
            bar.close()
    return total


def _merge_tree(client: distributed.Client, futures: list[Any], token: str) -> Any:
    """Merge ``futures`` by a tree of tasks, ``MERGE_FANIN`` at a time; return the root."""
    level = 0
    while len(futures) > 1:
        merged = []
        for start in range(0, len(futures), MERGE_FANIN):
            group = futures[start : start + MERGE_FANIN]
            if len(group) == 1:
                merged.append(group[0])  # nothing to merge it with at this level
                continue
            key = (f"fastxent-merge-{token}", level, start // MERGE_FANIN)
            merged.append(client.submit(_merge_partials, *group, key=key))
        futures = merged
        level += 1
    return futures[0]


@contextmanager
def _connect(client: Any) -> Iterator[distributed.Client]:
    """The client to use: the one given, the default one, or one made for this call."""
    if isinstance(client, distributed.Client):
        yield client
        return
    if client is None:
        try:
            current = distributed.get_client()
        except ValueError:
            raise InvalidValueError(
                "client must be given when no Dask client is running, that is a "
                "distributed.Client, a scheduler address such as 'tcp://127.0.0.1:8786', or "
                "'local[:N]' to start N worker processes here; got None and there is no "
                "default client."
            ) from None
        yield current
        return
    if not isinstance(client, str):
        raise InvalidTypeError(
            f"client must be a distributed.Client, a scheduler address or 'local[:N]'; got "
            f"{type(client).__name__}."
        )
    n_workers = _local_workers(client)
    if n_workers is not None:
        with _local_cluster(n_workers) as local:
            yield local
        return
    try:
        remote = distributed.Client(client, set_as_default=False)
    except OSError as exc:
        raise ClusterError(
            f"cannot connect to the Dask scheduler at {client!r}: {exc}. Start one with "
            f"`dask scheduler` and `dask worker <address>`, or use 'local[:N]'."
        ) from exc
    with remote:
        yield remote


def _local_workers(spec: str) -> int | None:
    """N for ``"local"`` / ``"local:N"``, None for anything else (a scheduler address)."""
    name, sep, count = spec.strip().partition(":")
    if name != "local":
        return None
    if not sep:
        return DEFAULT_LOCAL_WORKERS
    if not count.isdigit() or int(count) < 1:
        raise InvalidValueError(
            f"client 'local:N' must give a positive number of worker processes N, e.g. "
            f"'local:4'; got {spec!r}."
        )
    return int(count)


@contextmanager
def _local_cluster(n_workers: int) -> Iterator[distributed.Client]:
    env = {}
    if "NUMBA_NUM_THREADS" not in os.environ:
        # n processes share the cores; each runs its kernels on its own Numba thread pool.
        env["NUMBA_NUM_THREADS"] = str(max(1, _cpu_count() // n_workers))
    cluster = distributed.LocalCluster(
        n_workers=n_workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        env=env,
    )
    with cluster, distributed.Client(cluster, set_as_default=False) as local:
        yield local


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------------------------
# The per-row directory
# --------------------------------------------------------------------------------------------


def _check_output_dir(per_row: Any, *, overwrite: bool) -> Path:
    if not isinstance(per_row, (str, os.PathLike)):
        raise InvalidTypeError(f"per_row must be a path (str or os.PathLike); got {per_row!r}.")
    path = Path(os.path.abspath(os.fspath(per_row)))
    if not path.parent.is_dir():
        raise SourceError(f"output directory {str(path.parent)!r} does not exist.")
    if path.exists() and not path.is_dir():
        raise SourceError(
            f"per_row must be a directory with fastxent.dask (every task writes its own part "
            f"file); {str(path)!r} is a file."
        )
    if not path.is_dir():
        return path
    entries = sorted(os.listdir(path))
    if entries and not overwrite:
        raise _exists_error(
            f"per_row directory {str(path)!r} is not empty ({len(entries)} entries). Pass "
            f"overwrite=True (--overwrite) to replace the part files in it, or name a new "
            f"directory."
        )
    foreign = [e for e in entries if not (_PART_NAME.fullmatch(e) or e.startswith((".", "_")))]
    if foreign:
        raise _exists_error(
            f"per_row directory {str(path)!r} holds files fastxent did not write: "
            f"{foreign[:5]}; overwrite replaces only part-*.parquet files, and the others "
            f"would be read as part of the dataset. Move them away or name a new directory."
        )
    return path


def _exists_error(message: str) -> Exception:
    from .generate import OutputExistsError

    return OutputExistsError(message)


class _PartsDir:
    """A per-row output directory; parts are staged in a hidden subdirectory until commit."""

    def __init__(self, path: Path, *, overwrite: bool) -> None:
        self.path = path
        self.overwrite = overwrite
        self._created = False
        if not path.is_dir():
            path.mkdir()
            self._created = True
        self.staging = path / f"{_STAGING_PREFIX}{secrets.token_hex(6)}"
        self.staging.mkdir()

    def commit(self, names: list[str]) -> None:
        """Move the staged parts into the directory, replacing an earlier run's parts."""
        staged = set(os.listdir(self.staging))
        missing = [name for name in names if name not in staged]
        if missing:
            raise SourceError(
                f"per_row must be on a file system that the client and every worker see under "
                f"the same path; {len(missing)} of {len(names)} part files written by the "
                f"workers are missing from {str(self.staging)!r} (e.g. {missing[0]})."
            )
        wanted = set(names)
        for entry in os.listdir(self.path):
            full = self.path / entry
            if full == self.staging:
                continue
            if self.overwrite and _PART_NAME.fullmatch(entry) and entry not in wanted:
                full.unlink()  # a part of an earlier run that this run does not replace
            elif self.overwrite and entry.startswith(_STAGING_PREFIX):
                shutil.rmtree(full, ignore_errors=True)  # left by an interrupted run
            elif not self.overwrite and not entry.startswith((".", "_")):
                raise _exists_error(
                    f"per_row directory {str(self.path)!r} gained {entry!r} while scoring; "
                    f"not replacing it. Pass overwrite=True (--overwrite) to replace it."
                )
        for name in names:
            os.replace(self.staging / name, self.path / name)
        shutil.rmtree(self.staging, ignore_errors=True)

    def abort(self) -> None:
        """Drop the staged parts (best effort: a cancelled task may still be writing)."""
        shutil.rmtree(self.staging, ignore_errors=True)
        if self._created:
            try:
                self.path.rmdir()
            except OSError:
                pass  # not empty: leave it
