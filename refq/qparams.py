"""Scale and zero point from data or a range, following each peer's convention.

All conventions first widen the range to include 0 (``rmin <= 0 <= rmax``), so zero is
exactly representable (it quantizes to the zero point). ``qmin`` / ``qmax`` are the spec's
(narrow range respected). Arithmetic is in the peer's precision, in the peer's order:

``"onnx"`` (ONNX DynamicQuantizeLinear, generalized to any integer dtype; float32)
    asymmetric: ``scale = f32(rmax - rmin) / f32(qmax - qmin)``;
    ``zp = round_half_even(clamp(f32(qmin) - rmin / scale, qmin, qmax))``.
    A zero range gives ``scale = 1 / (qmax - qmin)`` (onnx.reference; onnxruntime gives 1.0,
    use ``"ort"``). Symmetric specs follow ``"ort"`` (ONNX defines no symmetric formula).

``"ort"`` (onnxruntime.quantization ``compute_scale_zp``; float64, scale stored as float32)
    asymmetric: ``scale = (rmax - rmin) / (qmax - qmin)``; ``zp = round_half_even(qmin - rmin /
    scale)`` (with the float64 scale). Symmetric: ``absmax = max(|rmin|, |rmax|)``,
    ``scale = 2 * absmax / (qmax - qmin)``, ``zp = round_half_even((qmin + qmax) / 2)``
    (0 for int8, 128 for uint8). ORT's symmetric int8 / int16 use [-127, 127] / [-32767, 32767]:
    that is ``narrow_range=True`` here. Scales below float32's smallest normal give
    ``scale = 1, zp = 0``.

``"tflite"`` (TensorFlow FakeQuant ``Nudge`` as the TFLite converter applies it; float32)
    asymmetric, over the unsigned range ``[narrow, 2^bits - 1]``: ``scale = f32(rmax - rmin) /
    f32(uqmax - uqmin)``; ``zp_u = clamp(round_half_away(f32(uqmin) - rmin / scale))`` (the
    "nudged" zero point); signed types then shift: ``zp = zp_u - 2^(bits-1)``.
    Symmetric (signed types only): ``scale = f32(absmax) / f32(qmax)``, ``zp = 0``
    (per-channel weights; use ``narrow_range=True`` for TFLite's [-127, 127]).

``"gemmlowp"`` (TFLite ``ChooseQuantizationParams`` from gemmlowp; float64)
    ``scale = (rmax - rmin) / (qmax - qmin)``; the zero point is taken from ``qmin - rmin /
    scale`` or ``qmax - rmax / scale``, whichever has the smaller error bound
    ``|q| + |r / scale|``, clamped, then rounded half away from zero. Symmetric: as ``"tflite"``.

``"ort-mlas-int4"`` (onnxruntime MLAS blockwise symmetric quantization, MatMulNBits)
    ``v`` = the range end with the larger magnitude (``rmax`` if ``|rmax| > |rmin|``, else
    ``rmin``), ``scale = f32(v) / f32(-2^(bits-1))``: the largest-magnitude value maps to the
    most negative code, so scales are negative when ``v > 0``. Zero point 0 (signed) or
    ``2^(bits-1)`` (unsigned, as MLAS stores uint4 with zero point 8). MLAS's codes then equal
    :func:`refq.quantize.quantize` with these parameters (checked against
    ``quantize_matmul_4bits`` of onnxruntime 1.32 on random weights).

A zero range (all data 0) gives ``scale = 1`` under every convention but ``"onnx"`` (TFLite and
MLAS would store 0, which :class:`~refq.spec.QuantParams` rejects); so does a nonzero range
whose scale underflows float32 to 0 (the peers would divide by zero).

float8 / float4 specs use ``scale = f32(absmax) / f32(max_finite)`` (zero point 0) whatever the
convention. ``power_of_two=True`` rounds the scale up to the nearest power of two (sign kept)
and recomputes the zero point with the convention's formula.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from refq.errors import InvalidDataError, QuantSpecError
from refq.rounding import round_to_int
from refq.spec import PerAxis, PerBlock, PerTensor, QuantParams, QuantSpec, _index_str

Convention = Literal["onnx", "ort", "tflite", "gemmlowp", "ort-mlas-int4"]
CONVENTIONS: tuple[str, ...] = ("onnx", "ort", "tflite", "gemmlowp", "ort-mlas-int4")

f32 = np.float32


def _reduce_minmax(x: np.ndarray, spec: QuantSpec, who: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-parameter min and max of ``x`` (parameter shapes of ``spec.granularity``)."""
    if x.size == 0:
        raise InvalidDataError(f"cannot choose quantization parameters of {who} from empty data")
    ok = np.isfinite(x)
    if not ok.all():
        i = int(np.flatnonzero(~ok.reshape(-1))[0])
        raise InvalidDataError(
            f"data of {who} has {float(x.reshape(-1)[i])!r} at index {_index_str(i, x.shape)}; "
            f"NaN and Inf have no quantization range"
        )
    gran = spec.granularity
    if isinstance(gran, PerTensor):
        return np.asarray(x.min()), np.asarray(x.max())
    from refq.spec import normalize_axis

    axis = normalize_axis(int(gran.axis), x.ndim, who)
    if isinstance(gran, PerAxis):
        others = tuple(i for i in range(x.ndim) if i != axis)
        return x.min(axis=others), x.max(axis=others)
    assert isinstance(gran, PerBlock)
    starts = np.arange(0, x.shape[axis], int(gran.block_size))
    return np.minimum.reduceat(x, starts, axis=axis), np.maximum.reduceat(x, starts, axis=axis)


