"""``fastxent.cross_entropy`` against the float64 reference (``naive.py``), torch and sklearn.

Tolerances follow the package's contract: 1e-12 relative for float64 inputs; for float16 and
float32 inputs, 1e-6 relative to the float64 reference evaluated on the *same* low-precision
values (upcast). Per-row ("none") comparisons are norm-wise: relative to the largest row, so a
row whose loss is ~1e-10 is not held to 1e-12 of itself.
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from naive import log_softmax, naive_cross_entropy, one_hot, softmax

from fastxent import cross_entropy

FLOAT_DTYPES = (np.float16, np.float32, np.float64)
KINDS = ("probs", "logits", "log_probs")
REDUCTIONS = ("mean", "sum", "none")
INT_DTYPES = (
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
)


# --------------------------------------------------------------------------- helpers


def rtol_for(dtype):
    return 1e-12 if np.dtype(dtype) == np.float64 else 1e-6


def assert_matches(got, expected, *, rtol, msg=""):
    """``got`` has the contract's type and agrees with ``expected`` to ``rtol``."""
    if isinstance(expected, np.ndarray):
        assert isinstance(got, np.ndarray), f"{msg}: 'none' must return an ndarray"
        assert got.dtype == np.float64, f"{msg}: 'none' must return float64, got {got.dtype}"
        assert got.shape == expected.shape, f"{msg}: shape {got.shape} != {expected.shape}"
        finite = expected[np.isfinite(expected)]
        atol = rtol * float(np.max(np.abs(finite), initial=1.0))
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol, err_msg=msg)
    else:
        assert type(got) is float, f"{msg}: expected a Python float, got {type(got).__name__}"
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=0.0, err_msg=msg)


def check(pred, target, *, rtol=None, **options):
    """Call the package and the reference on the same inputs and compare."""
    dtype = np.asarray(pred).dtype
    got = cross_entropy(pred, target, **options)
    expected = naive_cross_entropy(pred, target, **options)
    assert_matches(got, expected, rtol=rtol or rtol_for(dtype), msg=f"{dtype} {options}")
    return got


def make_pred(rng, kind, n_rows, n_classes, dtype=np.float64, scale=3.0):
    """Predictions of ``kind``, generated in float64 and then cast to ``dtype``."""
    x = rng.normal(scale=scale, size=(n_rows, n_classes))
    if kind == "probs":
        x = softmax(x)
    elif kind == "log_probs":
        x = log_softmax(x)
    return x.astype(dtype)


def make_targets(rng, n_rows, n_classes, dtype=np.float64):
    """Target distributions, some entries exactly zero, every row summing to 1."""
    t = rng.dirichlet(np.full(n_classes, 0.5), size=n_rows)
    t[rng.random((n_rows, n_classes)) < 0.2] = 0.0
    t[:, 0] += 1e-3
    return (t / t.sum(axis=1, keepdims=True)).astype(dtype)


def make_weight(rng, n_classes):
    return rng.uniform(0.1, 3.0, size=n_classes)


def make_sample_weight(rng, n_rows):
    s = rng.uniform(0.0, 2.0, size=n_rows)
    s[rng.random(n_rows) < 0.1] = 0.0
    s[0] = 1.0  # the normaliser is never zero
    return s


def readonly(a):
    a = np.array(a, copy=True, order="K")
    a.setflags(write=False)
    return a


def layouts(a):
    """Views of ``a`` (1-D or 2-D) with the same values in different memory layouts."""
    yield "C", np.ascontiguousarray(a)
    yield "F", np.asfortranarray(a)
    shape = tuple(2 * n + 1 for n in a.shape)
    big = np.full(shape, np.nan if a.dtype.kind == "f" else 0, dtype=a.dtype)
    index = tuple(slice(1, None, 2) for _ in a.shape)
    big[index] = a
    yield "strided", big[index]
    flipped = np.ascontiguousarray(a[(slice(None, None, -1),) * a.ndim])
    yield "negative-strides", flipped[(slice(None, None, -1),) * a.ndim]
    yield "readonly", readonly(a)
    ro = big.copy()
    ro.setflags(write=False)
    yield "readonly-strided", ro[index]


def row_pattern(i):
    """Regex matching 'row <i>' but not 'row <i>0'."""
    return rf"\brow {i}\b"


# --------------------------------------------------------------------------- defaults, seeds


@pytest.mark.parametrize(
    ("probs", "label", "expected", "rounded"),
    [
        ([0.1, 0.5, 0.1, 0.1, 0.2], 0, -math.log(0.1), (6, 2.302585)),
        ([0.4, 0.4, 0.2], 1, -math.log(0.4), (2, 0.92)),
        ([0.1, 0.2, 0.7], 2, -math.log(0.7), (2, 0.36)),
    ],
)
def test_seed_examples(probs, label, expected, rounded):
    got = cross_entropy(np.array([probs]), np.array([label]))
    assert got == pytest.approx(expected, rel=1e-12)
    digits, value = rounded
    assert round(got, digits) == value


def test_defaults_are_probs_mean_auto_eps(rng):
    p = make_pred(rng, "probs", 50, 4)
    p[0] = [1.0, 0.0, 0.0, 0.0]
    labels = rng.integers(0, 4, size=50)
    labels[0] = 1  # probability 0 on the true class, clipped by eps="auto"
    got = cross_entropy(p, labels)
    expected = naive_cross_entropy(
        p, labels, pred_kind="probs", reduction="mean", eps="auto", label_smoothing=0.0
    )
    assert_matches(got, expected, rtol=1e-12)
    assert math.isfinite(got)


def test_reduction_types_and_ignored_rows_are_zero(rng):
    x = make_pred(rng, "logits", 20, 5, np.float32)
    labels = rng.integers(0, 5, size=20)
    labels[[2, 11]] = -100
    rows = cross_entropy(x, labels, pred_kind="logits", reduction="none", ignore_index=-100)
    assert isinstance(rows, np.ndarray) and rows.dtype == np.float64 and rows.shape == (20,)
    assert rows[2] == 0.0 and rows[11] == 0.0
    assert np.all(rows[labels != -100] > 0)
    for reduction in ("mean", "sum"):
        value = cross_entropy(x, labels, pred_kind="logits", reduction=reduction, ignore_index=-100)
        assert type(value) is float


@pytest.mark.parametrize("kind", KINDS)
def test_sum_is_sum_of_rows_and_mean_uses_the_normaliser(rng, kind):
    n_rows, n_classes = 60, 6
    pred = make_pred(rng, kind, n_rows, n_classes)
    labels = rng.integers(0, n_classes, size=n_rows)
    labels[::7] = -100
    w = make_weight(rng, n_classes)
    s = make_sample_weight(rng, n_rows)
    kw = dict(pred_kind=kind, weight=w, sample_weight=s, ignore_index=-100, label_smoothing=0.2)
    rows = cross_entropy(pred, labels, reduction="none", **kw)
    total = cross_entropy(pred, labels, reduction="sum", **kw)
    mean = cross_entropy(pred, labels, reduction="mean", **kw)
    assert total == pytest.approx(math.fsum(rows), rel=1e-12)
    kept = labels != -100
    assert mean == pytest.approx(total / math.fsum(s[kept] * w[labels[kept]]), rel=1e-12)


