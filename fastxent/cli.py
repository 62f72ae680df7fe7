"""The ``fastxent`` command: parse the arguments, call the public API, print the result.

Every command is a thin layer over a Python function (:func:`fastxent.score`,
:func:`fastxent.generate.generate`, :func:`fastxent.scoring.demo_path`). A problem with the
user's input (any :class:`fastxent.FastxentError`, a missing or unreadable path, a bad option)
prints one line ``fastxent: error: <message>`` on stderr and exits with status 2; an interrupt
exits with 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from . import __version__
from ._errors import FastxentError

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

#: Errors caused by the user's input or environment rather than by fastxent: one line, exit 2.
USER_ERRORS: tuple[type[BaseException], ...] = (
    FastxentError,
    FileNotFoundError,
    FileExistsError,
    PermissionError,
    IsADirectoryError,
    NotADirectoryError,
)


class UsageError(Exception):
    """A command-line usage error (unknown option, missing or malformed argument)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # argparse would print the whole usage block and exit; keep it to one line instead.
        raise UsageError(f"{message} (see '{self.prog} --help')")


# --------------------------------------------------------------------------------------------
# Argument types
# --------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer; got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number; got {text!r}") from None
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a positive number; got {text!r}")
    return value


def _float_list(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated numbers, one per class, e.g. 1,2.5,1; got {text!r}"
        ) from None


def _eps(text: str) -> float | str:
    if text == "auto":
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a number; got {text!r}") from None


# --------------------------------------------------------------------------------------------
# Parser
# --------------------------------------------------------------------------------------------

_FORMATTER = argparse.RawDescriptionHelpFormatter

_MAIN_EPILOG = """\
examples:
  fastxent demo
  fastxent score preds.parquet --pred probs --label label
  fastxent score preds/ --pred 'prob_*' --label y --json
  fastxent generate big.parquet --rows 10000000 --classes 100 --logits

Exit status: 0 on success, 2 on a usage or data error (one line on stderr), 130 if interrupted.
"""

_SCORE_DESCRIPTION = """\
Compute the cross entropy (log loss) of saved predictions against labels or target
distributions, streaming the source in bounded memory (about 64 MiB of predictions per batch).

SOURCE is a Parquet file, a directory of Parquet or Arrow IPC files (hive key=value/ layout
allowed) or an Arrow IPC file. --pred names a column holding one list of class scores per row
(fixed_size_list, list, large_list or fixed_shape_tensor of floats), or a quoted glob such as
'prob_*' selecting one float column per class (in schema order). Every value is read and
checked; errors name the column and the row.
"""

_SCORE_EPILOG = """\
examples:
  fastxent score preds.parquet --pred probs --label label
  fastxent score preds.parquet --pred logits --pred-kind logits --label label --json
  fastxent score wide.parquet --pred 'prob_*' --label y --weight w --class-weight 1,2,1
  fastxent score distill.arrow --pred logits --pred-kind logits --target teacher
  fastxent score preds/ --pred probs --label y --per-row losses.parquet --keep id
  fastxent score preds/ --pred probs --label y --dask local:4 --per-row losses/
"""

_DEMO_DESCRIPTION = """\
Score the sample bundled with fastxent: real test-set predictions (450 rows, 10 classes) of a
logistic regression on scikit-learn's digits, stored as probabilities and as logits. Both give
the same loss, which equals sklearn.metrics.log_loss on the file.
"""

_GENERATE_DESCRIPTION = """\
Write a synthetic predictions file of any size in bounded memory: columns row_id, label and
pred (a fixed_size_list of probabilities, logits or log-probabilities, tuned to about 70%
accuracy), plus a soft target column with --soft. Parquet, or Arrow IPC when OUT ends in
.arrow, .feather or .ipc. The same arguments and seed give the same numbers.
"""

