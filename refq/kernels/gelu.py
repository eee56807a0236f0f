"""GELU: LiteRT's int8 lookup table, I-BERT's i-GELU and I-ViT's ShiftGELU (by profile).

``tflm`` / ``litert-ref`` / ``cmsis-nn`` profiles: LiteRT's int8 GELU (TFLM has no GELU), a
256-entry table filled at prepare time by ``LUTPopulate<int8_t>`` in float32:
``T[v] = clamp(int(round(f(s_in * (v - zp_in)) * (1 / s_out)) + zp_out))`` with ``round`` =
``std::round`` and ``f`` LiteRT's ``GeluTransform``: ``0.5f * x * erfc(x * -(1/sqrt 2))`` (exact
form, ``approximate=False``) or ``0.5f * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))``
(``approximate=True``), every step a float32 operation. ``erfc`` / ``tanh`` are evaluated in
float64 and rounded to float32 (the correctly rounded ``erfcf`` / ``tanhf``); LiteRT calls libm,
so an entry can differ where libm's float result is not correctly rounded and the product lands
on a rounding boundary (not observed on glibc 2.36 in the tests' configurations). LiteRT has no
int16 GELU; neither has refq under these profiles. Run: ``y = T[x]``.

``ibert`` profile: i-GELU (:mod:`refq.kernels.ibert`) is a per-element integer function of the
input code, so for int8 / int16 inputs prepare evaluates it on every code and requantizes the
exact result ``q_out * S_out`` to the output tensor (``round`` half away from zero of the exact
rational, clamped): the run is a table lookup, and the table is what the integer algorithm
produces. ``erf_shift`` attr (default 14, the released code; 0 = the paper's Algorithm 2).

``ivit`` / ``ivit-exact`` profiles: ShiftGELU (:mod:`refq.kernels.ivit`), which depends on the
row maximum (last axis), evaluated at run time.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
from numpy.typing import NDArray

from refq.errors import QuantSpecError, ShapeError, UnsupportedError
from refq.kernels import ibert
from refq.kernels.ivit import ShiftGeluParams, prepare_shift_gelu, shift_gelu_q
from refq.kernels.registry import register
from refq.profiles import Profile
from refq.spec import QDType

_SQRT1_2 = 0.70710678118654752440
_SQRT_2_OVER_PI_F32 = np.float32(1.12837916709551257390 * 0.70710678118654752440)


def _round_half_away(v: np.ndarray) -> np.ndarray:
    """``std::round`` of float32 values, exactly (in float64)."""
    w = np.asarray(v, dtype=np.float64)
    return np.sign(w) * np.floor(np.abs(w) + 0.5)


def gelu_transform_f32(x: np.ndarray) -> np.ndarray:
    """LiteRT ``GeluTransform`` in float32: ``0.5f * x * erfc(x * -(float)M_SQRT1_2)``."""
    x = np.asarray(x, dtype=np.float32)
    arg = (x * np.float32(-_SQRT1_2)).astype(np.float32)
    erfc = np.array([math.erfc(float(a)) for a in arg.ravel()], dtype=np.float64)
    erfc = erfc.reshape(arg.shape).astype(np.float32)
    return ((np.float32(0.5) * x).astype(np.float32) * erfc).astype(np.float32)


def gelu_transform_approximate_f32(x: np.ndarray) -> np.ndarray:
    """LiteRT ``GeluTransformApproximate`` in float32 (tanh form, ``0.044715 x^3``)."""
    x = np.asarray(x, dtype=np.float32)
    cube = (((np.float32(0.044715) * x).astype(np.float32) * x).astype(np.float32) * x).astype(
        np.float32
    )
    inner = (_SQRT_2_OVER_PI_F32 * (x + cube).astype(np.float32)).astype(np.float32)
    t = np.tanh(inner.astype(np.float64)).astype(np.float32)
    return ((np.float32(0.5) * x).astype(np.float32) * (np.float32(1) + t)).astype(np.float32)


def lut_populate(
    s_in: float,
    zp_in: int,
    s_out: float,
    zp_out: int,
    transform: Callable[[np.ndarray], np.ndarray],
    qmin: int = -128,
    qmax: int = 127,
) -> NDArray[np.int64]:
    """TFLite ``LUTPopulateInt8`` (float32): entry ``v - (-128)`` for each int8 code ``v``.

    ``dequantized = s_in * float(v - zp_in)``; ``rescaled = round(f(dequantized) * (1 / s_out))``;
    ``clamp(int(rescaled + zp_out), qmin, qmax)``. ``qmin`` / ``qmax`` default to int8 (other
    ranges serve refq's SwiGLU table, which reuses this construction).
    """
    codes = np.arange(-128, 128, dtype=np.int64)
    dequant = (np.float32(s_in) * (codes - zp_in).astype(np.float32)).astype(np.float32)
    inverse = np.float32(np.float32(1) / np.float32(s_out))
    rescaled = _round_half_away((transform(dequant) * inverse).astype(np.float32))
    shifted = (rescaled.astype(np.float32) + np.float32(zp_out)).astype(np.float64)
    return np.clip(np.trunc(shifted), qmin, qmax).astype(np.int64)


@dataclass(frozen=True)
class GeluLutParams:
    """A per-code lookup table: ``y = table[x - code_min]`` (int8: 256 entries, int16: 65536).

    ``method``: ``litert`` (float LUT) or ``ibert`` (i-GELU evaluated on every code).
    """

    table: NDArray[np.int64]
    code_min: int
    output_dtype: str
    method: str
    approximate: bool = False
    erf_shift: int = ibert.ERF_SHIFT
    name: str = "gelu"


def prepare_gelu_litert(
    s_in: float,
    zp_in: int,
    s_out: float,
    zp_out: int,
    *,
    approximate: bool = False,
    name: str = "gelu",
) -> GeluLutParams:
    """LiteRT int8 GELU table (module docstring)."""
    f = gelu_transform_approximate_f32 if approximate else gelu_transform_f32
    table = lut_populate(s_in, zp_in, s_out, zp_out, f)
    return GeluLutParams(table, -128, "int8", "litert", approximate, name=name)


def _round_half_away_fraction(values: np.ndarray, ratio: Fraction) -> np.ndarray:
    """``round_half_away(v * ratio)`` for int64 ``v`` exactly (Python ints in object arrays)."""
    num, den = ratio.numerator, ratio.denominator
    v = values.astype(object) * num
    mag = (abs(v) * 2 + den) // (2 * den)
    return np.where(v < 0, -mag, mag)


def prepare_gelu_ibert(
    s_in: float,
    zp_in: int,
    s_out: float,
    zp_out: int,
    input_dtype: str,
    output_dtype: str,
    *,
    erf_shift: int = ibert.ERF_SHIFT,
    name: str = "gelu",
) -> GeluLutParams:
    """i-GELU on every input code, requantized exactly to the output (module docstring)."""
    dt_in, dt_out = QDType.parse(input_dtype), QDType.parse(output_dtype)
    if dt_in.bits > 16:
        raise UnsupportedError(f"GELU {name!r} (ibert): inputs up to 16 bits, got {input_dtype}")
    codes = np.arange(int(dt_in.qmin), int(dt_in.qmax) + 1, dtype=np.int64)
    c = ibert.i_gelu_constants(s_in, erf_shift=erf_shift)
    q_out = ibert.i_gelu(codes - zp_in, c)
    y = _round_half_away_fraction(q_out, c.scale_out / Fraction(float(s_out))) + zp_out
    table = np.clip(y, int(dt_out.qmin), int(dt_out.qmax)).astype(np.int64)
    return GeluLutParams(
        table, int(dt_in.qmin), output_dtype, "ibert", erf_shift=erf_shift, name=name
    )


def gelu_lut(x: np.ndarray, p: GeluLutParams) -> np.ndarray:
    """Run a GELU table on codes ``x``."""
    x = np.asarray(x)
    if x.dtype.kind not in "iu":
        raise ShapeError(f"GELU {p.name!r}: input must be integer codes, got {x.dtype}")
    dt = QDType.parse(p.output_dtype)
    return p.table[x.astype(np.int64) - p.code_min].astype(dt.storage)


def float_gelu(x: np.ndarray) -> np.ndarray:
    """Float64 erf-GELU (for error bounds)."""
    x = np.asarray(x, dtype=np.float64)
    erf = np.vectorize(math.erf)(x / math.sqrt(2.0)) if x.size else x
    return 0.5 * x * (1.0 + erf)


# --- graph adapter ---------------------------------------------------------------------------


def prepare_gelu_node(node: Any, tensors: Mapping[str, Any], profile: Profile) -> Any:
    """GELU: LiteRT table (``tflm``-family profiles), i-GELU (``ibert``), ShiftGELU (``ivit``)."""
    if len(node.inputs) != 1 or len(node.outputs) != 1:
        raise ShapeError(f"GELU node {node.name!r} takes one input and one output")
    t_in, t_out = tensors[node.inputs[0]], tensors[node.outputs[0]]
    for t in (t_in, t_out):
        if not t.quantized:
            raise QuantSpecError(f"GELU node {node.name!r}: tensor {t.name!r} is not quantized")
    s_in, zp_in = t_in.scalar_scale(), t_in.scalar_zero_point()
    s_out, zp_out = t_out.scalar_scale(), t_out.scalar_zero_point()
    if profile.nonlinear == "ibert":
        return prepare_gelu_ibert(
            s_in,
            zp_in,
            s_out,
            zp_out,
            t_in.dtype,
            t_out.dtype,
            erf_shift=int(node.attrs.get("erf_shift", ibert.ERF_SHIFT)),
            name=node.name,
        )
    if profile.nonlinear == "ivit":
        return prepare_shift_gelu(
            s_in, zp_in, s_out, zp_out, t_out.dtype, rounding=profile.rounding, name=node.name
        )
    if t_in.dtype != "int8" or t_out.dtype != "int8":
        raise UnsupportedError(
            f"GELU node {node.name!r}: LiteRT's quantized GELU is int8 -> int8, got "
            f"{t_in.dtype} -> {t_out.dtype}"
        )
    return prepare_gelu_litert(
        s_in,
        zp_in,
        s_out,
        zp_out,
        approximate=bool(node.attrs.get("approximate", False)),
        name=node.name,
    )


def run_gelu_node(params: Any, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    (x,) = inputs
    if isinstance(params, ShiftGeluParams):
        return [shift_gelu_q(x, params)]
    return [gelu_lut(x, params)]


register("GELU", prepare=prepare_gelu_node, run=run_gelu_node)

__all__ = [
    "GeluLutParams",
    "float_gelu",
    "gelu_lut",
    "gelu_transform_approximate_f32",
    "gelu_transform_f32",
    "lut_populate",
    "prepare_gelu_ibert",
    "prepare_gelu_litert",
]
