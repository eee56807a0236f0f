"""QUANTIZE, DEQUANTIZE and refq's REQUANTIZE, as TFLM registers them (ONNX under ``onnx``).

QUANTIZE float32 -> int8 / int16 / uint8 (TFLM ``reference_ops::AffineQuantize``)::

    y = clamp(round_half_away(float32(x / s)) + zp, qmin, qmax)       float32 division

Under ``onnx`` (QuantizeLinear): ``round_half_even(float32(x / s))``, float32 division. NaN /
Inf input, and (TFLM profiles) values whose ``x / s`` leaves int32, raise
:class:`InvalidDataError`: the peer's ``static_cast<int32_t>`` is undefined there (on x86 it
yields INT32_MIN, then a wrapping add of the zero point).

QUANTIZE int8 / int16 -> int8 / int16 (TFLM ``reference_ops::Requantize``)::

    (M, shift) = QuantizeMultiplier(double(s_in) / double(s_out))
    y = clamp(MultiplyByQuantizedMultiplier(x - zp_in, M, shift) + zp_out, qmin, qmax)

with the profile's rounding (the int8 <-> uint8 XOR-0x80 shortcut TFLite takes for equal
scales gives the same codes). Under ``onnx``: DequantizeLinear then QuantizeLinear in float32,
``round_half_even(float32(float32(x - zp_in) * s_in) / s_out) + zp_out``.

DEQUANTIZE int8 / int16 / uint8 -> float32 (TFLM ``reference_ops::Dequantize``, ONNX
DequantizeLinear): ``float32(s * (x - zp))``, one rounding of the exact product, identical in
both peers.

REQUANTIZE (refq op, no TFLite builtin): QUANTIZE's integer form, also from int32 accumulators
and per channel along the last axis (input scales per channel).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from refq.errors import InvalidDataError, QuantSpecError, ShapeError, UnsupportedError
from refq.kernels.registry import register
from refq.kernels.requant import OUT_RANGES, RequantParams, fixedpoint_requant, requantize_into
from refq.profiles import Profile

CODE_DTYPES = ("int8", "uint8", "int16")


@dataclass(frozen=True, eq=False)
class QuantizeParams:
    """Constants of QUANTIZE / REQUANTIZE / DEQUANTIZE.

    ``mode``: ``quantize`` (float -> int), ``requant`` (int -> int, fixed point),
    ``chain`` (int -> int through float32, ONNX), ``dequantize`` (int -> float).
    ``input_scale`` / ``output_scale`` are float32, 0-d or per channel along ``axis``.
    """

    mode: str
    input_dtype: str
    output_dtype: str
    input_scale: np.ndarray
    input_zero_point: np.ndarray
    output_scale: np.ndarray
    output_zero_point: int
    rounding: str
    """``away`` (TFLM QUANTIZE) or ``even`` (ONNX), for the float modes."""
    axis: int | None
    requant: RequantParams | None


def _finite(x: np.ndarray, what: str) -> None:
    ok = np.isfinite(x)
    if not ok.all():
        i = int(np.flatnonzero(~ok.reshape(-1))[0])
        raise InvalidDataError(
            f"{what}: input has {float(x.reshape(-1)[i])!r} at flat index {i}; NaN and Inf "
            "cannot be quantized"
        )


def _bshape(p: QuantizeParams, ndim: int, arr: np.ndarray) -> np.ndarray:
    """A per-channel parameter shaped to broadcast along ``p.axis``."""
    if arr.ndim == 0 or p.axis is None:
        return arr.reshape(())
    shape = [1] * ndim
    shape[p.axis % ndim] = arr.size
    return arr.reshape(shape)


def _round_half_away(q: np.ndarray) -> np.ndarray:
    a = np.abs(q)
    f = np.floor(a)
    r = f + (a - f >= 0.5)  # a - floor(a) is exact; a + 0.5 would round near ties
    return np.copysign(r, q)


def quantize(x: np.ndarray, p: QuantizeParams) -> np.ndarray:
    """Run QUANTIZE / REQUANTIZE / DEQUANTIZE (``p.mode``) on ``x``."""
    x = np.asarray(x)
    if x.dtype != np.dtype(p.input_dtype):
        raise ShapeError(f"{p.mode}: input must be {p.input_dtype}, got {x.dtype}")
    if p.axis is not None and p.input_scale.size > 1 and x.shape[p.axis] != p.input_scale.size:
        raise ShapeError(f"{p.mode}: {p.input_scale.size} scales for axis of size {x.shape}")
    if p.mode == "dequantize":
        s = _bshape(p, x.ndim, p.input_scale).astype(np.float64)
        z = _bshape(p, x.ndim, p.input_zero_point)
        # The product of a float32 scale and a <= 17-bit integer is exact in float64, so
        # this is one rounding of the exact product: TFLM's double and ONNX's float32 agree.
        return ((x.astype(np.int64) - z) * s).astype(np.float32)
    lo, hi = OUT_RANGES[p.output_dtype]
    zp = p.output_zero_point
    if p.mode == "requant":
        assert p.requant is not None
        zin = p.input_zero_point.reshape(-1)
        if x.ndim == 0:
            x = x.reshape(1)
        return requantize_into(x.astype(np.int64) - zin, p.requant, None, "QUANTIZE")
    if p.mode == "chain":
        s_in = _bshape(p, x.ndim, p.input_scale)
        z_in = _bshape(p, x.ndim, p.input_zero_point)
        v = (x.astype(np.int64) - z_in).astype(np.float32) * s_in  # DequantizeLinear
        q = v / p.output_scale  # QuantizeLinear: float32 division
        return (np.clip(np.rint(q), lo - zp, hi - zp).astype(np.int64) + zp).astype(p.output_dtype)
    _finite(x, "QUANTIZE")
    s = _bshape(p, x.ndim, p.output_scale)
    if p.rounding == "even":
        with np.errstate(over="ignore"):
            q = np.rint(x / s)  # float32 division (ONNX), then half to even
        return (np.clip(q, lo - zp, hi - zp).astype(np.int64) + zp).astype(p.output_dtype)
    with np.errstate(over="ignore"):
        q = (x / s).astype(np.float64)  # float32 division (measured on TFLM and LiteRT)
    r = _round_half_away(q)
    bad = np.abs(r) >= 2.0**31
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(-1))[0])
        raise InvalidDataError(
            f"QUANTIZE: input {float(x.reshape(-1)[i])!r} at flat index {i} / scale gives "
            f"{float(q.reshape(-1)[i])!r}, outside int32: undefined in TFLM's cast"
        )
    return np.clip(r.astype(np.int64) + zp, lo, hi).astype(p.output_dtype)


def prepare_quantize(
    *,
    input_dtype: str,
    output_dtype: str,
    profile: Profile,
    input_scale: Any = None,
    input_zero_point: Any = 0,
    output_scale: Any = None,
    output_zero_point: int = 0,
    axis: int | None = None,
    op: str = "QUANTIZE",
    name: str = "QUANTIZE",
) -> QuantizeParams:
    """Constants of QUANTIZE (``op="QUANTIZE"`` / ``"REQUANTIZE"``) or ``"DEQUANTIZE"``."""

    def scales(s: Any, what: str) -> np.ndarray:
        arr = np.asarray(s, dtype=np.float32)
        if arr.size == 0 or not (np.isfinite(arr).all() and (arr > 0).all()):
            raise QuantSpecError(f"{name}: {what} scale {s!r} must be positive and finite")
        return arr.reshape(()) if arr.size == 1 else arr.reshape(-1)

    if op == "DEQUANTIZE":
        if input_dtype not in CODE_DTYPES or output_dtype != "float32":
            raise UnsupportedError(f"{name}: DEQUANTIZE {input_dtype} -> {output_dtype}")
        s = scales(input_scale, "input")
        z = np.broadcast_to(np.asarray(input_zero_point, np.int64), s.shape).copy()
        return QuantizeParams("dequantize", input_dtype, output_dtype, s, z, s, 0, "", axis, None)
    if output_dtype not in CODE_DTYPES:
        raise UnsupportedError(f"{name}: output dtype {output_dtype!r}; supported {CODE_DTYPES}")
    s_out = scales(output_scale, "output")
    if s_out.ndim:
        raise UnsupportedError(f"{name}: per-channel output scales are not supported")
    lo, hi = OUT_RANGES[output_dtype]
    if not lo <= int(output_zero_point) <= hi:
        raise QuantSpecError(
            f"{name}: output zero point {output_zero_point} outside {output_dtype}"
        )
    onnx = profile.requant == "float32"
    if input_dtype == "float32":
        if op != "QUANTIZE":
            raise UnsupportedError(f"{name}: REQUANTIZE takes integer input")
        empty = np.zeros(0, np.float32)
        return QuantizeParams(
            "quantize",
            input_dtype,
            output_dtype,
            empty,
            np.zeros(0, np.int64),
            s_out,
            int(output_zero_point),
            "even" if onnx else "away",
            None,
            None,
        )
    allowed = CODE_DTYPES + (("int32",) if op == "REQUANTIZE" else ())
    if input_dtype not in allowed:
        raise UnsupportedError(f"{name}: input dtype {input_dtype!r}; supported {allowed}")
    s_in = scales(input_scale, "input")
    z_in = np.broadcast_to(np.asarray(input_zero_point, np.int64), s_in.shape).copy()
    if s_in.ndim and op != "REQUANTIZE":
        raise UnsupportedError(f"{name}: per-channel input scales need REQUANTIZE")
    if s_in.ndim and axis not in (-1, None):
        raise UnsupportedError(f"{name}: per-channel REQUANTIZE works along the last axis only")
    if onnx:
        return QuantizeParams(
            "chain",
            input_dtype,
            output_dtype,
            s_in,
            z_in,
            s_out,
            int(output_zero_point),
            "even",
            -1 if s_in.ndim else None,
            None,
        )
    real = s_in.astype(np.float64) / np.float64(s_out)
    rq = fixedpoint_requant(
        real,
        rounding=profile.rounding,
        zero_point=output_zero_point,
        out_dtype=output_dtype,
        what=name,
    )
    return QuantizeParams(
        "requant",
        input_dtype,
        output_dtype,
        s_in,
        z_in,
        s_out,
        int(output_zero_point),
        "",
        -1 if s_in.ndim else None,
        rq,
    )


def _adapter(op: str):
    def prepare(node: Any, tensors: Mapping[str, Any], profile: Profile) -> QuantizeParams:
        if len(node.inputs) != 1 or len(node.outputs) != 1:
            raise ShapeError(f"node {node.name!r}: {op} takes one input and one output")
        x, y = tensors[node.inputs[0]], tensors[node.outputs[0]]
        for t in (x, y) if op != "DEQUANTIZE" else (x,):
            if t.dtype != "float32" and not t.quantized:
                raise UnsupportedError(f"node {node.name!r}: tensor {t.name!r} is not quantized")
        axis = x.axis if (x.quantized and x.per_channel) else None
        last = len(x.shape) - 1
        if op != "DEQUANTIZE" and axis is not None and x.shape and axis % len(x.shape) != last:
            raise UnsupportedError(
                f"node {node.name!r}: per-channel {op} works along the last axis only"
            )
        return prepare_quantize(
            input_dtype=x.dtype,
            output_dtype=y.dtype,
            profile=profile,
            input_scale=x.scale if x.quantized else None,
            input_zero_point=x.zero_point if x.quantized else 0,
            output_scale=y.scale if y.quantized else None,
            output_zero_point=y.scalar_zero_point() if y.quantized else 0,
            axis=axis,
            op=op,
            name=f"node {node.name!r} ({op})",
        )

    def run(p: QuantizeParams, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        return [quantize(np.asarray(inputs[0]), p)]

    return prepare, run


for _op in ("QUANTIZE", "DEQUANTIZE", "REQUANTIZE"):
    _prep, _run = _adapter(_op)
    register(_op, prepare=_prep, run=_run)
