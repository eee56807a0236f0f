"""RSQRT, TANH, LOGISTIC and HARD_SWISH on int8 / int16 codes, as TFLM and LiteRT compute them.

Every kernel evaluates its integer algorithm on all input codes (256 for int8, 65536 for int16)
at prepare time and keeps the resulting table in its params, beside the integer constants it was
computed from (run = one table lookup; the C generator can emit the int8 tables as they are).
``MBQM`` is TFLite's MultiplyByQuantizedMultiplier (double rounding under ``tflm`` and LiteRT).

RSQRT (TFLM ``RsqrtEvalQuantized``; int8, and int16 with zero points 0)::

    (M, e) = QuantizeMultiplier(1 / (sqrt(double(s_in)) * double(s_out)))   tflite-micro wheel
             (LiteRT and the TFLM source: 1 / double(float32(sqrtf(s_in) * s_out)))
    v = x - zp_in;  v < 0 is an error;  v == 0 -> qmax
    (Mi, ei) = GetInvSqrtQuantizedMultiplierExp(v, -1);  d = MBQM(1, Mi, ei + 20)   (2^20/sqrt v)
    y = clamp(MBQM(d, M, e - 20) + zp_out, qmin, qmax)

TANH / LOGISTIC int8 under TFLM (gemmlowp fixed point, 4 integer bits)::

    (q, k) = frexp(double(s_in) * 2^27);  M = round(q * 2^31);  r = floor(15 * 2^27 / 2^k)
    d = x - zp_in;  d <= -r -> -128;  d >= r -> 127;  else t = MBQM(d, M, k) (Q4.27)
    TANH: clamp(RDBPOT(gemmlowp_tanh(t), 24), -128, 127)        output scale 1/128, zp 0
    LOGISTIC: clamp(RDBPOT(gemmlowp_logistic(t), 23) - 128)     output scale 1/256, zp -128

TFLM ignores the output quantization of these two (it writes codes of scale 1/128 or 1/256);
refq refuses other output quantizations under TFLM. LiteRT's reference kernels instead fill a
256-entry table in float32 (``LUTPopulate``): ``q = clamp(round_half_away(f(float32(s_in) *
(x - zp_in)) * (1 / s_out)) + zp_out)`` with ``f = tanhf`` or ``1 / (1 + expf(-v))``. refq builds
that table the same way under ``litert-ref``, calling the C library's ``tanhf`` / ``expf``
through ctypes: it equals LiteRT's only where the host libm agrees with the one LiteRT runs on
(glibc here). At the standard output scales the two algorithms agreed on every config tested.
LiteRT's int8 LOGISTIC requires output scale 1/256 and zero point -128 (its TANH takes any).
LiteRT's int16 RSQRT interpolates a float table (``LUTPopulate<int16>``): not reproduced, refused
under ``litert-ref``.

TANH / LOGISTIC int16 (TFLM and LiteRT, zero points 0, output scale 2^-15): the input is rescaled
to 1/(3 * 4096) units, ``v = (x * M + 2^(L-1)) >> L`` (power-of-two input scales with
``L = 12 + log2(s_in)`` in {0, 1} (tanh) or {0} (logistic) use ``M = 3 << L``, ``L = 0``; other
scales double ``M = s_in * 12288`` until it exceeds 16383.5, ``L`` counting the doublings, and
truncate it), then a linear interpolation in TFLite's 256-entry table ``sigmoid(i / 24)`` in Q0.16
(:data:`SIGMOID_TABLE_Q16`). With ``a = |v|``::

    TANH:     h = a >> 8, f = a & 255
              R = h >= 255 ? 0xFFFF << 8 : (T[h] << 8) + f * (T[h+1] - T[h])
              y = v >= 0 ? (R - 2^23 + 2^7) >> 8 : (2^23 + 2^7 - 1 - R) >> 8
    LOGISTIC: h = a >> 9, f = a & 511
              R = h >= 255 ? 0x7FFF << 10 : (T[h] << 9) + f * (T[h+1] - T[h])
              y = v >= 0 ? (R + 2^9) >> 10 : (2^25 - R + 2^9 - 1) >> 10

The table is not ``round(2^16 * sigmoid(i / 24))``: 44 entries are one larger. refq ships the
entries measured from the tflite-micro wheel (tests re-measure them through int16 TANH, whose
output is ``T[i] - 2^15`` when ``v = 256 i``).

HARD_SWISH int8 (TFLite ``reference_ops::HardSwish``, float32 prepare)::

    hires = float32(s_in / 128);  (Mo, eo) = QuantizeMultiplier(float32(hires / s_out)),  eo <= 0
    (Mr, er) = QuantizeMultiplier(float32(hires / float32(3 / 32768)))
    M16 = M >= 2^31 - 1 - 2^15 ? 32767 : (M + 2^15) >> 16            (both multipliers)
    h = (x - zp_in) * 128                                            int16
    p = SRDHM16(h, Mo16)
    r = er > 0 ? SatShl16(SRDHM16(SatShl16(h, er - 1), Mr16), 1) : RDBPOT16(SRDHM16(h, Mr16), -er)
    r = (r + 2^15) >> 1                                              relu6(x + 3) / 6 in Q0.15
    y = clamp(RDBPOT16(trunc(r * p / 2^15), -eo) + zp_out, -128, 127)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from refq import fixedpoint as fp
from refq.errors import InvalidDataError, QuantSpecError, ShapeError, UnsupportedError
from refq.kernels.elementwise import (
    check_codes,
    check_output_shape,
    check_scale,
    check_zero_point,
    checked_log2,
    f32,
    is_litert,
    quantized,
    require_fixedpoint,
)
from refq.kernels.registry import register
from refq.kernels.requant import OUT_RANGES
from refq.profiles import Profile, Rounding

UNARY_OPS = ("RSQRT", "TANH", "LOGISTIC", "HARD_SWISH")

# TFLite's sigmoid_table_uint16: sigmoid(i / 24) in Q0.16, as measured from the tflite-micro
# wheel (not a copy of any source file; see the module docstring and the peer test).
SIGMOID_TABLE_Q16: tuple[int, ...] = (
    32768, 33451, 34133, 34813, 35493, 36169, 36843, 37513, 38180, 38841, 39498, 40149, 40794,
    41432, 42064, 42688, 43304, 43912, 44511, 45102, 45683, 46255, 46817, 47369, 47911, 48443,
    48964, 49475, 49975, 50464, 50942, 51409, 51865, 52311, 52745, 53169, 53581, 53983, 54374,
    54755, 55125, 55485, 55834, 56174, 56503, 56823, 57133, 57433, 57724, 58007, 58280, 58544,
    58800, 59048, 59288, 59519, 59743, 59959, 60168, 60370, 60565, 60753, 60935, 61110, 61279,
    61441, 61599, 61750, 61896, 62036, 62172, 62302, 62428, 62549, 62666, 62778, 62886, 62990,
    63090, 63186, 63279, 63368, 63454, 63536, 63615, 63691, 63765, 63835, 63903, 63968, 64030,
    64090, 64148, 64204, 64257, 64308, 64357, 64405, 64450, 64494, 64536, 64576, 64614, 64652,
    64687, 64721, 64754, 64786, 64816, 64845, 64873, 64900, 64926, 64950, 64974, 64997, 65019,
    65039, 65060, 65079, 65097, 65115, 65132, 65149, 65164, 65179, 65194, 65208, 65221, 65234,
    65246, 65258, 65269, 65280, 65291, 65301, 65310, 65319, 65328, 65337, 65345, 65352, 65360,
    65367, 65374, 65381, 65387, 65393, 65399, 65404, 65410, 65415, 65420, 65425, 65429, 65433,
    65438, 65442, 65445, 65449, 65453, 65456, 65459, 65462, 65465, 65468, 65471, 65474, 65476,
    65479, 65481, 65483, 65485, 65488, 65489, 65491, 65493, 65495, 65497, 65498, 65500, 65501,
    65503, 65504, 65505, 65507, 65508, 65509, 65510, 65511, 65512, 65513, 65514, 65515, 65516,
    65517, 65517, 65518, 65519, 65520, 65520, 65521, 65522, 65522, 65523, 65523, 65524, 65524,
    65525, 65525, 65526, 65526, 65526, 65527, 65527, 65528, 65528, 65528, 65529, 65529, 65529,
    65529, 65530, 65530, 65530, 65530, 65531, 65531, 65531, 65531, 65531, 65532, 65532, 65532,
    65532, 65532, 65532, 65533, 65533, 65533, 65533, 65533, 65533, 65533, 65533, 65534, 65534,
    65534, 65534, 65534, 65534, 65534, 65534, 65534, 65534, 65535,
)  # fmt: skip

_CODES8 = np.arange(-128, 128, dtype=np.int64)
RSQRT_SHIFT = fp.RSQRT_KSHIFT


@dataclass(frozen=True, eq=False)
class UnaryParams:
    """Constants of one RSQRT / TANH / LOGISTIC / HARD_SWISH.

    ``method`` names the algorithm: ``rsqrt``, ``gemmlowp`` (int8 TFLM tanh / logistic),
    ``float_lut`` (int8 LiteRT tanh / logistic), ``sigmoid_table`` (int16 tanh / logistic),
    ``hard_swish``. ``ints`` holds the method's integer constants by their TFLite names;
    ``table`` is the output code of every input code (index ``x - qmin``: 256 entries for int8,
    65536 for int16), evaluated once from ``ints`` at prepare time. ``min_code``: inputs below
    it are errors (RSQRT: below the input zero point; the table holds 0 there).
    """

    op: str
    dtype: str
    method: str
    rounding: Rounding
    ints: Mapping[str, int]
    table: np.ndarray
    min_code: int


# ---------------------------------------------------------------------------------------------
# RSQRT
# ---------------------------------------------------------------------------------------------


def rsqrt_multiplier(
    input_scale: float, output_scale: float, *, float32_product: bool
) -> tuple[int, int]:
    """QuantizeMultiplier of RSQRT's ``1 / (sqrt(s_in) * s_out)``.

    ``float32_product=False``: in double (the tflite-micro wheel); ``True``: ``sqrtf(s_in) *
    s_out`` in float32, then ``1 / double`` (LiteRT 2.3, and the TFLM C++ source).
    """
    if float32_product:
        prod = float(np.sqrt(np.float32(input_scale)) * np.float32(output_scale))
    else:
        prod = math.sqrt(f32(input_scale)) * f32(output_scale)
    return fp.quantize_multiplier(1.0 / prod)


def _rsqrt_values(v: np.ndarray, ints: Mapping[str, int], rounding: Rounding, lo: int, hi: int):
    core = fp.rsqrt_fixed_point(np.maximum(v, 1), ints["multiplier"], ints["shift"], rounding)
    y = np.asarray(core, dtype=np.int64) + ints["output_offset"]
    return np.where(v == 0, hi, np.clip(y, lo, hi))


def prepare_rsqrt(
    dtype: str, s_in: float, zp_in: int, s_out: float, zp_out: int, profile: Profile, name: str
) -> UnaryParams:
    what = name or "RSQRT"
    if dtype not in ("int8", "int16"):
        raise UnsupportedError(f"{what}: RSQRT on {dtype!r}; TFLM supports int8 and int16")
    if dtype == "int16" and is_litert(profile):
        raise UnsupportedError(
            f"{what}: LiteRT's int16 RSQRT interpolates a float lookup table (LUTPopulate<int16>)"
            ", which refq does not reproduce"
        )
    int16 = dtype == "int16"
    zi = check_zero_point(zp_in, dtype, "input", what, zero=int16)
    zo = check_zero_point(zp_out, dtype, "output", what, zero=int16)
    s_in, s_out = check_scale(s_in, "input", what), check_scale(s_out, "output", what)
    m, s = rsqrt_multiplier(
        s_in, s_out, float32_product=is_litert(profile) or profile.fc_product_float32
    )
    if not -31 + RSQRT_SHIFT <= s <= 30:
        raise QuantSpecError(
            f"{what}: 1 / (sqrt(s_in) * s_out) gives shift {s}; RSQRT's final "
            f"MultiplyByQuantizedMultiplier by shift - {RSQRT_SHIFT} needs it in "
            f"[{-31 + RSQRT_SHIFT}, 30]"
        )
    ints = {"input_offset": zi, "output_offset": zo, "multiplier": m, "shift": s}
    rounding = profile.rounding
    lo, hi = OUT_RANGES[dtype]
    v = np.arange(lo, hi + 1, dtype=np.int64) - zi
    table = np.where(v >= 0, _rsqrt_values(np.maximum(v, 0), ints, rounding, lo, hi), 0)
    return UnaryParams("RSQRT", dtype, "rsqrt", rounding, ints, table.astype(dtype), zi)


# ---------------------------------------------------------------------------------------------
# TANH / LOGISTIC
# ---------------------------------------------------------------------------------------------

_STANDARD_OUTPUT = {"TANH": (1.0 / 128, 0), "LOGISTIC": (1.0 / 256, -128)}


def gemmlowp_input_params(s_in: float, what: str) -> tuple[int, int, int]:
    """TFLM's int8 tanh / logistic prepare: ``(M, left_shift, radius)`` (module docstring)."""
    q, shift = math.frexp(f32(s_in) * float(1 << 27))
    # q * 2^31 is an integer (a float32 scale has 24 significant bits): the rounding is exact.
    m = math.floor(q * float(1 << 31) + 0.5)
    if not 0 <= shift <= 30:
        raise QuantSpecError(
            f"{what}: input scale {s_in!r} is outside the range of TFLM's int8 tanh / logistic "
            f"(frexp(s_in * 2^27) exponent {shift} not in [0, 30])"
        )
    radius = math.floor(15.0 * float(1 << 27) / float(1 << shift))
    return m, shift, radius