_GENERATE_EPILOG = """\
examples:
  fastxent generate small.parquet --rows 1000 --classes 10
  fastxent generate big.parquet --rows 5000000 --classes 1000 --logits --dtype float16
  fastxent generate soft.arrow --rows 100000 --classes 50 --soft --compression zstd
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``fastxent`` command."""
    parser = _Parser(
        prog="fastxent",
        description="Exact, fast, bounded-memory cross entropy (log loss) over large saved "
        "prediction matrices.",
        epilog=_MAIN_EPILOG,
        formatter_class=_FORMATTER,
    )
    parser.add_argument("--version", action="version", version=f"fastxent {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = commands.add_parser(
        "score",
        help="score saved predictions in a Parquet / Arrow source",
        description=_SCORE_DESCRIPTION,
        epilog=_SCORE_EPILOG,
        formatter_class=_FORMATTER,
    )
    p.add_argument("source", metavar="SOURCE", help="Parquet file, directory or Arrow IPC file")
    p.add_argument(
        "--pred",
        required=True,
        metavar="COL",
        help="prediction column, or a quoted glob such as 'prob_*'",
    )
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--label", metavar="COL", help="integer class labels in [0, n_classes)")
    which.add_argument(
        "--target", metavar="COL", help="target distributions (soft labels), laid out like --pred"
    )
    p.add_argument(
        "--pred-kind",
        choices=("probs", "logits", "log_probs"),
        default="probs",
        help="what --pred holds (default: probs)",
    )
    p.add_argument("--weight", metavar="COL", help="column of per-row sample weights")
    p.add_argument(
        "--class-weight",
        type=_float_list,
        metavar="W1,W2,...",
        help="one weight per class, comma-separated",
    )
    p.add_argument("--ignore-index", type=int, metavar="N", help="skip rows with this label")
    p.add_argument(
        "--label-smoothing",
        type=float,
        default=0.0,
        metavar="X",
        help="label smoothing in [0, 1], as in torch (default: 0)",
    )
    p.add_argument(
        "--eps",
        type=_eps,
        default="auto",
        metavar="X|auto",
        help="clip probabilities to [eps, 1 - eps]; auto: the dtype's machine "
        "epsilon, as sklearn (default: auto)",
    )
    p.add_argument(
        "--nan-policy",
        choices=("raise", "omit", "propagate"),
        default="raise",
        help="non-finite predictions: fail, skip the row, or give NaN (default: raise)",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="rows that do not sum to 1 are an error, not a warning",
    )
    p.add_argument(
        "--batch-rows",
        type=_positive_int,
        metavar="N",
        help="rows per batch (default: about 64 MiB of predictions)",
    )
    p.add_argument(
        "--per-row",
        metavar="OUT.parquet",
        help="also write per-row losses (columns row, loss and --keep columns)",
    )
    p.add_argument(
        "--keep",
        action="extend",
        nargs="+",
        default=[],
        metavar="COL",
        help="columns (or globs) to copy into the --per-row file",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing --per-row file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument(
        "--dask",
        metavar="ADDRESS",
        help="score on a Dask cluster: a scheduler address (tcp://host:8786), or local[:N] to "
        "start N worker processes here (default 2); --per-row is then a directory of part "
        'files. Needs pip install "fastxent[dask]"',
    )
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress line on stderr (default: when stderr is a terminal)",
    )
    p.set_defaults(func=_cmd_score)

    p = commands.add_parser(
        "demo",
        help="score the bundled digits sample",
        description=_DEMO_DESCRIPTION,
        epilog="example:\n  fastxent demo --json\n",
        formatter_class=_FORMATTER,
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_demo)

    p = commands.add_parser(
        "generate",
        help="write a synthetic predictions file",
        description=_GENERATE_DESCRIPTION,
        epilog=_GENERATE_EPILOG,
        formatter_class=_FORMATTER,
    )
    p.add_argument("out", metavar="OUT", help="output file (.parquet, or .arrow for Arrow IPC)")
    p.add_argument("--rows", type=_positive_int, required=True, metavar="N", help="rows")
    p.add_argument(
        "--classes", type=_positive_int, required=True, metavar="C", help="classes (>= 2)"
    )
    kind = p.add_mutually_exclusive_group()
    kind.add_argument(
        "--logits",
        dest="kind",
        action="store_const",
        const="logits",
        help="store logits instead of probabilities",
    )
    kind.add_argument(
        "--log-probs",
        dest="kind",
        action="store_const",
        const="log_probs",
        help="store log-probabilities instead of probabilities",
    )
    p.add_argument("--soft", action="store_true", help="add a soft 'target' column")
    p.add_argument(
        "--dtype",
        choices=("float16", "float32", "float64"),
        default="float32",
        help="float type of the predictions (default: float32)",
    )
    p.add_argument("--seed", type=int, default=0, metavar="N", help="random seed (default: 0)")
    p.add_argument(
        "--compression",
        choices=("none", "zstd", "snappy"),
        default="none",
        help="codec (default: none, the fastest to read)",
    )
    p.add_argument(
        "--row-group-mb",
        type=_positive_float,
        default=64.0,
        metavar="N",
        help="uncompressed size of a row group in MiB (default: 64)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing file")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_generate, kind="probs")
    return parser


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------


def _cmd_score(args: argparse.Namespace, out: TextIO) -> int:
    from .scoring import score

    run: Any = score
    if args.dask is not None:
        from .dask import score as dask_score

        run = functools.partial(dask_score, client=args.dask)
    show_progress = args.progress if args.progress is not None else _is_tty(sys.stderr)
    result = run(
        args.source,
        pred=args.pred,
        label=args.label,
        target=args.target,
        weight=args.weight,
        pred_kind=args.pred_kind,
        class_weight=args.class_weight,
        ignore_index=args.ignore_index,
        label_smoothing=args.label_smoothing,
        eps=args.eps,
        nan_policy=args.nan_policy,
        strict=args.strict,
        batch_rows=args.batch_rows,
        per_row=args.per_row,
        keep=args.keep,
        overwrite=args.overwrite,
        progress=show_progress,
    )
    if args.json:
        print(json.dumps(result.to_dict()), file=out)
        return EXIT_OK
    rows = [(key, _format_value(value)) for key, value in result.to_dict().items()]
    paths = [("source", args.source)]
    if args.per_row is not None:
        paths.append(("per_row", args.per_row))
    # Paths are left-aligned after the table's keys; only the numbers are right-aligned.
    key_width = max(len(key) for key, _ in rows + paths)
    rows[0] = (rows[0][0].ljust(key_width), rows[0][1])
    print(_table(rows), file=out)
    for key, path in paths:
        print(f"{key.ljust(key_width)}  {path}", file=out)
    return EXIT_OK