def _pow2_up(scale: np.ndarray) -> np.ndarray:
    """Smallest power of two >= |scale| (exact), sign kept."""
    m, e = np.frexp(np.abs(scale).astype(np.float64))
    p = np.where(m == 0.5, np.ldexp(1.0, e - 1), np.ldexp(1.0, e))
    return np.copysign(p, scale)


def choose_qparams(
    x_or_range: object,
    spec: QuantSpec,
    convention: Convention = "onnx",
    *,
    power_of_two: bool = False,
    name: str | None = None,
) -> QuantParams:
    """Scale / zero point for data (any array) or a ``(min, max)`` tuple (see module docstring).

    For per-axis / per-block specs the range tuple holds arrays of the parameter shape; data
    are reduced per channel (all other axes) or per block (remainder block included).
    """
    if not isinstance(spec, QuantSpec):
        raise QuantSpecError(f"spec must be a QuantSpec, got {type(spec).__name__}")
    if convention not in CONVENTIONS:
        raise QuantSpecError(f"unknown convention {convention!r}; known: {', '.join(CONVENTIONS)}")
    who = f"tensor {name!r}" if name else "the tensor"
    if isinstance(x_or_range, tuple) and len(x_or_range) == 2:
        rmin = np.asarray(x_or_range[0], dtype=np.float32)
        rmax = np.asarray(x_or_range[1], dtype=np.float32)
        for what, v in (("min", rmin), ("max", rmax)):
            bad = ~np.isfinite(v)
            if bad.any():
                i = int(np.flatnonzero(bad.reshape(-1))[0])
                raise InvalidDataError(
                    f"range {what} of {who} has {float(v.reshape(-1)[i])!r} at index "
                    f"{_index_str(i, v.shape)}; ranges must be finite"
                )
        if rmin.shape != rmax.shape:
            raise QuantSpecError(
                f"range of {who}: min shape {rmin.shape} != max shape {rmax.shape}"
            )
        above = rmin > rmax
        if above.any():
            i = int(np.flatnonzero(above.reshape(-1))[0])
            raise QuantSpecError(
                f"range of {who} has min {float(rmin.reshape(-1)[i])!r} > max "
                f"{float(rmax.reshape(-1)[i])!r} at index {_index_str(i, rmin.shape)}"
            )
    else:
        data = np.asarray(x_or_range)
        if data.dtype.kind not in "fiu" and data.dtype.name != "bfloat16":
            raise InvalidDataError(f"data of {who} must be numeric, got dtype {data.dtype}")
        rmin, rmax = _reduce_minmax(data.astype(np.float32), spec, who)
    rmin = np.minimum(rmin, f32(0)).astype(np.float32)
    rmax = np.maximum(rmax, f32(0)).astype(np.float32)
    scale, zp, negative = _scale_zp(rmin, rmax, spec, convention, power_of_two, who)
    # A nonzero range so small that its scale underflows float32 to 0: use 1 with the zero
    # point of a zero range (what ORT does below float32's smallest normal).
    under = scale == 0
    if under.any():
        scale = np.where(under, np.float32(1), scale).astype(np.float32)
        zp0 = _scale_zp(np.zeros_like(rmin), np.zeros_like(rmax), spec, convention, False, who)[1]
        zp = np.where(under, zp0, zp).astype(np.int32)
    return QuantParams(scale, zp, spec, name=name, allow_negative_scale=negative)


