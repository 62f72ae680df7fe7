"""The float64 reference in ``naive.py`` agrees with torch and sklearn.

These tests do not touch fastxent: they establish that the yardstick the package is measured
against is itself right, option by option, so a disagreement in ``test_losses.py`` points at
the package.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from naive import log_softmax, naive_cross_entropy, one_hot, softmax

torch = pytest.importorskip("torch")
sklearn_metrics = pytest.importorskip("sklearn.metrics")
F = torch.nn.functional
torch.set_num_threads(2)

RTOL = 1e-12
REDUCTIONS = ("mean", "sum", "none")


def _close(got, expected, rtol=RTOL):
    """Relative agreement; for "none" rows, relative to the largest row (norm-wise)."""
    got = np.asarray(got, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    atol = rtol * float(np.max(np.abs(expected), initial=1.0))
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=atol)


def _torch_reduce(t, reduction):
    return t.numpy() if reduction == "none" else float(t)


def _random_logits(rng, n_rows, n_classes, scale=3.0):
    return rng.normal(scale=scale, size=(n_rows, n_classes))


def _random_targets(rng, n_rows, n_classes):
    """Target distributions, some rows peaked, some with exact zeros."""
    t = rng.dirichlet(np.full(n_classes, 0.5), size=n_rows)
    t[rng.random((n_rows, n_classes)) < 0.2] = 0.0
    t[:, 0] += 1e-3  # no all-zero rows
    return t / t.sum(axis=1, keepdims=True)


def _random_weight(rng, n_classes):
    return rng.uniform(0.1, 3.0, size=n_classes)


# --------------------------------------------------------------------------- seed examples


@pytest.mark.parametrize(
    ("probs", "label", "expected", "rounded"),
    [
        ([0.1, 0.5, 0.1, 0.1, 0.2], 0, -math.log(0.1), (6, 2.302585)),
        ([0.4, 0.4, 0.2], 1, -math.log(0.4), (2, 0.92)),
        ([0.1, 0.2, 0.7], 2, -math.log(0.7), (2, 0.36)),
    ],
)
def test_seed_examples(probs, label, expected, rounded):
    got = naive_cross_entropy([probs], np.array([label]), pred_kind="probs")
    assert got == pytest.approx(expected, rel=1e-15)
    digits, value = rounded
    assert round(got, digits) == value
    sk = sklearn_metrics.log_loss([label], [probs], labels=list(range(len(probs))))
    assert got == pytest.approx(sk, rel=RTOL)


def test_seed_examples_as_logits_and_log_probs():
    p = np.array([[0.1, 0.5, 0.1, 0.1, 0.2]])
    for kind, pred in (("logits", np.log(p) + 7.0), ("log_probs", np.log(p))):
        got = naive_cross_entropy(pred, np.array([0]), pred_kind=kind)
        assert got == pytest.approx(2.302585, abs=1e-6)


# --------------------------------------------------------------------------- helpers


def test_helpers(rng):
    x = _random_logits(rng, 20, 7) + 500.0
    p = softmax(x)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-15)
    np.testing.assert_allclose(log_softmax(x), np.log(p), rtol=1e-13, atol=1e-13)
    _close(log_softmax(x), F.log_softmax(torch.from_numpy(x), dim=1).numpy())
    labels = rng.integers(0, 7, size=20)
    oh = one_hot(labels, 7)
    assert oh.shape == (20, 7)
    np.testing.assert_array_equal(oh.argmax(axis=1), labels)
    np.testing.assert_array_equal(oh.sum(axis=1), 1.0)


def test_reductions_are_consistent(rng):
    x = _random_logits(rng, 40, 5)
    labels = rng.integers(0, 5, size=40)
    labels[::7] = -100
    w = _random_weight(rng, 5)
    s = rng.uniform(0.0, 2.0, size=40)
    kw = dict(pred_kind="logits", weight=w, sample_weight=s, ignore_index=-100, label_smoothing=0.2)
    rows = naive_cross_entropy(x, labels, reduction="none", **kw)
    assert rows.dtype == np.float64 and rows.shape == (40,)
    assert np.all(rows[labels == -100] == 0.0)
    total = naive_cross_entropy(x, labels, reduction="sum", **kw)
    assert total == pytest.approx(math.fsum(rows), rel=1e-15)
    norm = math.fsum(s[i] * w[y] for i, y in enumerate(labels) if y != -100)
    assert naive_cross_entropy(x, labels, reduction="mean", **kw) == pytest.approx(
        total / norm, rel=1e-15
    )


# --------------------------------------------------------------------------- torch: logits


@pytest.mark.parametrize("n_classes", [2, 7, 33])
def test_logits_labels_match_torch_every_option(rng, n_classes):
    n_rows = 60
    x = _random_logits(rng, n_rows, n_classes)
    labels = rng.integers(0, n_classes, size=n_rows)
    w = _random_weight(rng, n_classes)
    in_range_ignore = int(labels[3])
    ignore_choices = (None, -100, in_range_ignore)
    labels_neg = labels.copy()
    labels_neg[rng.random(n_rows) < 0.2] = -100
    xt = torch.from_numpy(x)
    for weight, ignore_index, smoothing, reduction in itertools.product(
        (None, w), ignore_choices, (0.0, 0.1, 0.5, 1.0), REDUCTIONS
    ):
        y = labels_neg if ignore_index == -100 else labels
        expected = F.cross_entropy(
            xt,
            torch.from_numpy(y),
            weight=None if weight is None else torch.from_numpy(weight),
            ignore_index=-100 if ignore_index is None else ignore_index,
            reduction=reduction,
            label_smoothing=smoothing,
        )
        got = naive_cross_entropy(
            x,
            y,
            pred_kind="logits",
            reduction=reduction,
            weight=weight,
            ignore_index=ignore_index,
            label_smoothing=smoothing,
        )
        _close(got, _torch_reduce(expected, reduction))


@pytest.mark.parametrize("n_classes", [2, 7, 33])
def test_logits_soft_targets_match_torch_every_option(rng, n_classes):
    n_rows = 50
    x = _random_logits(rng, n_rows, n_classes)
    t = _random_targets(rng, n_rows, n_classes)
    w = _random_weight(rng, n_classes)
    for weight, smoothing, reduction in itertools.product(
        (None, w), (0.0, 0.1, 0.5, 1.0), REDUCTIONS
    ):
        expected = F.cross_entropy(
            torch.from_numpy(x),
            torch.from_numpy(t),
            weight=None if weight is None else torch.from_numpy(weight),
            reduction=reduction,
            label_smoothing=smoothing,
        )
        got = naive_cross_entropy(
            x,
            t,
            pred_kind="logits",
            reduction=reduction,
            weight=weight,
            label_smoothing=smoothing,
        )
        _close(got, _torch_reduce(expected, reduction))


def test_torch_mean_normaliser_with_weights_and_smoothing(rng):
    """torch divides the smoothing term by sum w[y_i] too (not by N, not by sum w)."""
    x = _random_logits(rng, 30, 4)
    labels = rng.integers(0, 4, size=30)
    w = np.array([0.2, 1.0, 3.0, 0.5])
    e = 0.3
    logq = log_softmax(x)
    nll = -logq[np.arange(30), labels]
    smooth = -(logq * w).sum(axis=1)
    by_hand = ((1 - e) * (w[labels] * nll).sum() + e / 4 * smooth.sum()) / w[labels].sum()
    expected = float(
        F.cross_entropy(
            torch.from_numpy(x),
            torch.from_numpy(labels),
            weight=torch.from_numpy(w),
            label_smoothing=e,
        )
    )
    assert expected == pytest.approx(by_hand, rel=1e-12)
    got = naive_cross_entropy(x, labels, pred_kind="logits", weight=w, label_smoothing=e)
    assert got == pytest.approx(expected, rel=RTOL)


def test_torch_soft_mean_divides_by_rows_even_with_weights(rng):
    x = _random_logits(rng, 25, 6)
    t = _random_targets(rng, 25, 6)
    w = _random_weight(rng, 6)
    total = float(
        F.cross_entropy(
            torch.from_numpy(x), torch.from_numpy(t), weight=torch.from_numpy(w), reduction="sum"
        )
    )
    mean = float(
        F.cross_entropy(torch.from_numpy(x), torch.from_numpy(t), weight=torch.from_numpy(w))
    )
    assert mean == pytest.approx(total / 25, rel=1e-14)
    got = naive_cross_entropy(x, t, pred_kind="logits", weight=w)
    assert got == pytest.approx(mean, rel=RTOL)


def test_logits_large_offsets_match_torch(rng):
    x = _random_logits(rng, 20, 9) + rng.choice([-1000.0, 1000.0], size=(20, 1))
    labels = rng.integers(0, 9, size=20)
    expected = F.cross_entropy(torch.from_numpy(x), torch.from_numpy(labels), reduction="none")
    got = naive_cross_entropy(x, labels, pred_kind="logits", reduction="none")
    _close(got, expected.numpy())


# --------------------------------------------------------------------------- torch: log_probs


@pytest.mark.parametrize("n_classes", [2, 7, 33])
def test_log_probs_labels_match_nll_loss(rng, n_classes):
    n_rows = 60
    logp = log_softmax(_random_logits(rng, n_rows, n_classes))
    labels = rng.integers(0, n_classes, size=n_rows)
    labels_neg = labels.copy()
    labels_neg[::5] = -100
    w = _random_weight(rng, n_classes)
    for weight, ignore_index, reduction in itertools.product(
        (None, w), (None, -100, int(labels[0])), REDUCTIONS
    ):
        y = labels_neg if ignore_index == -100 else labels
        expected = F.nll_loss(
            torch.from_numpy(logp),
            torch.from_numpy(y),
            weight=None if weight is None else torch.from_numpy(weight),
            ignore_index=-100 if ignore_index is None else ignore_index,
            reduction=reduction,
        )
        got = naive_cross_entropy(
            logp,
            y,
            pred_kind="log_probs",
            reduction=reduction,
            weight=weight,
            ignore_index=ignore_index,
        )
        _close(got, _torch_reduce(expected, reduction))


def test_log_probs_smoothing_and_soft_targets_match_torch(rng):
    """For normalised log-probabilities torch's log_softmax is the identity (to rounding)."""
    n_rows, n_classes = 40, 7
    logp = log_softmax(_random_logits(rng, n_rows, n_classes))
    labels = rng.integers(0, n_classes, size=n_rows)
    t = _random_targets(rng, n_rows, n_classes)
    w = _random_weight(rng, n_classes)
    for target, weight, smoothing, reduction in itertools.product(
        (labels, t), (None, w), (0.0, 0.25, 1.0), REDUCTIONS
    ):
        expected = F.cross_entropy(
            torch.from_numpy(logp),
            torch.from_numpy(target),
            weight=None if weight is None else torch.from_numpy(weight),
            reduction=reduction,
            label_smoothing=smoothing,
        )
        got = naive_cross_entropy(
            logp,
            target,
            pred_kind="log_probs",
            reduction=reduction,
            weight=weight,
            label_smoothing=smoothing,
        )
        _close(got, _torch_reduce(expected, reduction), rtol=1e-11)
        if target is t:
            tt = (1 - smoothing) * t + smoothing / n_classes
            ww = np.ones(n_classes) if weight is None else weight
            rows = -(ww * tt * logp).sum(axis=1)
            by_hand = {"none": rows, "sum": rows.sum(), "mean": rows.mean()}[reduction]
            _close(got, by_hand)