def _gemmlowp_table(
    op: str, zp_in: int, m: int, shift: int, radius: int, rounding: Rounding
) -> np.ndarray:
    d = _CODES8 - zp_in
    inside = np.clip(d, 1 - radius, radius - 1)
    q4 = fp.multiply_by_quantized_multiplier(inside, m, shift, rounding)
    if op == "TANH":
        core = fp.rounding_divide_by_pot(fp.gemmlowp_tanh(q4, 4), 24).astype(np.int64)
    else:
        core = fp.rounding_divide_by_pot(fp.gemmlowp_logistic(q4, 4), 23).astype(np.int64) - 128
    core = np.clip(core, -128, 127)
    return np.where(d <= -radius, -128, np.where(d >= radius, 127, core)).astype(np.int8)


@cache
def _libm() -> ctypes.CDLL | None:
    path = ctypes.util.find_library("m")
    try:
        lib = ctypes.CDLL(path)
    except OSError:
        return None
    for fn in ("tanhf", "expf"):
        getattr(lib, fn).restype = ctypes.c_float
        getattr(lib, fn).argtypes = [ctypes.c_float]
    return lib


def _float_fn(op: str) -> Callable[[np.ndarray], np.ndarray]:
    """float32 tanh / logistic through the C library (as LiteRT's C++ calls them)."""
    lib = _libm()
    if lib is None:  # pragma: no cover - every supported platform has a libm
        raise UnsupportedError("litert-ref TANH / LOGISTIC need the C math library (libm)")
    if op == "TANH":
        return lambda v: np.array([lib.tanhf(float(x)) for x in v], dtype=np.float32)
    one = np.float32(1)

    def logistic(v: np.ndarray) -> np.ndarray:
        e = np.array([lib.expf(float(-x)) for x in v], dtype=np.float32)
        return one / (one + e)

    return logistic