def _scale_zp(rmin, rmax, spec: QuantSpec, convention: str, power_of_two: bool, who: str):
    dt = spec.dtype
    absmax = np.maximum(np.abs(rmin), np.abs(rmax))
    if dt.is_float:
        scale = np.where(absmax == 0, f32(1), absmax / f32(dt.qmax)).astype(np.float32)
        if power_of_two:
            scale = _pow2_up(scale).astype(np.float32)
        return scale, np.zeros(scale.shape, np.int32), False
    qmin, qmax = int(spec.qmin), int(spec.qmax)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if convention == "ort-mlas-int4":
            if not spec.symmetric:
                raise QuantSpecError("convention 'ort-mlas-int4' is symmetric only")
            v = np.where(np.abs(rmax) > np.abs(rmin), rmax, rmin)
            scale = np.where(v == 0, f32(1), v / f32(-(1 << (dt.bits - 1)))).astype(np.float32)
            if power_of_two:
                scale = _pow2_up(scale).astype(np.float32)
            zp = 0 if dt.signed else 1 << (dt.bits - 1)
            return scale, np.full(scale.shape, zp, np.int32), True
        if convention in ("tflite", "gemmlowp") and spec.symmetric:
            if not dt.signed:
                raise QuantSpecError(
                    f"convention {convention!r} is symmetric for signed types only"
                )
            scale = np.where(absmax == 0, f32(1), absmax / f32(qmax)).astype(np.float32)
            if power_of_two:
                scale = _pow2_up(scale).astype(np.float32)
            return scale, np.zeros(scale.shape, np.int32), False
        if convention in ("onnx", "ort") and spec.symmetric:
            s64 = 2.0 * absmax.astype(np.float64) / float(qmax - qmin)
            tiny = s64 < np.finfo(np.float32).tiny
            zp_mid = int(round_to_int(np.float64((qmin + qmax) / 2.0), "half_even"))
            scale = np.where(tiny, f32(1), s64.astype(np.float32)).astype(np.float32)
            zp = np.where(tiny, 0, zp_mid).astype(np.int32)
            if power_of_two:
                scale = _pow2_up(scale).astype(np.float32)
            return scale, zp, False
        if convention == "onnx":
            span = (rmax - rmin).astype(np.float32)
            scale = np.where(span == 0, f32(1), span) / f32(qmax - qmin)
            scale = scale.astype(np.float32)
            if power_of_two:
                scale = _pow2_up(scale).astype(np.float32)
            z = (f32(qmin) - rmin / scale).astype(np.float32)
            zp = round_to_int(np.clip(z, f32(qmin), f32(qmax)), "half_even")
            return scale, zp.astype(np.int32), False
        if convention == "ort":
            s64 = (rmax.astype(np.float64) - rmin.astype(np.float64)) / float(qmax - qmin)
            tiny = s64 < np.finfo(np.float32).tiny
            if power_of_two:
                s64 = np.where(tiny, s64, _pow2_up(s64))
            z = round_to_int(float(qmin) - rmin.astype(np.float64) / s64, "half_even")
            zp = np.where(tiny, 0, np.clip(z, qmin, qmax)).astype(np.int32)
            scale = np.where(tiny, f32(1), s64.astype(np.float32)).astype(np.float32)
            return scale, zp, False
        if convention == "tflite":
            offset = (1 << (dt.bits - 1)) if dt.signed else 0
            uqmin, uqmax = qmin + offset, qmax + offset
            span = (rmax - rmin).astype(np.float32)
            zero = span == 0
            scale = np.where(zero, f32(1), span / f32(uqmax - uqmin)).astype(np.float32)
            if power_of_two:
                scale = _pow2_up(scale).astype(np.float32)
            z = (f32(uqmin) - rmin / scale).astype(np.float32)
            zu = np.where(
                z < f32(uqmin),
                uqmin,
                np.where(z > f32(uqmax), uqmax, round_to_int(z, "half_away")),
            )
            zp = np.where(zero, 0, zu - offset).astype(np.int32)
            return scale, zp, False
        assert convention == "gemmlowp"
        lo64, hi64 = rmin.astype(np.float64), rmax.astype(np.float64)
        s64 = (hi64 - lo64) / float(qmax - qmin)
        zero = s64 == 0
        s64 = np.where(zero, 1.0, s64)
        if power_of_two:
            s64 = _pow2_up(s64.astype(np.float32)).astype(np.float64)
        from_min = float(qmin) - lo64 / s64
        from_max = float(qmax) - hi64 / s64
        err_min = abs(float(qmin)) + np.abs(lo64 / s64)
        err_max = abs(float(qmax)) + np.abs(hi64 / s64)
        z = np.where(err_min < err_max, from_min, from_max)
        zq = np.where(z < qmin, qmin, np.where(z > qmax, qmax, round_to_int(z, "half_away")))
        zp = np.where(zero, 0, zq).astype(np.int32)
        return s64.astype(np.float32), zp, False


