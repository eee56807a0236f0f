"""SiLU and SwiGLU through an integer sigmoid (refq ops ``SILU`` and ``SWIGLU``; int8).

No peer has a quantized SiLU op (TFLite lowers it to LOGISTIC and MUL), so refq defines two forms,
selected by the ``method`` attr:

``fixedpoint`` (default): the sigmoid is TFLM's int8 LOGISTIC arithmetic kept at full precision.
    Prepare, as TFLM LOGISTIC: ``(M_in, s_in_shift) = QuantizeMultiplier(s_in * 2^27)``,
    ``radius = floor(15 * 2^27 / 2^s_in_shift)``. Per element, ``v = x - zp_in``:

    1. ``sigma = 0`` if ``v <= -radius``; ``2^31 - 1`` if ``v >= radius``; else
       ``gemmlowp logistic(MultiplyByQuantizedMultiplier(v, M_in, s_in_shift))`` (input Q4.27,
       output Q0.31). The radius keeps ``v * 2^s_in_shift`` in int32; it lies at 7.5 to 15 in
       real terms (less one input step), so saturating drops at most
       ``|x| sigmoid(-|x|) <= 0.005``;
    2. ``t = SRDHM(v * 2^23, sigma) = round(v * sigmoid * 2^23)`` (``|v| <= 255``: fits int32);
    3. SILU: ``y = clamp(MultiplyByQuantizedMultiplier(t, M, shift) + zp_out)``,
       ``M 2^shift = s_in / (s_out 2^23)``.

``table``: a 256-entry table filled like LiteRT's int8 GELU (``LUTPopulateInt8`` in float32)
    with ``silu(x) = x / (1 + exp(-x))`` in float32 (``exp`` correctly rounded from float64).

SWIGLU(gate, up) = ``silu(gate) * up``: the SiLU of the gate is kept with 7 fractional bits in
gate units, ``h = round(silu(s_g v_g) / s_g * 2^7)`` (``|h| <= 255 * 128``, int16):
``fixedpoint``: ``h = RoundingDivideByPOT(t, 16)``; ``table``: a 256-entry int16 table
(``LUTPopulateInt8`` construction, output scale ``s_g / 128``, range int16). Then
``acc = h * (u - zp_up)`` (``|acc| < 2^23``) and
``y = clamp(MultiplyByQuantizedMultiplier(acc, M, shift) + zp_out)``,
``M 2^shift = s_g s_up / (2^7 s_out)``: one requantization, no int8 intermediate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from refq import fixedpoint as fp
from refq.errors import QuantSpecError, ShapeError, UnsupportedError
from refq.kernels import fastpath
from refq.kernels.gelu import lut_populate
from refq.kernels.registry import register
from refq.kernels.softmax import input_radius
from refq.profiles import Profile, Rounding
from refq.spec import QDType

SiluMethod = Literal["fixedpoint", "table"]
METHODS: tuple[str, ...] = ("fixedpoint", "table")
PRODUCT_BITS = 23
"""``t = v * sigmoid`` is kept with 23 fractional bits (``|v| <= 255``)."""
H_FRAC_BITS = 7
"""SwiGLU keeps ``silu(gate)`` with 7 fractional bits in gate units (int16)."""
LOGISTIC_INTEGER_BITS = 4


def silu_f32(x: np.ndarray) -> np.ndarray:
    """``x / (1 + exp(-x))`` in float32 (``exp`` as the correctly rounded float32)."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):  # expf overflows to inf below -88 as well: silu -> -0
        e = np.exp(-x.astype(np.float64)).astype(np.float32)
    return (x / (np.float32(1) + e).astype(np.float32)).astype(np.float32)


@dataclass(frozen=True)
class SigmoidParams:
    """TFLM int8 LOGISTIC input rescaling: ``M_in``, ``shift`` (Q4.27) and the saturation radius."""

    input_multiplier: int
    input_shift: int
    input_radius: int


def prepare_sigmoid(s_in: float, rounding: Rounding = "double") -> SigmoidParams:
    """TFLM LOGISTIC Prepare for int8: ``QuantizeMultiplier(s_in * 2^27)`` and the radius."""
    m, shift = fp.quantize_multiplier(float(s_in) * float(1 << 27), rounding)
    if not 0 <= shift <= 30:
        raise QuantSpecError(f"sigmoid: input scale {s_in!r} gives shift {shift} outside [0, 30]")
    return SigmoidParams(m, shift, input_radius(shift, LOGISTIC_INTEGER_BITS))


def sigmoid_q31(
    v: np.ndarray, p: SigmoidParams, rounding: Rounding = "double"
) -> NDArray[np.int64]:
    """Sigmoid of ``v = x - zp_in`` in Q0.31 (step 1 of the module docstring)."""
    v = np.asarray(v, dtype=np.int64)
    inside = (v > -p.input_radius) & (v < p.input_radius)
    z = np.asarray(
        fp.multiply_by_quantized_multiplier(
            np.where(inside, v, 0), p.input_multiplier, p.input_shift, rounding
        ),
        dtype=np.int64,
    )
    s = np.asarray(fp.gemmlowp_logistic(z, LOGISTIC_INTEGER_BITS), dtype=np.int64)
    return np.where(inside, s, np.where(v > 0, fp.INT32_MAX, 0))