def float_lut_table(
    op: str, s_in: float, zp_in: int, s_out: float, zp_out: int, dtype: str = "int8"
) -> np.ndarray:
    """LiteRT ``LUTPopulate<int8>`` of tanh / logistic (float32 arithmetic, libm functions)."""
    lo, hi = OUT_RANGES[dtype]
    codes = np.arange(lo, hi + 1, dtype=np.int64)
    x = np.float32(s_in) * (codes - zp_in).astype(np.float32)
    t = _float_fn(op)(x)
    r = (t * (np.float32(1) / np.float32(s_out))).astype(np.float64)
    # std::round on a float32 value, done exactly in float64 (float32 + 0.5 could round).
    r = np.where(r >= 0, np.floor(np.abs(r) + 0.5), -np.floor(np.abs(r) + 0.5))
    q = (r.astype(np.float32) + np.float32(zp_out)).astype(np.float64)
    q = np.trunc(np.clip(q, -(2.0**31), 2.0**31 - 1)).astype(np.int64)
    return np.clip(q, lo, hi).astype(dtype)


def int16_rescale_params(op: str, s_in: float) -> tuple[int, int]:
    """TFLM / LiteRT int16 tanh / logistic input rescaling ``(M, L)`` after the POT case."""
    pot, log2 = checked_log2(s_in)
    left = 12 + log2
    if pot and (left in (0, 1) if op == "TANH" else left == 0):
        return 3 << left, 0
    mult = f32(s_in) * 4096.0 * 3.0
    left = 0
    while mult <= 32767.0 / 2.0 and left <= 30:
        left += 1
        mult *= 2.0
    return int(mult), left


