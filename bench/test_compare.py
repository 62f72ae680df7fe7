"""``compare.py``'s own logic, without timing anything: the ``--shape`` argument and how a
target reads when only some of its shapes were measured (``--path`` / ``--shape``)."""

from __future__ import annotations

import argparse

import _impls as impls
import compare
import pytest


@pytest.mark.parametrize(
    ("text", "shape"),
    [
        ("1000000x100", (1_000_000, 100)),
        ("1,000,000X100", (1_000_000, 100)),
        ("4_000x2", (4000, 2)),
    ],
)
def test_shape_argument(text, shape):
    assert compare._shape_arg(text) == shape


@pytest.mark.parametrize("text", ["100", "0x100", "100x1", "ax10", "10x", "-5x10", "10x10x10"])
def test_shape_argument_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError, match="ROWSxCOLS"):
        compare._shape_arg(text)


def _report_with_torch_ratios(ratios):
    report = compare.Report(small=False, repeats=1, threads=2)
    for shape, ratio in ratios.items():
        row = compare.KernelRow("logits+labels", shape, "torch", seconds=ratio, ratio=ratio)
        row.ratio_q1 = row.ratio_q3 = ratio
        report.kernels.append(row)
    return report


def _torch_target(report):
    return next(t for t in compare.targets(report) if t.name.startswith("logits+labels ≥ 8x"))


def test_a_target_measured_on_some_shapes_reads_part_not_pass():
    full = impls.shapes(False)
    every = _torch_target(_report_with_torch_ratios({s: 9.0 for s in full}))
    assert every.status == "PASS"
    assert "not measured" not in every.figure
    some = _torch_target(_report_with_torch_ratios({full[1]: 9.0}))
    assert some.status == "PART"
    assert f"not measured: {impls.shape_id(full[0])}" in some.figure
    missed = _torch_target(_report_with_torch_ratios({full[1]: 7.0}))
    assert missed.status == "MISS"  # a miss where measured is a miss, whatever was left out


def test_a_shape_the_baseline_sits_out_by_design_is_not_owed():
    # sklearn is left out above SKLEARN_MAX_ELEMENTS: a full run without it there is complete.
    full = impls.shapes(False)
    report = compare.Report(small=False, repeats=1, threads=2)
    for shape in full:
        if impls.impl_named("sklearn").fits(shape):
            row = compare.KernelRow("probs+labels", shape, "sklearn", seconds=1.0, ratio=150.0)
            row.ratio_q1 = row.ratio_q3 = 150.0
            report.kernels.append(row)
    assert len(report.kernels) < len(full)  # the largest shape is left out
    target = next(t for t in compare.targets(report) if "sklearn" in t.name)
    assert target.status == "PASS"
    assert "not measured" not in target.figure
