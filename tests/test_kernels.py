"""The kernels' building blocks and properties: vectorisable exp/log, row paths, determinism.

Also run by CI under ``NUMBA_BOUNDSCHECK=1``: hostile labels must never index out of bounds.
"""

from __future__ import annotations

import numba
import numpy as np
import pytest
from naive import naive_cross_entropy
from numba import njit

import fastxent as fx
from fastxent._fastmath import (
    exp_f32,
    exp_f64,
    exp_sum_f32,
    log1p_f64,
    log1p_unit_f32,
    log_f64,
    log_pos_f32,
    log_prob_f64,
    max_f32,
    pairs_of,
    pick_in_pair,
)


@njit
def _map_exp32(x, out):
    for i in range(x.shape[0]):
        out[i] = exp_f32(x[i])


@njit
def _map_exp_sum32(x, out):
    for i in range(x.shape[0]):
        out[i] = exp_sum_f32(x[i])


@njit
def _map_exp64(x, out):
    for i in range(x.shape[0]):
        out[i] = exp_f64(x[i])


@njit
def _map_log64(x, out):
    for i in range(x.shape[0]):
        out[i] = log_f64(x[i])


@njit
def _map_log_pos32(x, out):
    for i in range(x.shape[0]):
        out[i] = log_pos_f32(x[i])


@njit
def _row_max32(x):
    return max_f32(x, np.uint64(0), x.shape[0])


@njit
def _map_log_prob(x, out):
    for i in range(x.shape[0]):
        out[i] = log_prob_f64(x[i])


@njit
def _pick_every_row(x, take):
    pairs = pairs_of(x)
    out = np.empty(x.shape[0], x.dtype)
    for i in range(x.shape[0]):
        out[i] = pick_in_pair(pairs, x, i, take[i])
    return out


@njit
def _map_log1p64(x, out):
    for i in range(x.shape[0]):
        out[i] = log1p_f64(x[i])


@njit
def _map_log1p32(x, out):
    for i in range(x.shape[0]):
        out[i] = log1p_unit_f32(x[i])


def _apply(fn, x):
    out = np.empty_like(x)
    fn(x, out)
    return out


F32_SPECIALS = np.array(
    [
        0.0,
        -0.0,
        np.inf,
        -np.inf,
        np.nan,
        1e-45,
        -1e-45,
        1e-40,
        -88.0,
        88.0,
        88.7,
        89.0,
        -87.3,
        -87.4,
        -103.9,
        -200.0,
        1.0,
        -1.0,
    ],
    dtype=np.float32,
)


def test_exp_f32_matches_numpy_over_the_float32_range(rng):
    x = np.concatenate([rng.uniform(-110, 90, 500_000).astype(np.float32), F32_SPECIALS])
    got = _apply(_map_exp32, x)
    want = np.exp(x.astype(np.float64))
    normal = (want >= np.finfo(np.float32).tiny) & (x < 88.3)
    rel = np.abs(got[normal] - want[normal]) / want[normal]
    assert rel.max() < 2.5e-7  # about 2 ulp
    # Below the smallest normal the result is flushed to 0; NaN stays NaN; +inf and
    # overflow give +inf; -inf gives 0.
    assert np.all(got[want < 1.1e-38] <= np.finfo(np.float32).tiny)
    assert np.isnan(got[np.isnan(x)]).all()
    assert np.all(got[x >= 88.8] == np.inf)
    assert got[x == -np.inf][0] == 0.0
    assert got[x == 0][0] == 1.0  # exactly: the kernels rely on exp(0) == 1


def test_exp_sum_f32_is_accurate_where_row_sums_are_trusted(rng):
    """The logits + labels row sums trust totals in [1e-30, 1e30] only: exp_sum_f32 must be
    accurate to well within the float32 tolerance (1e-6) there, stay tiny below, saturate
    finitely above, and keep NaN."""
    x = np.concatenate([rng.uniform(-87, 88, 1_000_000).astype(np.float32), F32_SPECIALS])
    got = _apply(_map_exp_sum32, x).astype(np.float64)
    want = np.exp(x.astype(np.float64))
    inside = (x >= -87) & (x <= 88)
    rel = np.abs(got[inside] - want[inside]) / want[inside]
    assert rel.max() < 4e-7
    near = inside & (np.abs(x) <= 20)  # where the terms that decide a loss usually sit
    assert (np.abs(got[near] - want[near]) / want[near]).max() < 2.5e-7
    assert abs(((got[inside] - want[inside]) / want[inside]).mean()) < 5e-8  # no drift
    assert got[x == 0][0] == 1.0  # exactly: the row sums tell hits from misses by it
    low = x < -87.4
    assert np.all((got[low] >= 0) & (got[low] <= 1.2e-38))
    high = x > 88  # +inf included: finite, far above the 1e30 that sends a row elsewhere
    assert np.all((got[high] > 1e38) & np.isfinite(got[high]))
    assert np.isnan(got[np.isnan(x)]).all()