def sigmoid_table_eval(op: str, x: np.ndarray, mult: int, left: int) -> np.ndarray:
    """int16 tanh / logistic by interpolation in :data:`SIGMOID_TABLE_Q16` (module docstring)."""
    table = np.asarray((*SIGMOID_TABLE_Q16, SIGMOID_TABLE_Q16[-1]), dtype=np.int64)
    rnd = (1 << (left - 1)) if left > 0 else 0
    v = (x.astype(np.int64) * mult + rnd) >> left
    a = np.abs(v)
    bits = 8 if op == "TANH" else 9
    h = a >> bits
    f = a & ((1 << bits) - 1)
    hc = np.minimum(h, 254)
    ua, ub = table[hc], table[hc + 1]
    interp = (ua << bits) + f * (ub - ua)
    if op == "TANH":
        r = np.where(h >= 255, 0xFFFF << 8, interp)
        y = np.where(v >= 0, r - (1 << 23) + (1 << 7), -r + (1 << 23) + (1 << 7) - 1) >> 8
    else:
        r = np.where(h >= 255, 0x7FFF << 10, interp)
        y = np.where(v >= 0, r + (1 << 9), (1 << 25) - r + (1 << 9) - 1) >> 10
    return y.astype(np.int16)


def prepare_tanh_logistic(
    op: str,
    dtype: str,
    s_in: float,
    zp_in: int,
    s_out: float,
    zp_out: int,
    profile: Profile,
    name: str,
) -> UnaryParams:
    what = name or op
    s_in, s_out = check_scale(s_in, "input", what), check_scale(s_out, "output", what)
    rounding = profile.rounding
    if dtype == "int8":
        zi = check_zero_point(zp_in, dtype, "input", what)
        zo = check_zero_point(zp_out, dtype, "output", what)
        if is_litert(profile):
            if op == "LOGISTIC" and (s_out != 1.0 / 256 or zo != -128):
                raise QuantSpecError(
                    f"{what}: LiteRT's int8 LOGISTIC requires output scale 1/256 and zero point "
                    f"-128, got {s_out!r} and {zo}"
                )
            table = float_lut_table(op, s_in, zi, s_out, zo)
            ints = {"input_zero_point": zi, "output_zero_point": zo}
            return UnaryParams(op, dtype, "float_lut", rounding, ints, table, -128)
        std_scale, std_zp = _STANDARD_OUTPUT[op]
        if s_out != std_scale or zo != std_zp:
            raise QuantSpecError(
                f"{what}: TFLM's int8 {op} writes codes of scale {std_scale} and zero point "
                f"{std_zp} whatever the output tensor says; its output has scale {s_out!r} and "
                f"zero point {zo}"
            )
        m, shift, radius = gemmlowp_input_params(s_in, what)
        ints = {
            "input_zero_point": zi,
            "input_multiplier": m,
            "input_left_shift": shift,
            "input_range_radius": radius,
        }
        table = _gemmlowp_table(op, zi, m, shift, radius, rounding)
        return UnaryParams(op, dtype, "gemmlowp", rounding, ints, table, -128)
    if dtype != "int16":
        raise UnsupportedError(f"{what}: {op} on {dtype!r}; TFLM supports int8 and int16")
    check_zero_point(zp_in, dtype, "input", what, zero=True)
    check_zero_point(zp_out, dtype, "output", what, zero=True)
    pot, log2 = checked_log2(s_out)
    if not pot or log2 != -15:
        raise QuantSpecError(
            f"{what}: int16 {op} needs output scale 2^-15 (TFLM / LiteRT check it), got {s_out!r}"
        )
    mult, left = int16_rescale_params(op, s_in)
    ints = {"input_multiplier": mult, "input_left_shift": left}
    table = sigmoid_table_eval(op, np.arange(-32768, 32768, dtype=np.int64), mult, left)
    return UnaryParams(op, dtype, "sigmoid_table", rounding, ints, table, -32768)


