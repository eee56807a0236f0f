"""ADD, SUB, MUL, SQUARED_DIFFERENCE on int8 / int16 codes with broadcasting, as TFLM.

Reproduces the TFLite Micro reference kernels (``reference_integer_ops::Add`` / ``Mul``,
``reference_ops::Add`` / ``Sub`` with general scales for int16, TFLM's ``SquaredDifference``) and
LiteRT's reference kernels, which compute the same. Inputs broadcast as NumPy / TFLite do
(trailing axes aligned; TFLM broadcasts up to rank 6). With ``MBQM`` = TFLite
``MultiplyByQuantizedMultiplier`` (:func:`refq.fixedpoint.multiply_by_quantized_multiplier`):

ADD / SUB (``L = 20`` for int8, ``15`` for int16)::

    tm = 2 * max(s1, s2)                                   double (float32 max widened)
    (M1, e1) = QuantizeMultiplierSmallerThanOneExp(s1 / tm)     likewise M2 from s2 / tm
    (Mo, eo) = QuantizeMultiplierSmallerThanOneExp(tm / (2^L * s_out))
    a = MBQM((x1 - zp1) * 2^L, M1, e1);  b = MBQM((x2 - zp2) * 2^L, M2, e2)
    y = clamp(MBQM(a +- b, Mo, eo) + zp_out, act_min, act_max)

MUL: ``(Mo, eo) = QuantizeMultiplier(double(s1) * double(s2) / double(s_out))``;
``y = clamp(MBQM((x1 - zp1) * (x2 - zp2), Mo, eo) + zp_out, act_min, act_max)``.
int16 MUL needs all zero points 0 (TFLM checks it).

SQUARED_DIFFERENCE (``L = 7`` for int8, ``0`` for int16 with zero points 0): ``a``, ``b`` as for
ADD with ``tm = 2 * max(s1, s2)``; ``(Mo, eo) = QuantizeMultiplier(tm^2 / (2^(2L) * s_out))``;
``y = clamp(MBQM((a - b)^2, Mo, eo) + zp_out, qmin, qmax)`` (no fused activation).

The fused activation range is TFLite's ``CalculateActivationRangeQuantized``
(:func:`refq.kernels.requant.activation_range`). All products above fit int32 (the C code's
type), so int64 arithmetic is exact; each MBQM is one Numba pass (:func:`mbqm`).

Peer facts (tests/test_peer_tflm_elementwise.py measures them):

* The tflite-micro wheel (0.dev20261023) forms every multiplier in double, for SUB too; the TFLM
  C++ source as of 2025 computes SUB's ``s_i / tm`` and ``tm / (2^L s_out)`` in float32
  (``tflm-f32`` follows the source there; unverified, no peer builds it).
* LiteRT 2.3's reference ADD / SUB / MUL / SQUARED_DIFFERENCE round twice (gemmlowp), although
  its FULLY_CONNECTED rounds a float64 product once: under ``litert-ref`` these kernels use
  double rounding (``Profile.rounding``). LiteRT takes a different power-of-two path for int16
  ADD / SUB when all three scales are powers of two (``pot_scale_int16``, on by default in the
  options): refused under ``litert-ref``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numba
import numpy as np

from refq import fixedpoint as fp
from refq.errors import InvalidDataError, QuantSpecError, ShapeError, UnsupportedError
from refq.kernels import fastpath
from refq.kernels.registry import register
from refq.kernels.requant import OUT_RANGES, activation_range
from refq.profiles import Profile, Rounding

BINARY_OPS = ("ADD", "SUB", "MUL", "SQUARED_DIFFERENCE")
DTYPES = ("int8", "int16")
_LEFT_SHIFT = {
    ("ADD", "int8"): 20,
    ("ADD", "int16"): 15,
    ("SUB", "int8"): 20,
    ("SUB", "int16"): 15,
    ("SQUARED_DIFFERENCE", "int8"): 7,
    ("SQUARED_DIFFERENCE", "int16"): 0,
    ("MUL", "int8"): 0,
    ("MUL", "int16"): 0,
}


# ---------------------------------------------------------------------------------------------
# Helpers shared by refq's TFLite-family element-wise, reduction and activation kernels
# ---------------------------------------------------------------------------------------------


def is_litert(profile: Profile) -> bool:
    """Whether ``profile`` follows LiteRT's kernel variants (``Profile.family``)."""
    return profile.family == "litert"


