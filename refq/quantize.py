"""quantize, dequantize, fake_quantize and requantize (ONNX QuantizeLinear semantics by default).

``quantize``:  ``q = saturate(round(x / scale) + zero_point)`` where

- the division is done in ``numpy.result_type(x, scale)`` (float32 for float32 data and
  scales, as ONNX: "the type of y_scale determines the precision of the division"; float16
  data with float16 scales divide in float16; ``precision=`` forces a float dtype, as the
  ``precision`` attribute of QuantizeLinear-23);
- ``round`` is ``spec.rounding`` (ONNX: half to even) on the exact quotient, see
  :mod:`refq.rounding`;
- ``saturate`` clamps to ``[spec.qmin, spec.qmax]`` (narrow range respected);
- float8 / float4 codes are produced by :func:`refq.floatfmt.encode` on ``x / scale``.

``dequantize``: ``(q - zero_point) * scale`` in float32 (the difference is exact); the result is
cast to ``out_dtype`` (default: the scale's dtype, as ONNX DequantizeLinear-19..25).

NaN / Inf in data to quantize raise :class:`~refq.errors.InvalidDataError` naming the first
index. ``nonfinite="clamp"`` opts into what onnxruntime's x86 kernel does instead: integer
codes clamp +Inf to qmax and -Inf / NaN to qmin; float formats encode them per the ONNX Cast
table (see :mod:`refq.floatfmt`).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from refq import floatfmt
from refq.errors import InvalidDataError, QuantSpecError, ShapeError, UnsupportedError
from refq.qparams import choose_qparams, quantize_dynamic_uint8
from refq.rounding import round_to_int
from refq.spec import PerAxis, PerBlock, PerTensor, QuantParams, _index_str

NonFinite = Literal["raise", "clamp"]

# Data larger than this go through the Numba loops when they apply (below it, NumPy is as fast
# and skips loading the compiled kernels).
_NUMBA_MIN_SIZE = 4096


def _data_array(x: object, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.name == "bfloat16":
        return a.astype(np.float32)  # exact widening
    if a.dtype.kind not in "fiu":
        raise InvalidDataError(f"{what} must be a real numeric array, got dtype {a.dtype}")
    return a


def _check_finite(a: np.ndarray, who: str) -> None:
    if a.dtype.kind != "f" or a.size == 0:
        return
    ok = np.isfinite(a)
    if not ok.all():
        i = int(np.flatnonzero(~ok.reshape(-1))[0])
        raise InvalidDataError(
            f"data of {who} has {float(a.reshape(-1)[i])!r} at index {_index_str(i, a.shape)}; "
            f"NaN and Inf cannot be quantized (pass nonfinite='clamp' for onnxruntime's clamping)"
        )


def _division_dtype(a: np.ndarray, scale: np.ndarray, precision: object) -> np.dtype:
    if precision is not None:
        dt = np.dtype(precision)
        if dt.kind != "f":
            raise QuantSpecError(f"precision must be a float dtype, got {dt}")
        return dt
    return np.result_type(a.dtype, scale.dtype)


def _view3(shape: tuple[int, ...], params: QuantParams) -> tuple[tuple[int, int, int], int]:
    """(outer, axis, inner) view of data and the block length along the axis."""
    gran = params.spec.granularity
    size = int(np.prod(shape, dtype=np.int64))
    if isinstance(gran, PerTensor):
        return (1, 1, size), 1
    axis = params.axis_for(shape)
    assert axis is not None
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1 :], dtype=np.int64))
    block = 1 if isinstance(gran, PerAxis) else int(gran.block_size)
    return (outer, shape[axis], inner), block


def _params3(params: QuantParams, shape3: tuple[int, int, int], block: int):
    gran = params.spec.granularity
    s, z = params.scale, params.zero_point
    if isinstance(gran, PerTensor):
        return s.reshape(1, 1, 1), z.reshape(1, 1, 1)
    if isinstance(gran, PerAxis):
        return s.reshape(1, -1, 1), z.reshape(1, -1, 1)
    assert isinstance(gran, PerBlock)
    nb = -(-shape3[1] // block)
    return s.reshape(shape3[0], nb, shape3[2]), z.reshape(shape3[0], nb, shape3[2])


def quantize(
    x: object,
    params: QuantParams,
    *,
    saturate: bool = True,
    nonfinite: NonFinite = "raise",
    precision: object = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Quantize ``x`` with ``params`` (ONNX QuantizeLinear; see the module docstring).

    Returns codes in ``params.dtype.storage`` (sub-byte integers unpacked, float formats as
    uint8 bit codes). For integer types ``saturate=False`` raises
    :class:`~refq.errors.InvalidDataError` at the first value outside ``[qmin, qmax]`` instead
    of clamping; for float formats it selects the ONNX non-saturating Cast. ``out`` (C-contiguous,
    ``x``'s shape, the storage dtype) receives the codes; reusing it skips the page faults of
    a fresh large array, as onnxruntime's arena does.
    """
    if not isinstance(params, QuantParams):
        raise QuantSpecError(f"params must be QuantParams, got {type(params).__name__}")
    if nonfinite not in ("raise", "clamp"):
        raise QuantSpecError(f"nonfinite must be 'raise' or 'clamp', got {nonfinite!r}")
    who = params._who()
    a = _data_array(x, f"data of {who}")
    params.check_shape(a.shape)
    spec = params.spec
    cdt = _division_dtype(a, params.scale, precision)
    fast = (
        saturate
        and spec.dtype.is_integer
        and spec.rounding == "half_even"
        and a.dtype == np.float32
        and cdt == np.float32
        and params.scale.dtype == np.float32
        and a.size >= _NUMBA_MIN_SIZE
    )
    if out is not None:
        _check_out(out, a.shape, spec.dtype.storage, who)
    if fast:
        from refq.quantize_kernels import quantize_f32_half_even

        shape3, block = _view3(a.shape, params)
        s3, z3 = _params3(params, shape3, block)
        if out is None:
            out = np.empty(a.shape, dtype=spec.dtype.storage)
        a3 = np.ascontiguousarray(a).reshape(shape3)
        check = nonfinite == "raise"
        first_bad = quantize_f32_half_even(
            a3,
            a3.view(np.int32),
            s3,
            z3,
            block,
            int(spec.qmin),
            int(spec.qmax),
            check,
            out.reshape(shape3),
        )
        if first_bad >= 0:
            _check_finite(a, who)  # raises, naming the first NaN / Inf
        return out
    if nonfinite == "raise":
        _check_finite(a, who)
    codes = _quantize_numpy(a, params, cdt, saturate, who)
    if out is None:
        return codes
    np.copyto(out, codes)
    return out