# --------------------------------------------------------------------------- sample_weight


def test_sample_weight_labels_scales_rows_and_normaliser(rng):
    n_rows, n_classes = 50, 6
    x = _random_logits(rng, n_rows, n_classes)
    labels = rng.integers(0, n_classes, size=n_rows)
    labels[::6] = -100
    w = _random_weight(rng, n_classes)
    s = rng.uniform(0.0, 3.0, size=n_rows)
    for smoothing in (0.0, 0.2):
        rows = F.cross_entropy(
            torch.from_numpy(x),
            torch.from_numpy(labels),
            weight=torch.from_numpy(w),
            reduction="none",
            label_smoothing=smoothing,
        ).numpy()
        kept = labels != -100
        norm = (s[kept] * w[labels[kept]]).sum()
        kw = dict(
            pred_kind="logits",
            weight=w,
            sample_weight=s,
            ignore_index=-100,
            label_smoothing=smoothing,
        )
        _close(naive_cross_entropy(x, labels, reduction="none", **kw), s * rows)
        _close(naive_cross_entropy(x, labels, reduction="sum", **kw), (s * rows).sum())
        _close(naive_cross_entropy(x, labels, reduction="mean", **kw), (s * rows).sum() / norm)


def test_sample_weight_soft_normaliser_is_sum_of_row_weights(rng):
    n_rows, n_classes = 50, 6
    x = _random_logits(rng, n_rows, n_classes)
    t = _random_targets(rng, n_rows, n_classes)
    w = _random_weight(rng, n_classes)
    s = rng.uniform(0.0, 3.0, size=n_rows)
    rows = F.cross_entropy(
        torch.from_numpy(x),
        torch.from_numpy(t),
        weight=torch.from_numpy(w),
        reduction="none",
        label_smoothing=0.1,
    ).numpy()
    got = naive_cross_entropy(
        x, t, pred_kind="logits", weight=w, sample_weight=s, label_smoothing=0.1
    )
    _close(got, (s * rows).sum() / s.sum())


