"""Branch-free ``exp`` and ``log`` that LLVM can vectorise.

Numba no longer ships SVML, so ``math.exp``/``math.log`` inside a loop become one scalar
libm call per SIMD lane (about 0.2 G elements/s per core). These versions use range
reduction to a power of two plus a short polynomial, and build ``2**k`` by writing ``k`` into
the exponent bits, so a loop over them compiles to 8-wide (float32) or 4-wide (float64) AVX2.

They are compiled without ``reassoc`` on purpose: the error-compensating steps of the
polynomials must not be reordered. Callers (the kernels) add ``reassoc`` for their sums.

Special values follow IEEE behaviour where the kernels depend on it: ``exp(nan)`` is NaN,
``exp(+inf)`` is +inf, ``exp(-inf)`` and exp of anything below the smallest normal is 0;
``log(0)`` is -inf, ``log(x<0)`` and ``log(nan)`` are NaN, ``log(+inf)`` is +inf, and
subnormal arguments are handled exactly.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

from ._config import CACHE

_MATH = {"fastmath": {"nsz", "contract"}, "error_model": "numpy", "cache": CACHE}


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


@njit(**_MATH)
def exp_f32(x):
    """``exp`` of a float32, about 1 ulp (Cephes ``expf`` polynomial)."""
    xc = x if x > _F32_LO else _F32_LO  # NaN also lands on the clamp; restored below
    xc = xc if xc < _F32_HI else _F32_HI
    k = np.floor(xc * _F32_LOG2E + np.float32(0.5))
    r = xc - k * _F32_LN2_HI
    r = r - k * _F32_LN2_LO
    z = r * r
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * z + r + np.float32(1.0)
    # k in [-126, 128]; k = 128 gives the all-ones exponent, i.e. +inf: overflow for free.
    scale = _f32_from_bits(np.int32((np.int64(k) + 127) << 23))
    res = p * scale
    res = res if x >= _F32_LO else np.float32(0.0)
    return res if x == x else x


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


def fexp(x):
    """``exp`` in the precision of ``x``: dispatches to :func:`exp_f32` / :func:`exp_f64`."""
    raise NotImplementedError("fexp is only callable from Numba-compiled code")


@overload(fexp, inline="always")
def _fexp_overload(x):
    if x == types.float32:
        return lambda x: exp_f32(x)
    if x == types.float64:
        return lambda x: exp_f64(x)
    return None
