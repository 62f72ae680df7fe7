"""Branch-free ``exp`` and ``log`` that LLVM can vectorise.

Numba no longer ships SVML, so ``math.exp``/``math.log`` inside a loop become one scalar
libm call per SIMD lane (about 0.2 G elements/s per core). These versions use range
reduction to a power of two plus a short polynomial, and build ``2**k`` by writing ``k`` into
the exponent bits, so a loop over them compiles to 8-wide (float32) or 4-wide (float64) AVX2.

They are compiled without ``reassoc`` on purpose: the error-compensating steps of the
polynomials must not be reordered. Callers (the kernels) add ``reassoc`` for their sums.

Special values follow IEEE behaviour where the kernels depend on it: ``exp(nan)`` is NaN,
``exp(+inf)`` is +inf, ``exp(-inf)`` and exp of anything below the smallest normal is 0
(``exp_sum_f32``, for sums that check their range, bends these rules: see its docstring;
``log_pos_f32`` takes positive normal numbers only, for callers that clip first);
``log(0)`` is -inf, ``log(x<0)`` and ``log(nan)`` are NaN, ``log(+inf)`` is +inf, and
subnormal arguments are handled exactly.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ._config import CACHE

_MATH: dict[str, Any] = {"fastmath": {"nsz", "contract"}, "error_model": "numpy", "cache": CACHE}


@intrinsic
def _f32_from_bits(typingctx, bits):
    if isinstance(bits, types.Integer) and bits.bitwidth == 32:

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.FloatType())

        return types.float32(bits), codegen
    return None


@intrinsic
def _f64_from_bits(typingctx, bits):
    if isinstance(bits, types.Integer) and bits.bitwidth == 64:

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.DoubleType())

        return types.float64(bits), codegen
    return None


@intrinsic
def _bits_from_f32(typingctx, x):
    if x == types.float32:

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.IntType(32))

        return types.int32(x), codegen
    return None


@intrinsic
def _bits_from_f64(typingctx, x):
    if x == types.float64:

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], ir.IntType(64))

        return types.int64(x), codegen
    return None


_F32_LO = np.float32(-87.33654)  # exp below this is subnormal: flushed to 0
_F32_HI = np.float32(88.72284)  # exp above this overflows float32
_F32_LOG2E = np.float32(1.44269504088896341)
_F32_LN2_HI = np.float32(0.693359375)
_F32_LN2_LO = np.float32(-2.12194440e-4)


# Adding 1.5 * 2**23 rounds a float32 of magnitude < 2**22 to an integer (round to nearest
# even) and leaves that integer in the low mantissa bits: k without a floor or a conversion.
_F32_ROUND = np.float32(12582912.0)
_F32_ROUND_BITS = np.int32(0x4B400000)


@njit(**_MATH)
def exp_f32(x):
    """``exp`` of a float32 within 1.4 ulp: Cephes ``expf``'s range reduction, then a degree-6
    minimax polynomial (relative error 2e-9 on [-ln2/2, ln2/2]) in Estrin's form: seven
    operations whose longest chain is half that of Horner's six FMAs. The logits loops wait
    on that chain more than on the FMA pipes (Zen 3: 3-5% faster; mean error -2e-10)."""
    # The clamps keep NaN (a comparison with NaN is false) and it propagates to the result.
    xc = _F32_LO if x < _F32_LO else x
    xc = _F32_HI if xc > _F32_HI else xc
    t = xc * _F32_LOG2E + _F32_ROUND
    k = t - _F32_ROUND
    r = xc - k * _F32_LN2_HI
    r = r - k * _F32_LN2_LO
    r2 = r * r
    c = np.float32(1.3843644e-3) * r2 + (np.float32(8.374164e-3) * r + np.float32(4.1668e-2))
    b = np.float32(1.6666432e-1) * r + np.float32(4.9999994e-1)
    p = (c * r2 + b) * r2 + (r + np.float32(1.0))  # exactly 1 at r = 0: exp(0) == 1
    # k in [-126, 128]; k = 128 gives the all-ones exponent, i.e. +inf: overflow for free.
    scale = _f32_from_bits(np.int32((_bits_from_f32(t) - _F32_ROUND_BITS + np.int32(127)) << 23))
    res = p * scale
    return np.float32(0.0) if x < _F32_LO else res


_F32_SUM_HI = np.float32(88.0)  # k <= 127: exp_sum_f32 stays finite and never wraps
_F32_LN2 = np.float32(0.693147180559945)


@njit(**_MATH)
def exp_sum_f32(x):
    """``exp`` of a float32 for the terms of row sums that are redone in float64 when they
    come out below 1e-30 or above 1e30 (logits rows): within 2.1e-7 relative for ``|x| <=
    20`` and 3.9e-7 on [-87, 88] (mean error -1e-8), far inside the 1e-6 float32 tolerance;
    at most 1.2e-38 below -87.3 (not 0); exp(88) = 1.65e38, finite, above 88; NaN for NaN;
    exactly 1 at 0.

    Four vector operations fewer than :func:`exp_f32` and a dependency chain about 12 cycles
    shorter, for loops that wait on that chain (Zen 3: logits + labels 17-19% faster, soft
    targets from logits 5-20%): one-constant range reduction (its error grows with |k|),
    a degree-5 minimax polynomial (1.05e-7; degree 6 cost 7%), no flush to 0, and 2**k
    added to the exponent bits of the polynomial (an integer add) instead of multiplied.
    """
    # Numba's min / max keep NaN (p turns NaN) and compile to one vminps / vmaxps each; two
    # selects would take three operations (LLVM rewrites the second compare to test x).
    xc = min(max(x, _F32_LO), _F32_SUM_HI)
    t = xc * _F32_LOG2E + _F32_ROUND
    k = t - _F32_ROUND
    r = xc - k * _F32_LN2
    r2 = r * r
    a = np.float32(1.6667114e-1) * r + np.float32(4.9999231e-1)
    b = np.float32(8.3125122e-3) * r + np.float32(4.1890107e-2)
    p = (b * r2 + a) * r2 + (r + np.float32(1.0))  # exactly 1 at r = 0: exp(0) == 1
    # The low 23 bits of t hold k (with 1.5 * 2**23 above them, which << 23 shifts out):
    # adding k << 23 to p's bits multiplies p by 2**k while the exponent stays in (0, 255).
    return _f32_from_bits(np.int32(_bits_from_f32(p) + (_bits_from_f32(t) << np.int32(23))))


_F64_LO = -708.3964185322641  # exp below this is subnormal: flushed to 0
_F64_HI = 709.782712893384
_F64_LOG2E = 1.4426950408889634
_F64_LN2_HI = 6.93145751953125e-1
_F64_LN2_LO = 1.42860682030941723212e-6


@njit(**_MATH)
def exp_f64(x):
    """``exp`` of a float64 within about 2 ulp (degree-12 Taylor on ``|r| <= ln2/2``)."""
    xc = x if x > _F64_LO else _F64_LO
    xc = xc if xc < _F64_HI else _F64_HI
    k = np.floor(xc * _F64_LOG2E + 0.5)
    r = xc - k * _F64_LN2_HI
    r = r - k * _F64_LN2_LO
    p = 2.08767569878680989792e-9  # 1/12!
    p = p * r + 2.50521083854417187751e-8
    p = p * r + 2.75573192239858906526e-7
    p = p * r + 2.75573192239858906526e-6
    p = p * r + 2.48015873015873015873e-5
    p = p * r + 1.98412698412698412698e-4
    p = p * r + 1.38888888888888888889e-3
    p = p * r + 8.33333333333333333333e-3
    p = p * r + 4.16666666666666666667e-2
    p = p * r + 1.66666666666666666667e-1
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    # k in [-1022, 1024]; k = 1024 is the all-ones exponent, i.e. +inf.
    scale = _f64_from_bits((np.int64(k) + np.int64(1023)) << np.int64(52))
    res = p * scale
    res = res if x >= _F64_LO else 0.0
    return res if x == x else x


_F32_SQRTH = np.float32(0.707106781186547524)
_F32_TWO23 = np.float32(8388608.0)
_F32_TINY = np.float32(1.17549435e-38)


@njit(**_MATH)
def _logf_reduced(f, ef):
    """``log((1 + f) * 2**ef)`` for float32 ``f`` in [sqrt(1/2) - 1, sqrt(2) - 1] (Cephes
    ``logf``'s polynomial and its split ln 2)."""
    z = f * f
    # Estrin's scheme (a 4-step chain instead of Horner's 9: the vector loops wait on it).
    z2 = z * z
    r0 = (np.float32(3.3333331174e-1) - np.float32(2.4999993993e-1) * f) + (
        np.float32(2.0000714765e-1) - np.float32(1.6668057665e-1) * f
    ) * z
    r1 = (np.float32(1.4249322787e-1) - np.float32(1.2420140846e-1) * f) + (
        np.float32(1.1676998740e-1) - np.float32(1.1514610310e-1) * f
    ) * z
    y = (r0 + r1 * z2) + np.float32(7.0376836292e-2) * (z2 * z2)
    y = y * f * z
    y = y + ef * _F32_LN2_LO
    y = y - np.float32(0.5) * z
    return f + y + ef * _F32_LN2_HI


@njit(**_MATH)
def log_f32(x):
    """Natural log of a float32 within about 1 ulp (Cephes ``logf``)."""
    sub = x < _F32_TINY
    xs = x * _F32_TWO23 if sub else x
    bits = _bits_from_f32(xs)
    e = ((bits >> np.int32(23)) & np.int32(0xFF)) - np.int32(126)
    m = _f32_from_bits(np.int32((bits & np.int32(-2139095041)) | np.int32(0x3F000000)))  # [0.5, 1)
    small = m < _F32_SQRTH
    ef = np.float32(e) - (np.float32(1.0) if small else np.float32(0.0))
    ef = ef - (np.float32(23.0) if sub else np.float32(0.0))
    f = (m + m if small else m) - np.float32(1.0)
    res = _logf_reduced(f, ef)
    res = res if x > 0 else (np.float32(-np.inf) if x == 0 else np.float32(np.nan))
    res = res if x < np.float32(np.inf) else x
    return res if x == x else x


_F32_SQRTH_BITS = 0x3F3504F3  # the bits of float32(sqrt(1/2))


@njit(**_MATH)
def log_pos_f32(x):
    """Natural log of a positive normal float32 (garbage for anything else: the callers
    clip into a normal range first) within about 1 ulp: :func:`log_f32` without its special
    cases and subnormal scaling, 10 vector operations fewer. ``x = m 2**k`` with ``m`` in
    [sqrt(1/2), sqrt(2)) straight from the bits, as in :func:`log_prob_f64`."""
    bits = np.int32(_bits_from_f32(x) + np.int32(0x3F800000 - _F32_SQRTH_BITS))
    k = np.float32(np.int32((bits >> np.int32(23)) - np.int32(127)))
    m = _f32_from_bits(np.int32((bits & np.int32(0x007FFFFF)) + np.int32(_F32_SQRTH_BITS)))
    return _logf_reduced(m - np.float32(1.0), k)


_LN2_HI = 6.93147180369123816490e-01
_LN2_LO = 1.90821492927058770002e-10
_LG1 = 6.666666666666735130e-01
_LG2 = 3.999999999940941908e-01
_LG3 = 2.857142874366239149e-01
_LG4 = 2.222219843214978396e-01
_LG5 = 1.818357216161805012e-01
_LG6 = 1.531383769920937332e-01
_LG7 = 1.479819860511658591e-01
_TWO54 = 18014398509481984.0
_SMALLEST_NORMAL = 2.2250738585072014e-308


@njit(**_MATH)
def log_f64(x):
    """Natural log of a float64 within about 1 ulp (fdlibm's ``log``)."""
    sub = x < _SMALLEST_NORMAL
    xs = x * _TWO54 if sub else x
    bits = _bits_from_f64(xs)
    # Reduce into [sqrt(2)/2, sqrt(2)): bias the exponent so the split happens at sqrt(2).
    bits = bits + np.int64(0x3FF0000000000000 - 0x3FE6A09E00000000)
    k = (bits >> np.int64(52)) - np.int64(0x3FF)
    bits = (bits & np.int64(0x000FFFFFFFFFFFFF)) + np.int64(0x3FE6A09E00000000)
    m = _f64_from_bits(bits)
    f = m - 1.0
    hfsq = 0.5 * f * f
    s = f / (2.0 + f)
    z = s * s
    w = z * z
    t1 = w * (_LG2 + w * (_LG4 + w * _LG6))
    t2 = z * (_LG1 + w * (_LG3 + w * (_LG5 + w * _LG7)))
    r = t2 + t1
    dk = np.float64(k) - (54.0 if sub else 0.0)
    res = s * (hfsq + r) + dk * _LN2_LO - hfsq + f + dk * _LN2_HI
    # Special values: the bit tricks above are meaningless for them.
    res = res if x > 0.0 else (-np.inf if x == 0.0 else np.nan)
    res = res if x < np.inf else x
    return res if x == x else x


@njit(**_MATH)
def log1p_f64(u):
    """``log(1 + u)`` accurate for tiny ``u`` (u >= -1)."""
    w = 1.0 + u
    # log(w) carries the rounding error of 1 + u; (w - 1) - u recovers it to first order.
    corr = ((w - 1.0) - u) / w
    res = log_f64(w) - corr
    res = u if w == 1.0 else res
    return res if w < np.inf else w


# log(1 + f) / f on [sqrt(1/2) - 1, sqrt(2) - 1]: the degree-13 Chebyshev interpolant, as
# monomial coefficients (numpy.polynomial.Chebyshev.interpolate, then convert). Relative
# error 3.0e-12 over the interval, checked in tests/test_kernels.py.
_LP = (
    0.9999999999980863, -0.4999999999296926, 0.33333333479594524, -0.2500000204873301,
    0.19999982957623236, -0.16666490107153437, 0.1428636612257736, -0.1250664162217291,
    0.11102988928189421, -0.09878959460323965, 0.09054488483064455, -0.09342918729234945,
    0.09089857423055406, -0.04717815865677374,
)  # fmt: skip
_LP0, _LP1, _LP2, _LP3, _LP4, _LP5, _LP6, _LP7, _LP8, _LP9, _LP10, _LP11, _LP12, _LP13 = _LP


@njit(**_MATH)
def log_prob_f64(x):
    """Natural log of a float64 probability ``x`` within 3e-12 relative: ``x`` is 0 (giving
    -inf) or a normal number in (0, 1]. A subnormal, NaN or a value above 1 gives garbage;
    the kernels clamp into ``[eps, 1 - eps]`` first, and ``eps`` is never subnormal.

    For probabilities read from float32, whose tolerance is 1e-6. ``x = m 2**k`` with ``m``
    in [sqrt(1/2), sqrt(2)) exactly, as in :func:`log_f64`, then ``log x = k log 2 + f p(f)``
    with ``f = m - 1`` and ``p`` a polynomial: no division (fdlibm's ``log`` has one) and no
    special values but 0 make it about 40% cheaper in a vector loop (handling subnormals
    alone cost 17% of the two-column gather).
    """
    bits = _bits_from_f64(x) + np.int64(0x3FF0000000000000 - 0x3FE6A09E00000000)
    k = np.float64((bits >> np.int64(52)) - np.int64(0x3FF))
    f = _f64_from_bits((bits & np.int64(0x000FFFFFFFFFFFFF)) + np.int64(0x3FE6A09E00000000)) - 1.0
    # Estrin's scheme: a dependency chain of 5 steps instead of Horner's 13 (the vector
    # loops over it wait on the chain, not on the FMA pipes).
    f2 = f * f
    f4 = f2 * f2
    r0 = (_LP0 + _LP1 * f) + (_LP2 + _LP3 * f) * f2
    r1 = (_LP4 + _LP5 * f) + (_LP6 + _LP7 * f) * f2
    r2 = (_LP8 + _LP9 * f) + (_LP10 + _LP11 * f) * f2
    r3 = _LP12 + _LP13 * f
    p = (r0 + r1 * f4) + (r2 + r3 * f4) * (f4 * f4)
    res = k * _LN2_HI + (f * p + k * _LN2_LO)
    return res if x > 0.0 else -np.inf


_F32_SQRT2M1 = np.float32(0.41421356237309503)


@njit(**_MATH)
def log1p_unit_f32(u):
    """``log(1 + u)`` of a float32 ``u`` in [0, 1] (NaN propagates), within 1.5 ulp.

    No ``1 + u`` is ever rounded: below sqrt(2) - 1 the Cephes ``logf`` polynomial takes
    ``f = u`` itself; above, ``1 + u = 2 (1 + f)`` with ``f = (u - 1) / 2``. No bit tricks,
    no division and no special values to handle, which makes it about half the cost of a
    general log1p in a vector loop.
    """
    big = u > _F32_SQRT2M1
    one = np.float32(1.0)
    f = (u - one) * np.float32(0.5) if big else u
    ef = one if big else np.float32(0.0)
    return _logf_reduced(f, ef)


def _by_precision(generic, f32, f64):
    """Make ``generic(x)`` call ``f32(x)`` or ``f64(x)`` by the type of ``x`` (inlined)."""

    @overload(generic, inline="always")
    def _dispatch(x):
        if x == types.float32:
            return lambda x: f32(x)
        if x == types.float64:
            return lambda x: f64(x)
        return None


def flog1p_unit(x):
    """``log(1 + x)`` for ``x`` in [0, 1], in the precision of ``x``:
    :func:`log1p_unit_f32` / :func:`log1p_f64`."""
    raise NotImplementedError("flog1p_unit is only callable from Numba-compiled code")


_by_precision(flog1p_unit, log1p_unit_f32, log1p_f64)


def fexp(x):
    """``exp`` in the precision of ``x``: dispatches to :func:`exp_f32` / :func:`exp_f64`."""
    raise NotImplementedError("fexp is only callable from Numba-compiled code")


_by_precision(fexp, exp_f32, exp_f64)


def fexp_sum(x):
    """``exp`` in the precision of ``x`` for row sums redone when they fall outside
    [1e-30, 1e30]: float32 takes :func:`exp_sum_f32`, float64 :func:`exp_f64`."""
    raise NotImplementedError("fexp_sum is only callable from Numba-compiled code")


_by_precision(fexp_sum, exp_sum_f32, exp_f64)


@njit(**_MATH)
def pick_f32(take_b, a, b):
    """``b if take_b else a`` for float32, blended in the bits."""
    m = np.int32(-1) if take_b else np.int32(0)
    return _f32_from_bits(np.int32((_bits_from_f32(a) & ~m) | (_bits_from_f32(b) & m)))


@njit(**_MATH)
def pick_f64(take_b, a, b):
    """``b if take_b else a`` for float64, blended in the bits."""
    m = np.int64(-1) if take_b else np.int64(0)
    return _f64_from_bits((_bits_from_f64(a) & ~m) | (_bits_from_f64(b) & m))


def or_bits(acc, x):
    """``acc | bits(x)``: the bits of the float ``x`` or-ed into an integer of the same width
    (``acc`` starts as :func:`no_bits`). Or-ing the targets of a row sets the sign bit if
    one of them is negative (or -0.0): one vector operation instead of a compare, a select
    and an add to count them."""
    raise NotImplementedError("or_bits is only callable from Numba-compiled code")


@overload(or_bits, inline="always")
def _or_bits_overload(acc, x):
    if x == types.float32:
        return lambda acc, x: np.int32(acc | _bits_from_f32(x))
    if x == types.float64:
        return lambda acc, x: acc | _bits_from_f64(x)
    return None


def bits_of(x):
    """The bits of the float ``x`` as a signed integer of the same width. For ``x`` not
    -0.0 or NaN, ``bits_of(x) > 0`` is ``x > 0`` and ``bits_of(x) == 0`` is ``x == 0``: the
    largest bits of a row, one integer ``max`` per vector (a float max reduction does not
    vectorise without ``nnan``), tell whether an entry is above or equal to 0."""
    raise NotImplementedError("bits_of is only callable from Numba-compiled code")


_by_precision(bits_of, _bits_from_f32, _bits_from_f64)


def no_bits(like):
    """The integer 0 as wide as the float scalar ``like``: the start of :func:`or_bits`."""
    raise NotImplementedError("no_bits is only callable from Numba-compiled code")


@overload(no_bits, inline="always")
def _no_bits_overload(like):
    if like == types.float32:
        return lambda like: np.int32(0)
    if like == types.float64:
        return lambda like: np.int64(0)
    return None


def pick(take_b, a, b):
    """``b if take_b else a`` where ``a`` and ``b`` were just loaded from an array.

    A plain select of two loads lets LLVM turn it into one load from a selected address, a
    gather in vector code, which is about 3x slower on this machine than loading both and
    blending their bits. The blend is exact (an arithmetic ``a * (1 - t) + b * t`` is not
    once ``reassoc`` rewrites it).
    """
    raise NotImplementedError("pick is only callable from Numba-compiled code")


@overload(pick, inline="always")
def _pick_overload(take_b, a, b):
    if a == types.float32 and b == types.float32:
        return lambda take_b, a, b: pick_f32(take_b, a, b)
    if a == types.float64 and b == types.float64:
        return lambda take_b, a, b: pick_f64(take_b, a, b)
    return None


def pairs_of(x):
    """The rows of a two-column array for :func:`pick_in_pair`: as one uint64 each when
    ``x`` is C-contiguous float32 (on a little-endian machine), else ``x`` itself."""
    raise NotImplementedError("pairs_of is only callable from Numba-compiled code")


@overload(pairs_of, inline="always")
def _pairs_of_overload(x):
    if x.dtype == types.float32 and x.layout == "C" and sys.byteorder == "little":
        return lambda x: x.reshape(-1).view(np.uint64)
    return lambda x: x


def flat_rows(x):
    """The rows of a 2-D array as one flat C-contiguous array: a view of a C-contiguous
    ``x``, a copy of any other (2-D indexing in a loop over the rows stops the vectoriser)."""
    raise NotImplementedError("flat_rows is only callable from Numba-compiled code")


@overload(flat_rows, inline="always")
def _flat_rows_overload(x):
    if x.layout == "C":
        return lambda x: x.reshape(-1)
    return lambda x: np.ascontiguousarray(x).reshape(-1)


def pick_in_pair(pairs, x, i, take_b):
    """``x[i, 1] if take_b else x[i, 0]`` for a two-column ``x``, ``pairs = pairs_of(x)``.

    C-contiguous float32 rows are read as one uint64 and the entry shifted out of it: with
    no select at all, LLVM cannot turn the pick into masked loads or a gather (it did, for
    :func:`pick` in loops with little else to do, and ran 5x slower). Otherwise :func:`pick`.
    """
    raise NotImplementedError("pick_in_pair is only callable from Numba-compiled code")


@overload(pick_in_pair, inline="always")
def _pick_in_pair_overload(pairs, x, i, take_b):
    if pairs.dtype == types.uint64:

        def from_bits(pairs, x, i, take_b):
            shift = np.uint64(32 * np.int64(take_b))  # x[i, 0] is the low half; no select
            return _f32_from_bits(np.int32((pairs[i] >> shift) & np.uint64(0xFFFFFFFF)))

        return from_bits
    return lambda pairs, x, i, take_b: pick(take_b, x[i, 0], x[i, 1])


# A running float max (compare + select) does not vectorise without ``nnan``; the same max
# over the bits, mapped to integers that sort like the floats, does (vpmaxsd and friends).
# NaN maps above +inf, so a row with a NaN has a NaN max.


@njit(**_MATH)
def max_f32(a, start, n):
    """Maximum of ``a[start : start + n]``, float32 (NaN if it holds a NaN; -inf if empty).

    Offsets instead of a slice: no reference counting per call.
    """
    m = np.int32(-2139095041)  # the key of -inf
    for j in range(n):
        b = _bits_from_f32(a[start + np.uint64(j)])
        # np.int32 at each step: Numba widens int32 operations to int64, which would halve
        # the vectors (and compile the max to 64-bit compares and blends, no vpmaxsd).
        k = np.int32(b ^ np.int32(np.int32(b >> np.int32(31)) & np.int32(0x7FFFFFFF)))
        m = k if k > m else m
    return _f32_from_bits(np.int32(m ^ ((m >> np.int32(31)) & np.int32(0x7FFFFFFF))))


@njit(**_MATH)
def max_f64(a, start, n):
    """Maximum of ``a[start : start + n]``, float64 (NaN if it holds a NaN; -inf if empty)."""
    m = np.int64(-9218868437227405313)  # the key of -inf
    for j in range(n):
        b = _bits_from_f64(a[start + np.uint64(j)])
        k = b ^ ((b >> np.int64(63)) & np.int64(0x7FFFFFFFFFFFFFFF))
        m = k if k > m else m
    return _f64_from_bits(m ^ ((m >> np.int64(63)) & np.int64(0x7FFFFFFFFFFFFFFF)))


def fmax_of(a, start, n):
    """Maximum of ``a[start : start + n]`` for float32 or float64, vectorised."""
    raise NotImplementedError("fmax_of is only callable from Numba-compiled code")


@overload(fmax_of, inline="always")
def _fmax_of_overload(a, start, n):
    if a.dtype == types.float32:
        return lambda a, start, n: max_f32(a, start, n)
    if a.dtype == types.float64:
        return lambda a, start, n: max_f64(a, start, n)
    return None


def flog(x):
    """Natural log in the precision of ``x``: :func:`log_f32` / :func:`log_f64`."""
    raise NotImplementedError("flog is only callable from Numba-compiled code")


_by_precision(flog, log_f32, log_f64)


def flog_pos(x):
    """Natural log of a positive normal ``x`` in its own precision: :func:`log_pos_f32` /
    :func:`log_f64`."""
    raise NotImplementedError("flog_pos is only callable from Numba-compiled code")


_by_precision(flog_pos, log_pos_f32, log_f64)


def log_prob_for(a, x):
    """``log(x)`` of a float64 probability ``x`` read from the array ``a``, as accurate as
    ``a``'s precision needs: :func:`log_prob_f64` for float32 arrays (3e-12 relative, well
    inside their 1e-6 tolerance), :func:`log_f64` (1 ulp) for float64 ones."""
    raise NotImplementedError("log_prob_for is only callable from Numba-compiled code")


@overload(log_prob_for, inline="always")
def _log_prob_for_overload(a, x):
    if a.dtype == types.float32:
        return lambda a, x: log_prob_f64(x)
    if a.dtype == types.float64:
        return lambda a, x: log_f64(x)
    return None


def cast_like(value, like):
    """``value`` converted to the type of the scalar ``like`` (float32 or float64)."""
    raise NotImplementedError("cast_like is only callable from Numba-compiled code")


@overload(cast_like, inline="always")
def _cast_like_overload(value, like):
    if like == types.float32:
        return lambda value, like: np.float32(value)
    if like == types.float64:
        return lambda value, like: np.float64(value)
    return None


def _emit_prefetches(context, builder, signature, args, n_lines):
    """``llvm.prefetch`` of the address of ``arr[idx...]`` and of the ``n_lines - 1``
    64-byte lines after it, in straight-line code (no bounds or wraparound checks)."""
    aryty = signature.args[0]
    ary = context.make_array(aryty)(context, builder, args[0])
    shape = cgutils.unpack_tuple(builder, ary.shape, aryty.ndim)
    strides = cgutils.unpack_tuple(builder, ary.strides, aryty.ndim)
    inds = [
        context.cast(builder, v, t, types.intp)
        for v, t in zip(args[1 : 1 + aryty.ndim], signature.args[1 : 1 + aryty.ndim], strict=True)
    ]
    ptr = cgutils.get_item_pointer2(
        context, builder, ary.data, shape, strides, aryty.layout, inds,
        wraparound=False, boundscheck=False,
    )  # fmt: skip
    i8p = builder.bitcast(ptr, ir.IntType(8).as_pointer())
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(ir.VoidType(), [i8p.type, i32, i32, i32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
    for k in range(n_lines):
        line = builder.gep(i8p, [ir.Constant(ir.IntType(64), 64 * k)]) if k else i8p
        # read, locality 2 (x86 prefetcht1: into L2, not L1), data cache. Into L1
        # (prefetcht0) the gather at 1M x 100 was 2.3x slower on Zen 4: the requests wait
        # for L1's few miss buffers; L2 keeps far more of them in flight.
        builder.call(fn, [line, ir.Constant(i32, 0), ir.Constant(i32, 2), ir.Constant(i32, 1)])
    return context.get_dummy_value()


def _prefetch_codegen(context, builder, signature, args):
    return _emit_prefetches(context, builder, signature, args, 1)


@intrinsic
def prefetch2d(typingctx, arr, i, j):
    """Hint the CPU to fetch ``arr[i, j]`` into cache (``llvm.prefetch``; never faults).

    The O(N) gather touches one cache line per row at an offset the hardware prefetcher
    cannot predict; asking for rows a few dozen ahead keeps many misses in flight.
    """
    if not (isinstance(arr, types.Array) and arr.ndim == 2):
        return None
    if not (isinstance(i, types.Integer) and isinstance(j, types.Integer)):
        return None
    return types.none(arr, i, j), _prefetch_codegen


@intrinsic
def prefetch_span(typingctx, arr, i, n):
    """Hint the CPU to fetch ``arr[i : i + n]`` (``n`` a compile-time constant), one
    request per 64-byte line, unrolled: no loop, so the callers' control flow keeps the
    shape Numba's reference-count pruning needs (a prefetch loop between a row's incref
    and decref of its arrays left both in, two atomic operations per row). ``i + n`` may
    lie past the end of ``arr``: a prefetch never faults."""
    if not (isinstance(arr, types.Array) and arr.ndim == 1 and isinstance(i, types.Integer)):
        return None
    if not isinstance(n, types.IntegerLiteral):
        return None
    n_lines = -(-n.literal_value * arr.dtype.bitwidth // 8 // 64)

    def codegen(context, builder, signature, args):
        return _emit_prefetches(context, builder, signature, args, n_lines)

    return types.none(arr, i, n), codegen