# --------------------------------------------------------------------------- sklearn: probs


def _random_probs(rng, n_rows, n_classes, dtype=np.float64, with_extremes=True):
    """Rows that sum to 1 in ``dtype`` (sklearn warns otherwise), some with exact 0 and 1."""
    p = rng.dirichlet(np.full(n_classes, 0.7), size=n_rows)
    if with_extremes:
        p[rng.random((n_rows, n_classes)) < 0.15] = 0.0
        p[:, -1] += 1e-3
        p /= p.sum(axis=1, keepdims=True)
        p[0] = 0.0
        p[0, 0] = 1.0  # true class below gets probability 0 or 1
    return p.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_classes", [2, 3, 31])
def test_probs_match_sklearn_log_loss(rng, dtype, n_classes):
    n_rows = 80
    p = _random_probs(rng, n_rows, n_classes, dtype)
    labels = rng.integers(0, n_classes, size=n_rows)
    s = rng.uniform(0.0, 2.0, size=n_rows)
    # sklearn clips and takes the log in the dtype of y_proba; for float32 that log is
    # itself rounded to float32, so the comparison there is at float32 precision.
    rtol = RTOL if dtype == np.float64 else 2e-6
    for sample_weight, normalize in itertools.product((None, s), (True, False)):
        expected = sklearn_metrics.log_loss(
            labels,
            p,
            labels=list(range(n_classes)),
            sample_weight=sample_weight,
            normalize=normalize,
        )
        got = naive_cross_entropy(
            p,
            labels,
            pred_kind="probs",
            sample_weight=sample_weight,
            reduction="mean" if normalize else "sum",
        )
        _close(got, expected, rtol=rtol)