def quantize_dynamic_uint8(
    x: object, *, convention: Literal["onnx", "ort"] = "onnx", name: str | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ONNX DynamicQuantizeLinear: ``(y uint8, y_scale float32, y_zero_point uint8)``.

    In float32, as onnx.reference: ``maxx = max(0, max(x))``, ``minx = min(0, min(x))``,
    ``scale = f32(maxx - minx) / f32(255)``, ``zp = rint(clamp(f32(0) - minx / scale, 0, 255))``,
    ``y = clamp(rint(x / scale) + zp, 0, 255)``. Only all-zero data differ between the peers:
    onnx.reference gives ``scale = 1/255``, onnxruntime ``scale = 1`` (``convention="ort"``).
    NaN / Inf in ``x`` raise :class:`~refq.errors.InvalidDataError`.
    """
    from refq.quantize import quantize

    a = np.asarray(x)
    if a.dtype != np.float32:
        raise InvalidDataError(f"DynamicQuantizeLinear input must be float32, got {a.dtype}")
    spec = QuantSpec("uint8", symmetric=False)
    params = choose_qparams(a, spec, "onnx", name=name)
    if convention == "ort" and float(np.abs(a).max(initial=0.0)) == 0.0:
        params = QuantParams(np.float32(1.0), 0, spec, name=name)
    elif convention not in ("onnx", "ort"):
        raise QuantSpecError(f"convention must be 'onnx' or 'ort', got {convention!r}")
    y = quantize(a, params)
    return y, params.scale.copy(), params.zero_point.astype(np.uint8)


__all__ = ["CONVENTIONS", "Convention", "choose_qparams", "quantize_dynamic_uint8"]
