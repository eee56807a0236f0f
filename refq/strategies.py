"""Hypothesis strategies for property-testing integer kernels against refq.

Use them in your own tests to feed a kernel (yours, or a runtime's) the inputs where integer
arithmetic goes wrong: INT32_MIN / INT32_MAX, zero, +-1, shifts of +-31, multipliers exactly at a
rounding tie, accumulators at the edge of the int64 domain. Each strategy mixes such edge cases
(``st.sampled_from``) with uniformly drawn values. Needs the ``test`` extra (hypothesis).

Sections: fixed point (values for :mod:`refq.fixedpoint`); quantization (dtypes, specs,
parameters matching a shape and float32 data with ties and edge values, for :mod:`refq.quantize`).
"""

from __future__ import annotations

import math
from typing import Any

from refq.errors import require_extra

st = require_extra("hypothesis.strategies", "test")

SearchStrategy = Any  # hypothesis.strategies.SearchStrategy; hypothesis is an optional extra


# =============================================================================================
# Fixed point: int32 / int16 values, shifts, multipliers, int64 accumulators
# =============================================================================================

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
INT16_MIN, INT16_MAX = -(1 << 15), (1 << 15) - 1

INT32_EDGES = (
    INT32_MIN,
    INT32_MIN + 1,
    -(1 << 30) - 1,
    -(1 << 30),
    -(1 << 30) + 1,
    -2,
    -1,
    0,
    1,
    2,
    (1 << 30) - 1,
    1 << 30,
    (1 << 30) + 1,
    INT32_MAX - 1,
    INT32_MAX,
)
"""int32 values where saturation, sign and rounding cases live."""


def _with_edges(edges: tuple[int, ...], lo: int, hi: int) -> SearchStrategy:
    inside = tuple(v for v in edges if lo <= v <= hi)
    uniform = st.integers(lo, hi)
    return st.one_of(st.sampled_from(inside), uniform) if inside else uniform


def int32_values(min_value: int = INT32_MIN, max_value: int = INT32_MAX) -> SearchStrategy:
    """int32 values in ``[min_value, max_value]``, edge cases (INT32_MIN/MAX, 0, +-1, +-2^30)
    mixed in."""
    return _with_edges(INT32_EDGES, min_value, max_value)


def int16_values(min_value: int = INT16_MIN, max_value: int = INT16_MAX) -> SearchStrategy:
    """int16 values, edge cases (INT16_MIN/MAX, 0, +-1, +-2^14) mixed in."""
    edges = (INT16_MIN, INT16_MIN + 1, -(1 << 14), -1, 0, 1, 1 << 14, INT16_MAX - 1, INT16_MAX)
    return _with_edges(edges, min_value, max_value)


def shifts(min_shift: int = -31, max_shift: int = 30) -> SearchStrategy:
    """Multiplier shifts (positive = left), with both ends, 0 and +-1 mixed in.

    The defaults are the domain of ``MultiplyByQuantizedMultiplier`` ([-31, 30]); the int64
    forms take [-31, 7].
    """
    return _with_edges(
        (min_shift, min_shift + 1, -1, 0, 1, max_shift - 1, max_shift), min_shift, max_shift
    )


def pot_exponents(max_exponent: int = 31) -> SearchStrategy:
    """``RoundingDivideByPOT`` exponents in [0, max_exponent], with 0, 1 and the maximum."""
    return _with_edges((0, 1, max_exponent - 1, max_exponent), 0, max_exponent)