def test_log1p_unit_f32_matches_numpy_on_the_unit_interval(rng):
    # The float32 kernels take log1p of exp(-|d|): anything in [0, 1].
    x = np.concatenate(
        [
            (10.0 ** rng.uniform(-45, 0, 500_000)).astype(np.float32),
            rng.uniform(0, 1, 500_000).astype(np.float32),
            np.array([0.0, 1e-45, 1e-30, 0.5, 1.0], np.float32),
            # both sides of the switch at sqrt(2) - 1
            np.nextafter(np.float32(np.sqrt(2) - 1), np.float32([0, 0, 1, 1])),
        ]
    )
    x = x[x <= 1]
    got = _apply(_map_log1p32, x).astype(np.float64)
    want = np.log1p(x.astype(np.float64))
    nonzero = want != 0
    assert (np.abs(got[nonzero] - want[nonzero]) / np.abs(want[nonzero])).max() < 1.5e-7
    assert got[x == 0][0] == 0.0
    assert np.isnan(_apply(_map_log1p32, np.array([np.nan], np.float32))[0])


def test_exp_f64_matches_numpy(rng):
    x = np.concatenate(
        [
            rng.uniform(-745, 709, 500_000),
            rng.uniform(-1, 1, 10_000),
            [0.0, np.inf, -np.inf, np.nan, -708.3, -800.0],
        ]
    )
    got = _apply(_map_exp64, x)
    want = np.exp(x)
    normal = (want >= np.finfo(np.float64).tiny) & (x < 709.0)
    rel = np.abs(got[normal] - want[normal]) / want[normal]
    assert rel.max() < 1e-15
    assert got[x == 0][0] == 1.0
    assert got[x == np.inf][0] == np.inf
    assert got[x == -np.inf][0] == 0.0
    assert np.isnan(got[np.isnan(x)]).all()


def test_log_f64_matches_numpy_including_subnormals_and_specials(rng):
    x = np.concatenate(
        [
            10.0 ** rng.uniform(-323, 308, 500_000),
            rng.uniform(0.5, 2, 50_000),
            [5e-324, 2.2250738585072014e-308, 1.0, 0.0, -0.0, -1.0, np.inf, np.nan],
        ]
    )
    got = _apply(_map_log64, x)
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.log(x)
    finite = np.isfinite(want) & (want != 0)
    assert (np.abs(got[finite] - want[finite]) / np.abs(want[finite])).max() < 5e-16
    assert got[x == 1.0][0] == 0.0
    assert np.all(got[x == 0.0] == -np.inf)
    assert np.isnan(got[x == -1.0]).all() and np.isnan(got[np.isnan(x)]).all()
    assert got[x == np.inf][0] == np.inf


def test_log_prob_f64_is_within_3e_12_for_every_float32_mantissa():
    # The float32 gather takes log_prob_f64 of probabilities read from float32, clamped into
    # [eps, 1 - eps]: every float32 mantissa, at exponents from float32's subnormals to 1.
    mantissas = np.arange(1 << 23, 1 << 24, dtype=np.float64)  # [2**23, 2**24)
    for exponent in (-24, -25, -60, -149):
        x = np.concatenate([mantissas * 2.0**exponent, [1.0]])
        got = _apply(_map_log_prob, x)
        want = np.log(x)
        nonzero = want != 0
        assert (np.abs(got[nonzero] - want[nonzero]) / np.abs(want[nonzero])).max() < 3.1e-12
    edges = np.array([0.0, 1.0, 2.2250738585072014e-308, 1e-300, 1e-45, 2.0**-23, 1 - 2.0**-24])
    got = _apply(_map_log_prob, edges)
    assert got[0] == -np.inf and got[1] == 0.0
    np.testing.assert_allclose(got[2:], np.log(edges[2:]), rtol=3.1e-12)