def _cmd_demo(args: argparse.Namespace, out: TextIO) -> int:
    from .scoring import demo_info, demo_path, score

    path = demo_path()
    info = demo_info()
    scores = {
        "probs": score(path, pred="probs", label="label", pred_kind="probs"),
        "logits": score(path, pred="logits", label="label", pred_kind="logits"),
    }
    about = (
        f"{info['description']} ({info['n_test']} test rows, {info['n_classes']} classes; "
        f"{info['split']}; scikit-learn's float64 log loss {info['test_log_loss_float64']:.6f})"
    )
    if args.json:
        doc = {
            "source": str(path),
            "description": about,
            "scores": {name: s.to_dict() for name, s in scores.items()},
        }
        print(json.dumps(doc), file=out)
        return EXIT_OK
    print(f"data: {about}", file=out)
    print(f"file: {path}", file=out)
    print(file=out)
    fields = list(scores["probs"].to_dict())
    table: list[tuple[str, ...]] = [("", "pred=probs", "pred=logits")]
    table += [(key, *(_format_value(s.to_dict()[key]) for s in scores.values())) for key in fields]
    print(_table(table), file=out)
    return EXIT_OK


def _cmd_generate(args: argparse.Namespace, out: TextIO) -> int:
    from .generate import generate

    info = generate(
        args.out,
        rows=args.rows,
        classes=args.classes,
        kind=args.kind,
        soft=args.soft,
        dtype=args.dtype,
        seed=args.seed,
        compression=args.compression,
        row_group_bytes=max(1, int(args.row_group_mb * 2**20)),
        overwrite=args.overwrite,
    )
    if args.json:
        print(json.dumps(info), file=out)
        return EXIT_OK
    soft = " with soft targets" if info["soft"] else ""
    container = "Arrow IPC" if info["format"] == "arrow" else "Parquet"
    groups = info["row_groups"]
    print(
        f"wrote {info['path']} ({container}, {info['bytes'] / 1e6:,.1f} MB): "
        f"{info['rows']:,} rows x {info['classes']:,} classes of {info['dtype']} "
        f"{info['kind']}{soft}, {groups:,} row group{'s' if groups != 1 else ''} of up to "
        f"{info['rows_per_group']:,} rows",
        file=out,
    )
    return EXIT_OK


# --------------------------------------------------------------------------------------------
# Output helpers
# --------------------------------------------------------------------------------------------


def _format_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _table(rows: Sequence[tuple[str, ...]]) -> str:
    """Left-aligned first column, right-aligned value columns."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and not isinstance(exc, FastxentError) and exc.filename:
        text = f"{exc.strerror or exc}: {exc.filename}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _say(text: str, stream: TextIO | None) -> None:
    """Print a line on stderr; a closed stderr (``2>&-``) must not change the exit status."""
    stream = stream if stream is not None else sys.stderr
    if stream is None:
        return  # no stderr at all (pythonw, or fd 2 closed at startup): never fall back to stdout
    try:
        print(text, file=stream, flush=True)
    except (OSError, ValueError):
        pass


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    stream = file if file is not None else sys.stderr
    try:
        stream.write(f"fastxent: warning: {' '.join(str(message).split())}\n")
    except (OSError, ValueError):
        pass


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fastxent`` command with ``argv`` (default ``sys.argv[1:]``); return the status."""
    from ._errors import SoftWarning

    err = sys.stderr
    try:
        args = build_parser().parse_args(argv)
        with warnings.catch_warnings():
            # Soft data problems print as one line each; --strict turns them into errors.
            warnings.simplefilter("always", SoftWarning)
            warnings.showwarning = _show_warning
            return int(args.func(args, sys.stdout))
    except SystemExit as exc:  # --help and --version
        return exc.code if isinstance(exc.code, int) else EXIT_OK
    except UsageError as exc:
        _say(f"fastxent: error: {_one_line(exc)}", err)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        _say("fastxent: interrupted", err)
        return EXIT_INTERRUPTED
    except USER_ERRORS as exc:
        _say(f"fastxent: error: {_one_line(exc)}", err)
        return EXIT_USER_ERROR
    except BrokenPipeError:
        # The reader went away (e.g. `| head`): stop quietly, and keep Python's exit-time
        # flush of stdout from failing again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