# ---------------------------------------------------------------------------------------------
# HARD_SWISH
# ---------------------------------------------------------------------------------------------


def downscale_multiplier_int16(m: int) -> int:
    """TFLite ``DownScaleInt32ToInt16Multiplier``: ``(M + 2^15) >> 16``, 32767 near the top."""
    if m >= (1 << 31) - 1 - (1 << 15):
        return 32767
    return (m + (1 << 15)) >> 16


def _sat_shl16(x: np.ndarray, amount: int) -> np.ndarray:
    return np.clip(x * (1 << amount), -32768, 32767)


def _srdhm16(a: np.ndarray, b: int) -> np.ndarray:
    return np.asarray(fp.srdhm(a, np.int64(b), bits=16), dtype=np.int64)


def _rdbpot16(x: np.ndarray, e: int) -> np.ndarray:
    return np.asarray(fp.rounding_divide_by_pot(x, e, bits=16), dtype=np.int64)


def hard_swish_codes(x: np.ndarray, ints: Mapping[str, int]) -> np.ndarray:
    """TFLite ``reference_ops::HardSwish`` on int8 codes, int16 steps as in C (module doc)."""
    h = (x.astype(np.int64) - ints["input_zero_point"]) * 128
    pre = _srdhm16(h, ints["output_multiplier_fixedpoint_int16"])
    er = ints["reluish_multiplier_exponent"]
    r = _sat_shl16(h, er - 1) if er > 0 else h
    r = _srdhm16(r, ints["reluish_multiplier_fixedpoint_int16"])
    if er > 0:
        r = _sat_shl16(r, 1)
    elif er < 0:
        r = _rdbpot16(r, -er)
    r = (r + (1 << 15)) >> 1
    prod = r * pre
    # SaturatingDoublingHighMul: C division truncates toward zero (r >= 0, so no saturation).
    pre_out = np.where(prod >= 0, prod >> 15, -((-prod) >> 15))
    y = _rdbpot16(pre_out, -ints["output_multiplier_exponent"]) + ints["output_zero_point"]
    y = ((y + (1 << 15)) & 0xFFFF) - (1 << 15)  # the C code adds the zero point in int16
    return np.clip(y, -128, 127).astype(np.int8)