def silu_t(v: np.ndarray, p: SigmoidParams, rounding: Rounding = "double") -> NDArray[np.int64]:
    """``t = SRDHM(v * 2^23, sigmoid) = round(v * sigmoid(v s_in) * 2^23)``."""
    v = np.asarray(v, dtype=np.int64)
    return np.asarray(fp.srdhm(v << PRODUCT_BITS, sigmoid_q31(v, p, rounding)), dtype=np.int64)


def _check_int8(x: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.dtype != np.int8:
        raise ShapeError(f"{what}: input must be int8 codes, got {arr.dtype}")
    return arr


def _requant_multiplier(real: float, rounding: Rounding, what: str) -> tuple[int, int]:
    m, shift = fp.quantize_multiplier(real, rounding)
    if not -31 <= shift <= 30:
        raise QuantSpecError(f"{what}: output multiplier {real!r} gives shift {shift}")
    return m, shift


# --- SILU ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SiluParams:
    """Constants of SILU (module docstring); ``table`` holds the 256 outputs for ``table``."""

    method: SiluMethod
    input_zero_point: int
    sigmoid: SigmoidParams
    output_multiplier: int
    output_shift: int
    output_zero_point: int
    output_dtype: str
    table: NDArray[np.int64] | None = None
    rounding: Rounding = "double"
    name: str = "silu"


def prepare_silu(
    s_in: float,
    zp_in: int,
    s_out: float,
    zp_out: int,
    *,
    output_dtype: str = "int8",
    method: SiluMethod = "fixedpoint",
    rounding: Rounding = "double",
    name: str = "silu",
) -> SiluParams:
    if method not in METHODS:
        raise UnsupportedError(f"SILU {name!r}: method={method!r}; use one of {METHODS}")
    sig = prepare_sigmoid(s_in, rounding)
    m, shift = _requant_multiplier(
        float(s_in) / (float(s_out) * float(1 << PRODUCT_BITS)), rounding, f"SILU {name!r}"
    )
    dt = QDType.parse(output_dtype)
    table = None
    if method == "table":
        table = lut_populate(s_in, zp_in, s_out, zp_out, silu_f32, int(dt.qmin), int(dt.qmax))
    return SiluParams(method, zp_in, sig, m, shift, zp_out, output_dtype, table, rounding, name)


def silu(x: np.ndarray, p: SiluParams) -> np.ndarray:
    """SILU of int8 codes."""
    x = _check_int8(x, f"SILU {p.name!r}")
    dt = QDType.parse(p.output_dtype)
    if p.method == "table":
        return p.table[x.astype(np.int64) + 128].astype(dt.storage)
    t = silu_t(x.astype(np.int64) - p.input_zero_point, p.sigmoid, p.rounding)
    y = np.asarray(
        fp.multiply_by_quantized_multiplier(t, p.output_multiplier, p.output_shift, p.rounding),
        dtype=np.int64,
    )
    return np.clip(y + p.output_zero_point, dt.qmin, dt.qmax).astype(dt.storage)


# --- SWIGLU ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SwigluParams:
    """Constants of SWIGLU (module docstring); ``h_table`` (int16 values) for ``table``."""

    method: SiluMethod
    gate_zero_point: int
    up_zero_point: int
    sigmoid: SigmoidParams
    output_multiplier: int
    output_shift: int
    output_zero_point: int
    output_dtype: str
    h_table: NDArray[np.int64] | None = None
    rounding: Rounding = "double"
    name: str = "swiglu"

    @cached_property
    def pair_table(self) -> np.ndarray:
        """SWIGLU of every (gate, up) int8 code pair, flat ``[256 * (gate + 128) + up + 128]``:
        :func:`swiglu` itself evaluated once on all 65,536 pairs (the op is elementwise), so
        reading it is the kernel bit for bit. Built on first use; the graph run reads it."""
        codes = np.arange(-128, 128, dtype=np.int8)
        return swiglu(np.repeat(codes, 256), np.tile(codes, 256), self)


def prepare_swiglu(
    s_gate: float,
    zp_gate: int,
    s_up: float,
    zp_up: int,
    s_out: float,
    zp_out: int,
    *,
    output_dtype: str = "int8",
    method: SiluMethod = "fixedpoint",
    rounding: Rounding = "double",
    name: str = "swiglu",
) -> SwigluParams:
    if method not in METHODS:
        raise UnsupportedError(f"SWIGLU {name!r}: method={method!r}; use one of {METHODS}")
    sig = prepare_sigmoid(s_gate, rounding)
    real = float(s_gate) * float(s_up) / (float(1 << H_FRAC_BITS) * float(s_out))
    m, shift = _requant_multiplier(real, rounding, f"SWIGLU {name!r}")
    h_table = None
    if method == "table":
        h_scale = float(np.float32(s_gate) / np.float32(1 << H_FRAC_BITS))
        h_table = lut_populate(s_gate, zp_gate, h_scale, 0, silu_f32, -32768, 32767)
    return SwigluParams(
        method, zp_gate, zp_up, sig, m, shift, zp_out, output_dtype, h_table, rounding, name
    )


def swiglu_h(gate: np.ndarray, p: SwigluParams) -> NDArray[np.int64]:
    """``h = silu(gate)`` with 7 fractional bits in gate units (int16 range)."""
    g = gate.astype(np.int64)
    if p.method == "table":
        return p.h_table[g + 128]
    t = silu_t(g - p.gate_zero_point, p.sigmoid, p.rounding)
    return np.asarray(fp.rounding_divide_by_pot(t, PRODUCT_BITS - H_FRAC_BITS), dtype=np.int64)


def swiglu(gate: np.ndarray, up: np.ndarray, p: SwigluParams) -> np.ndarray:
    """SWIGLU of int8 codes ``gate`` and ``up`` (same shape)."""
    gate = _check_int8(gate, f"SWIGLU {p.name!r} gate")
    up = _check_int8(up, f"SWIGLU {p.name!r} up")
    if gate.shape != up.shape:
        raise ShapeError(f"SWIGLU {p.name!r}: gate {gate.shape} and up {up.shape} differ")
    acc = swiglu_h(gate, p) * (up.astype(np.int64) - p.up_zero_point)
    y = np.asarray(
        fp.multiply_by_quantized_multiplier(acc, p.output_multiplier, p.output_shift, p.rounding),
        dtype=np.int64,
    )
    dt = QDType.parse(p.output_dtype)
    return np.clip(y + p.output_zero_point, dt.qmin, dt.qmax).astype(dt.storage)


def float_silu(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return x / (1.0 + np.exp(-x))


# --- graph adapters --------------------------------------------------------------------------


def _quantized(node: Any, tensors: Mapping[str, Any], name: str) -> Any:
    t = tensors[name]
    if not t.quantized:
        raise QuantSpecError(f"{node.op} node {node.name!r}: tensor {name!r} is not quantized")
    if t.dtype != "int8" and name in node.inputs:
        raise UnsupportedError(f"{node.op} node {node.name!r}: input {name!r} must be int8")
    return t


def prepare_silu_node(node: Any, tensors: Mapping[str, Any], profile: Profile) -> SiluParams:
    if len(node.inputs) != 1 or len(node.outputs) != 1:
        raise ShapeError(f"SILU node {node.name!r} takes one input and one output")
    t_in = _quantized(node, tensors, node.inputs[0])
    t_out = _quantized(node, tensors, node.outputs[0])
    return prepare_silu(
        t_in.scalar_scale(),
        t_in.scalar_zero_point(),
        t_out.scalar_scale(),
        t_out.scalar_zero_point(),
        output_dtype=t_out.dtype,
        method=node.attrs.get("method", "fixedpoint"),
        rounding=profile.rounding,
        name=node.name,
    )


def prepare_swiglu_node(node: Any, tensors: Mapping[str, Any], profile: Profile) -> SwigluParams:
    if len(node.inputs) != 2 or len(node.outputs) != 1:
        raise ShapeError(f"SWIGLU node {node.name!r} takes inputs (gate, up) and one output")
    t_g = _quantized(node, tensors, node.inputs[0])
    t_u = _quantized(node, tensors, node.inputs[1])
    t_out = _quantized(node, tensors, node.outputs[0])
    return prepare_swiglu(
        t_g.scalar_scale(),
        t_g.scalar_zero_point(),
        t_u.scalar_scale(),
        t_u.scalar_zero_point(),
        t_out.scalar_scale(),
        t_out.scalar_zero_point(),
        output_dtype=t_out.dtype,
        method=node.attrs.get("method", "fixedpoint"),
        rounding=profile.rounding,
        name=node.name,
    )


def run_silu_node(params: SiluParams, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    (x,) = inputs
    return [silu(x, params)]


def run_swiglu_node(params: SwigluParams, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    gate, up = inputs
    gate = _check_int8(gate, f"SWIGLU {params.name!r} gate")
    up = _check_int8(up, f"SWIGLU {params.name!r} up")
    if gate.shape != up.shape:
        raise ShapeError(f"SWIGLU {params.name!r}: gate {gate.shape} and up {up.shape} differ")
    # Speed (LLM prefill / decode): one lookup in the exhaustive table of swiglu() itself.
    return [fastpath.pair_lookup(params.pair_table, gate, up)]


register("SILU", prepare=prepare_silu_node, run=run_silu_node)
register("SWIGLU", prepare=prepare_swiglu_node, run=run_swiglu_node)

__all__ = [
    "H_FRAC_BITS",
    "PRODUCT_BITS",
    "SigmoidParams",
    "SiluParams",
    "SwigluParams",
    "float_silu",
    "prepare_sigmoid",
    "prepare_silu",
    "prepare_swiglu",
    "sigmoid_q31",
    "silu",
    "silu_f32",
    "silu_t",
    "swiglu",
    "swiglu_h",
]