def test_log_pos_f32_is_within_one_ulp_on_positive_normal_floats(rng):
    # The two-column float32 gather takes log_pos_f32 of probabilities clipped into [eps,
    # 1 - eps] (eps normal): random normal floats, every mantissa just below and above 1,
    # and the ends of the reduction interval [sqrt(1/2), sqrt(2)).
    bits = rng.integers(0x00800000, 0x7F800000, 2_000_000, dtype=np.int64).astype(np.int32)
    steps = np.arange(1, 1 << 16, dtype=np.float64)
    x = np.concatenate(
        [
            bits.view(np.float32),
            (1.0 - steps * 2.0**-24).astype(np.float32),
            (1.0 + steps * 2.0**-23).astype(np.float32),
            np.float32([1.0, 2.0**-126, 2.0**-23, 1 - 2.0**-23, 0.70710677, 0.7071068]),
            np.float32([1.4142135, 1.4142137, np.finfo(np.float32).max]),
        ]
    )
    got = _apply(_map_log_pos32, x).astype(np.float64)
    want = np.log(x.astype(np.float64))
    ulp = np.spacing(np.abs(want).astype(np.float32)).astype(np.float64)
    nonzero = want != 0
    assert (np.abs(got - want)[nonzero] / ulp[nonzero]).max() < 1.0
    assert got[~nonzero].tolist() == [0.0]  # log(1) is exactly 0


def test_max_f32_orders_like_the_floats(rng):
    x = rng.standard_normal(1000).astype(np.float32) * 50
    assert _row_max32(x) == x.max()
    assert _row_max32(-np.abs(x)) == (-np.abs(x)).max()
    y = x.copy()
    y[777] = np.inf
    assert _row_max32(y) == np.inf
    y[3] = np.nan
    assert np.isnan(_row_max32(y))
    assert _row_max32(np.float32([-np.inf, -np.inf])) == -np.inf
    assert _row_max32(np.float32([-0.0, -1e-45, -3.0])) == 0.0
    assert _row_max32(np.zeros(0, np.float32)) == -np.inf


@pytest.mark.parametrize("layout", ["C", "strided", "float64"])
def test_pick_in_pair_reads_the_requested_column(rng, layout):
    wide = rng.random((1000, 4)).astype(np.float64 if layout == "float64" else np.float32)
    x = wide[:, 1:3] if layout == "strided" else np.ascontiguousarray(wide[:, :2])
    take = rng.random(1000) < 0.5
    got = _pick_every_row(x, take)
    assert got.dtype == x.dtype
    np.testing.assert_array_equal(got, np.where(take, x[:, 1], x[:, 0]))


def test_log1p_f64_is_accurate_for_tiny_and_huge_arguments(rng):
    u = np.concatenate([10.0 ** rng.uniform(-300, 300, 300_000), [0.0, np.inf]])
    got = _apply(_map_log1p64, u)
    want = np.log1p(u)
    pos = (want > 0) & np.isfinite(want)
    assert (np.abs(got[pos] - want[pos]) / want[pos]).max() < 5e-16
    assert got[-2] == 0.0 and got[-1] == np.inf


