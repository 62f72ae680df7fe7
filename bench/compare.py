"""fastxent against every baseline, in one process, with one table and the speed targets.

Usage (from anywhere; a full run takes several minutes and wants the machine to itself)::

    python bench/compare.py [--small] [--repeats N] [--markdown OUT.md] [--threads T]
                            [--only {kernels,e2e,startup}] [--path PATH] [--shape ROWSxCOLS]

* **Kernels**: for each loss path and shape, fastxent, the NumPy expression, torch's
  ``F.cross_entropy``, sklearn's ``log_loss``, a parallel Numba sum of the same float32
  arrays (the read ceiling) and, for logits, the same sum of fastxent's float32 exp of
  every entry (the exp ceiling) run on the same data with the same threads (numba = torch
  = T, default 2). Every implementation is warmed up once, then timed in ``--repeats``
  rounds that go round-robin over the implementations (the starting one rotates) so drift
  hits all alike; a round times enough calls to last ~50 ms. Reported: the median (and
  fastest) time per call over the rounds, the ratio ``baseline median / fastxent median``
  (> 1: fastxent is faster), the quartiles of the per-round ratios (baseline / fastxent
  within one round: how far the host's noise moves the ratio), GB/s of predictions
  processed and the relative error of the result against a float64 reference computed from
  the same float32 values; fastxent's error is also checked with logits offset by +1000
  and -1000.
* **End to end**: ``fastxent.score`` over Parquet (plain, zstd) and Arrow IPC files of
  logits against pyarrow alone reading the same columns with the same settings.
* **Start-up**: ``import numba``, ``import fastxent`` and the first call of each path in fresh
  processes, with an empty Numba cache (cold compile) and with the cache filled (warm).
* **Machine** and **targets**: CPU, cores, versions and threads; each speed target of the
  issue with PASS/MISS and the measured figure.

``--small`` divides the rows by 100: a quick check of the script, not of the targets.
``--path`` and ``--shape`` (both repeatable) time only some loss paths, or other shapes than
the four of the issue: a closer look at one verdict with more rounds, or at your own shape. A
target whose shapes were not all measured reads PART instead of PASS.
``--markdown OUT.md`` writes the same report as Markdown (the README table).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _e2e
import _impls as impls
import _startup

import fastxent

MIN_SAMPLE_SECONDS = 0.05
OFFSETS = (1000.0, -1000.0)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------


def _sample(fn: Callable[[], object], number: int) -> float:
    gc.collect()
    gc.disable()
    try:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        return (time.perf_counter() - t0) / number
    finally:
        gc.enable()


def interleaved(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, list[float]]:
    """Seconds per call of each (already warmed) function, one sample per round.

    Each round visits every function once, starting one further along each time, so slow
    drift (another process, turbo, the page cache) is shared out evenly.
    """
    if not fns:
        return {}
    number = {}
    for name, fn in fns.items():
        once = _sample(fn, 1)
        number[name] = max(1, min(1000, math.ceil(MIN_SAMPLE_SECONDS / max(once, 1e-7))))
    names = list(fns)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for k in range(len(names)):
            name = names[(r + k) % len(names)]
            samples[name].append(_sample(fns[name], number[name]))
    return samples


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------


@dataclass
class KernelRow:
    path: str
    shape: tuple[int, int]
    impl: str
    seconds: float | None = None  # median
    best: float | None = None  # fastest round
    ratio: float | None = None  # baseline time / fastxent time
    # The quartiles of the per-round ratios (this row's sample / fastxent's sample of the same
    # round): how far the host's noise moves the ratio.
    ratio_q1: float | None = None
    ratio_q3: float | None = None
    gbps: float | None = None
    rel_err: float | None = None
    skipped: str | None = None


@dataclass
class AccuracyRow:
    path: str
    shape: tuple[int, int]
    offset: float
    rel_err: float


@dataclass
class E2ERow:
    name: str
    shape: tuple[int, int]
    file_mb: float
    ours: float
    pyarrow: float

    @property
    def pred_bytes(self) -> int:
        return self.shape[0] * self.shape[1] * 4


@dataclass
class Report:
    small: bool
    repeats: int
    threads: int
    paths: tuple[str, ...] = impls.PATHS
    kernel_shapes: tuple[tuple[int, int], ...] = ()  # () = the benchmark shapes
    kernels: list[KernelRow] = field(default_factory=list)
    accuracy: list[AccuracyRow] = field(default_factory=list)
    e2e: list[E2ERow] = field(default_factory=list)
    e2e_skipped: str | None = None
    import_numba: float | None = None
    import_fastxent: float | None = None
    startup: list[_startup.Startup] = field(default_factory=list)
    machine: dict[str, str] = field(default_factory=dict)


def measure_kernels(report: Report) -> None:
    for shape in report.kernel_shapes or impls.shapes(report.small):
        d = impls.ShapeData(*shape)
        log(f"kernels {impls.shape_id(shape)}: generating data")
        for path in report.paths:
            log(f"kernels {impls.shape_id(shape)} {path}")
            fns: dict[str, Callable[[], float]] = {}
            values: dict[str, float] = {}
            rows: dict[str, KernelRow] = {}
            for impl in impls.impls_for(path):
                rows[impl.name] = row = KernelRow(path, shape, impl.name)
                row.skipped = impl.skip_reason(shape)
                if row.skipped is None:
                    fns[impl.name] = impl.make(path, d)
                    values[impl.name] = fns[impl.name]()  # warm-up: JIT, page faults
            samples = interleaved(fns, report.repeats)
            times = {name: statistics.median(s) for name, s in samples.items()}
            expected = impls.reference(path, *d.inputs(path))
            ours = times[impls.OURS]
            for name, row in rows.items():
                if row.skipped is not None:
                    continue
                row.seconds = times[name]
                row.best = min(samples[name])
                row.ratio = row.seconds / ours
                row.ratio_q1, row.ratio_q3 = _quartiles(
                    [a / b for a, b in zip(samples[name], samples[impls.OURS], strict=True)]
                )
                row.gbps = d.pred_bytes / row.seconds / 1e9
                if not impls.impl_named(name).ceiling:
                    row.rel_err = impls.relative_error(values[name], expected)
                report.kernels.append(row)
            report.kernels.extend(r for r in rows.values() if r.skipped is not None)
            ours_err = rows[impls.OURS].rel_err
            report.accuracy.append(AccuracyRow(path, shape, 0.0, ours_err or 0.0))
            del fns
        for path in (p for p in ("logits+labels", "soft+logits") if p in report.paths):
            target = d.inputs(path)[1]
            for offset in OFFSETS:
                shifted = d.logits + np.float32(offset)
                got = fastxent.cross_entropy(shifted, target, pred_kind="logits")
                err = impls.relative_error(got, impls.reference(path, shifted, target))
                report.accuracy.append(AccuracyRow(path, shape, offset, err))
                del shifted
        d.clear()
        gc.collect()


def _quartiles(values: Sequence[float]) -> tuple[float, float]:
    if len(values) < 2:
        return values[0], values[0]
    q1, _, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q3


def measure_e2e(report: Report) -> None:
    report.e2e_skipped = _e2e.score_missing()
    if report.e2e_skipped is not None:
        return
    shape = _e2e.e2e_shape(report.small)
    with tempfile.TemporaryDirectory(prefix="fastxent-bench-") as tmp:
        log(f"end to end {impls.shape_id(shape)}: writing files")
        files = _e2e.write_files(Path(tmp), shape)
        for name, path in files.items():
            log(f"end to end {name}")
            fns = {
                "fastxent": _e2e.ours(path),
                "pyarrow": _e2e.pyarrow_alone(name, path, shape[1]),
            }
            try:
                for fn in fns.values():
                    fn()  # warm-up: JIT, page cache
            except Exception as exc:  # report the failure, keep the rest of the report
                report.e2e_skipped = f"{name} failed: {type(exc).__name__}: {exc}"
                return
            times = {k: statistics.median(s) for k, s in interleaved(fns, report.repeats).items()}
            report.e2e.append(
                E2ERow(name, shape, path.stat().st_size / 1e6, times["fastxent"], times["pyarrow"])
            )
            path.unlink()


def measure_startup(report: Report) -> None:
    runs = max(1, min(report.repeats, 3))
    log("start-up: imports")
    report.import_numba = statistics.median(
        _startup.import_seconds("numba", n_threads=report.threads) for _ in range(runs)
    )
    report.import_fastxent = statistics.median(
        _startup.import_seconds("fastxent", n_threads=report.threads) for _ in range(runs)
    )
    for path in impls.PATHS:
        log(f"start-up: {path} (cold compile, then {runs} warm processes)")
        report.startup.append(_startup.measure(path, warm_runs=runs, n_threads=report.threads))


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def machine(load_at_start: float | None) -> dict[str, str]:
    import numba

    model = platform.processor() or platform.machine()
    ids = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key == "model name":
                model = value.strip()
            elif key in ("cpu family", "model"):
                ids.setdefault(key, value.strip())
            elif not line.strip():
                break  # the first processor's block is enough
    except OSError:
        pass
    import llvmlite.binding as llvm

    # Same brand string, different cores: family/model and the CPU Numba compiles for
    # (e.g. znver4 vs znver5) tell the machines apart.
    detail = ", ".join(f"{k} {v}" for k, v in ids.items())
    model = f"{model} ({detail + ', ' if detail else ''}LLVM target {llvm.get_host_cpu_name()})"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "not started"
    torch_threads = "n/a"
    if _version("torch") != "not installed":
        import torch

        torch_threads = str(torch.get_num_threads())
    return {
        "CPU": model,
        "cores (logical, usable)": f"{os.cpu_count()}, {usable}",
        "threads": f"numba {numba.get_num_threads()} ({layer}), torch {torch_threads}",
        "Python": platform.python_version(),
        "versions": f"fastxent {fastxent.__version__}, "
        + ", ".join(
            f"{name} {_version(name)}"
            for name in (
                "numba",
                "llvmlite",
                "numpy",
                "torch",
                "pyarrow",
                "scikit-learn",
            )
        ),
        "platform": platform.platform(),
        # Other processes on a shared machine slow parallel regions more than anything else.
        "load average (1 min), start / end": f"{_num(load_at_start, '.2f')} / "
        f"{_num(_load(), '.2f')}",
    }


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    status: str  # PASS, MISS or SKIP
    figure: str


def _status(ok: bool | None, complete: bool = True) -> str:
    """SKIP (nothing measured), MISS, PASS, or PART: passed where measured, but not every
    shape the target names was measured (``--path`` / ``--shape``)."""
    if ok is None:
        return "SKIP"
    return "MISS" if not ok else ("PASS" if complete else "PART")


def _unmeasured(shapes: Sequence[tuple[int, int]], found: Sequence[tuple[int, int]]) -> str:
    missing = [impls.shape_id(s) for s in shapes if s not in found]
    return f" (not measured: {', '.join(missing)})" if missing else ""


def _kernel(report: Report, path: str, impl: str, shape: tuple[int, int]) -> KernelRow | None:
    for row in report.kernels:
        if (row.path, row.impl, row.shape) == (path, impl, shape) and row.seconds is not None:
            return row
    return None


def _ratio_target(
    report: Report,
    name: str,
    path: str,
    impl: str,
    at_least: float,
    shapes: Sequence[tuple[int, int]],
) -> Target:
    # Shapes the baseline sits out by design (sklearn above its size limit) are not owed.
    baseline = impls.impl_named(impl)
    shapes = [s for s in shapes if baseline.fits(s)]
    found = [(s, r) for s in shapes if (r := _kernel(report, path, impl, s)) is not None]
    if not found:
        return Target(name, "SKIP", f"no {impl} measurement")
    figure = ", ".join(f"{impls.shape_id(s)}: {_ratio_text(row)}" for s, row in found)
    figure += _unmeasured(shapes, [s for s, _ in found])
    ok = all(row.ratio >= at_least for _, row in found)
    return Target(name, _status(ok, len(found) == len(shapes)), figure)


def _ratio_text(row: KernelRow) -> str:
    """``6.4x (rounds 5.1-7.9x)``: the ratio of the medians and the quartiles of the
    per-round ratios."""
    return f"{row.ratio:.1f}x (rounds {row.ratio_q1:.1f}-{row.ratio_q3:.1f}x)"


def targets(report: Report) -> list[Target]:
    shapes = impls.shapes(report.small)
    out = [
        _ratio_target(
            report,
            "logits+labels ≥ 8x faster than torch F.cross_entropy, every shape",
            "logits+labels",
            "torch",
            8.0,
            shapes,
        ),
        _ratio_target(
            report,
            "soft targets (logits) ≥ 8x faster than torch with probability targets, every shape",
            "soft+logits",
            "torch",
            8.0,
            shapes,
        ),
        _ratio_target(
            report,
            f"probs+labels ≥ 4x faster than the NumPy gather at {impls.shape_id(shapes[1])}",
            "probs+labels",
            "numpy",
            4.0,
            shapes[1:2],
        ),
        _ratio_target(
            report,
            "probs+labels ≥ 100x faster than sklearn log_loss",
            "probs+labels",
            "sklearn",
            100.0,
            shapes,
        ),
    ]
    wide = [s for s in shapes if s[1] >= 1000]
    found: dict[tuple[int, int], tuple[float, str]] = {}  # shape: (ours / sum, its text)
    for s in wide:
        ours, ceiling, exps = (
            _kernel(report, "logits+labels", name, s) for name in (impls.OURS, impls.SUM, impls.EXP)
        )
        if ours is not None and ceiling is not None:
            # ceiling.ratio_q* are quartiles of sum / ours: inverted, of ours / sum.
            q, lo, hi = 1 / ceiling.ratio, 1 / ceiling.ratio_q3, 1 / ceiling.ratio_q1
            exp_text = f", exp-sum alone {exps.seconds / ceiling.seconds:.2f}x sum" if exps else ""
            text = f"{impls.shape_id(s)}: ours = {q:.2f}x sum (rounds {lo:.2f}-{hi:.2f}x)"
            found[s] = (q, text + exp_text)
    out.append(
        Target(
            "logits+labels at C ≥ 1000 at least half the speed of the parallel sum (ours ≤ 2x sum)",
            _status(
                all(q <= 2.0 for q, _ in found.values()) if found else None, len(found) == len(wide)
            ),
            "; ".join(text for _, text in found.values()) + _unmeasured(wide, list(found))
            if found
            else "no data",
        )
    )
    e2e = {row.name: row for row in report.e2e}
    for name in ("parquet-plain", "parquet-zstd"):
        row = e2e.get(name)
        out.append(
            Target(
                f"{name} end to end ≤ 1.2x pyarrow alone",
                _status(row.ours / row.pyarrow <= 1.2) if row else "SKIP",
                f"{row.ours / row.pyarrow:.2f}x ({row.ours * 1e3:.0f} ms vs "
                f"{row.pyarrow * 1e3:.0f} ms)"
                if row
                else (report.e2e_skipped or "not run"),
            )
        )
    row = e2e.get("arrow-ipc")
    out.append(
        Target(
            "Arrow IPC end to end ≥ 2 GB/s of predictions",
            _status(row.pred_bytes / row.ours / 1e9 >= 2.0) if row else "SKIP",
            f"{row.pred_bytes / row.ours / 1e9:.2f} GB/s"
            if row
            else (report.e2e_skipped or "not run"),
        )
    )
    if report.startup:
        worst = max(report.startup, key=lambda s: s.warm)
        out.append(
            Target(
                "warm-cache first call in a fresh process < 1 s beyond import numba",
                _status(worst.warm < 1.0),
                f"worst {worst.warm:.2f} s ({worst.path}, of which Numba's own set-up "
                f"{_num(worst.warm_numba_setup, '.2f')} s); "
                + ", ".join(f"{s.path} {s.warm:.2f} s" for s in report.startup),
            )
        )
    else:
        out.append(Target("warm-cache first call < 1 s beyond import numba", "SKIP", "not run"))
    if report.accuracy:
        worst_acc = max(report.accuracy, key=lambda a: a.rel_err)
        covered = {(a.path, a.shape) for a in report.accuracy}
        out.append(
            Target(
                "float32 relative error ≤ 1e-6 vs float64 reference (incl. ±1000 logit offsets)",
                _status(
                    worst_acc.rel_err <= 1e-6,
                    covered >= set(itertools.product(impls.PATHS, shapes)),
                ),
                f"worst {worst_acc.rel_err:.1e} ({worst_acc.path} "
                f"{impls.shape_id(worst_acc.shape)}, offset {worst_acc.offset:+g})",
            )
        )
    return out


# --------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    ms = seconds * 1e3
    for limit, digits in ((100, 0), (10, 1), (1, 2), (0.1, 3)):
        if ms >= limit:
            return f"{ms:.{digits}f}"
    return f"{ms:.4f}"


def _num(value: float | None, spec: str) -> str:
    return "—" if value is None or value != value else format(value, spec)


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    markdown: bool,
    right: Sequence[bool] | None = None,
) -> str:
    right = right or [False] * len(headers)
    if markdown:
        lines = [
            "| " + " | ".join(headers) + " |",
            "|" + "|".join("---:" if r else "---" for r in right) + "|",
        ]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [
        max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
        for i, h in enumerate(headers)
    ]

    def fmt(cells: Sequence[str]) -> str:
        return "  ".join(
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True)
        ).rstrip()

    return "\n".join([fmt(headers), fmt(["-" * w for w in widths]), *map(fmt, rows)])


def render(report: Report, markdown: bool) -> str:
    def h(title: str, level: int = 2) -> str:
        if markdown:
            return f"{'#' * level} {title}"
        return f"{title}\n{('=' if level == 1 else '-') * len(title)}"

    parts = [h("fastxent benchmarks", 1)]
    if report.kernel_shapes:
        mode = "kernels at " + ", ".join(impls.shape_id(s) for s in report.kernel_shapes)
    elif report.small:
        mode = "SMALL shapes (rows / 100): a check of the script, not of the targets"
    else:
        mode = "full shapes"
    if report.paths != impls.PATHS:
        mode += "; paths " + ", ".join(report.paths)
    parts.append(
        f"{mode}; median of {report.repeats} interleaved rounds; "
        f"{report.threads} threads for numba and torch; float32 predictions."
    )

    parts.append(h("Machine"))
    parts.append(table(["", "value"], [[k, v] for k, v in report.machine.items()], markdown))

    parts.append(h("Kernels (in memory)"))
    parts.append(
        "ratio = baseline median / fastxent median (> 1: fastxent is faster); per-round ratios = "
        "the 25th-75th percentiles of baseline / fastxent within each round, how far this "
        "host's noise moves the ratio; GB/s = bytes of the "
        "prediction matrix / time; rel err = |result - float64 reference| / reference, the "
        "reference computed from the same float32 values. parallel-sum is a Numba sum of the "
        "arrays the path reads (both matrices for soft targets): the memory-read ceiling. "
        "exp-sum is the same sum over the logits with fastxent's float32 exp of every entry "
        "and nothing else: one exp per entry is the least an exact loss over logits computes, "
        "so it is the exp-throughput ceiling."
    )
    rows = []
    for r in report.kernels:
        if r.skipped is not None:
            rows.append([r.path, impls.shape_id(r.shape), r.impl, "skipped", *["—"] * 5])
            continue
        rows.append(
            [
                r.path,
                impls.shape_id(r.shape),
                r.impl,
                _ms(r.seconds),
                _ms(r.best),
                f"{r.ratio:.2f}",
                f"{r.ratio_q1:.2f}-{r.ratio_q3:.2f}",
                f"{r.gbps:.2f}",
                _num(r.rel_err, ".1e"),
            ]
        )
    parts.append(
        table(
            [
                "path",
                "shape",
                "implementation",
                "median (ms)",
                "min (ms)",
                "ratio vs ours",
                "per-round ratios (quartiles)",
                "GB/s",
                "rel err",
            ],
            rows,
            markdown,
            [False, False, False, True, True, True, True, True, True],
        )
    )
    reasons = sorted({f"{r.impl}: {r.skipped}" for r in report.kernels if r.skipped})
    if reasons:
        parts.append("\n".join(f"skipped: {x}" for x in reasons))

    parts.append(h("Accuracy (fastxent, float32 input vs float64 reference)"))
    parts.append(
        table(
            ["path", "shape", "logit offset", "rel err"],
            [
                [a.path, impls.shape_id(a.shape), f"{a.offset:+g}", f"{a.rel_err:.1e}"]
                for a in report.accuracy
            ],
            markdown,
            [False, False, True, True],
        )
    )

    parts.append(h("End to end (files in the page cache)"))
    if report.e2e_skipped:
        parts.append(f"skipped: {report.e2e_skipped}")
    else:
        parts.append(
            'fastxent = `fastxent.score(path, pred="pred", label="label", '
            'pred_kind="logits")`; pyarrow = the same columns read with the same '
            "reader settings and batch rows, batches consumed and viewed zero-copy, "
            "nothing else (for memory-mapped IPC that reads no data at all)."
        )
        parts.append(
            table(
                [
                    "file",
                    "shape",
                    "file MB",
                    "fastxent (ms)",
                    "pyarrow alone (ms)",
                    "ours / pyarrow",
                    "fastxent GB/s",
                    "pyarrow GB/s",
                ],
                [
                    [
                        e.name,
                        impls.shape_id(e.shape),
                        f"{e.file_mb:.0f}",
                        _ms(e.ours),
                        _ms(e.pyarrow),
                        f"{e.ours / e.pyarrow:.2f}",
                        f"{e.pred_bytes / e.ours / 1e9:.2f}",
                        f"{e.pred_bytes / e.pyarrow / 1e9:.2f}",
                    ]
                    for e in report.e2e
                ],
                markdown,
                [False, False, True, True, True, True, True, True],
            )
        )

    parts.append(h("Start-up (fresh processes)"))
    if report.startup:
        rows = [
            ["import numba", _num(report.import_numba, ".2f")],
            ["import fastxent (alone)", _num(report.import_fastxent, ".2f")],
        ]
        for s in report.startup:
            rows.append([f"{s.path}: cold compile, beyond import numba", f"{s.cold:.2f}"])
            rows.append([f"{s.path}: warm-cache first call, beyond import numba", f"{s.warm:.2f}"])
            rows.append(
                [
                    f"{s.path}: … of which Numba's own first-use set-up"
                    + (" (SciPy installed: imports scipy.linalg)" if s.scipy else ""),
                    _num(s.warm_numba_setup, ".2f"),
                ]
            )
        parts.append(table(["what", "seconds"], rows, markdown, [False, True]))
    else:
        parts.append("not run")

    parts.append(h("Targets"))
    parts.append(
        table(
            ["target", "result", "measured"],
            [[t.name, t.status, t.figure] for t in targets(report)],
            markdown,
        )
    )
    # Blank lines between blocks: Markdown needs them around tables.
    return "\n\n".join(parts) + "\n"


def _shape_arg(text: str) -> tuple[int, int]:
    """``--shape`` as ``(rows, cols)``: two positive integers joined by ``x``."""
    rows, sep, cols = text.lower().replace(",", "").replace("_", "").partition("x")
    if not (sep and rows.isdigit() and cols.isdigit() and int(rows) > 0 and int(cols) > 1):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a shape: write ROWSxCOLS with at least 1 row and 2 columns, "
            "e.g. 1000000x100"
        )
    return int(rows), int(cols)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="rows / 100: a quick check")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--markdown", metavar="OUT.md", help="also write the report as Markdown")
    parser.add_argument(
        "--threads",
        type=int,
        default=impls.DEFAULT_THREADS,
        help="threads for numba and torch alike (default 2)",
    )
    parser.add_argument(
        "--only",
        choices=["kernels", "e2e", "startup"],
        action="append",
        help="run only these sections (repeatable; default all)",
    )
    parser.add_argument(
        "--path",
        choices=impls.PATHS,
        action="append",
        help="time only these loss paths in the kernels section (repeatable; default all)",
    )
    parser.add_argument(
        "--shape",
        type=_shape_arg,
        action="append",
        metavar="ROWSxCOLS",
        help="time the kernels section at these shapes instead of the benchmark's (repeatable; "
        "e.g. 1000000x100; --small does not divide them)",
    )
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    sections = set(args.only or ["kernels", "e2e", "startup"])

    report = Report(
        small=args.small,
        repeats=args.repeats,
        threads=impls.configure_threads(args.threads),
        paths=tuple(p for p in impls.PATHS if p in (args.path or impls.PATHS)),
        kernel_shapes=tuple(dict.fromkeys(args.shape or ())),
    )
    started = time.perf_counter()
    load_at_start = _load()
    if "kernels" in sections:
        measure_kernels(report)
    if "e2e" in sections:
        measure_e2e(report)
    elif report.e2e_skipped is None:
        report.e2e_skipped = "not run (--only)"
    if "startup" in sections:
        measure_startup(report)
    report.machine = machine(load_at_start)
    log(f"done in {time.perf_counter() - started:.0f} s")

    print(render(report, markdown=False))
    if args.markdown:
        Path(args.markdown).write_text(render(report, markdown=True), encoding="utf-8")
        log(f"wrote {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
