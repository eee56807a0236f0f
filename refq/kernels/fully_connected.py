"""FULLY_CONNECTED: integer ``y = requant(x @ w^T + bias)``, as TFLM / CMSIS-NN / LiteRT / ORT.

Reproduces TFLM's ``reference_integer_ops::FullyConnected`` (int8 x int8 per tensor, per channel
``FullyConnectedPerChannel``, int4 weights unpacked from their packed constant buffer, 16x8:
int16 x int8 with int64 bias and accumulator), CMSIS-NN ``arm_fully_connected_s8`` /
``_s4`` / ``_s16`` and onnxruntime's QLinearMatMul with constant weights. Step by step::

    acc[r, n] = bias[n] + sum_k (x[r, k] - zp_in) * (w[n, k] - zp_w[n])       exact
              = sum_k x[r, k] * wc[n, k] + kernel_sums[n]
        wc = w - zp_w (the weights centered once), kernel_sums[n] = bias[n] - zp_in * sum_k wc[n, k]
        (CMSIS-NN's precomputed kernel sums: bias + input_offset * sum w)
    y[r, n]   = clamp(requant_n(acc[r, n]) + zp_out, act_min, act_max)   (refq.kernels.requant)

Real multipliers, by profile (``s_w`` per tensor or per output channel ``n``):

* ``tflm`` / ``cmsis-nn*`` / ``litert-ref``: ``real = double(s_in) * double(s_w) / double(s_out)``,
  then QuantizeMultiplier (``litert-ref`` uses ``real`` itself, below); this is what the
  tflite-micro wheel (0.dev20261023) and LiteRT 2.3 do (tests/test_peer_tflm_linear.py and
  tests/test_peer_litert.py measure it on random configs);
* ``tflm-f32`` (``fc_product_float32``): per tensor, ``double(float32(s_in * s_w)) /
  double(s_out)`` as TFLite's ``GetQuantizedConvolutionMultipler`` source reads; per channel
  as ``tflm``;
* ``onnx`` / ``ort-x86-u8s8``: ``M = float32(float32(s_in * s_w) / s_out)``, y from
  ``round_half_even(float32(acc) * M)``;
* 16x8 (int16 input): the int64 accumulator goes through TFLM's int64
  ``MultiplyByQuantizedMultiplier`` (16-bit reduced multiplier).

Rounding is the profile's (``double``: TFLM, CMSIS-NN default; ``single``: CMSIS-NN
single-rounding builds). LiteRT 2.3's reference kernel (``litert-ref``, ``Profile.fc_requant``)
does not use (M, shift) at all: measured on tie-aimed accumulators, it outputs
``round_half_away(double(acc) * real)`` for int8 and 16x8, which equals single rounding except
at exact ties (half away, not half up) and where the 31-bit multiplier's error crosses a .5.
``ort-x86-u8s8`` accumulates uint8 x int8 products in saturating int16 pairs (onnxruntime's AVX2
kernel without VNNI, peer-facts 3).

Speed. Up to ``GEMV_MAX_ROWS`` rows (LLM decode) the integer codes go through a Numba GEMV
with an int32 accumulator (int64 when ``K * max|x| * max|wc|`` could reach 2^31): one pass over
int8 weights, no BLAS threads. More rows go through BLAS on a float32 (or float64) copy of the
centered weights, converted once (on first use) and kept in the params, split along K into
chunks whose partial sums are provably exact (:func:`refq.intmatmul.plan_float_matmul`; the
bound uses the input dtype's range, so no data pass is needed). The requantization is one
Numba pass.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numba
import numpy as np

from refq.errors import QuantSpecError, ShapeError, UnsupportedError
from refq.intmatmul import (
    FloatMatmulPlan,
    float_matmul_exact,
    int_matmul_u8s8_sat16,
    plan_float_matmul,
)
from refq.kernels.registry import register
from refq.kernels.requant import (
    OUT_RANGES,
    RequantParams,
    activation_range,
    fixedpoint_requant,
    float32_requant,
    float64_requant,
    requantize_into,
)
from refq.profiles import Profile

INPUT_DTYPES = ("int8", "uint8", "int16")
WEIGHT_DTYPES = ("int8", "uint8", "int4")
_WEIGHT_RANGES = {"int8": (-128, 127), "uint8": (0, 255), "int4": (-8, 7)}
_MAX_ABS = {"int8": 128, "uint8": 255, "int16": 32768}
# The BLAS path reads uint8 codes shifted by -128 (|x - 128| <= 128 halves the float32 bound);
# the shift comes back exactly through ``128 * weights_sums``.
_BLAS_SHIFT = {"int8": 0, "uint8": 128, "int16": 0}
GEMV_MAX_ROWS = 8
"""Inputs with at most this many rows use the Numba GEMV instead of BLAS."""


@dataclass(frozen=True, eq=False)
class FullyConnectedParams:
    """Every constant of one FULLY_CONNECTED (TFLM ``OpDataFullyConnected`` + CMSIS-NN sums).

    ``weights`` are the raw codes ``(N, K)`` (int4 one per int8; packed by the writers);
    ``weights_offset = -zp_w`` (0-d or per output channel); ``kernel_sums[n] = bias[n] +
    input_offset * sum_k (w[n, k] + weights_offset[n])``; ``weights_centered`` = ``w - zp_w``
    (int8 when it fits, else int16) for the GEMV; ``weights_float`` is the centered ``(K, N)``
    float copy the BLAS product reads (``matmul_plan`` says how), made on first use.
    """

    input_dtype: str
    weights_dtype: str
    output_dtype: str
    k: int
    n: int
    input_offset: int
    weights_offset: np.ndarray
    output_offset: int
    weights: np.ndarray
    bias: np.ndarray | None
    kernel_sums: np.ndarray
    requant: RequantParams
    accumulate: str
    keep_num_dims: bool
    matmul_plan: FloatMatmulPlan
    weights_centered: np.ndarray
    gemv_int64: bool
    weights_sums: np.ndarray
    """``sum_k (w[n, k] - zp_w[n])`` (int64, per output channel)."""

    @property
    def per_channel(self) -> bool:
        return self.requant.channels > 1

    @cached_property
    def weights_float(self) -> np.ndarray:
        wf = self.weights_centered.astype(self.matmul_plan.dtype)
        return wf.T  # (K, N) view of a C-contiguous (N, K) array: BLAS reads it transposed


def fc_multipliers(
    s_in: float,
    s_w: np.ndarray,
    s_out: float,
    profile: Profile,
    product_float32: bool | None = None,
) -> np.ndarray:
    """Real (float64) or float32 multipliers per the profile (module docstring).

    ``product_float32`` (default: ``profile.fc_product_float32``) forms a per-tensor real
    multiplier from the float32 product ``s_in * s_w``, as TFLite's
    ``GetQuantizedConvolutionMultipler`` source reads."""
    s_in32, s_out32 = np.float32(s_in), np.float32(s_out)
    s_w32 = np.asarray(s_w, dtype=np.float32)
    if profile.requant == "float32":
        with np.errstate(over="ignore", under="ignore"):
            return (s_in32 * s_w32) / s_out32  # float32 arithmetic, in that order
    if product_float32 is None:
        product_float32 = profile.fc_product_float32
    if s_w32.size == 1 and product_float32:
        product = np.float64(s_in32 * s_w32)  # float32 product, widened, then double division
        return product / np.float64(s_out32)
    return np.float64(s_in32) * s_w32.astype(np.float64) / np.float64(s_out32)


def prepare_fully_connected(
    weights: np.ndarray,
    bias: np.ndarray | None,
    *,
    input_dtype: str,
    input_scale: float,
    input_zero_point: int,
    weights_scale: np.ndarray | float,
    weights_zero_point: np.ndarray | int,
    output_dtype: str,
    output_scale: float,
    output_zero_point: int,
    profile: Profile,
    activation: str = "NONE",
    keep_num_dims: bool = False,
    weights_dtype: str | None = None,
    name: str = "FULLY_CONNECTED",
) -> FullyConnectedParams:
    """Derive the constants from real scales and zero points under ``profile``."""
    w = np.asarray(weights)
    wdt = weights_dtype or str(w.dtype)
    if input_dtype not in INPUT_DTYPES:
        raise UnsupportedError(f"{name}: input dtype {input_dtype!r}; supported {INPUT_DTYPES}")
    if wdt not in WEIGHT_DTYPES:
        raise UnsupportedError(f"{name}: weights dtype {wdt!r}; supported {WEIGHT_DTYPES}")
    if w.ndim != 2 or w.dtype.kind not in "iu":
        raise ShapeError(f"{name}: weights must be integer codes of shape (N, K), got {w.shape}")
    lo, hi = _WEIGHT_RANGES[wdt]
    if w.size and (int(w.min()) < lo or int(w.max()) > hi):
        raise QuantSpecError(f"{name}: weights hold codes outside {wdt} [{lo}, {hi}]")
    wide = input_dtype == "int16"
    if wide and wdt != "int8":
        raise UnsupportedError(f"{name}: int16 input needs int8 weights (16x8), got {wdt}")
    if wide and profile.requant == "float32":
        raise UnsupportedError(
            f"{name}: profile {profile.name!r} (ONNX) has no int16 x int8 matmul; use a TFLM / "
            "CMSIS-NN profile"
        )
    if output_dtype != ("int16" if wide else output_dtype) or output_dtype not in OUT_RANGES:
        raise UnsupportedError(f"{name}: {input_dtype} input with {output_dtype} output")
    n, k = w.shape
    s_w = np.asarray(weights_scale, dtype=np.float32).reshape(-1)
    z_w = np.asarray(weights_zero_point, dtype=np.int64).reshape(-1)
    for what, arr in (("weights scale", s_w), ("weights zero point", z_w)):
        if arr.size not in (1, n):
            raise ShapeError(f"{name}: {what} has {arr.size} values for {n} output channels")
    for what, s in (("input", input_scale), ("output", output_scale)):
        if not (np.isfinite(s) and s > 0):
            raise QuantSpecError(f"{name}: {what} scale {s!r} must be positive and finite")
    if not (np.isfinite(s_w).all() and (s_w > 0).all()):
        raise QuantSpecError(f"{name}: weights scales must be positive and finite: {s_w}")
    rmin, rmax = OUT_RANGES[input_dtype]
    if not rmin <= input_zero_point <= rmax:
        raise QuantSpecError(f"{name}: input zero point {input_zero_point} outside {input_dtype}")

    wc = w.astype(np.int64) - z_w.reshape(-1, 1)  # centered weights (N, K)
    acc_dtype = np.int64 if wide else np.int32
    if bias is not None:
        b = np.asarray(bias)
        if b.shape != (n,) or b.dtype.kind not in "iu":
            raise ShapeError(f"{name}: bias must be {n} integers, got {b.dtype} {b.shape}")
        if not wide and b.dtype.itemsize > 4:
            raise UnsupportedError(f"{name}: bias of an 8-bit FULLY_CONNECTED must be int32")
        b = b.astype(acc_dtype)
    else:
        b = None
    sums = -int(input_zero_point) * wc.sum(axis=1)
    if b is not None:
        sums = sums + b.astype(np.int64)

    act_lo, act_hi = activation_range(
        activation, output_scale, output_zero_point, output_dtype, f"{name} activation"
    )
    mult = fc_multipliers(input_scale, s_w, output_scale, profile)
    if profile.fc_requant == "float64" and profile.requant != "float32":
        rq = float64_requant(
            mult,
            zero_point=output_zero_point,
            out_dtype=output_dtype,
            act_min=act_lo,
            act_max=act_hi,
            accumulator="int64" if wide else "int32",
            what=name,
        )
    elif profile.requant == "float32":
        rq = float32_requant(
            mult.astype(np.float32),
            zero_point=output_zero_point,
            out_dtype=output_dtype,
            act_min=act_lo,
            act_max=act_hi,
            what=name,
        )
    else:
        rq = fixedpoint_requant(
            mult,
            rounding=profile.rounding,
            zero_point=output_zero_point,
            out_dtype=output_dtype,
            act_min=act_lo,
            act_max=act_hi,
            s64=wide,
            what=name,
        )
    max_w = int(np.abs(wc).max()) if wc.size else 0
    # |x - shift| <= 128 for int8 and shifted uint8 codes, 32768 for int16.
    plan = plan_float_matmul(k, 32768 if wide else 128, max_w)
    narrow = max_w <= 127 and (not wc.size or int(wc.min()) >= -128)
    centered = np.ascontiguousarray(wc.astype(np.int8 if narrow else np.int16))
    sat16 = profile.accumulate == "u8s8_sat16" and input_dtype == "uint8" and wdt == "int8"
    return FullyConnectedParams(
        input_dtype=input_dtype,
        weights_dtype=wdt,
        output_dtype=output_dtype,
        k=k,
        n=n,
        input_offset=-int(input_zero_point),
        weights_offset=(-z_w).astype(np.int32).reshape(() if z_w.size == 1 else (n,)),
        output_offset=int(output_zero_point),
        weights=w.astype(np.uint8 if wdt == "uint8" else np.int8),
        bias=b,
        kernel_sums=sums.astype(np.int64),
        requant=rq,
        accumulate="u8s8_sat16" if sat16 else "exact",
        keep_num_dims=bool(keep_num_dims),
        matmul_plan=plan,
        weights_centered=centered,
        gemv_int64=k * _MAX_ABS[input_dtype] * max_w >= 1 << 31,
        weights_sums=wc.sum(axis=1).astype(np.int64),
    )


def fc_accumulators(x: np.ndarray, p: FullyConnectedParams) -> np.ndarray:
    """``sum_k (x - zp_in)(w - zp_w)`` without the bias, exact int64 ``(rows, N)`` (for tests,
    MatMulInteger, and callers that need the raw accumulator)."""
    x2 = _rows(x, p)
    if p.accumulate == "u8s8_sat16":
        return int_matmul_u8s8_sat16(
            x2, p.weights.T, -p.input_offset, -p.weights_offset, accumulate="int64"
        )
    acc, offset = _products(x2, p)
    corr = offset - (0 if p.bias is None else p.bias.astype(np.int64))
    return acc.astype(np.int64) + corr


def _rows(x: np.ndarray, p: FullyConnectedParams) -> np.ndarray:
    if x.dtype != np.dtype(p.input_dtype):
        raise ShapeError(f"FULLY_CONNECTED: input must be {p.input_dtype}, got {x.dtype}")
    if x.ndim == 0 or x.size % p.k or (p.keep_num_dims and x.shape[-1] != p.k):
        raise ShapeError(
            f"FULLY_CONNECTED: input of shape {x.shape} does not split into rows of K={p.k}"
        )
    return x.reshape(-1, p.k)


@numba.njit(cache=True, nogil=True)
def _gemv_i32(x2, w, out):  # pragma: no cover - compiled
    # Caller guarantees K * max|x| * max|w| < 2^31: every int32 partial sum is exact.
    rows, k = x2.shape
    n = w.shape[0]
    for r in range(rows):
        xr = x2[r]
        for i in range(n):
            wr = w[i]
            s = np.int32(0)
            for j in range(k):
                s += np.int32(wr[j]) * np.int32(xr[j])
            out[r, i] = s


@numba.njit(cache=True, nogil=True)
def _gemv_i8(x2, w, out):  # pragma: no cover - compiled
    # int8 x int8 (LLM decode): every product fits int16 (|x w| <= 2^14), which LLVM multiplies
    # 16 lanes at a time (about 2x _gemv_i32 on AVX2); the int32 sums are exact as for _gemv_i32.
    rows, k = x2.shape
    n = w.shape[0]
    for r in range(rows):
        xr = x2[r].astype(np.int16)
        for i in range(n):
            wr = w[i]
            s = np.int32(0)
            for j in range(k):
                s += np.int32(np.int16(wr[j]) * xr[j])
            out[r, i] = s


@numba.njit(cache=True, nogil=True)
def _gemv_i64(x2, w, out):  # pragma: no cover - compiled
    rows, k = x2.shape
    n = w.shape[0]
    for r in range(rows):
        xr = x2[r]
        for i in range(n):
            wr = w[i]
            s = np.int64(0)
            for j in range(k):
                s += np.int64(wr[j]) * np.int64(xr[j])
            out[r, i] = s


def _products(x2: np.ndarray, p: FullyConnectedParams) -> tuple[np.ndarray, np.ndarray]:
    """``(P, offset)``: ``P + offset`` is the exact accumulator ``acc`` (bias included); ``P``
    is int32 / int64, or a float array holding exact integers."""
    if x2.shape[0] <= GEMV_MAX_ROWS:
        out = np.empty((x2.shape[0], p.n), np.int64 if p.gemv_int64 else np.int32)
        if out.size and p.k:
            if p.gemv_int64:
                gemv = _gemv_i64
            elif x2.dtype == np.int8 and p.weights_centered.dtype == np.int8:
                gemv = _gemv_i8
            else:
                gemv = _gemv_i32
            gemv(np.ascontiguousarray(x2), p.weights_centered, out)
        elif out.size:
            out[...] = 0
        return out, p.kernel_sums
    plan = p.matmul_plan
    shift = _BLAS_SHIFT[p.input_dtype]
    xf = x2.astype(plan.dtype)
    if shift:
        xf -= plan.dtype.type(shift)  # exact: small integers
        return float_matmul_exact(xf, p.weights_float, plan), p.kernel_sums + shift * p.weights_sums
    return float_matmul_exact(xf, p.weights_float, plan), p.kernel_sums


def fully_connected(x: np.ndarray, p: FullyConnectedParams) -> np.ndarray:
    """The FULLY_CONNECTED output for input codes ``x`` (see the module docstring).

    Output shape: ``x.shape[:-1] + (N,)`` with ``keep_num_dims``, else ``(x.size // K, N)``.
    """
    x2 = _rows(x, p)
    if p.accumulate == "u8s8_sat16":
        acc = int_matmul_u8s8_sat16(x2, p.weights.T, -p.input_offset, -p.weights_offset)
        offset = p.bias
    else:
        acc, offset = _products(x2, p)
    y = requantize_into(acc, p.requant, offset, "FULLY_CONNECTED")
    return y.reshape((*x.shape[:-1], p.n) if p.keep_num_dims else (x2.shape[0], p.n))


# ---------------------------------------------------------------------------------------------
# Graph adapter
# ---------------------------------------------------------------------------------------------


def _prepare(node: Any, tensors: Mapping[str, Any], profile: Profile) -> FullyConnectedParams:
    if len(node.inputs) not in (2, 3):
        raise ShapeError(f"node {node.name!r}: FULLY_CONNECTED takes (input, weights[, bias])")
    x = tensors[node.inputs[0]]
    w = tensors[node.inputs[1]]
    b = tensors[node.inputs[2]] if len(node.inputs) == 3 and node.inputs[2] else None
    y = tensors[node.outputs[0]]
    for t in (x, w, y):
        if not t.quantized:
            raise UnsupportedError(f"node {node.name!r}: tensor {t.name!r} is not quantized")
    if not w.is_constant or (b is not None and not b.is_constant):
        raise UnsupportedError(
            f"node {node.name!r}: FULLY_CONNECTED needs constant weights and bias "
            "(use BATCH_MATMUL for two run-time operands)"
        )
    if w.per_channel and w.axis not in (0, None):
        raise UnsupportedError(
            f"node {node.name!r}: weights {w.name!r} are quantized along axis {w.axis}; "
            "FULLY_CONNECTED needs per-output-channel scales (axis 0)"
        )
    return prepare_fully_connected(
        w.data,
        None if b is None else b.data,
        input_dtype=x.dtype,
        input_scale=x.scalar_scale(),
        input_zero_point=x.scalar_zero_point(),
        weights_scale=w.scale,
        weights_zero_point=w.zero_point,
        output_dtype=y.dtype,
        output_scale=y.scalar_scale(),
        output_zero_point=y.scalar_zero_point(),
        profile=profile,
        activation=node.attrs.get("activation", "NONE"),
        keep_num_dims=node.attrs.get("keep_num_dims", False),
        weights_dtype=w.dtype,
        name=f"node {node.name!r} (FULLY_CONNECTED)",
    )


def _run(p: FullyConnectedParams, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    return [fully_connected(np.asarray(inputs[0]), p)]


register("FULLY_CONNECTED", prepare=_prepare, run=_run)