def prepare_hard_swish(
    dtype: str, s_in: float, zp_in: int, s_out: float, zp_out: int, profile: Profile, name: str
) -> UnaryParams:
    what = name or "HARD_SWISH"
    if dtype != "int8":
        raise UnsupportedError(f"{what}: HARD_SWISH on {dtype!r}; TFLM and LiteRT support int8")
    zi = check_zero_point(zp_in, dtype, "input", what)
    zo = check_zero_point(zp_out, dtype, "output", what)
    s_in, s_out = check_scale(s_in, "input", what), check_scale(s_out, "output", what)
    hires = np.float32(1.0 / 128.0) * np.float32(s_in)
    mo, eo = fp.quantize_multiplier(float(hires / np.float32(s_out)))
    mr, er = fp.quantize_multiplier(float(hires / np.float32(3.0 / 32768.0)))
    if eo > 0:
        raise QuantSpecError(
            f"{what}: s_in / (128 * s_out) = {float(hires / np.float32(s_out))!r} has exponent "
            f"{eo} > 0; TFLite's HARD_SWISH requires the output scale >= s_in / 128"
        )
    if eo < -15 or er < -15 or er > 30:
        raise QuantSpecError(
            f"{what}: scales s_in={s_in!r}, s_out={s_out!r} give shifts ({eo}, {er}) outside the "
            "int16 range HARD_SWISH's fixed-point steps are defined on"
        )
    ints = {
        "input_zero_point": zi,
        "output_zero_point": zo,
        "reluish_multiplier_fixedpoint_int16": downscale_multiplier_int16(mr),
        "reluish_multiplier_exponent": er,
        "output_multiplier_fixedpoint_int16": downscale_multiplier_int16(mo),
        "output_multiplier_exponent": eo,
    }
    table = hard_swish_codes(_CODES8, ints)
    return UnaryParams("HARD_SWISH", dtype, "hard_swish", profile.rounding, ints, table, -128)