# --------------------------------------------------------------------------- every option


@pytest.mark.parametrize("n_classes", [2, 7])  # two columns have a gather of their own
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_labels_every_option_combination(rng, kind, dtype, n_classes):
    n_rows = 40
    pred = make_pred(rng, kind, n_rows, n_classes, dtype)
    labels = rng.integers(0, n_classes, size=n_rows)
    labels_with_pad = labels.copy()
    labels_with_pad[rng.random(n_rows) < 0.25] = -100
    w = make_weight(rng, n_classes)
    s = make_sample_weight(rng, n_rows)
    for weight, sample_weight, ignore_index, smoothing, reduction in itertools.product(
        (None, w), (None, s), (None, -100, int(labels[1])), (0.0, 0.15, 1.0), REDUCTIONS
    ):
        check(
            pred,
            labels_with_pad if ignore_index == -100 else labels,
            pred_kind=kind,
            reduction=reduction,
            weight=weight,
            sample_weight=sample_weight,
            ignore_index=ignore_index,
            label_smoothing=smoothing,
        )


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_soft_targets_every_option_combination(rng, kind, dtype):
    n_rows, n_classes = 40, 7
    pred = make_pred(rng, kind, n_rows, n_classes, dtype)
    targets = make_targets(rng, n_rows, n_classes)
    w = make_weight(rng, n_classes)
    s = make_sample_weight(rng, n_rows)
    for weight, sample_weight, smoothing, reduction in itertools.product(
        (None, w), (None, s), (0.0, 0.15, 1.0), REDUCTIONS
    ):
        check(
            pred,
            targets,
            pred_kind=kind,
            reduction=reduction,
            weight=weight,
            sample_weight=sample_weight,
            label_smoothing=smoothing,
        )


@pytest.mark.parametrize("eps", ["auto", 0.0, 1e-3, 1e-9])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_probs_eps_options(rng, dtype, eps):
    n_rows, n_classes = 50, 5
    p = make_pred(rng, "probs", n_rows, n_classes, np.float64, scale=5.0)
    p[p < 0.02] = 0.0
    p /= p.sum(axis=1, keepdims=True)
    p[0] = [0.0, 0.0, 1.0, 0.0, 0.0]
    p = p.astype(dtype)
    labels = np.argmax(p, axis=1)
    labels[1:10] = rng.integers(0, n_classes, size=9)
    labels[0] = 2  # probability exactly 1 on the true class: clipped to 1 - eps
    if eps == 0.0:
        # rows whose true class has probability 0 give +inf; they are tested on their own
        keep = p[np.arange(n_rows), labels] > 0
        p, labels = p[keep], labels[keep]
    positive = p > 0
    targets = 0.75 * one_hot(labels, n_classes) + 0.25 * positive / positive.sum(
        axis=1, keepdims=True
    )
    for reduction in REDUCTIONS:
        check(p, labels, pred_kind="probs", reduction=reduction, eps=eps)
        check(p, targets, pred_kind="probs", reduction=reduction, eps=eps)
        check(p, targets, pred_kind="probs", reduction=reduction, eps=eps, label_smoothing=0.2)


def test_auto_eps_clips_to_the_pred_dtype():
    p = np.array([[0.0, 1.0], [1.0, 0.0]])
    labels = np.array([0, 0])
    for dtype in FLOAT_DTYPES:
        eps = float(np.finfo(dtype).eps)
        rows = cross_entropy(p.astype(dtype), labels, reduction="none")
        # float16/32 probabilities take a log good to 3e-12 (their tolerance is 1e-6)
        rtol = 1e-12 if dtype == np.float64 else 3.1e-12
        np.testing.assert_allclose(rows, [-math.log(eps), -math.log1p(-eps)], rtol=rtol)


@pytest.mark.parametrize("eps", [5e-324, 1e-310])
def test_subnormal_eps_is_rejected_with_the_fix(eps):
    # The float32 kernels' log assumes normal numbers; a subnormal clip is an error, not a
    # silently different loss.
    p = np.array([[0.0, 1.0], [0.5, 0.5]], dtype=np.float32)
    with pytest.raises(
        ValueError, match=r"eps must be 0 or at least 2\.2250738585072014e-308"
    ) as info:
        cross_entropy(p, np.array([0, 1]), eps=eps)
    assert "eps=0" in str(info.value)
    np.testing.assert_allclose(
        cross_entropy(p.astype(np.float64), np.array([0, 1]), eps=2.2250738585072014e-308),
        (-math.log(2.2250738585072014e-308) + math.log(2)) / 2,
        rtol=1e-12,
    )


# --------------------------------------------------------------------------- shapes, dtypes


@pytest.mark.parametrize("n_classes", [2, 3, 7, 31, 32, 33, 100, 1000])
@pytest.mark.parametrize("kind", KINDS)
def test_shapes(rng, kind, n_classes):
    n_rows = int(rng.integers(1, 301)) if n_classes < 1000 else int(rng.integers(1, 60))
    for dtype in FLOAT_DTYPES:
        pred = make_pred(rng, kind, n_rows, n_classes, dtype)
        labels = rng.integers(0, n_classes, size=n_rows)
        targets = make_targets(rng, n_rows, n_classes)
        for reduction in REDUCTIONS:
            check(pred, labels, pred_kind=kind, reduction=reduction)
            check(pred, targets, pred_kind=kind, reduction=reduction, label_smoothing=0.1)


def test_single_row_and_many_rows(rng):
    for n_rows in (1, 2, 4097, 20000):
        x = make_pred(rng, "logits", n_rows, 7)
        labels = rng.integers(0, 7, size=n_rows)
        for reduction in REDUCTIONS:
            check(x, labels, pred_kind="logits", reduction=reduction)