def require_fixedpoint(profile: Profile, what: str) -> None:
    """Refuse the ONNX profiles: these are TFLite kernels with fixed-point requantization."""
    if profile.requant != "fixedpoint":
        raise UnsupportedError(
            f"{what}: profile {profile.name!r} requantizes in float32 (ONNX); this TFLite kernel "
            "is only defined with fixed-point multipliers (use tflm, cmsis-nn or litert-ref)"
        )


def f32(value: float) -> float:
    """``value`` rounded to float32 (a model's scale as the peer stores it), as a Python float."""
    return float(np.float32(value))


def check_scale(value: float, tensor: str, what: str) -> float:
    """A positive finite float32 scale, or :class:`QuantSpecError` naming the tensor."""
    s = f32(value)
    if not (np.isfinite(s) and s > 0):
        raise QuantSpecError(f"{what}: scale of tensor {tensor!r} is {value!r}; must be > 0")
    return s


def check_zero_point(zp: int, dtype: str, tensor: str, what: str, *, zero: bool = False) -> int:
    """A zero point inside the dtype's range (``zero=True``: must be 0, symmetric int16)."""
    lo, hi = OUT_RANGES[dtype]
    z = int(zp)
    if zero and z != 0:
        raise QuantSpecError(f"{what}: {dtype} tensor {tensor!r} needs zero point 0, got {z}")
    if not lo <= z <= hi:
        raise QuantSpecError(f"{what}: zero point {z} of tensor {tensor!r} is outside {dtype}")
    return z


def check_codes(x: np.ndarray, dtype: str, name: str, what: str) -> np.ndarray:
    """``x`` as an array of the expected integer dtype (:class:`QuantSpecError` otherwise)."""
    arr = np.asarray(x)
    if arr.dtype != np.dtype(dtype):
        raise QuantSpecError(f"{what}: {name} must be {dtype} codes, got dtype {arr.dtype}")
    return arr


def checked_log2(x: float) -> tuple[bool, int]:
    """TFLite ``CheckedLog2`` (float32): ``(|log2 x - round(log2 x)| < 1e-3, round(log2 x))``."""
    lg = np.float32(np.log(np.float32(x))) * (np.float32(1) / np.float32(np.log(np.float32(2))))
    rounded = np.float32(math.floor(abs(float(lg)) + 0.5) * (1 if lg >= 0 else -1))
    return bool(abs(float(np.float32(lg - rounded))) < 1e-3), int(rounded)


def _quantize_smaller_than_one(m: float, what: str) -> tuple[int, int]:
    if not 0.0 < m < 1.0:
        raise QuantSpecError(
            f"{what}: real multiplier {m!r} must lie in (0, 1) (TFLite "
            "QuantizeMultiplierSmallerThanOneExp); the output scale is too small for the inputs"
        )
    return fp.quantize_multiplier_smaller_than_one(m)


def _quantize(m: float, what: str) -> tuple[int, int]:
    if not (np.isfinite(m) and m > 0):
        raise QuantSpecError(f"{what}: real multiplier {m!r} must be positive and finite")
    mult, shift = fp.quantize_multiplier(m)
    if not -31 <= shift <= 30:
        raise QuantSpecError(
            f"{what}: real multiplier {m!r} gives shift {shift}, outside [-31, 30] "
            "(MultiplyByQuantizedMultiplier's domain)"
        )
    return mult, shift


# ---------------------------------------------------------------------------------------------
# Parameters
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BinaryParams:
    """TFLite ``ArithmeticParams`` of one ADD / SUB / MUL / SQUARED_DIFFERENCE.

    Offsets follow TFLite: ``input*_offset = -zp_in``, ``output_offset = +zp_out``. MUL uses only
    the output multiplier (input multipliers 0, ``left_shift`` 0).
    """

    op: str
    dtype: str
    rounding: Rounding
    left_shift: int
    input1_offset: int
    input2_offset: int
    output_offset: int
    input1_multiplier: int
    input1_shift: int
    input2_multiplier: int
    input2_shift: int
    output_multiplier: int
    output_shift: int
    act_min: int
    act_max: int

    @cached_property
    def pair_table(self) -> np.ndarray | None:
        """int8 only: the op on every (x1, x2) code pair, flat ``[256 (x1 + 128) + x2 + 128]``,
        computed by :func:`binary` itself (elementwise, so the lookup is the kernel bit for
        bit); ``None`` if some pair makes the NumPy path raise."""
        if self.dtype != "int8":
            return None
        codes = np.arange(-128, 128, dtype=np.int8)
        try:
            return binary(np.repeat(codes, 256), np.tile(codes, 256), self, fast=False)
        except InvalidDataError:
            return None