@pytest.mark.parametrize("n_classes", [2, 3, 31, 32, 33, 64, 100, 1025, 3000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logits_row_paths_against_reference(rng, n_classes, dtype):
    """C == 2, tails only (C < 32), whole chunks, chunks plus tail, several float32 runs."""
    n = 97
    x = (rng.standard_normal((n, n_classes)) * 4).astype(dtype)
    y = rng.integers(0, n_classes, n)
    got = fx.cross_entropy(x, y, pred_kind="logits", reduction="none")
    want = naive_cross_entropy(x, y, pred_kind="logits", reduction="none")
    tol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(got, want, rtol=tol, atol=1e-300)


@pytest.mark.parametrize("n_classes", [2, 3, 31, 32, 33, 40, 63, 100, 1000, 1025, 3000])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_soft_target_row_paths_against_reference(rng, n_classes, dtype):
    """Soft targets over logits: short rows, whole 32-chunks, the last C % 32 columns (taken
    through the block's tail buffer: the row max in the chunks tied with a tail column, the
    max in the tail, -inf logits with zero targets there), zero targets, several float32
    runs, label smoothing, sums that underflow float32."""
    n = 61
    x = (rng.standard_normal((n, n_classes)) * 4).astype(dtype)
    t = rng.random((n, n_classes))
    t[:, ::3] = 0.0
    main_col = n_classes - n_classes % 32 - 1  # the last column of the whole chunks
    tail_col = n_classes - 1  # in the tail unless C % 32 == 0
    if n_classes > 32:
        x[:20, main_col] = 50.0  # the row max ...
        x[:10, tail_col] = 50.0  # ... tied with a tail column
        x[30:40, tail_col] = 60.0  # the row max in the tail
        x[20:30, tail_col] = -np.inf
        t[20:30, tail_col] = 0.0
        x[40:45, 1] = -np.inf  # in the chunks: 0 * (-inf) must count as 0, not NaN
        t[40:45, 1] = 0.0
        t[45:50, 2] = -0.0  # a negative zero is a valid target
        # Sums that underflow float32, redone in float64 by the block: a confident row ...
        x[50:55, 0] = 200.0
        t[50:55] = 0.0
        t[50:55, 0] = 1.0
        x[55:58, 0] = 200.0  # ... and one whose tail holds a term the redo must not add twice
        x[55:58, tail_col] = 199.0
    t /= t.sum(axis=1, keepdims=True)
    for smoothing in (0.0, 0.1):
        got = fx.cross_entropy(
            x, t, pred_kind="logits", reduction="none", label_smoothing=smoothing
        )
        want = naive_cross_entropy(
            x, t, pred_kind="logits", reduction="none", label_smoothing=smoothing
        )
        tol = 1e-12 if dtype == np.float64 else 1e-6
        np.testing.assert_allclose(got, want, rtol=tol, atol=1e-300)
    if n_classes > 32:
        bad = x.copy()
        bad[5, main_col] = np.nan  # read by the chunk loop
        bad[7, tail_col] = np.nan  # read in the tail
        got = fx.cross_entropy(bad, t, pred_kind="logits", reduction="none", nan_policy="propagate")
        assert np.isnan(got[[5, 7]]).all()
        assert np.isfinite(np.delete(got, [5, 7])).all()
        neg = t.copy()
        neg[9, 1] -= 0.5  # a negative target read by the chunk loop
        neg[9, 4] += 0.5
        with pytest.raises(ValueError, match="row 9"):
            fx.cross_entropy(x, neg, pred_kind="logits")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_class_sums_against_reference(rng, dtype):
    """Two columns: the mean and sum come from a loop straight into the block sums (soft
    targets) or from the softplus form log1p(exp(d)) = max(d, 0) + log1p(exp(-|d|))
    (labels). Blocks holding a row that needs a closer look (margins far beyond float32's
    exp, -inf logits, one-hot targets, zero sample weights) must give the reference too."""
    n = 50_000
    x = (rng.standard_normal((n, 2)) * 6).astype(dtype)
    x[100, 0] = 120.0  # exp(-120) underflows float32: a loss the fast path cannot hold
    x[200] = [-90.0, 90.0]
    x[300, 1] = -np.inf
    x[40_000] = [1e30, -1e30]  # blocks of 16384 rows: blocks 1 and 3 are clean
    y = rng.integers(0, 2, n)
    t = rng.random((n, 2))
    t[::5, 0] = 0.0  # one-hot rows
    t[300] = [1.0, 0.0]  # all the mass on the finite logit
    t /= t.sum(axis=1, keepdims=True)
    sw = rng.random(n)
    sw[::7] = 0.0
    tol = 1e-12 if dtype == np.float64 else 1e-6
    for target in (y, t):
        for weights in (None, sw):
            want = naive_cross_entropy(x, target, pred_kind="logits", reduction="none")
            if weights is not None:
                want = want * weights
            norm = n if weights is None else weights.sum()
            for reduction, expected in (("sum", want.sum()), ("mean", want.sum() / norm)):
                got = fx.cross_entropy(
                    x, target, pred_kind="logits", reduction=reduction, sample_weight=weights
                )
                np.testing.assert_allclose(got, expected, rtol=tol)
            got = fx.cross_entropy(
                x, target, pred_kind="logits", reduction="none", sample_weight=weights
            )
            # A row's own loss can be as small as exp(-69): its float32 difference of the two
            # logits rounds by up to half an ulp (1e-6 at |d| = 17), and so does the loss.
            row_tol = 1e-12 if dtype == np.float64 else 5e-6
            np.testing.assert_allclose(got, want, rtol=row_tol, atol=1e-300)
    bad = t.copy()
    bad[20_000] = [0.7, 0.7]  # a target row that does not sum to 1, in a clean block
    with pytest.warns(fx.SoftWarning, match="row 20000"):
        fx.cross_entropy(x, bad, pred_kind="logits")
    bad[20_000] = [1.5, -0.5]
    with pytest.raises(ValueError, match="row 20000"):
        fx.cross_entropy(x, bad, pred_kind="logits")
    nan = x.copy()
    nan[25_000, 1] = np.nan
    for target in (y, t):
        with pytest.raises(ValueError, match="row 25000"):
            fx.cross_entropy(nan, target, pred_kind="logits")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_class_probabilities_against_reference(rng, dtype):
    """Two columns of probabilities, integer labels, no class weights: the loop in the
    storage precision when the clip bounds are exact and normal there (float32: ``"auto"``,
    2**-10), the float64 loop otherwise (1e-15, 0). Probabilities of exactly 0 and 1 are
    clipped; blocks holding a bad row must still name it."""
    n = 50_000
    q = rng.random(n)
    q[::97] = 0.0
    q[::89] = 1.0
    q[5] = 1e-30
    p = np.stack([q, 1.0 - q], axis=1).astype(dtype)
    y = rng.integers(0, 2, n)
    sw = rng.random(n)
    sw[::7] = 0.0
    tol = 1e-12 if dtype == np.float64 else 1e-6
    for eps in ("auto", 2.0**-10, 1e-15):
        for weights in (None, sw):
            want = naive_cross_entropy(p, y, eps=eps, reduction="none")
            if weights is not None:
                want = want * weights
            norm = n if weights is None else weights.sum()
            got = fx.cross_entropy(p, y, eps=eps, sample_weight=weights)
            np.testing.assert_allclose(got, want.sum() / norm, rtol=tol)
            rows = fx.cross_entropy(p, y, eps=eps, sample_weight=weights, reduction="none")
            np.testing.assert_allclose(rows, want, rtol=tol, atol=1e-300)
    assert fx.cross_entropy(p, y, eps=0.0) == np.inf  # no clipping: -log 0 on some rows
    # ignore_index on a real class (rows left out of the mean), then rejected labels
    keep = y != 1
    want = naive_cross_entropy(p[keep], y[keep], reduction="mean")
    np.testing.assert_allclose(fx.cross_entropy(p, y, ignore_index=1), want, rtol=tol)
    for bad_label in (2, -1):
        bad_y = y.copy()
        bad_y[30_000] = bad_label
        with pytest.raises(ValueError, match="row 30000"):
            fx.cross_entropy(p, bad_y)
    for bad_value in (np.nan, 1.5, -0.25):
        bad = p.copy()
        bad[25_000, y[25_000]] = bad_value
        with pytest.raises(ValueError, match="row 25000"):
            fx.cross_entropy(bad, y)


@pytest.mark.parametrize("n_classes", [2, 5, 40])
def test_overflowing_shift_takes_the_exact_path(n_classes):
    """Shifting by the true logit overflows when another logit is far above it."""
    x = np.zeros((4, n_classes), dtype=np.float32)
    x[:, 1] = 200.0  # exp(200 - 0) overflows float32
    y = np.array([0, 1, 0, 1])
    got = fx.cross_entropy(x, y, pred_kind="logits", reduction="none")
    want = naive_cross_entropy(x, y, pred_kind="logits", reduction="none")
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert np.isfinite(got).all()


@pytest.mark.parametrize("n_classes", [5, 40, 100, 700])
def test_rows_far_above_the_label_are_exact(n_classes):
    """Entries 60-95 above the label: the row sum passes 1e30 (the fast exp saturates at
    exp(88)) and the float64 path scores the row."""
    gaps = np.array([60.0, 69.5, 80.0, 87.9, 88.1, 88.6, 95.0], np.float32)
    x = np.zeros((gaps.size, n_classes), np.float32)
    x[:, n_classes - 2] = gaps  # in the vector loop for C >= 40, in the tail below
    y = np.zeros(gaps.size, np.int64)
    got = fx.cross_entropy(x, y, pred_kind="logits", reduction="none")
    want = naive_cross_entropy(x, y, pred_kind="logits", reduction="none")
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("n_classes", [40, 100, 700])
def test_misses_that_look_like_ties_are_decided_exactly(n_classes):
    """An entry 1 ulp above the label (exp rounds to 1) and entries whose exp terms add up
    to a whole number look like ties in the row sums: the exact scan decides."""
    x = np.zeros((3, n_classes), np.float32)
    x[0, 0] = 0.5
    x[0, 5] = np.nextafter(np.float32(0.5), np.float32(1))
    x[1, 5] = np.float32(0.6931472)  # exp of it is exactly 2.0 in float32
    x[2, 5] = np.float32(0.6931472)
    x[2, 7] = np.float32(0.6931472)
    y = np.zeros(3, np.int64)
    acc = fx.Accumulator(pred_kind="logits")
    acc.update(x, y)
    assert acc.result().accuracy == 0.0
    got = fx.cross_entropy(x, y, pred_kind="logits", reduction="none")
    want = naive_cross_entropy(x, y, pred_kind="logits", reduction="none")
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("n_classes", [2, 5, 40, 700])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_very_confident_rows_keep_their_tiny_loss(n_classes, dtype):
    """exp of the shifted logits underflows float32: the loss (~1e-86) is still exact."""
    x = np.zeros((4, n_classes), dtype=dtype)
    x[:, 1] = 200.0
    y = np.ones(4, dtype=np.int64)
    for reduction in ("none", "mean"):
        got = fx.cross_entropy(x, y, pred_kind="logits", reduction=reduction)
        want = naive_cross_entropy(x, y, pred_kind="logits", reduction=reduction)
        np.testing.assert_allclose(got, want, rtol=1e-6)
    onehot = np.eye(n_classes, dtype=dtype)[y]
    got = fx.cross_entropy(x, onehot, pred_kind="logits")
    want = naive_cross_entropy(x, onehot, pred_kind="logits")
    np.testing.assert_allclose(got, want, rtol=1e-6)


@pytest.mark.parametrize("n_classes", [2, 5, 40, 100])
def test_accuracy_and_loss_of_logits_without_ties(rng, n_classes):
    """The common case (every row settled by the fast pass, no class weights) takes its sums
    in one loop: the accuracy, the loss and the standard error must match the reference,
    with and without sample weights."""
    n = 20_000
    x = rng.standard_normal((n, n_classes)).astype(np.float32)
    y = rng.integers(0, n_classes, n)
    hits = np.argmax(x, axis=1) == y
    rows = naive_cross_entropy(x, y, pred_kind="logits", reduction="none")
    for sw in (None, rng.random(n)):
        acc = fx.Accumulator(pred_kind="logits")
        acc.update(x, y, sample_weight=sw)
        got = acc.result()
        w = np.ones(n) if sw is None else sw
        assert got.accuracy == hits.mean()
        mean = (w * rows).sum() / w.sum()
        np.testing.assert_allclose(got.loss, mean, rtol=1e-6)
        # the delta method's standard error of sum(a) / sum(b), a = w * loss, b = w
        stderr = np.sqrt(((w * rows - mean * w) ** 2).sum() * n / (n - 1)) / w.sum()
        np.testing.assert_allclose(got.stderr, stderr, rtol=1e-5)


@pytest.mark.parametrize("n_classes", [2, 4, 40, 300, 700])
def test_accuracy_uses_the_first_argmax_on_ties(n_classes):
    x = np.zeros((3, n_classes), dtype=np.float32)
    x[0, 0] = x[0, 1] = 1.0  # tie between classes 0 and 1
    x[1, 0] = x[1, 1] = 1.0
    x[2, 1] = 2.0
    y = np.array([0, 1, 1])
    acc = fx.Accumulator(pred_kind="logits")
    acc.update(x, y)
    assert acc.result().accuracy == pytest.approx(2 / 3)


@pytest.mark.parametrize("n_classes", [700, 2100])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_wide_rows_split_only_the_label_chunk(rng, n_classes, dtype):
    """Rows of 640 whole-chunk columns or more split only the label's chunk of 32 into terms
    below / at or above the label; the other columns are summed whole, their ties and
    entries above the label found from the largest difference of each run of 1,024. Labels
    in the first, a middle and the last whole chunk and in the tail; a tie or an entry just
    above the label before, in and after the label's chunk (in another run for 2,100
    columns); two ties in two runs; a confident row; ties at +0 / -0 (the split kept)."""
    n_main = n_classes - n_classes % 32
    cases = []  # (label, {column: logit}) on a row of small logits below 1
    for lab in (3, 40, n_main // 2 + 5, n_main - 1, n_classes - 1):
        cases.append((lab, {lab: 2.0}))  # a hit
        in_chunk = min(lab - lab % 32 + (lab + 7) % 32, n_classes - 1)
        for col in {0, in_chunk, n_classes - 2} - {lab}:
            cases.append((lab, {lab: 2.0, col: 2.0}))  # a tie: the first index wins
            cases.append((lab, {lab: 2.0, col: np.nextafter(dtype(2.0), dtype(3.0))}))
            cases.append((lab, {lab: 2.0, col: 9.0}))  # a clear miss
        cases.append((lab, {lab: 2.0, 1: 2.0, n_classes - 3: 2.0}))
        cases.append((lab, {lab: 30.0}))  # confident: a loss of ~1e-10
    x = (rng.random((len(cases) + 2, n_classes)) - 0.5).astype(dtype)
    y = np.zeros(len(x), np.int64)
    for i, (lab, entries) in enumerate(cases):
        y[i] = lab
        for col, v in entries.items():
            x[i, col] = v
    x[-2:] = 0.25
    x[-2, 9], x[-2, 600] = 0.0, -0.0  # label 600 at -0, class 9 at +0: a tie, class 9 first
    x[-1, 9], x[-1, 600] = -0.0, 0.0
    y[-2:] = 600
    acc = fx.Accumulator(pred_kind="logits")
    acc.update(x, y)
    assert acc.result().accuracy == (np.argmax(x, axis=1) == y).mean()
    got = fx.cross_entropy(x, y, pred_kind="logits", reduction="none")
    want = naive_cross_entropy(x, y, pred_kind="logits", reduction="none")
    np.testing.assert_allclose(got, want, rtol=1e-12 if dtype == np.float64 else 1e-6)


def test_results_do_not_depend_on_the_thread_count(rng):
    x = rng.standard_normal((60_000, 37)).astype(np.float32)  # several blocks
    y = rng.integers(0, 37, 60_000)
    before = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = fx.cross_entropy(x, y, pred_kind="logits")
        numba.set_num_threads(before)
        many = fx.cross_entropy(x, y, pred_kind="logits")
    finally:
        numba.set_num_threads(before)
    assert one == many  # same bits


@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("kind", ["probs", "log_probs", "logits"])
def test_hostile_labels_are_reported_not_read(rng, kind, n_classes):
    """Labels far outside [0, C) must never be used as indices (checked in CI with
    NUMBA_BOUNDSCHECK=1, where an out-of-bounds read raises)."""
    p = rng.dirichlet(np.ones(n_classes), 50)
    x = np.log(p) if kind != "probs" else p
    for bad in (n_classes, -1, 2**62, -(2**62), np.iinfo(np.int64).min):
        y = rng.integers(0, n_classes, 50)
        y[37] = bad
        with pytest.raises(ValueError, match=rf"row 37 has {bad}"):
            fx.cross_entropy(x, y, pred_kind=kind)
        with pytest.raises(ValueError, match="row 37"):
            fx.cross_entropy(x, y, pred_kind=kind, reduction="none")


def test_large_classes_bounded_work(rng):
    """150,000 classes: a single row is larger than a block; still exact."""
    x = rng.standard_normal((3, 150_000)).astype(np.float32)
    y = np.array([0, 74_999, 149_999])
    got = fx.cross_entropy(x, y, pred_kind="logits", reduction="none")
    want = naive_cross_entropy(x, y, pred_kind="logits", reduction="none")
    np.testing.assert_allclose(got, want, rtol=1e-6)