@pytest.mark.parametrize("target_form", ["labels", "targets"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_memory_layouts(rng, kind, dtype, target_form):
    n_rows, n_classes = 37, 9
    pred = make_pred(rng, kind, n_rows, n_classes, dtype)
    if target_form == "labels":
        target = rng.integers(0, n_classes, size=n_rows)
    else:
        target = make_targets(rng, n_rows, n_classes)
    w = make_weight(rng, n_classes)
    s = make_sample_weight(rng, n_rows)
    options = dict(pred_kind=kind, weight=w, sample_weight=s, label_smoothing=0.05)
    expected = {r: naive_cross_entropy(pred, target, reduction=r, **options) for r in REDUCTIONS}
    for (pred_layout, p), (target_layout, t) in itertools.product(layouts(pred), layouts(target)):
        for reduction in REDUCTIONS:
            got = cross_entropy(p, t, reduction=reduction, **options)
            assert_matches(
                got,
                expected[reduction],
                rtol=rtol_for(dtype),
                msg=f"pred {pred_layout}, target {target_layout}, {reduction}",
            )
    # non-contiguous and read-only class and row weights
    expected_mean = naive_cross_entropy(pred, target, pred_kind=kind, weight=w, sample_weight=s)
    for (layout, ww), (_, ss) in zip(layouts(w), layouts(s), strict=True):
        got = cross_entropy(pred, target, pred_kind=kind, weight=ww, sample_weight=ss)
        assert_matches(got, expected_mean, rtol=rtol_for(dtype), msg=f"weights {layout}")


@pytest.mark.parametrize("label_dtype", INT_DTYPES)
def test_every_integer_label_dtype(rng, label_dtype):
    x = make_pred(rng, "logits", 50, 7)
    labels = rng.integers(0, 7, size=50)
    expected = naive_cross_entropy(x, labels, pred_kind="logits", reduction="none")
    for _, lab in layouts(labels.astype(label_dtype)):
        got = cross_entropy(x, lab, pred_kind="logits", reduction="none")
        assert_matches(got, expected, rtol=1e-12, msg=str(label_dtype))
    # ignore_index with an in-range class works for every dtype
    got = cross_entropy(x, labels.astype(label_dtype), pred_kind="logits", ignore_index=3)
    expected = naive_cross_entropy(x, labels, pred_kind="logits", ignore_index=3)
    assert_matches(got, expected, rtol=1e-12, msg=str(label_dtype))


def test_list_inputs(rng):
    p = make_pred(rng, "probs", 12, 4)
    labels = rng.integers(0, 4, size=12)
    targets = make_targets(rng, 12, 4)
    w = make_weight(rng, 4)
    s = make_sample_weight(rng, 12)
    for reduction in REDUCTIONS:
        kw = dict(pred_kind="probs", reduction=reduction, label_smoothing=0.1)
        got = cross_entropy(
            p.tolist(), labels.tolist(), weight=w.tolist(), sample_weight=s.tolist(), **kw
        )
        expected = naive_cross_entropy(p, labels, weight=w, sample_weight=s, **kw)
        assert_matches(got, expected, rtol=1e-12)
        got = cross_entropy(p.tolist(), targets.tolist(), **kw)
        assert_matches(got, naive_cross_entropy(p, targets, **kw), rtol=1e-12)


@pytest.mark.parametrize("target_dtype", [np.float16, np.float32, np.float64])
def test_soft_target_dtypes(rng, target_dtype):
    x = make_pred(rng, "logits", 30, 5)
    t = make_targets(rng, 30, 5, target_dtype)
    for reduction in REDUCTIONS:
        check(x, t, pred_kind="logits", reduction=reduction)


@pytest.mark.parametrize("kind", KINDS)
def test_inputs_are_not_modified(rng, kind):
    n_rows, n_classes = 30, 6
    pred = make_pred(rng, kind, n_rows, n_classes)
    if kind == "probs":
        pred[0] = [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]  # values eps="auto" clips
    labels = rng.integers(0, n_classes, size=n_rows)
    labels[::5] = -100
    targets = make_targets(rng, n_rows, n_classes)
    w = make_weight(rng, n_classes)
    s = make_sample_weight(rng, n_rows)
    arrays = {"pred": pred, "labels": labels, "targets": targets, "w": w, "s": s}
    for a in arrays.values():
        a.setflags(write=True)
    before = {k: v.copy() for k, v in arrays.items()}
    for reduction in REDUCTIONS:
        cross_entropy(
            pred,
            labels,
            pred_kind=kind,
            reduction=reduction,
            weight=w,
            sample_weight=s,
            ignore_index=-100,
            label_smoothing=0.3,
        )
        cross_entropy(pred, targets, pred_kind=kind, reduction=reduction, weight=w)
    for name, a in arrays.items():
        np.testing.assert_array_equal(a, before[name], err_msg=name)
        assert a.dtype == before[name].dtype


def test_none_result_is_a_new_array(rng):
    x = make_pred(rng, "logits", 10, 3)
    labels = rng.integers(0, 3, size=10)
    a = cross_entropy(x, labels, pred_kind="logits", reduction="none")
    b = cross_entropy(x, labels, pred_kind="logits", reduction="none")
    assert not np.shares_memory(a, b)
    assert not np.shares_memory(a, x)


# --------------------------------------------------------------------------- torch, sklearn


def test_logits_match_torch_cross_entropy(rng):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    n_rows, n_classes = 80, 11
    x = make_pred(rng, "logits", n_rows, n_classes)
    labels = rng.integers(0, n_classes, size=n_rows)
    labels[::6] = -100
    targets = make_targets(rng, n_rows, n_classes)
    w = make_weight(rng, n_classes)
    xt = torch.from_numpy(x)
    for weight, smoothing, reduction in itertools.product((None, w), (0.0, 0.1, 1.0), REDUCTIONS):
        wt = None if weight is None else torch.from_numpy(weight)
        for target in (labels, targets):
            expected = torch.nn.functional.cross_entropy(
                xt,
                torch.from_numpy(target),
                weight=wt,
                reduction=reduction,
                label_smoothing=smoothing,
            )
            expected = expected.numpy() if reduction == "none" else float(expected)
            got = cross_entropy(
                x,
                target,
                pred_kind="logits",
                reduction=reduction,
                weight=weight,
                ignore_index=-100 if target is labels else None,
                label_smoothing=smoothing,
            )
            assert_matches(got, expected, rtol=1e-12, msg=f"{weight is None} {smoothing}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_probs_match_torch_nll_loss(rng, dtype):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(2)
    n_rows, n_classes = 80, 11
    logp = make_pred(rng, "log_probs", n_rows, n_classes, dtype)
    labels = rng.integers(0, n_classes, size=n_rows)
    labels[::5] = 4
    w = make_weight(rng, n_classes)
    for weight, reduction in itertools.product((None, w), REDUCTIONS):
        expected = torch.nn.functional.nll_loss(
            torch.from_numpy(logp.astype(np.float64)),
            torch.from_numpy(labels),
            weight=None if weight is None else torch.from_numpy(weight),
            ignore_index=4,
            reduction=reduction,
        )
        expected = expected.numpy() if reduction == "none" else float(expected)
        got = cross_entropy(
            logp, labels, pred_kind="log_probs", reduction=reduction, weight=weight, ignore_index=4
        )
        assert_matches(got, expected, rtol=rtol_for(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_probs_match_sklearn_log_loss(rng, dtype):
    metrics = pytest.importorskip("sklearn.metrics")
    n_rows, n_classes = 120, 6
    p = make_pred(rng, "probs", n_rows, n_classes, np.float64)
    p[rng.random((n_rows, n_classes)) < 0.1] = 0.0
    p[:, 0] += 1e-3
    p /= p.sum(axis=1, keepdims=True)
    p[0] = [1.0, 0, 0, 0, 0, 0]
    p = p.astype(dtype)
    labels = rng.integers(0, n_classes, size=n_rows)
    s = make_sample_weight(rng, n_rows)
    # sklearn takes the log in the dtype of y_proba, so for float32 it is the less exact side.
    rtol = 1e-12 if dtype == np.float64 else 2e-6
    for sample_weight, normalize in itertools.product((None, s), (True, False)):
        expected = metrics.log_loss(
            labels,
            p,
            labels=list(range(n_classes)),
            sample_weight=sample_weight,
            normalize=normalize,
        )
        got = cross_entropy(
            p, labels, sample_weight=sample_weight, reduction="mean" if normalize else "sum"
        )
        assert_matches(got, expected, rtol=rtol)


# --------------------------------------------------------------------------- identities


@pytest.mark.parametrize("kind", KINDS)
def test_gather_equals_one_hot_dense(rng, kind):
    """Same rows either way; "mean" differs only by its normaliser when classes are weighted."""
    n_rows, n_classes = 70, 8
    pred = make_pred(rng, kind, n_rows, n_classes)
    labels = rng.integers(0, n_classes, size=n_rows)
    dense = one_hot(labels, n_classes)
    w = make_weight(rng, n_classes)
    s = make_sample_weight(rng, n_rows)
    for weight, sample_weight, smoothing, reduction in itertools.product(
        (None, w), (None, s), (0.0, 0.3), REDUCTIONS
    ):
        kw = dict(
            pred_kind=kind,
            reduction=reduction,
            weight=weight,
            sample_weight=sample_weight,
            label_smoothing=smoothing,
        )
        gathered = cross_entropy(pred, labels, **kw)
        via_dense = cross_entropy(pred, dense, **kw)
        if reduction == "mean" and weight is not None:
            # labels normalise by sum s_i w[y_i], targets by sum s_i
            ss = np.ones(n_rows) if sample_weight is None else sample_weight
            via_dense *= ss.sum() / (ss * w[labels]).sum()
        assert_matches(gathered, via_dense, rtol=1e-12, msg=str(kw))


def test_logits_equal_softmax_then_probs(rng):
    x = make_pred(rng, "logits", 90, 13)
    labels = rng.integers(0, 13, size=90)
    targets = make_targets(rng, 90, 13)
    p = softmax(x)
    for target, smoothing, reduction in itertools.product(
        (labels, targets), (0.0, 0.2), REDUCTIONS
    ):
        a = cross_entropy(
            x, target, pred_kind="logits", reduction=reduction, label_smoothing=smoothing
        )
        b = cross_entropy(
            p, target, pred_kind="probs", reduction=reduction, label_smoothing=smoothing, eps=0
        )
        c = cross_entropy(
            log_softmax(x),
            target,
            pred_kind="log_probs",
            reduction=reduction,
            label_smoothing=smoothing,
        )
        assert_matches(a, b, rtol=1e-12)
        assert_matches(a, c, rtol=1e-12)


@pytest.mark.parametrize("offset", [-1000.0, 1000.0])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES[1:])
def test_logits_offset_by_1000(rng, offset, dtype):
    n_rows, n_classes = 60, 10
    x = make_pred(rng, "logits", n_rows, n_classes)
    shifted = (x + offset).astype(dtype)
    labels = rng.integers(0, n_classes, size=n_rows)
    targets = make_targets(rng, n_rows, n_classes)
    for target, reduction in itertools.product((labels, targets), REDUCTIONS):
        got = check(shifted, target, pred_kind="logits", reduction=reduction, label_smoothing=0.1)
        if dtype == np.float64:
            unshifted = cross_entropy(
                x, target, pred_kind="logits", reduction=reduction, label_smoothing=0.1
            )
            # the shifted float64 values carry rounding of ~1000 * 2**-53 per logit
            np.testing.assert_allclose(got, unshifted, rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_tiny_losses_keep_their_relative_accuracy(rng, kind, dtype):
    """Confident, correct rows have losses down to ~1e-300; each row is held to rtol itself."""
    margins = np.array([0.0, 1.0, 5.0, 20.0, 40.0, 100.0, 300.0, 700.0])
    n_classes = 6
    if dtype == np.float32:
        margins = margins[margins < 80]  # exp(-margin) stays a normal float32
    x = rng.normal(scale=0.3, size=(margins.size, n_classes))
    labels = rng.integers(0, n_classes, size=margins.size)
    x[np.arange(margins.size), labels] += margins
    if kind == "probs":
        # p_true = 1 - delta with delta down to 1e-15 (float64) / 1e-6 (float32)
        delta = np.logspace(-1, -15 if dtype == np.float64 else -6, margins.size)
        pred = np.full((margins.size, n_classes), 0.0)
        pred[:] = (delta / (n_classes - 1))[:, None]
        pred[np.arange(margins.size), labels] = 1.0 - delta
        pred = pred.astype(dtype)
    else:
        pred = (x if kind == "logits" else log_softmax(x)).astype(dtype)
    rtol = rtol_for(dtype)
    for eps in ("auto", 0.0):
        got = cross_entropy(pred, labels, pred_kind=kind, reduction="none", eps=eps)
        expected = naive_cross_entropy(pred, labels, pred_kind=kind, reduction="none", eps=eps)
        np.testing.assert_allclose(got, expected, rtol=rtol, atol=0, err_msg=f"eps={eps}")
        total = cross_entropy(pred, labels, pred_kind=kind, reduction="sum", eps=eps)
        np.testing.assert_allclose(total, math.fsum(expected), rtol=rtol, atol=0)


@pytest.mark.parametrize("n_classes", [255, 256, 257, 1023, 1024, 1025, 2049])
def test_labels_at_every_position_of_wide_rows(rng, n_classes):
    """Labels at the first, last and middle class of rows wider than the vector splits."""
    positions = [0, 1, n_classes // 2, n_classes - 2, n_classes - 1]
    n_rows = 4 * len(positions)
    x = rng.normal(scale=2.0, size=(n_rows, n_classes))
    labels = np.array(positions * 4)
    rows = np.arange(n_rows)
    x[rows[: len(positions)], labels[: len(positions)]] += 30.0  # the label is the argmax
    x[rows[len(positions) : 2 * len(positions)], labels[len(positions) : 2 * len(positions)]] = x[
        len(positions) : 2 * len(positions)
    ].max(axis=1)  # the label ties with the max
    for dtype in (np.float32, np.float64):
        xd = x.astype(dtype)
        for reduction, smoothing in itertools.product(REDUCTIONS, (0.0, 0.1)):
            check(xd, labels, pred_kind="logits", reduction=reduction, label_smoothing=smoothing)
            check(
                xd,
                one_hot(labels, n_classes),
                pred_kind="logits",
                reduction=reduction,
                label_smoothing=smoothing,
            )


@pytest.mark.parametrize("n_classes", [2, 3, 8, 300])
def test_equal_logits_give_log_n_classes(n_classes):
    x = np.full((5, n_classes), 3.25)
    x[1] = -1e300
    x[2] = 1e300
    labels = np.array([0, n_classes - 1, 1, 0, n_classes // 2])
    for dtype in (np.float32, np.float64):
        xd = x.astype(dtype) if dtype == np.float64 else np.full((5, n_classes), 3.25, dtype)
        rows = cross_entropy(xd, labels, pred_kind="logits", reduction="none")
        np.testing.assert_allclose(rows, math.log(n_classes), rtol=rtol_for(dtype))


# --------------------------------------------------------------------------- infinities


def test_minus_inf_logit_on_a_wrong_class_is_fine(rng):
    x = make_pred(rng, "logits", 10, 4)
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    x[3, 0] = -np.inf
    x[7, 1] = -np.inf
    for reduction in REDUCTIONS:
        got = check(x, labels, pred_kind="logits", reduction=reduction)
        assert np.all(np.isfinite(got))
    # with label smoothing the -inf class carries target mass: the loss is +inf, not NaN
    rows = cross_entropy(x, labels, pred_kind="logits", reduction="none", label_smoothing=0.1)
    assert rows[3] == np.inf and rows[7] == np.inf
    assert np.all(np.isfinite(np.delete(rows, [3, 7])))
    assert cross_entropy(x, labels, pred_kind="logits", label_smoothing=0.1) == np.inf


def test_minus_inf_logit_with_zero_target_mass_is_fine(rng):
    """A soft target of 0 on a -inf logit contributes 0 (torch would give 0 * inf = NaN)."""
    x = make_pred(rng, "logits", 6, 4)
    t = make_targets(rng, 6, 4)
    x[2, 3] = -np.inf
    t[2] = [0.5, 0.5, 0.0, 0.0]
    for reduction in REDUCTIONS:
        got = check(x, t, pred_kind="logits", reduction=reduction)
        assert np.all(np.isfinite(got))


@pytest.mark.parametrize("kind", ["logits", "log_probs"])
def test_minus_inf_on_the_true_class_is_inf(rng, kind):
    x = make_pred(rng, kind, 8, 5)
    labels = rng.integers(0, 5, size=8)
    x[4, labels[4]] = -np.inf
    if kind == "log_probs":
        x[4] = log_softmax(x[4:5])[0]  # keep the row a distribution: exp sums to 1
    rows = cross_entropy(x, labels, pred_kind=kind, reduction="none")
    assert rows[4] == np.inf
    assert np.all(np.isfinite(np.delete(rows, 4)))
    assert cross_entropy(x, labels, pred_kind=kind) == np.inf
    assert cross_entropy(x, labels, pred_kind=kind, reduction="sum") == np.inf
    assert cross_entropy(x, one_hot(labels, 5), pred_kind=kind) == np.inf


def test_zero_probability_without_clipping_is_inf(rng):
    p = make_pred(rng, "probs", 8, 3)
    labels = np.zeros(8, dtype=np.int64)
    p[5] = [0.0, 0.25, 0.75]
    rows = cross_entropy(p, labels, reduction="none", eps=0)
    assert rows[5] == np.inf
    assert np.all(np.isfinite(np.delete(rows, 5)))
    assert cross_entropy(p, labels, eps=0) == np.inf
    assert cross_entropy(p, one_hot(labels, 3), eps=0) == np.inf
    # ... and on a class that is not the true one (no smoothing) it does not matter
    labels[5] = 2
    assert math.isfinite(cross_entropy(p, labels, eps=0))
    assert math.isfinite(cross_entropy(p, one_hot(labels, 3), eps=0))
    check(p, labels, pred_kind="probs", eps=0)
    check(p, one_hot(labels, 3), pred_kind="probs", eps=0)
    # with smoothing the zero probability is used, so the loss is +inf (never NaN)
    assert cross_entropy(p, labels, eps=0, label_smoothing=0.1) == np.inf


@pytest.mark.parametrize(
    ("kind", "pred"),
    [
        ("probs", [[0.0, 1.0], [0.5, 0.5]]),
        ("logits", [[-np.inf, 1.0], [0.0, 0.0]]),
        ("log_probs", [[-np.inf, 0.0], [-math.log(2), -math.log(2)]]),
    ],
)
@pytest.mark.parametrize("soft", [False, True])
def test_full_smoothing_with_an_impossible_true_class_is_inf(kind, pred, soft):
    """label_smoothing=1 zeroes the (infinite) true-class term: 0 * inf must not give NaN."""
    labels = np.array([0, 1])
    target = one_hot(labels, 2) if soft else labels
    rows = cross_entropy(
        np.array(pred), target, pred_kind=kind, label_smoothing=1.0, eps=0, reduction="none"
    )
    assert rows[0] == np.inf and rows[1] == pytest.approx(math.log(2), rel=1e-12)


def test_huge_finite_logits_with_smoothing_give_inf():
    x = np.array([[1e308, -1e308], [0.5, 0.5]])
    labels = np.array([1, 0])
    for smoothing in (0.0, 0.1):
        rows = cross_entropy(
            x, labels, pred_kind="logits", reduction="none", label_smoothing=smoothing
        )
        assert rows[0] == np.inf and rows[1] == pytest.approx(math.log(2), rel=1e-12)


@pytest.mark.parametrize(
    "case",
    ["zero class weight on a -inf logit", "zero row weight on an inf row", "zero weight label"],
)
def test_zero_weights_never_make_a_silent_nan(case):
    """0 * inf: the reference counts a zero-weight term as 0 (sklearn's xlogy convention).

    torch and sklearn give NaN here. The contract allows no silent NaN: either the package
    agrees with the reference or it raises ValueError.
    """
    x = np.array([[0.0, 1.0, -np.inf], [2.0, 0.5, 0.1], [-np.inf, 1.0, 0.0]])
    labels = np.array([0, 1, 1])
    kw = dict(pred_kind="logits", label_smoothing=0.1)
    if case == "zero class weight on a -inf logit":
        x[2, 0] = 0.0
        kw["weight"] = [1.0, 1.0, 0.0]
    elif case == "zero row weight on an inf row":
        kw = dict(pred_kind="logits", sample_weight=[1.0, 1.0, 0.0])
        labels[2] = 0
    else:
        kw = dict(pred_kind="logits", weight=[0.0, 1.0, 1.0])
        labels[2] = 0
    for reduction in REDUCTIONS:
        try:
            got = cross_entropy(x, labels, reduction=reduction, **kw)
        except ValueError:
            continue
        expected = naive_cross_entropy(x, labels, reduction=reduction, **kw)
        assert not np.isnan(got).any(), f"{reduction}: silent NaN {got}"
        assert_matches(got, expected, rtol=1e-12)


def test_nan_in_an_ignored_row_does_not_reach_the_result(rng):
    x = make_pred(rng, "logits", 10, 4)
    labels = rng.integers(0, 4, size=10)
    labels[6] = -100
    x[6] = np.nan
    expected = naive_cross_entropy(
        np.delete(x, 6, axis=0), np.delete(labels, 6), pred_kind="logits"
    )
    got = cross_entropy(x, labels, pred_kind="logits", ignore_index=-100)
    assert got == pytest.approx(expected, rel=1e-12)
    rows = cross_entropy(x, labels, pred_kind="logits", ignore_index=-100, reduction="none")
    assert rows[6] == 0.0


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("kind", KINDS)
def test_same_input_same_bits(rng, kind):
    n_rows, n_classes = 3000, 33
    pred = make_pred(rng, kind, n_rows, n_classes, np.float32)
    labels = rng.integers(0, n_classes, size=n_rows)
    targets = make_targets(rng, n_rows, n_classes)
    w = make_weight(rng, n_classes)
    s = make_sample_weight(rng, n_rows)
    for target, reduction in itertools.product((labels, targets), REDUCTIONS):
        kw = dict(pred_kind=kind, reduction=reduction, weight=w, sample_weight=s)
        first = cross_entropy(pred, target, **kw)
        for _ in range(3):
            again = cross_entropy(pred, target, **kw)
            assert np.asarray(first).tobytes() == np.asarray(again).tobytes()


@pytest.mark.parametrize("n_blocks", [0, 1, 2, 7])
def test_block_records_combine_column_by_column(rng, n_blocks):
    """The per-block records combine as their columns say: float sums exactly rounded, counts
    added, the first set row marker (-1: none) and the largest deviation."""
    from fastxent import _engine as E
    from fastxent import _kernels as K

    stats = K.new_stats(n_blocks)
    stats[:, E._FLOAT_SUMS] = rng.standard_normal((n_blocks, len(E._FLOAT_SUMS))) * 1e16
    stats[:, E._COUNTS] = rng.integers(0, 50, (n_blocks, len(E._COUNTS)))
    stats[:, E._MAXES] = rng.random((n_blocks, len(E._MAXES)))
    if n_blocks:
        stats[n_blocks - 1, K.ST_FIRST_LABEL] = 900.0  # set in the last block only
        stats[:, K.ST_FIRST_NAN] = rng.integers(100, 200, n_blocks)
    got = E.Partials.reduce(stats)
    for col in E._FLOAT_SUMS:
        assert got[col] == math.fsum(stats[:, col].tolist())
    for col in E._COUNTS:
        assert got[col] == sum(stats[:, col].tolist())
    for col in E._FIRSTS:
        seen = [v for v in stats[:, col].tolist() if v >= 0]
        assert got[col] == (min(seen) if seen else -1.0)
    for col in E._MAXES:
        assert got[col] == max(stats[:, col].tolist(), default=0.0)
    assert got[K.ST_FIRST_LABEL] == (900.0 if n_blocks else -1.0)


@pytest.fixture
def small_blocks(monkeypatch):
    """Shrink the engine's parallel blocks and conversion chunks so small inputs span many.

    This reaches into ``fastxent._engine``; the sizes are environment-tunable
    (``FASTXENT_BLOCK_ELEMENTS`` / ``FASTXENT_CONVERT_ELEMENTS``) but read at import.
    """
    import fastxent

    engine = getattr(fastxent, "_engine", None)
    if engine is None or not hasattr(engine, "BLOCK_ELEMENTS"):
        pytest.skip("fastxent._engine has no BLOCK_ELEMENTS to shrink")
    monkeypatch.setattr(engine, "BLOCK_ELEMENTS", 40)
    if hasattr(engine, "CONVERT_ELEMENTS"):
        monkeypatch.setattr(engine, "CONVERT_ELEMENTS", 150)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_many_blocks_and_chunks(rng, small_blocks, kind, dtype):
    n_rows, n_classes = 203, 7
    pred = make_pred(rng, kind, n_rows, n_classes, dtype)
    labels = rng.integers(0, n_classes, size=n_rows)
    labels[::9] = -100
    targets = make_targets(rng, n_rows, n_classes)
    w = make_weight(rng, n_classes)
    s = make_sample_weight(rng, n_rows)
    for (layout, p), reduction in itertools.product(layouts(pred), REDUCTIONS):
        if layout == "negative-strides":
            continue
        kw = dict(pred_kind=kind, reduction=reduction, weight=w, sample_weight=s)
        got = cross_entropy(p, labels, ignore_index=-100, label_smoothing=0.1, **kw)
        expected = naive_cross_entropy(pred, labels, ignore_index=-100, label_smoothing=0.1, **kw)
        assert_matches(got, expected, rtol=rtol_for(dtype), msg=f"{layout} labels {reduction}")
        got = cross_entropy(p, targets, **kw)
        expected = naive_cross_entropy(pred, targets, **kw)
        assert_matches(got, expected, rtol=rtol_for(dtype), msg=f"{layout} targets {reduction}")


@pytest.mark.parametrize("dtype", [np.float16, np.float64])
@pytest.mark.parametrize("kind", KINDS)
def test_errors_name_the_global_row_across_chunks(rng, small_blocks, kind, dtype):
    n_rows, n_classes = 300, 5
    pred = make_pred(rng, kind, n_rows, n_classes, dtype)
    labels = rng.integers(0, n_classes, size=n_rows)
    bad = labels.copy()
    bad[[171, 260]] = [9, 5]
    for _layout, p in layouts(pred):
        with pytest.raises(ValueError, match=r"row 171 has 9\b"):
            cross_entropy(p, bad, pred_kind=kind)
    nan_pred = pred.copy()
    nan_pred[233, labels[233]] = np.nan
    nan_pred[290, labels[290]] = np.nan
    for _layout, p in layouts(nan_pred):
        for target in (labels, one_hot(labels, n_classes)):
            with pytest.raises(ValueError, match=row_pattern(233)):
                cross_entropy(p, target, pred_kind=kind)


@pytest.mark.parametrize("kind", KINDS)
def test_same_bits_on_any_number_of_threads(rng, small_blocks, kind):
    numba = pytest.importorskip("numba")
    n_rows, n_classes = 997, 13
    pred = make_pred(rng, kind, n_rows, n_classes, np.float32)
    labels = rng.integers(0, n_classes, size=n_rows)
    targets = make_targets(rng, n_rows, n_classes)
    w = make_weight(rng, n_classes)
    s = make_sample_weight(rng, n_rows)

    def all_bits():
        return [
            np.asarray(
                cross_entropy(
                    pred,
                    t,
                    pred_kind=kind,
                    reduction=r,
                    weight=w,
                    sample_weight=s,
                    label_smoothing=0.05,
                )
            ).tobytes()
            for t, r in itertools.product((labels, targets), ("mean", "none"))
        ]

    threads = numba.get_num_threads()
    results = []
    try:
        for n_threads in sorted({1, 2, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(n_threads)
            results.append(all_bits())
    finally:
        numba.set_num_threads(threads)
    assert all(r == results[0] for r in results)


# --------------------------------------------------------------------------- properties


@st.composite
def problems(draw, kinds=KINDS):
    """A random valid problem; data generated in float64, then cast to the drawn dtype."""
    n_rows = draw(st.integers(1, 40))
    n_classes = draw(st.integers(2, 12))
    kind = draw(st.sampled_from(kinds))
    dtype = draw(st.sampled_from(FLOAT_DTYPES))
    soft = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([0.1, 1.0, 5.0]))
    pred = make_pred(rng, kind, n_rows, n_classes, dtype, scale=scale)
    if soft:
        target = make_targets(rng, n_rows, n_classes)
    else:
        target = rng.integers(0, n_classes, size=n_rows)
    options = dict(
        pred_kind=kind,
        weight=make_weight(rng, n_classes) if draw(st.booleans()) else None,
        sample_weight=make_sample_weight(rng, n_rows) if draw(st.booleans()) else None,
        label_smoothing=draw(st.sampled_from([0.0, 0.1, 1.0])),
    )
    return pred, target, options


@given(problems())
def test_property_non_negative(problem):
    pred, target, options = problem
    for reduction in REDUCTIONS:
        got = cross_entropy(pred, target, reduction=reduction, **options)
        assert np.all(np.asarray(got) >= 0.0), (reduction, got)


@given(problems(), st.randoms(use_true_random=False))
def test_property_row_order_invariance(problem, random):
    pred, target, options = problem
    perm = np.array(random.sample(range(pred.shape[0]), pred.shape[0]))
    permuted = dict(options)
    if options["sample_weight"] is not None:
        permuted["sample_weight"] = options["sample_weight"][perm]
    rtol = 2 * rtol_for(pred.dtype)
    rows = cross_entropy(pred, target, reduction="none", **options)
    rows_p = cross_entropy(pred[perm], target[perm], reduction="none", **permuted)
    np.testing.assert_allclose(rows_p, rows[perm], rtol=rtol, atol=rtol * rows.max(initial=1))
    for reduction in ("mean", "sum"):
        a = cross_entropy(pred, target, reduction=reduction, **options)
        b = cross_entropy(pred[perm], target[perm], reduction=reduction, **permuted)
        np.testing.assert_allclose(b, a, rtol=rtol)


SHIFT_RANGE = {np.float16: 10.0, np.float32: 100.0, np.float64: 1000.0}


@given(problems(kinds=("logits",)), st.floats(-1.0, 1.0), st.booleans())
def test_property_logit_shift_invariance(problem, fraction, per_row):
    pred, target, options = problem
    dtype = pred.dtype.type
    x = pred.astype(np.float64)
    n_rows = x.shape[0]
    rng = np.random.default_rng(abs(hash((fraction, per_row))) % 2**32)
    c = fraction * SHIFT_RANGE[dtype]
    shift = c * rng.uniform(-1, 1, size=(n_rows, 1)) if per_row else np.full((n_rows, 1), c)
    shifted = (x + shift).astype(dtype)
    # Rounding the shifted logits to ``dtype`` moves each by up to half an ulp; a row's loss
    # is 2 * max(w) / min(w)-Lipschitz in the max-norm of its logits (times its weight).
    ulp = float(np.finfo(dtype).eps)
    delta = ulp * (np.abs(x).max() + np.abs(x + shift).max() + 1.0)
    w = options["weight"]
    spread = 1.0 if w is None else w.max() / w.min() * w.max()
    s = options["sample_weight"]
    s_max = 1.0 if s is None else s.max()
    atol_row = 2 * delta * spread * s_max + 1e-12
    rows = cross_entropy(pred, target, reduction="none", **options)
    rows_s = cross_entropy(shifted, target, reduction="none", **options)
    rtol = 2 * rtol_for(dtype)
    np.testing.assert_allclose(rows_s, rows, rtol=rtol, atol=atol_row)
    total = cross_entropy(pred, target, reduction="sum", **options)
    total_s = cross_entropy(shifted, target, reduction="sum", **options)
    np.testing.assert_allclose(total_s, total, rtol=rtol, atol=atol_row * n_rows)
    mean = cross_entropy(pred, target, reduction="mean", **options)
    mean_s = cross_entropy(shifted, target, reduction="mean", **options)
    # the normaliser is at least min(w) * sum(s) >= min(w) * max(s)
    w_min = 1.0 if w is None else w.min()
    np.testing.assert_allclose(mean_s, mean, rtol=rtol, atol=atol_row / w_min)


# --------------------------------------------------------------------------- errors: labels


def test_label_out_of_range_names_row_and_value(rng):
    x = make_pred(rng, "logits", 30, 5)
    labels = rng.integers(0, 5, size=30)
    labels[17] = 7
    with pytest.raises(ValueError, match=r"row 17 has 7\b") as info:
        cross_entropy(x, labels, pred_kind="logits")
    assert "[0, 5)" in str(info.value)


@pytest.mark.parametrize(
    ("ignore_index", "bad"),
    [(None, {5: -3, 17: 7}), (-100, {9: -1, 20: 5}), (2, {3: 99, 4: -100})],
)
def test_first_offending_label_is_reported(rng, ignore_index, bad):
    x = make_pred(rng, "logits", 30, 5)
    labels = rng.integers(0, 5, size=30)
    labels[[0, 1]] = -100 if ignore_index == -100 else 0
    for row, value in bad.items():
        labels[row] = value
    first_row = min(bad)
    with pytest.raises(ValueError, match=rf"row {first_row} has {bad[first_row]}\b"):
        cross_entropy(x, labels, pred_kind="logits", ignore_index=ignore_index)


@pytest.mark.parametrize("kind", KINDS)
def test_first_offending_label_across_blocks(rng, kind):
    """Rows far apart land in different parallel blocks; the first in input order wins."""
    n_rows, n_classes = 20000, 7
    pred = make_pred(rng, kind, n_rows, n_classes, np.float32)
    labels = rng.integers(0, n_classes, size=n_rows)
    labels[[2400, 9000, 19990]] = [7, 8, 12]
    with pytest.raises(ValueError, match=r"row 2400 has 7\b"):
        cross_entropy(pred, labels, pred_kind=kind)
    labels[2400] = 0
    with pytest.raises(ValueError, match=r"row 9000 has 8\b"):
        cross_entropy(pred, labels, pred_kind=kind, reduction="none")


@pytest.mark.parametrize(
    ("dtype", "value"),
    [(np.int8, -128), (np.uint8, 255), (np.int64, 2**62), (np.uint64, 2**64 - 1)],
)
def test_out_of_range_label_value_is_reported_exactly(rng, dtype, value):
    x = make_pred(rng, "logits", 5, 3)
    labels = np.array([0, 1, value, 2, 0], dtype=dtype)
    with pytest.raises(ValueError, match=rf"row 2 has {value}\b"):
        cross_entropy(x, labels, pred_kind="logits")


# --------------------------------------------------------------------------- errors: shapes


def _assert_names_shapes(info, *shapes):
    message = str(info.value)
    for shape in shapes:
        assert str(shape) in message, f"{shape} not named in: {message}"


def test_label_count_mismatch_names_both_shapes(rng):
    x = make_pred(rng, "logits", 10, 5)
    with pytest.raises(ValueError) as info:
        cross_entropy(x, np.zeros(9, dtype=np.int64), pred_kind="logits")
    _assert_names_shapes(info, (10, 5), (9,))


@pytest.mark.parametrize("target_shape", [(10, 4), (9, 5), (10, 6)])
def test_target_shape_mismatch_names_both_shapes(rng, target_shape):
    x = make_pred(rng, "logits", 10, 5)
    t = np.full(target_shape, 1.0 / target_shape[1])
    with pytest.raises(ValueError) as info:
        cross_entropy(x, t, pred_kind="logits")
    _assert_names_shapes(info, (10, 5), target_shape)


def test_weight_shape_mismatch(rng):
    x = make_pred(rng, "logits", 10, 5)
    labels = rng.integers(0, 5, size=10)
    with pytest.raises(ValueError, match="weight") as info:
        cross_entropy(x, labels, pred_kind="logits", weight=np.ones(4))
    _assert_names_shapes(info, (4,))
    assert "5" in str(info.value)


def test_sample_weight_shape_mismatch(rng):
    x = make_pred(rng, "logits", 10, 5)
    labels = rng.integers(0, 5, size=10)
    with pytest.raises(ValueError, match="sample_weight") as info:
        cross_entropy(x, labels, pred_kind="logits", sample_weight=np.ones(9))
    _assert_names_shapes(info, (9,))
    assert "10" in str(info.value)


@pytest.mark.parametrize("shape", [(10,), (2, 5, 3)])
def test_pred_must_be_2d(shape):
    pred = np.full(shape, 0.2)
    with pytest.raises(ValueError) as info:
        cross_entropy(pred, np.zeros(shape[0], dtype=np.int64))
    _assert_names_shapes(info, shape)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("soft", [False, True])
def test_zero_rows_is_an_error(reduction, soft):
    pred = np.empty((0, 5))
    target = np.empty((0, 5)) if soft else np.empty(0, dtype=np.int64)
    with pytest.raises(ValueError, match=r"(?i)row|empty"):
        cross_entropy(pred, target, reduction=reduction)


def test_all_rows_ignored_mean_is_an_error_not_nan(rng):
    """Reading of the contract: a "mean" over nothing is 0/0, which must not come back as NaN."""
    x = make_pred(rng, "logits", 6, 3)
    labels = np.full(6, -100)
    with pytest.raises(ValueError):
        cross_entropy(x, labels, pred_kind="logits", ignore_index=-100)
    assert cross_entropy(x, labels, pred_kind="logits", ignore_index=-100, reduction="sum") == 0
    rows = cross_entropy(x, labels, pred_kind="logits", ignore_index=-100, reduction="none")
    np.testing.assert_array_equal(rows, np.zeros(6))


@pytest.mark.parametrize("soft", [False, True])
def test_mean_with_zero_total_weight_is_an_error_not_nan(rng, soft):
    x = make_pred(rng, "logits", 6, 3)
    labels = np.array([0, 1, 0, 1, 0, 1])
    target = one_hot(labels, 3) if soft else labels
    with pytest.raises(ValueError):
        cross_entropy(x, target, pred_kind="logits", sample_weight=np.zeros(6))
    assert (
        cross_entropy(x, target, pred_kind="logits", sample_weight=np.zeros(6), reduction="sum")
        == 0.0
    )
    if not soft:  # classes 0 and 1 weigh nothing: sum_i w[y_i] = 0
        with pytest.raises(ValueError):
            cross_entropy(x, labels, pred_kind="logits", weight=[0.0, 0.0, 1.0])


# --------------------------------------------------------------------------- errors: values


@pytest.mark.parametrize("eps", ["auto", 0.0])
@pytest.mark.parametrize(("row", "bad_row"), [(3, [1.5, -0.5, 0.0]), (6, [-0.25, 1.25, 0.0])])
def test_gathered_probability_outside_unit_interval(rng, eps, row, bad_row):
    p = make_pred(rng, "probs", 10, 3)
    labels = rng.integers(0, 3, size=10)
    p[row] = bad_row
    labels[row] = 0
    with pytest.raises(ValueError, match=row_pattern(row)):
        cross_entropy(p, labels, eps=eps)


@pytest.mark.parametrize("n_classes", [2, 5])
@pytest.mark.parametrize("kind", ["probs", "log_probs"])
def test_gather_ignores_values_it_does_not_read(rng, kind, n_classes):
    """Without row checks the gather reads only the label's entry: NaN, inf or an impossible
    value elsewhere in the row changes nothing (the two-column path loads both entries and
    picks one, so this is what keeps it honest)."""
    n_rows = 3000
    pred = make_pred(rng, kind, n_rows, n_classes, np.float32)
    labels = rng.integers(0, n_classes, size=n_rows)
    # Each reduction against itself on the clean rows: the mean of two float32 columns takes
    # a float32 log, the per-row losses a float64 one (both well inside the 1e-6 tolerance).
    want = {
        r: cross_entropy(pred, labels, pred_kind=kind, check_rows=False, reduction=r)
        for r in REDUCTIONS
    }
    other = (labels + 1) % n_classes
    rows = np.arange(0, n_rows, 7)
    for junk in (np.nan, np.inf, -np.inf, -5.0, 7.0):
        dirty = pred.copy()
        dirty[rows, other[rows]] = junk
        for reduction in REDUCTIONS:
            got = cross_entropy(
                dirty, labels, pred_kind=kind, check_rows=False, reduction=reduction
            )
            np.testing.assert_allclose(got, want[reduction], rtol=1e-12)
        np.testing.assert_allclose(want["mean"], want["none"].mean(), rtol=1e-6)


@pytest.mark.parametrize(
    ("kind", "soft", "where"),
    [
        ("logits", False, "wrong"),
        ("logits", False, "true"),
        ("logits", True, "wrong"),
        ("log_probs", False, "true"),
        ("log_probs", True, "true"),
        ("probs", False, "true"),
        ("probs", True, "true"),
    ],
)
def test_nan_prediction_that_reaches_the_result(rng, kind, soft, where):
    n_rows, n_classes, row = 12, 4, 7
    pred = make_pred(rng, kind, n_rows, n_classes)
    labels = rng.integers(0, n_classes, size=n_rows)
    labels[row] = 1
    pred[row, 1 if where == "true" else 3] = np.nan
    target = one_hot(labels, n_classes) if soft else labels
    for reduction in REDUCTIONS:
        with pytest.raises(ValueError, match=row_pattern(row)):
            cross_entropy(pred, target, pred_kind=kind, reduction=reduction)


def test_nan_target_distribution(rng):
    x = make_pred(rng, "logits", 8, 3)
    t = make_targets(rng, 8, 3)
    t[5, 1] = np.nan
    with pytest.raises(ValueError, match=row_pattern(5)):
        cross_entropy(x, t, pred_kind="logits")


@pytest.mark.parametrize("soft", [False, True])
def test_plus_inf_logit_is_an_error(rng, soft):
    x = make_pred(rng, "logits", 8, 3)
    labels = rng.integers(0, 3, size=8)
    x[4, 2] = np.inf
    target = one_hot(labels, 3) if soft else labels
    with pytest.raises(ValueError, match=row_pattern(4)):
        cross_entropy(x, target, pred_kind="logits")


# --------------------------------------------------------------------------- errors: options


@pytest.mark.parametrize(
    ("option", "value", "shown"),
    [
        ("pred_kind", "softmax", "softmax"),
        ("pred_kind", "Logits", "Logits"),
        ("reduction", "average", "average"),
        ("reduction", None, "None"),
        ("label_smoothing", -0.1, "-0.1"),
        ("label_smoothing", 1.5, "1.5"),
        ("label_smoothing", math.nan, "nan"),
        ("eps", -1e-3, "-0.001"),
        ("eps", 1.5, "1.5"),
        ("eps", math.nan, "nan"),
        ("eps", "fast", "fast"),
    ],
)
def test_bad_option_names_parameter_and_value(rng, option, value, shown):
    p = make_pred(rng, "probs", 6, 3)
    labels = rng.integers(0, 3, size=6)
    with pytest.raises(ValueError, match=re.escape(option)) as info:
        cross_entropy(p, labels, **{option: value})
    assert shown in str(info.value), str(info.value)


@pytest.mark.parametrize("ignore_index", [-100, 1])
def test_ignore_index_with_soft_targets_is_an_error(rng, ignore_index):
    x = make_pred(rng, "logits", 6, 3)
    t = make_targets(rng, 6, 3)
    with pytest.raises(ValueError, match="ignore_index"):
        cross_entropy(x, t, pred_kind="logits", ignore_index=ignore_index)


@pytest.mark.parametrize(
    "target",
    [
        np.array(["a", "b", "a", "c"]),
        np.array([True, False, True, True]),
        np.array([0.0, 1.0, 2.0, 0.0]),
        np.zeros((4, 3), dtype=np.int64),
        np.full((4, 3), 1 / 3, dtype=np.complex128),
        np.array([0, 1, None, 2], dtype=object),
    ],
    ids=["str", "bool", "float-1d", "int-2d", "complex", "object"],
)
def test_unusable_target_is_a_type_error_naming_both_forms(rng, target):
    x = make_pred(rng, "logits", 4, 3)
    with pytest.raises(TypeError, match=r"(?is)(?=.*integer)(?=.*float)"):
        cross_entropy(x, target, pred_kind="logits")