def prepare_binary(
    op: str,
    dtype: str,
    scale1: float,
    zero_point1: int,
    scale2: float,
    zero_point2: int,
    output_scale: float,
    output_zero_point: int,
    profile: Profile,
    activation: str = "NONE",
    name: str = "",
) -> BinaryParams:
    """Derive the TFLM ``OpData`` of ``op`` from the real quantization (see module docstring)."""
    what = name or op
    if op not in BINARY_OPS:
        raise UnsupportedError(f"{what}: op {op!r} is not one of {BINARY_OPS}")
    if dtype not in DTYPES:
        raise UnsupportedError(f"{what}: {op} on {dtype!r} codes; supported {DTYPES}")
    require_fixedpoint(profile, what)
    s1 = check_scale(scale1, "input1", what)
    s2 = check_scale(scale2, "input2", what)
    so = check_scale(output_scale, "output", what)
    int16_zero = dtype == "int16" and (op in ("MUL", "SQUARED_DIFFERENCE") or is_litert(profile))
    z1 = check_zero_point(zero_point1, dtype, "input1", what, zero=int16_zero)
    z2 = check_zero_point(zero_point2, dtype, "input2", what, zero=int16_zero)
    zo = check_zero_point(output_zero_point, dtype, "output", what, zero=int16_zero)
    if op == "SQUARED_DIFFERENCE":
        if dtype == "int16" and is_litert(profile):
            raise UnsupportedError(f"{what}: LiteRT 2.3 has no int16 SQUARED_DIFFERENCE")
        if activation != "NONE":
            raise UnsupportedError(f"{what}: SQUARED_DIFFERENCE has no fused activation")
        act_min, act_max = OUT_RANGES[dtype]
    else:
        act_min, act_max = activation_range(activation, so, zo, dtype, what)
    rounding = profile.rounding
    ls = _LEFT_SHIFT[(op, dtype)]
    if op == "MUL":
        mo, eo = _quantize(s1 * s2 / so, what)
        return BinaryParams(
            op, dtype, rounding, 0, -z1, -z2, zo, 0, 0, 0, 0, mo, eo, act_min, act_max
        )
    if (
        is_litert(profile)
        and dtype == "int16"
        and op in ("ADD", "SUB")
        and all(checked_log2(s)[0] for s in (s1, s2, so))
    ):
        raise UnsupportedError(
            f"{what}: LiteRT runs int16 {op} with three power-of-two scales through its separate "
            "power-of-two path (pot_scale_int16), which refq does not reproduce"
        )
    if op == "SUB" and profile.fc_product_float32:
        # The TFLM C++ source (2025) forms SUB's multipliers in float32.
        tm32 = np.float32(2) * np.float32(max(s1, s2))
        m1 = float(np.float32(s1) / tm32)
        m2 = float(np.float32(s2) / tm32)
        mo = float(tm32 / (np.float32(1 << ls) * np.float32(so)))
    else:
        tm = 2.0 * max(s1, s2)
        m1, m2 = s1 / tm, s2 / tm
        mo = (
            tm * tm / ((1 << (2 * ls)) * so)
            if op == "SQUARED_DIFFERENCE"
            else tm / ((1 << ls) * so)
        )
    mult1, sh1 = _quantize_smaller_than_one(m1, what)
    mult2, sh2 = _quantize_smaller_than_one(m2, what)
    if op == "SQUARED_DIFFERENCE":
        mult_o, sh_o = _quantize(mo, what)
    else:
        mult_o, sh_o = _quantize_smaller_than_one(mo, what)
    return BinaryParams(
        op,
        dtype,
        rounding,
        ls,
        -z1,
        -z2,
        zo,
        mult1,
        sh1,
        mult2,
        sh2,
        mult_o,
        sh_o,
        act_min,
        act_max,
    )