def _check_out(out: np.ndarray, shape: tuple[int, ...], dtype: np.dtype, who: str) -> None:
    if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != dtype:
        raise ShapeError(
            f"out for {who} must be a {dtype} array of shape {shape}, got "
            f"{getattr(out, 'dtype', type(out).__name__)} {getattr(out, 'shape', '')}"
        )
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ShapeError(f"out for {who} must be C-contiguous and writeable")


def _quantize_numpy(
    a: np.ndarray, params: QuantParams, cdt: np.dtype, saturate: bool, who: str
) -> np.ndarray:
    """The NumPy path of :func:`quantize` (every dtype, rounding mode and input type)."""
    spec = params.spec
    if spec.dtype.is_float:
        s_b, _ = params.broadcast(a.shape)
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            t = a.astype(cdt) / s_b.astype(cdt)
        if spec.dtype.name == "float4e2m1":
            # ONNX adds the (zero) zero point for float4: -0 + 0 = +0 (onnx.reference and the
            # float4 node test expect +0); float8 keeps -0, as onnx.reference and ORT do.
            t = t + np.zeros((), t.dtype)
        return floatfmt.encode(t, spec.dtype, saturate=saturate)
    qmin, qmax = int(spec.qmin), int(spec.qmax)
    storage = spec.dtype.storage
    s_b, z_b = params.broadcast(a.shape)
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        t = a.astype(cdt) / s_b.astype(cdt)
    # Widen exactly so the bounds qmin - zp, qmax - zp are exact (float16 holds only 11 bits).
    t = t.astype(np.float64)
    lo = (qmin - z_b).astype(np.float64)
    hi = (qmax - z_b).astype(np.float64)
    if not saturate:
        r = round_to_int(t, spec.rounding, spec.seed)
        bad = ~((r >= lo) & (r <= hi))
        if bad.any():
            i = int(np.flatnonzero(np.broadcast_to(bad, a.shape).reshape(-1))[0])
            raise InvalidDataError(
                f"data of {who} at index {_index_str(i, a.shape)} ({a.reshape(-1)[i].item()!r}) "
                f"quantizes outside {spec.dtype.name} [{qmin}, {qmax}] and saturate=False"
            )
        return (r + z_b).astype(storage)
    # Clamping before rounding equals clamping after: the bounds are integers and every
    # rounding mode is monotone and fixes integers. NaN (nonfinite='clamp') goes to qmin.
    t = np.where(np.isnan(t), lo, np.clip(t, lo, hi))
    r = round_to_int(t, spec.rounding, spec.seed)
    return (r + z_b).astype(np.int64).astype(storage)