def int64_accumulators(bits: int = 48) -> SearchStrategy:
    """Signed accumulators of ``bits`` bits: [-2^47, 2^47) by default, the TFLM / CMSIS-NN
    domain of the int64 (16x8) requantization; int32 and int48 edges mixed in."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return _with_edges((lo, lo + 1, *INT32_EDGES, hi - 1, hi), lo, hi)


def quantized_multipliers(min_shift: int = -31, max_shift: int = 30) -> SearchStrategy:
    """``(M, shift)`` pairs of the form ``QuantizeMultiplier`` produces: ``M`` in [2^30, 2^31)
    (``2^30``, ``2^31 - 1`` mixed in) with a shift in ``[min_shift, max_shift]``, or ``(0, 0)``."""
    mantissa = _with_edges((1 << 30, (1 << 30) + 1, INT32_MAX - 1, INT32_MAX), 1 << 30, INT32_MAX)
    nonzero = st.tuples(mantissa, shifts(min_shift, max_shift))
    return st.one_of(st.just((0, 0)), nonzero) if min_shift <= 0 <= max_shift else nonzero


def real_multipliers(min_exponent: int = -40, max_exponent: int = 40) -> SearchStrategy:
    """Positive float64 multipliers ``q * 2^e``, ``q`` in [0.5, 1), ``e`` in the given range.

    Besides log-uniform values it draws the cases ``QuantizeMultiplier`` treats specially:
    exact powers of two, ties ``q * 2^31 = k + 1/2`` (rounded away from zero), ``q`` within
    2^-32 of 1 (rounds to 2^31, carried into the exponent), and, with the default range,
    values below 2^-32 (flushed to zero) and above 2^31 (single rounding saturates).
    """
    exponents = st.integers(min_exponent, max_exponent)
    log_uniform = st.builds(
        math.ldexp, st.floats(0.5, 1.0, exclude_max=True, allow_subnormal=False), exponents
    )
    powers = st.builds(lambda e: math.ldexp(0.5, e), exponents)
    ties = st.builds(
        lambda k, e: math.ldexp(2 * k + 1, e - 32), st.integers(1 << 30, INT32_MAX), exponents
    )
    near_one = st.builds(
        lambda j, e: math.ldexp(1.0 - j * 2.0**-53, e), st.integers(1, 1 << 21), exponents
    )
    return st.one_of(log_uniform, powers, ties, near_one)


# =============================================================================================
# Quantization: dtypes, specs, parameters matching a shape, float data with edge values
# =============================================================================================


def qdtypes(
    *, integers: bool = True, floats: bool = False, min_bits: int = 1, max_bits: int = 16
) -> SearchStrategy:
    """:class:`refq.spec.QDType` values: integer types of ``min_bits..max_bits`` bits (signed
    and unsigned; int4 / int8 / uint8 / int16 drawn more often) and, with ``floats=True``, the
    float8 / float4 formats."""
    from refq.spec import FLOAT_FORMATS, QDType

    options = []
    if integers:
        common = [
            QDType.parse(n)
            for n in ("int8", "uint8", "int4", "uint4", "int16", "uint16", "int2")
            if min_bits <= QDType.parse(n).bits <= max_bits
        ]
        anyint = st.builds(QDType.int, st.integers(min_bits, max_bits), st.booleans())
        options += [st.sampled_from(common), anyint] if common else [anyint]
    if floats:
        options.append(st.sampled_from([QDType.parse(n) for n in FLOAT_FORMATS]))
    return st.one_of(*options)


def array_shapes(min_dims: int = 0, max_dims: int = 3, max_side: int = 6) -> SearchStrategy:
    """Small array shapes (sides 1..max_side), rank ``min_dims..max_dims``."""
    return st.lists(st.integers(1, max_side), min_size=min_dims, max_size=max_dims).map(tuple)


@st.composite
def granularities(draw: Any, shape: tuple[int, ...]) -> Any:
    """PerTensor, PerAxis over any axis (negative ones too) or PerBlock with any block size
    (remainder blocks included) for data of ``shape``."""
    from refq.spec import PerAxis, PerBlock, PerTensor

    if not shape:
        return PerTensor()
    kind = draw(st.sampled_from(("tensor", "axis", "block")))
    if kind == "tensor":
        return PerTensor()
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    if kind == "axis":
        return PerAxis(axis)
    return PerBlock(axis, draw(st.integers(1, shape[axis] + 1)))


ROUNDINGS = ("half_even", "half_away", "half_up", "floor", "stochastic")


@st.composite
def quant_specs(
    draw: Any,
    shape: tuple[int, ...] = (),
    *,
    dtypes: SearchStrategy | None = None,
    roundings: tuple[str, ...] = ROUNDINGS,
) -> Any:
    """Valid :class:`refq.spec.QuantSpec` values for data of ``shape``: any dtype of
    ``dtypes`` (default: integer types), symmetric or not, narrow range where allowed, any
    granularity, any rounding of ``roundings`` (stochastic ones get a seed)."""
    from refq.spec import QuantSpec

    dt = draw(dtypes if dtypes is not None else qdtypes())
    gran = draw(granularities(shape))
    if dt.is_float:
        return QuantSpec(dt, granularity=gran)
    rounding = draw(st.sampled_from(roundings))
    seed = draw(st.integers(0, 2**32 - 1)) if rounding == "stochastic" else None
    narrow = draw(st.booleans()) if dt.signed and dt.bits >= 2 else False
    return QuantSpec(
        dt,
        symmetric=draw(st.booleans()),
        narrow_range=narrow,
        granularity=gran,
        rounding=rounding,
        seed=seed,
    )


def scales(min_exp: int = -20, max_exp: int = 20) -> SearchStrategy:
    """Positive float32 scales ``m * 2^e`` (log-uniform), exact powers of two and 1.0 mixed in.

    The default range keeps ``code * scale`` a normal float32 for every 16-bit code, which
    the fixed-point property of fake-quantize needs (subnormal products lose bits)."""
    import numpy as np

    mant = st.floats(1.0, 2.0, exclude_max=True, width=32)
    exps = st.integers(min_exp, max_exp)
    log_uniform = st.builds(lambda m, e: float(np.float32(math.ldexp(m, e))), mant, exps)
    powers = st.builds(lambda e: math.ldexp(1.0, e), exps)
    return st.one_of(log_uniform, powers, st.just(1.0))


@st.composite
def quant_params(
    draw: Any, spec: Any, shape: tuple[int, ...], *, scale_strategy: SearchStrategy | None = None
) -> Any:
    """:class:`refq.spec.QuantParams` for ``spec`` and data of ``shape``: parameter shape from
    the granularity, scales from ``scale_strategy`` (default :func:`scales`), zero points
    anywhere in the dtype (0 for symmetric and float specs)."""
    import numpy as np

    from refq.spec import PerAxis, PerBlock, QuantParams, ceil_div, normalize_axis

    gran = spec.granularity
    if isinstance(gran, PerAxis):
        pshape: tuple[int, ...] = (shape[normalize_axis(gran.axis, len(shape))],)
    elif isinstance(gran, PerBlock):
        ax = normalize_axis(gran.axis, len(shape))
        pshape = tuple(ceil_div(d, gran.block_size) if i == ax else d for i, d in enumerate(shape))
    else:
        pshape = ()
    n = int(np.prod(pshape, dtype=np.int64))
    sc = draw(st.lists(scale_strategy or scales(), min_size=n, max_size=n))
    dt = spec.dtype
    if dt.is_float or spec.symmetric:
        zp = [0] * n
    else:
        zp = draw(st.lists(st.integers(int(dt.qmin), int(dt.qmax)), min_size=n, max_size=n))
    return QuantParams(
        np.array(sc, dtype=np.float32).reshape(pshape), np.array(zp).reshape(pshape), spec
    )


FLOAT32_EDGES = (
    0.0,
    -0.0,
    1.0,
    -1.0,
    0.5,
    -0.5,
    1.5,
    2.5,
    -2.5,
    float.fromhex("0x1.fffffep-2"),  # largest float32 below 0.5
    1e-45,  # smallest subnormal
    -1e-45,
    1.1754943508222875e-38,  # smallest normal
    3.4028234663852886e38,  # largest finite
    -3.4028234663852886e38,
    16777216.0,  # 2^24: float32 integers stop being consecutive here
    16777217.0,
)
"""float32 values where rounding and saturation go wrong."""


def float32_values(
    min_value: float | None = None, max_value: float | None = None, *, edges: bool = True
) -> SearchStrategy:
    """Finite float32 values (as Python floats), :data:`FLOAT32_EDGES` mixed in."""
    base = st.floats(min_value, max_value, width=32, allow_nan=False, allow_infinity=False)
    if not edges:
        return base
    inside = [
        v
        for v in FLOAT32_EDGES
        if (min_value is None or v >= min_value) and (max_value is None or v <= max_value)
    ]
    return st.one_of(st.sampled_from(inside), base) if inside else base


def _f32_inward(lo: float, hi: float) -> tuple[float, float]:
    """The float32 interval inside [lo, hi] (hypothesis wants float32-exact bounds)."""
    import numpy as np

    a, b = np.float32(lo), np.float32(hi)
    if float(a) < lo:
        a = np.nextafter(a, np.float32(np.inf))
    if float(b) > hi:
        b = np.nextafter(b, np.float32(-np.inf))
    return float(a), float(b)


@st.composite
def quant_inputs(draw: Any, params: Any, shape: tuple[int, ...]) -> Any:
    """float32 data of ``shape`` for ``params``: values inside the representable range, exact
    rounding ties ``(k + 1/2) * scale`` (where representable), values beyond ``qmin`` /
    ``qmax`` (saturation) and :data:`FLOAT32_EDGES`, element by element."""
    import numpy as np

    s_b, z_b = params.broadcast(shape)
    s_b = np.broadcast_to(s_b, shape).reshape(-1).astype(np.float64)
    z_b = np.broadcast_to(z_b, shape).reshape(-1)
    lo, hi = float(params.spec.qmin), float(params.spec.qmax)
    out = []
    for s, z in zip(s_b, z_b, strict=True):
        rlo, rhi = (lo - z - 2) * s, (hi - z + 2) * s  # a little beyond the range
        kind = draw(st.sampled_from(("inside", "tie", "beyond", "edge")))
        if kind == "inside":
            v = draw(st.floats(*_f32_inward(rlo, rhi), width=32))
        elif kind == "tie":
            k = draw(st.integers(int(lo - z) - 2, int(hi - z) + 1))
            v = float(np.float32((k + 0.5) * s))
        elif kind == "beyond":
            v = draw(
                st.floats(*_f32_inward(min(rlo, rhi) * 4 - 1, max(rlo, rhi) * 4 + 1), width=32)
            )
        else:
            v = draw(st.sampled_from(FLOAT32_EDGES))
        out.append(v)
    return np.array(out, dtype=np.float32).reshape(shape)