# ---------------------------------------------------------------------------------------------
# Evaluation
# ---------------------------------------------------------------------------------------------


@numba.njit(cache=True, nogil=True)
def _mbqm_kernel(x, multiplier, shift, single, out):  # pragma: no cover - compiled
    # One pass of TFLite MultiplyByQuantizedMultiplier over int32-valued int64 data, the same
    # arithmetic as refq.fixedpoint (tests compare it with the scalar oracle, INT32 edges
    # included); products fit int64 since |x|, |M| <= 2^31.
    left = shift if shift > 0 else 0
    right = -shift if shift < 0 else 0
    total = 31 - shift
    for i in range(x.shape[0]):
        v = x[i]
        if single:
            r = (v * multiplier + (np.int64(1) << (total - 1))) >> total
        else:
            v = ((v << left) + 2147483648) & 4294967295
            v -= 2147483648  # C's int32 wrap of x * 2^left
            if v == -2147483648 and multiplier == -2147483648:
                h = np.int64(2147483647)
            else:
                h = (v * multiplier + 1073741824) >> 31  # SRDHM, round half up
            mask = (np.int64(1) << right) - 1
            threshold = (mask >> 1) + (1 if h < 0 else 0)
            r = (h >> right) + (1 if (h & mask) > threshold else 0)
        out[i] = ((r + 2147483648) & 4294967295) - 2147483648


def mbqm(x: np.ndarray, multiplier: int, shift: int, rounding: Rounding) -> np.ndarray:
    """TFLite ``MultiplyByQuantizedMultiplier`` of int32-valued data, as an int64 array.

    Equal to :func:`refq.fixedpoint.multiply_by_quantized_multiplier` (one Numba pass instead
    of a dozen NumPy ones); ``x`` must lie in int32 and ``shift`` in [-31, 30].
    """
    arr = np.ascontiguousarray(x, dtype=np.int64)
    if not -31 <= shift <= 30:
        raise QuantSpecError(f"MultiplyByQuantizedMultiplier: shift {shift} is outside [-31, 30]")
    if arr.size and (int(arr.min()) < fp.INT32_MIN or int(arr.max()) > fp.INT32_MAX):
        raise InvalidDataError("MultiplyByQuantizedMultiplier: data outside int32")
    out = np.empty(arr.size, dtype=np.int64)
    _mbqm_kernel(arr.reshape(-1), np.int64(multiplier), np.int64(shift), rounding == "single", out)
    return out.reshape(arr.shape)


def broadcast_shape(shape1: Sequence[int], shape2: Sequence[int], what: str) -> tuple[int, ...]:
    """NumPy / TFLite broadcasting of two shapes, or :class:`ShapeError`."""
    try:
        return tuple(np.broadcast_shapes(tuple(shape1), tuple(shape2)))
    except ValueError:
        raise ShapeError(
            f"{what}: input shapes {tuple(shape1)} and {tuple(shape2)} do not broadcast"
        ) from None


def binary(x1: np.ndarray, x2: np.ndarray, p: BinaryParams, fast: bool = True) -> np.ndarray:
    """Evaluate ``p.op`` on two code arrays (broadcasting); returns ``p.dtype`` codes.
    ``fast``: int8 reads :attr:`BinaryParams.pair_table`, int16 ADD / SUB of equal shapes runs
    :func:`refq.kernels.fastpath.binary16` (same arithmetic); ``False``: the NumPy steps."""
    what = p.op
    a = check_codes(x1, p.dtype, "input1", what)
    b = check_codes(x2, p.dtype, "input2", what)
    if a.shape != b.shape:
        broadcast_shape(a.shape, b.shape, what)
    if fast and p.dtype == "int8" and p.pair_table is not None:
        return fastpath.pair_lookup(p.pair_table, a, b)
    if fast and p.dtype == "int16" and p.op in ("ADD", "SUB") and a.shape == b.shape:
        out = fastpath.binary16(a, b, p)
        if out is not None:
            return out
    a = a.astype(np.int64) + p.input1_offset
    b = b.astype(np.int64) + p.input2_offset
    r = p.rounding
    if p.op == "MUL":
        acc = a * b
    else:
        a = mbqm(a << p.left_shift, p.input1_multiplier, p.input1_shift, r)
        b = mbqm(b << p.left_shift, p.input2_multiplier, p.input2_shift, r)
        if p.op == "ADD":
            acc = a + b
        elif p.op == "SUB":
            acc = a - b
        else:
            acc = (a - b) * (a - b)
    y = mbqm(acc, p.output_multiplier, p.output_shift, r) + p.output_offset
    return np.clip(y, p.act_min, p.act_max).astype(p.dtype)