def _codes_array(q: object, params: QuantParams) -> np.ndarray:
    c = np.asarray(q)
    who = params._who()
    dt = params.dtype
    if c.dtype.kind not in "iu":
        raise InvalidDataError(f"codes of {who} must be integers, got dtype {c.dtype}")
    if dt.is_float:
        lo, hi = 0, (1 << dt.bits) - 1
    else:
        lo, hi = int(dt.qmin), int(dt.qmax)
    info = np.iinfo(c.dtype)
    if c.size and (info.min < lo or info.max > hi):
        bad = (c < lo) | (c > hi)
        if bad.any():
            i = int(np.flatnonzero(bad.reshape(-1))[0])
            raise InvalidDataError(
                f"code {c.reshape(-1)[i].item()} of {who} at index {_index_str(i, c.shape)} is "
                f"outside {dt.name} [{lo}, {hi}]"
            )
    return c


def dequantize(
    q: object, params: QuantParams, *, out_dtype: object = None, out: np.ndarray | None = None
) -> np.ndarray:
    """``(q - zero_point) * scale`` in float32, cast to ``out_dtype`` (default: scale dtype).

    ONNX DequantizeLinear; float8 / float4 codes are decoded first (:func:`refq.floatfmt.decode`).
    Codes outside the dtype raise :class:`~refq.errors.InvalidDataError`. ``out`` (C-contiguous,
    ``q``'s shape, the output dtype) receives the result, as in :func:`quantize`.
    """
    if not isinstance(params, QuantParams):
        raise QuantSpecError(f"params must be QuantParams, got {type(params).__name__}")
    c = _codes_array(q, params)
    params.check_shape(c.shape)
    odt = np.dtype(out_dtype) if out_dtype is not None else params.scale.dtype
    if out is not None:
        _check_out(out, c.shape, odt, params._who())
    if not params.dtype.is_float and params.scale.dtype == np.float32 and c.size >= _NUMBA_MIN_SIZE:
        from refq.quantize_kernels import dequantize_f32

        storage = params.dtype.storage
        if c.dtype != storage:
            c = c.astype(storage)
        shape3, block = _view3(c.shape, params)
        s3, z3 = _params3(params, shape3, block)
        direct = out is not None and odt == np.float32
        res = out if direct else np.empty(c.shape, np.float32)
        dequantize_f32(np.ascontiguousarray(c).reshape(shape3), s3, z3, block, res.reshape(shape3))
        if direct or (out is None and odt == np.float32):
            return res
        res = res.astype(odt)
    elif params.dtype.is_float:
        s_b, _ = params.broadcast(c.shape)
        with np.errstate(over="ignore", invalid="ignore"):
            res = (floatfmt.decode(c, params.dtype) * s_b.astype(np.float32)).astype(odt)
    else:
        s_b, z_b = params.broadcast(c.shape)
        diff = (c.astype(np.int32) - z_b).astype(np.float32)  # exact: |q - zp| < 2^17
        with np.errstate(over="ignore"):
            res = (diff * s_b.astype(np.float32)).astype(odt)
    if out is None:
        return res
    np.copyto(out, res)
    return out