def test_probs_auto_eps_depends_on_dtype():
    p = np.array([[0.0, 1.0], [1.0, 0.0]])
    labels = np.array([0, 0])
    for dtype in (np.float16, np.float32, np.float64):
        eps = float(np.finfo(dtype).eps)
        rows = naive_cross_entropy(p.astype(dtype), labels, pred_kind="probs", reduction="none")
        np.testing.assert_allclose(rows, [-math.log(eps), -math.log1p(-eps)], rtol=1e-15)
    sk = sklearn_metrics.log_loss(labels, p, labels=[0, 1], normalize=False)
    expected = -math.log(np.finfo(np.float64).eps) - math.log1p(-np.finfo(np.float64).eps)
    assert sk == pytest.approx(expected, rel=RTOL)


def test_probs_explicit_and_zero_eps():
    p = np.array([[0.0, 1.0], [0.5, 0.5]])
    labels = np.array([0, 1])
    rows = naive_cross_entropy(p, labels, pred_kind="probs", reduction="none", eps=1e-3)
    np.testing.assert_allclose(rows, [-math.log(1e-3), math.log(2)], rtol=1e-15)
    rows = naive_cross_entropy(p, labels, pred_kind="probs", reduction="none", eps=0)
    assert rows[0] == math.inf and rows[1] == pytest.approx(math.log(2), rel=1e-15)
    assert naive_cross_entropy(p, labels, pred_kind="probs", eps=0) == math.inf
    # A zero probability on a class with no target mass contributes nothing, never NaN.
    assert naive_cross_entropy(p, np.array([1, 1]), pred_kind="probs", eps=0) == pytest.approx(
        math.log(2) / 2, rel=1e-15
    )
    dense = naive_cross_entropy(p, one_hot([1, 1], 2), pred_kind="probs", eps=0)
    assert dense == pytest.approx(math.log(2) / 2, rel=1e-15)


def test_probs_with_torch_options_match_torch(rng):
    """Unclipped, normalised probabilities: log(p) is a valid log-softmax input for torch."""
    n_rows, n_classes = 50, 7
    p = _random_probs(rng, n_rows, n_classes, with_extremes=False)
    p = np.clip(p, 1e-6, None)
    p /= p.sum(axis=1, keepdims=True)
    labels = rng.integers(0, n_classes, size=n_rows)
    labels[::4] = -100
    w = _random_weight(rng, n_classes)
    for weight, smoothing, reduction in itertools.product((None, w), (0.0, 0.3), REDUCTIONS):
        expected = F.cross_entropy(
            torch.from_numpy(np.log(p)),
            torch.from_numpy(labels),
            weight=None if weight is None else torch.from_numpy(weight),
            reduction=reduction,
            label_smoothing=smoothing,
        )
        got = naive_cross_entropy(
            p,
            labels,
            pred_kind="probs",
            reduction=reduction,
            weight=weight,
            ignore_index=-100,
            label_smoothing=smoothing,
        )
        _close(got, _torch_reduce(expected, reduction), rtol=1e-11)


def test_gather_equals_one_hot_dense_when_unweighted(rng):
    x = _random_logits(rng, 30, 5)
    labels = rng.integers(0, 5, size=30)
    for smoothing, reduction in itertools.product((0.0, 0.4), REDUCTIONS):
        a = naive_cross_entropy(
            x, labels, pred_kind="logits", reduction=reduction, label_smoothing=smoothing
        )
        b = naive_cross_entropy(
            x,
            one_hot(labels, 5),
            pred_kind="logits",
            reduction=reduction,
            label_smoothing=smoothing,
        )
        _close(a, b)