# ---------------------------------------------------------------------------------------------
# Evaluation and graph adapter
# ---------------------------------------------------------------------------------------------


def prepare_unary(
    op: str,
    dtype: str,
    input_scale: float,
    input_zero_point: int,
    output_scale: float,
    output_zero_point: int,
    profile: Profile,
    name: str = "",
) -> UnaryParams:
    """Derive the constants of ``op`` (one of :data:`UNARY_OPS`) under ``profile``."""
    what = name or op
    require_fixedpoint(profile, what)
    args = (dtype, input_scale, input_zero_point, output_scale, output_zero_point, profile, what)
    if op == "RSQRT":
        return prepare_rsqrt(*args)
    if op in ("TANH", "LOGISTIC"):
        return prepare_tanh_logistic(op, *args)
    if op == "HARD_SWISH":
        return prepare_hard_swish(*args)
    raise UnsupportedError(f"{what}: op {op!r} is not one of {UNARY_OPS}")


def unary(x: np.ndarray, p: UnaryParams) -> np.ndarray:
    """Evaluate the prepared activation on a code array of any shape."""
    arr = check_codes(x, p.dtype, "input", p.op)
    if arr.size and p.min_code > OUT_RANGES[p.dtype][0]:
        bad = arr < p.min_code
        if bad.any():
            i = int(np.flatnonzero(bad.reshape(-1))[0])
            raise InvalidDataError(
                f"{p.op}: input code {int(arr.reshape(-1)[i])} at flat index {i} is below the "
                f"input zero point {p.min_code} (RSQRT of a negative value; TFLM fails the invoke)"
            )
    return p.table[arr.astype(np.intp) - OUT_RANGES[p.dtype][0]]


def _make_prepare(op: str):
    def _prepare(node: Any, tensors: Mapping[str, Any], profile: Profile) -> UnaryParams:
        if len(node.inputs) != 1 or len(node.outputs) != 1:
            raise ShapeError(f"node {node.name!r}: {op} takes one input and one output")
        x, out = tensors[node.inputs[0]], tensors[node.outputs[0]]
        if x.dtype != out.dtype:
            raise UnsupportedError(
                f"node {node.name!r}: {op} from {x.dtype} to {out.dtype}; dtypes must match"
            )
        check_output_shape(out, x.shape, node.name)
        s_in, z_in = quantized(x, node.name)
        s_out, z_out = quantized(out, node.name)
        return prepare_unary(
            op, x.dtype, s_in, z_in, s_out, z_out, profile, name=f"node {node.name!r} ({op})"
        )

    return _prepare


def _run(p: UnaryParams, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    return [unary(np.asarray(inputs[0]), p)]


for _op in UNARY_OPS:
    register(_op, prepare=_make_prepare(_op), run=_run)