def fake_quantize(x: object, params: QuantParams, **kwargs: object) -> np.ndarray:
    """``dequantize(quantize(x, params, **kwargs), params)`` in one call (float32).

    Idempotent for the nearest rounding modes and float formats. With ``floor`` or
    ``stochastic`` rounding a second pass can lower a code by one: ONNX's float32 division
    ``fl32(fl32(k * s) / s)`` may land just below the integer ``k``.
    """
    return dequantize(quantize(x, params, **kwargs), params)  # type: ignore[arg-type]


def requantize(
    q: object,
    src: QuantParams,
    dst: QuantParams,
    *,
    method: Literal["exact", "float"] = "exact",
    saturate: bool = True,
) -> np.ndarray:
    """Re-express codes of ``src`` in ``dst``.

    ``method="exact"``: ``saturate(round((q - zp_src) * s_src / s_dst) + zp_dst)`` with the
    exact rational value and ``dst.spec.rounding`` (integer ``dst`` types only).
    ``method="float"``: an ONNX DequantizeLinear -> QuantizeLinear chain through float32.
    (TFLite's fixed-point requantization is in the fixed-point module.)
    """
    if method == "float":
        return quantize(dequantize(q, src), dst, saturate=saturate)
    if method != "exact":
        raise QuantSpecError(f"method must be 'exact' or 'float', got {method!r}")
    if dst.dtype.is_float:
        raise UnsupportedError(
            f"exact requantize to {dst.dtype.name} is not implemented; use method='float'"
        )
    c = _codes_array(q, src)
    if src.dtype.is_float:
        raise UnsupportedError(f"exact requantize from {src.dtype.name}; use method='float'")
    src.check_shape(c.shape)
    dst.check_shape(c.shape)
    from refq.rounding import round_rational

    # Flat 1-D object arrays: NumPy turns 0-d object results into bare Python ints.
    n = c.size

    def flat(a: np.ndarray) -> np.ndarray:
        return np.broadcast_to(a, c.shape).reshape(n)

    ss, zs = (flat(a) for a in src.broadcast(c.shape))
    sd, zd = (flat(a) for a in dst.broadcast(c.shape))
    ms, es = _dyadic(ss)
    md, ed = _dyadic(sd)
    # value = (q - zs) * ms * 2^es / (md * 2^ed): Python integers keep it exact.
    k = (es - ed).astype(object)
    num = (c.reshape(n).astype(np.int64) - zs).astype(object) * ms
    den = md.copy()
    pos = k >= 0
    num = np.where(pos, num * (2 ** np.where(pos, k, 0)), num)
    den = np.where(pos, den, den * (2 ** np.where(pos, 0, -k)))
    neg = den < 0  # ORT's negative int4 scales: keep the denominator positive
    num, den = np.where(neg, -num, num), np.where(neg, -den, den)
    u = None
    if dst.spec.rounding == "stochastic":
        u = np.random.Generator(np.random.PCG64(int(dst.spec.seed))).random(c.shape).reshape(n)
    r = round_rational(num, den, dst.spec.rounding, u)
    res = r + zd.astype(object)
    qmin, qmax = int(dst.spec.qmin), int(dst.spec.qmax)
    if not saturate:
        bad = (res < qmin) | (res > qmax)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InvalidDataError(
                f"code at index {_index_str(i, c.shape)} requantizes to {res[i]}, "
                f"outside {dst.dtype.name} [{qmin}, {qmax}] and saturate=False"
            )
    res = np.array([min(max(int(v), qmin), qmax) for v in res], dtype=np.int64)
    return res.astype(dst.dtype.storage).reshape(c.shape)


def _dyadic(s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Integer mantissa m and exponent e with ``|s| = m * 2^e`` exactly (float32/float16 s)."""
    m, e = np.frexp(np.asarray(s, dtype=np.float64))
    mi = np.ldexp(m, 53).astype(np.int64)  # exact: 53-bit mantissa covers float32 / float16
    return mi.astype(object).reshape(-1), (e.astype(np.int64) - 53).reshape(-1)


__all__ = [
    "NonFinite",
    "choose_qparams",
    "dequantize",
    "fake_quantize",
    "quantize",
    "quantize_dynamic_uint8",
    "requantize",
]