def add(x1: np.ndarray, x2: np.ndarray, p: BinaryParams) -> np.ndarray:
    """TFLM ADD (``p.op == "ADD"``); see :func:`binary`."""
    return binary(x1, x2, p)


def sub(x1: np.ndarray, x2: np.ndarray, p: BinaryParams) -> np.ndarray:
    """TFLM SUB (``p.op == "SUB"``); see :func:`binary`."""
    return binary(x1, x2, p)


def mul(x1: np.ndarray, x2: np.ndarray, p: BinaryParams) -> np.ndarray:
    """TFLM MUL (``p.op == "MUL"``); see :func:`binary`."""
    return binary(x1, x2, p)


def squared_difference(x1: np.ndarray, x2: np.ndarray, p: BinaryParams) -> np.ndarray:
    """TFLM SQUARED_DIFFERENCE (``p.op == "SQUARED_DIFFERENCE"``); see :func:`binary`."""
    return binary(x1, x2, p)


# ---------------------------------------------------------------------------------------------
# Graph adapter
# ---------------------------------------------------------------------------------------------


def check_output_shape(
    info: Any, shape: Sequence[int | None], node_name: str, what: str = "output"
) -> None:
    """The output tensor's declared shape must match the computed one (``None`` dims free)."""
    declared = tuple(info.shape)
    if len(declared) != len(shape) or any(
        d is not None and s is not None and d != s for d, s in zip(declared, shape, strict=True)
    ):
        raise ShapeError(
            f"node {node_name!r}: {what} {info.name!r} is declared {declared}, the op produces "
            f"{tuple(shape)}"
        )


def quantized(info: Any, node_name: str) -> tuple[float, int]:
    """(scale, zero point) of a per-tensor quantized tensor, or an error naming it."""
    if not info.quantized:
        raise UnsupportedError(f"node {node_name!r}: tensor {info.name!r} is not quantized")
    if info.per_channel:
        raise UnsupportedError(
            f"node {node_name!r}: tensor {info.name!r} is quantized per channel; this op needs "
            "one scale"
        )
    return info.scalar_scale(), info.scalar_zero_point()


def _make_prepare(op: str):
    def _prepare(node: Any, tensors: Mapping[str, Any], profile: Profile) -> BinaryParams:
        if len(node.inputs) != 2 or len(node.outputs) != 1:
            raise ShapeError(f"node {node.name!r}: {op} takes two inputs and one output")
        t1, t2 = tensors[node.inputs[0]], tensors[node.inputs[1]]
        out = tensors[node.outputs[0]]
        for t in (t1, t2):
            if t.dtype != out.dtype:
                raise UnsupportedError(
                    f"node {node.name!r}: {op} of {t1.dtype} and {t2.dtype} into {out.dtype}; "
                    "inputs and output must have one dtype"
                )
        if None not in t1.shape and None not in t2.shape:
            check_output_shape(out, broadcast_shape(t1.shape, t2.shape, node.name), node.name)
        s1, z1 = quantized(t1, node.name)
        s2, z2 = quantized(t2, node.name)
        so, zo = quantized(out, node.name)
        return prepare_binary(
            op,
            out.dtype,
            s1,
            z1,
            s2,
            z2,
            so,
            zo,
            profile,
            activation=node.attrs.get("activation", "NONE"),
            name=f"node {node.name!r} ({op})",
        )

    return _prepare


def _run(p: BinaryParams, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    return [binary(np.asarray(inputs[0]), np.asarray(inputs[1]), p)]


for _op in BINARY_OPS:
    register(_op, prepare=_make_prepare(_op), run=_run)
