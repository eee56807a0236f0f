"""Exact integer matrix products with NumPy ``matmul`` broadcasting.

``int_matmul(a, b)`` returns ``sum_k a[..., m, k] * b[..., k, n]`` exactly, for integer arrays of
any dtype. The path is chosen from the shapes and the operands' magnitudes *before* computing,
from ``bound = K * max|a| * max|b|``, which bounds every product and every partial sum:

* ``float32`` BLAS when ``bound < 2^24``: every product and partial sum is an integer that float32
  represents exactly, so any summation order (and FMA) gives the exact result;
* ``float64`` BLAS when ``bound < 2^53``, for the same reason;
* otherwise an exact int64 Numba kernel (``bound < 2^63``), or, for ``accumulate="int32_wrap"``,
  the same kernel read modulo 2^64, which is exact modulo 2^32.

``max|a|`` and ``max|b|`` come from the data (``bounds="data"``, one pass over each operand) or
from the dtype ranges (``bounds="dtype"``, no pass).

Accumulators. The peers (TFLite, CMSIS-NN, ONNX Runtime) accumulate in int32 and C wraps on
overflow. ``accumulate`` makes that explicit:

* ``"int32"`` (default): int32 result; raises :class:`ExactnessError` if an exact result does not
  fit in int32 (int32 partial sums may wrap and unwrap: only the final value matters);
* ``"int32_wrap"``: int32 result reduced modulo 2^32 (two's complement), as a wrapping int32
  accumulator produces (ONNX MatMulInteger: "accumulation may overflow if and only if in 32 bits");
* ``"int64"``: exact int64 result; raises :class:`ExactnessError` when ``bound >= 2^63``.

``plan_float_matmul`` / ``float_matmul_exact`` serve repeated products with a constant operand
kept in a float dtype (the kernels' weights): K is split into chunks whose partial sums are
provably exact in float32 (or float64), and the chunk results are added exactly.

``int_matmul_u8s8_sat16`` emulates ONNX Runtime's x86 AVX2 (no VNNI) u8 x s8 kernel: adjacent
products along K are summed in pairs ``a[2j]*b[2j] + a[2j+1]*b[2j+1]`` and clipped to int16
(``vpmaddubsw``) before the int32 sum; an odd K is padded with a zero element.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numba
import numpy as np

from refq.errors import ExactnessError, ShapeError, UnsupportedError

Accumulate = Literal["int32", "int32_wrap", "int64"]
MatmulPath = Literal["float32", "float64", "int64"]
Bounds = Literal["data", "dtype"]

FLOAT32_EXACT = 1 << 24
"""float32 represents every integer of magnitude <= 2^24; the path needs bound < 2^24."""
FLOAT64_EXACT = 1 << 53
"""float64 represents every integer of magnitude <= 2^53; the path needs bound < 2^53."""
INT64_EXACT = 1 << 63

_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1
_ACCUMULATE = ("int32", "int32_wrap", "int64")


@dataclass(frozen=True)
class MatmulPlan:
    """How ``int_matmul`` computes one product (decided before any arithmetic)."""

    path: MatmulPath
    bound: int
    """``K * max|a| * max|b|``: bounds every |product| and |partial sum| (Python int, exact)."""
    batch_shape: tuple[int, ...]
    m: int
    k: int
    n: int
    out_shape: tuple[int, ...]
    """Shape of the result after NumPy's removal of the 1-D operands' inserted axes."""


def _check_integer(x: np.ndarray, name: str) -> None:
    if x.dtype.kind not in "iu":
        raise UnsupportedError(
            f"int_matmul operand {name!r} has dtype {x.dtype}; only integer dtypes are exact here"
        )


def max_abs(x: np.ndarray, bounds: Bounds = "data") -> int:
    """Largest |value| of an integer array (``"data"``) or of its dtype (``"dtype"``), as int."""
    if bounds == "dtype":
        info = np.iinfo(x.dtype)
        return max(-int(info.min), int(info.max))
    if bounds != "data":
        raise UnsupportedError(f"int_matmul bounds={bounds!r}; use 'data' or 'dtype'")
    if x.size == 0:
        return 0
    # Python ints: |INT64_MIN| does not fit in int64.
    return max(-int(x.min()), int(x.max()))


def _shapes(a_shape: tuple[int, ...], b_shape: tuple[int, ...]):
    """NumPy matmul shape rules: batch dims broadcast, 1-D operands get a temporary axis."""
    if len(a_shape) == 0 or len(b_shape) == 0:
        raise ShapeError(
            f"int_matmul operands must be at least 1-D; got shapes {a_shape} and {b_shape}"
        )
    a2 = (1, *a_shape) if len(a_shape) == 1 else a_shape
    b2 = (*b_shape, 1) if len(b_shape) == 1 else b_shape
    m, k = a2[-2:]
    k2, n = b2[-2:]
    if k != k2:
        raise ShapeError(
            f"int_matmul: inner dimensions differ: a has shape {a_shape} (K={k}), "
            f"b has shape {b_shape} (K={k2})"
        )
    try:
        batch = np.broadcast_shapes(a2[:-2], b2[:-2])
    except ValueError:
        raise ShapeError(
            f"int_matmul: batch dimensions of shapes {a_shape} and {b_shape} do not broadcast"
        ) from None
    out = [*batch, m, n]
    if len(a_shape) == 1:
        del out[-2]
    if len(b_shape) == 1:
        del out[-1]
    return tuple(batch), a2, b2, m, k, n, tuple(out)


def select_path(bound: int) -> MatmulPath:
    """The cheapest exact path for a product whose partial sums are bounded by ``bound``."""
    if bound < FLOAT32_EXACT:
        return "float32"
    if bound < FLOAT64_EXACT:
        return "float64"
    return "int64"


def plan_int_matmul(a: np.ndarray, b: np.ndarray, *, bounds: Bounds = "data") -> MatmulPlan:
    """Check shapes and dtypes and choose the exact path for ``a @ b`` (no arithmetic yet)."""
    a = np.asarray(a)
    b = np.asarray(b)
    _check_integer(a, "a")
    _check_integer(b, "b")
    batch, _, _, m, k, n, out = _shapes(a.shape, b.shape)
    bound = k * max_abs(a, bounds) * max_abs(b, bounds)
    return MatmulPlan(select_path(bound), bound, batch, m, k, n, out)


@numba.njit(cache=True)
def _matmul_i64_kernel(a, b, ia, ib, out):  # pragma: no cover - compiled
    # a (Ba, M, K), b (Bb, K, N) int64; out (P, M, N) int64 zeroed; ia/ib map batch p to a/b.
    # int64 arithmetic wraps modulo 2^64, which keeps the low 32 bits exact for int32_wrap.
    m = a.shape[1]
    k = a.shape[2]
    n = b.shape[2]
    for p in range(out.shape[0]):
        ap = a[ia[p]]
        bp = b[ib[p]]
        op = out[p]
        for i in range(m):
            for kk in range(k):
                v = ap[i, kk]
                if v == 0:
                    continue
                for j in range(n):
                    op[i, j] += v * bp[kk, j]


@numba.njit(cache=True)
def _matmul_u8s8_sat16_kernel(a, b, ia, ib, out):  # pragma: no cover - compiled
    # a (Ba, M, K) uint8, b (Bb, K, N) int8; out (P, M, N) int64 zeroed.
    m = a.shape[1]
    k = a.shape[2]
    n = b.shape[2]
    for p in range(out.shape[0]):
        ap = a[ia[p]]
        bp = b[ib[p]]
        op = out[p]
        for i in range(m):
            for kk in range(0, k - 1, 2):
                a0 = np.int64(ap[i, kk])
                a1 = np.int64(ap[i, kk + 1])
                for j in range(n):
                    s = a0 * np.int64(bp[kk, j]) + a1 * np.int64(bp[kk + 1, j])
                    if s > 32767:
                        s = 32767
                    elif s < -32768:
                        s = -32768
                    op[i, j] += s
            if k % 2 == 1:
                # The zero padding element makes the last pair a single product, which
                # always fits in int16 (|255 * -128| = 32640).
                a0 = np.int64(ap[i, k - 1])
                for j in range(n):
                    op[i, j] += a0 * np.int64(bp[k - 1, j])


def _batched(
    a: np.ndarray, b: np.ndarray, plan: MatmulPlan, a2: tuple[int, ...], b2: tuple[int, ...]
):
    """(Ba, M, K) and (Bb, K, N) views plus per-output-batch index maps (no broadcast copies)."""
    # Explicit batch sizes: reshape(-1, ...) is ambiguous when K or M is 0.
    a3 = np.ascontiguousarray(a.reshape(a2)).reshape(math.prod(a2[:-2]), plan.m, plan.k)
    b3 = np.ascontiguousarray(b.reshape(b2)).reshape(math.prod(b2[:-2]), plan.k, plan.n)
    ia = np.broadcast_to(np.arange(a3.shape[0]).reshape(a2[:-2]), plan.batch_shape).ravel()
    ib = np.broadcast_to(np.arange(b3.shape[0]).reshape(b2[:-2]), plan.batch_shape).ravel()
    return a3, b3, ia.astype(np.int64), ib.astype(np.int64)


def _to_int64(x: np.ndarray) -> np.ndarray:
    # uint64 values >= 2^63 wrap: the result is then only used modulo 2^64 (int32_wrap),
    # or the bound check has already ruled them out.
    if x.dtype == np.uint64:
        return x.view(np.int64) if x.flags.c_contiguous else x.astype(np.int64)
    return x.astype(np.int64, copy=False)


def _compute(a: np.ndarray, b: np.ndarray, plan: MatmulPlan, path: MatmulPath) -> np.ndarray:
    """The product on ``path`` as int64 (exact, or modulo 2^64 on the int64 path)."""
    if path in ("float32", "float64"):
        ft = np.float32 if path == "float32" else np.float64
        return np.asarray(np.matmul(a.astype(ft), b.astype(ft))).astype(np.int64)
    _, a2, b2, *_ = _shapes(a.shape, b.shape)
    a3, b3, ia, ib = _batched(_to_int64(a), _to_int64(b), plan, a2, b2)
    out = np.zeros((ia.size, plan.m, plan.n), dtype=np.int64)
    if plan.k and out.size:
        _matmul_i64_kernel(a3, b3, ia, ib, out)
    return out.reshape(plan.out_shape)


def _finish(acc: np.ndarray, accumulate: Accumulate, what: str) -> np.ndarray:
    if accumulate == "int64":
        return acc
    if accumulate == "int32_wrap":
        return acc.astype(np.int32)  # two's complement: keeps the low 32 bits
    if acc.size:
        lo, hi = int(acc.min()), int(acc.max())
        if lo < _INT32_MIN or hi > _INT32_MAX:
            bad = hi if hi > _INT32_MAX else lo
            raise ExactnessError(
                f"{what}: exact result {bad} does not fit in int32; use accumulate='int64' "
                f"for the exact value or accumulate='int32_wrap' for a wrapping int32 accumulator"
            )
    return acc.astype(np.int32)


def _check_accumulate(accumulate: str) -> None:
    if accumulate not in _ACCUMULATE:
        raise UnsupportedError(
            f"int_matmul accumulate={accumulate!r}; use one of {', '.join(_ACCUMULATE)}"
        )


def int_matmul(
    a: np.ndarray,
    b: np.ndarray,
    *,
    accumulate: Accumulate = "int32",
    bounds: Bounds = "data",
) -> np.ndarray:
    """Exact ``a @ b`` of integer arrays with ``numpy.matmul`` broadcasting.

    Returns int32 (``accumulate="int32"`` or ``"int32_wrap"``) or int64 (``"int64"``); see the
    module docstring for the path rule and the accumulator choices.
    """
    _check_accumulate(accumulate)
    a = np.asarray(a)
    b = np.asarray(b)
    plan = plan_int_matmul(a, b, bounds=bounds)
    if plan.path == "int64" and plan.bound >= INT64_EXACT and accumulate != "int32_wrap":
        raise ExactnessError(
            f"int_matmul: K * max|a| * max|b| = {plan.bound} >= 2^63 for shapes {a.shape} @ "
            f"{b.shape}; int64 partial sums could overflow (only accumulate='int32_wrap' is "
            f"exact here)"
        )
    acc = _compute(a, b, plan, plan.path)
    return _finish(acc, accumulate, f"int_matmul of shapes {a.shape} @ {b.shape}")


def int_matmul_u8s8_sat16(
    a: np.ndarray,
    b: np.ndarray,
    a_zero_point: int | np.ndarray = 0,
    b_zero_point: int | np.ndarray = 0,
    *,
    accumulate: Accumulate = "int32_wrap",
) -> np.ndarray:
    """ONNX Runtime's x86 AVX2 (no VNNI) u8 x s8 product, zero points included.

    ``S[m, n] = sum_j clip(a[m,2j] b[2j,n] + a[m,2j+1] b[2j+1,n], -2^15, 2^15 - 1)`` on the raw
    codes (odd K padded with a zero), then the exact zero-point corrections the runtime applies
    from row and column sums::

        y = S - zb * sum_k a[m, k] - za * sum_k b[k, n] + K * za * zb

    ``a_zero_point`` is a scalar; ``b_zero_point`` a scalar or one value per column N. Equal to
    the exact ``(a - za) @ (b - zb)`` whenever no pair leaves int16 (e.g. 7-bit weights).
    Default accumulator: wrapping int32, as the runtime's.
    """
    _check_accumulate(accumulate)
    a = np.asarray(a)
    b = np.asarray(b)
    if a.dtype != np.uint8 or b.dtype != np.int8:
        raise UnsupportedError(
            f"int_matmul_u8s8_sat16 emulates uint8 activations x int8 weights; got a {a.dtype} "
            f"and b {b.dtype}"
        )
    batch, a2, b2, m, k, n, out_shape = _shapes(a.shape, b.shape)
    plan = MatmulPlan("int64", k * 255 * 128, batch, m, k, n, out_shape)
    a3, b3, ia, ib = _batched(a, b, plan, a2, b2)
    acc = np.zeros((ia.size, m, n), dtype=np.int64)
    if k and acc.size:
        _matmul_u8s8_sat16_kernel(a3, b3, ia, ib, acc)
    acc = acc.reshape((*batch, m, n))

    za = np.asarray(a_zero_point, dtype=np.int64)
    zb = np.asarray(b_zero_point, dtype=np.int64)
    if za.size != 1:
        raise ShapeError(
            f"int_matmul_u8s8_sat16: a_zero_point must be a scalar; got shape {za.shape}"
        )
    if zb.size not in (1, n):
        raise ShapeError(
            f"int_matmul_u8s8_sat16: b_zero_point must be a scalar or have N={n} values; got "
            f"shape {zb.shape}"
        )
    za = za.reshape(())
    zb = zb.reshape(-1) if zb.size > 1 else zb.reshape(())
    row_a = np.broadcast_to(a.reshape(a2).astype(np.int64).sum(-1, keepdims=True), (*batch, m, 1))
    col_b = np.broadcast_to(b.reshape(b2).astype(np.int64).sum(-2, keepdims=True), (*batch, 1, n))
    acc = acc - zb * row_a - za * col_b + k * za * zb
    return _finish(acc.reshape(out_shape), accumulate, "int_matmul_u8s8_sat16")


# ---------------------------------------------------------------------------------------------
# Operands kept in a float dtype, K split into exact chunks (the kernels' constant weights)
# ---------------------------------------------------------------------------------------------

FLOAT32_MIN_CHUNK = 256
"""Below this chunk length float32 BLAS calls are too short to beat one float64 call."""


@dataclass(frozen=True)
class FloatMatmulPlan:
    """How :func:`float_matmul_exact` computes ``a @ b`` for ``|a| <= max_a``, ``|b| <= max_b``.

    Each BLAS call covers at most ``chunk`` consecutive K, so every product and partial sum of
    one call is an integer of magnitude ``<= chunk * max_a * max_b <= 2^24`` (float32) or
    ``2^53`` (float64): representable, hence computed exactly in any order, FMA included
    (here the bound is inclusive: 2^24 and 2^53 are themselves floats of those types). The
    chunk results are added exactly, in float64 while ``K * max_a * max_b <= 2^53``, else in
    int64 (``bound < 2^63`` is required).
    """

    dtype: np.dtype
    chunk: int
    k: int
    max_a: int
    max_b: int

    @property
    def bound(self) -> int:
        return self.k * self.max_a * self.max_b

    @property
    def chunks(self) -> int:
        return max(1, -(-self.k // self.chunk))


def plan_float_matmul(
    k: int, max_a: int, max_b: int, *, min_float32_chunk: int = FLOAT32_MIN_CHUNK
) -> FloatMatmulPlan:
    """float32 with K chunks of ``floor(2^24 / (max_a * max_b))`` when those chunks are at least
    ``min_float32_chunk`` long (or cover K), else float64 chunks of ``floor(2^53 / ...)``."""
    k, max_a, max_b = int(k), int(max_a), int(max_b)
    if k < 0 or max_a < 0 or max_b < 0:
        raise ShapeError(f"plan_float_matmul: negative K or bound ({k}, {max_a}, {max_b})")
    prod = max(max_a * max_b, 1)
    if k * prod >= INT64_EXACT:
        raise ExactnessError(
            f"plan_float_matmul: K * max|a| * max|b| = {k * prod} >= 2^63: no exact int64 sum"
        )
    c32 = FLOAT32_EXACT // prod
    if c32 >= max(1, min(k, min_float32_chunk)):
        return FloatMatmulPlan(np.dtype(np.float32), max(1, min(c32, k)), k, max_a, max_b)
    c64 = FLOAT64_EXACT // prod
    if c64 < 1:
        raise ExactnessError(
            f"plan_float_matmul: one product max|a| * max|b| = {prod} exceeds 2^53; use int_matmul"
        )
    return FloatMatmulPlan(np.dtype(np.float64), max(1, min(c64, k)), k, max_a, max_b)


def float_matmul_exact(a: np.ndarray, b: np.ndarray, plan: FloatMatmulPlan) -> np.ndarray:
    """Exact ``a @ b`` of float arrays holding integers within the plan's bounds.

    ``a`` (..., M, K) and ``b`` (..., K, N) must already have ``plan.dtype`` (convert constant
    operands once; transposed views are fine, BLAS reads them in place). Returns ``plan.dtype``
    for one chunk, float64 or int64 for several, always holding the exact integer result. The
    caller guarantees the bounds (from dtype ranges or data); they are not re-checked here.
    """
    if a.dtype != plan.dtype or b.dtype != plan.dtype:
        raise UnsupportedError(
            f"float_matmul_exact: operands must be {plan.dtype}, got {a.dtype} and {b.dtype}"
        )
    if a.shape[-1] != plan.k or b.shape[-2] != plan.k:
        raise ShapeError(
            f"float_matmul_exact: K = {plan.k} planned, operands have shapes {a.shape} @ {b.shape}"
        )
    if plan.chunks == 1:
        return np.matmul(a, b)
    wide = np.float64 if plan.bound <= FLOAT64_EXACT else np.int64
    acc = None
    for k0 in range(0, plan.k, plan.chunk):
        part = np.matmul(a[..., k0 : k0 + plan.chunk], b[..., k0 : k0 + plan.chunk, :])
        if acc is None:
            acc = part.astype(wide)
        elif wide is np.float64:
            np.add(acc, part, out=acc)  # float32 -> float64 widening is exact
        else:
            acc += part.astype(np.int64)
    return acc
