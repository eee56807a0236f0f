"""ROPE: rotary position embedding of int8 q / k with fixed-point sin / cos tables (refq op).

For head dimension ``D`` (even), frequency ``w_i = theta^(-2i/D)`` (``i < D/2``) and position
``p``, each pair ``(a, b)`` of a head is rotated by the angle ``p w_i``:
``a' = a cos - b sin``, ``b' = b cos + a sin``. Conventions (attr ``convention``):

* ``rotate_half`` (Hugging Face Llama / SmolLM2, and GGUF checkpoints once their Q/K weight
  permutation is undone): pair ``(x[i], x[i + D/2])``;
* ``interleaved`` (original Llama, GPT-J, llama.cpp's ``LLAMA_ROPE_TYPE_NORM`` on GGUF-permuted
  weights): pair ``(x[2i], x[2i + 1])``.

Tables (prepare time, attrs ``theta``, ``head_dim``, ``max_positions``): int16 Q15
``C[p, i] = clamp(round_half_even(2^15 cos(p w_i)), -32767, 32767)``, likewise ``S`` for sin, of
the *exact* real angle. Why Q15: the products ``v * C`` of int8 values (``|v| <= 255``) stay
below ``2^23`` so a whole rotation ``a C - b S`` fits an int32 with room, on MCUs a 16x16
multiply-accumulate; why it is enough: an entry is within ``2^-16`` of the true value (``2^-15``
at ``cos = 1`` which saturates to ``32767``), so a rotated value carries at most
``(|a| + |b|) 2^-15 <= 0.016`` input steps of table error, against half an output step of final
rounding. Entries are computed in float64; the few whose scaled value lies within ``10^-4`` of a
rounding tie are recomputed with 60-digit decimal arithmetic, so the tables are the same on
every platform.

Run, with ``v = x - zp_in`` and ``p = position + t`` for token ``t``:
``acc_a = a C[p, i] - b S[p, i]``, ``acc_b = b C[p, i] + a S[p, i]`` (int32);
``y = clamp(MultiplyByQuantizedMultiplier(acc, M, shift) + zp_out)`` with
``M 2^shift = s_in / (s_out 2^15)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal, localcontext
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from refq import fixedpoint as fp
from refq.errors import QuantSpecError, ShapeError, UnsupportedError
from refq.kernels import fastpath
from refq.kernels.registry import register
from refq.profiles import Profile, Rounding
from refq.spec import QDType

Convention = Literal["rotate_half", "interleaved"]
CONVENTIONS: tuple[str, ...] = ("rotate_half", "interleaved")
TABLE_FRAC_BITS = 15
TIE_WINDOW = 1e-4
_DIGITS = 60


# --- tables --------------------------------------------------------------------------------------


def _pi(ctx_prec: int) -> Decimal:
    """pi by Machin's formula, ``16 atan(1/5) - 4 atan(1/239)``, in the current context."""

    def atan_inv(n: int) -> Decimal:
        x = Decimal(1) / n
        x2 = x * x
        total, term, k = x, x, 1
        eps = Decimal(10) ** (-ctx_prec - 2)
        while abs(term) > eps:
            term = -term * x2
            total += term / (2 * k + 1)
            k += 1
        return total

    return 16 * atan_inv(5) - 4 * atan_inv(239)


def exact_cos_sin(position: int, i: int, head_dim: int, theta: float) -> tuple[Decimal, Decimal]:
    """``cos`` and ``sin`` of ``position * theta^(-2i/head_dim)`` to ~55 significant digits."""
    with localcontext() as ctx:
        ctx.prec = _DIGITS
        w = (Decimal(theta).ln() * Decimal(-2 * i) / Decimal(head_dim)).exp()
        angle = Decimal(position) * w
        two_pi = 2 * _pi(_DIGITS)
        r = angle - two_pi * (angle / two_pi).to_integral_value(rounding=ROUND_FLOOR)
        eps = Decimal(10) ** (-_DIGITS)
        cos, sin = Decimal(0), Decimal(0)
        term, k = Decimal(1), 0  # r^k / k!
        while True:
            if k % 4 == 0:
                cos += term
            elif k % 4 == 1:
                sin += term
            elif k % 4 == 2:
                cos -= term
            else:
                sin -= term
            k += 1
            term = term * r / k
            if k > 8 and abs(term) < eps:
                break
        return +cos, +sin


def _round_q15(scaled: np.ndarray) -> NDArray[np.int64]:
    return np.clip(np.rint(scaled), -32767, 32767).astype(np.int64)


def rope_tables(
    head_dim: int, max_positions: int, theta: float = 10000.0
) -> tuple[NDArray[np.int16], NDArray[np.int16]]:
    """The Q15 cos / sin tables ``[max_positions, head_dim / 2]`` (module docstring)."""
    if head_dim <= 0 or head_dim % 2:
        raise QuantSpecError(f"ROPE: head_dim must be even and positive, got {head_dim}")
    if max_positions <= 0:
        raise QuantSpecError(f"ROPE: max_positions must be positive, got {max_positions}")
    if not float(theta) > 1.0:
        raise QuantSpecError(f"ROPE: theta must be > 1, got {theta!r}")
    half = head_dim // 2
    w = np.power(float(theta), -2.0 * np.arange(half, dtype=np.float64) / head_dim)
    angle = np.arange(max_positions, dtype=np.float64)[:, None] * w[None, :]
    scale = float(1 << TABLE_FRAC_BITS)
    tables = []
    for f in (np.cos, np.sin):
        scaled = f(angle) * scale
        table = _round_q15(scaled)
        near = np.abs(scaled - np.floor(scaled) - 0.5) < TIE_WINDOW
        for p, i in zip(*np.nonzero(near), strict=True):
            exact = exact_cos_sin(int(p), int(i), head_dim, float(theta))[0 if f is np.cos else 1]
            with localcontext() as ctx:
                ctx.prec = _DIGITS
                q = (exact * (1 << TABLE_FRAC_BITS)).to_integral_value()  # half even
            table[p, i] = min(max(int(q), -32767), 32767)
        tables.append(table.astype(np.int16))
    return tables[0], tables[1]


def pair_indices(head_dim: int, convention: Convention) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the first and second element of each rotated pair within a head."""
    half = head_dim // 2
    if convention == "rotate_half":
        first = np.arange(half)
        return first, first + half
    if convention == "interleaved":
        first = 2 * np.arange(half)
        return first, first + 1
    raise UnsupportedError(f"ROPE: convention={convention!r}; use one of {CONVENTIONS}")


# --- kernel --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RopeParams:
    """Constants of ROPE: the tables, the pairing, the output requantization."""

    head_dim: int
    max_positions: int
    theta: float
    convention: Convention
    cos_q15: NDArray[np.int16]
    sin_q15: NDArray[np.int16]
    input_zero_point: int
    output_multiplier: int
    output_shift: int
    output_zero_point: int
    output_dtype: str = "int8"
    rounding: Rounding = "double"
    name: str = "rope"


def prepare_rope(
    s_in: float,
    zp_in: int,
    s_out: float,
    zp_out: int,
    *,
    head_dim: int,
    max_positions: int,
    theta: float = 10000.0,
    convention: Convention = "rotate_half",
    output_dtype: str = "int8",
    rounding: Rounding = "double",
    name: str = "rope",
) -> RopeParams:
    pair_indices(head_dim, convention)  # validates the convention
    cos, sin = rope_tables(head_dim, max_positions, theta)
    real = float(s_in) / (float(s_out) * float(1 << TABLE_FRAC_BITS))
    m, shift = fp.quantize_multiplier(real, rounding)
    if not -31 <= shift <= 30:
        raise QuantSpecError(f"ROPE {name!r}: output multiplier {real!r} gives shift {shift}")
    return RopeParams(
        head_dim,
        max_positions,
        float(theta),
        convention,
        cos,
        sin,
        zp_in,
        m,
        shift,
        zp_out,
        output_dtype,
        rounding,
        name,
    )


def rope_accumulate(v: np.ndarray, positions: np.ndarray, p: RopeParams) -> NDArray[np.int64]:
    """The int32 rotation ``[T, H, D]`` of zero-point-free values ``v`` at ``positions`` [T]."""
    first, second = pair_indices(p.head_dim, p.convention)
    c = p.cos_q15.astype(np.int64)[positions][:, None, :]
    s = p.sin_q15.astype(np.int64)[positions][:, None, :]
    a, b = v[..., first], v[..., second]
    acc = np.empty(v.shape, dtype=np.int64)
    acc[..., first] = a * c - b * s
    acc[..., second] = b * c + a * s
    return acc


def rope(x: np.ndarray, position: int, p: RopeParams, fast: bool = True) -> np.ndarray:
    """ROPE of int8 codes ``x`` of shape ``[T, H * D]`` or ``[T, H, D]`` for tokens at positions
    ``position .. position + T - 1``; returns the same shape. ``fast``: the compiled loop of
    :func:`refq.kernels.fastpath.rope` (same arithmetic); ``False``: the NumPy steps below."""
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise ShapeError(f"ROPE {p.name!r}: input must be int8 codes, got {x.dtype}")
    bad_shape = x.ndim not in (2, 3) or (
        x.shape[-1] % p.head_dim if x.ndim == 2 else x.shape[-1] != p.head_dim
    )
    if bad_shape:
        raise ShapeError(
            f"ROPE {p.name!r}: input must be [T, H*{p.head_dim}] or [T, H, {p.head_dim}], "
            f"got {x.shape}"
        )
    t = x.shape[0]
    v = x.reshape(t, -1, p.head_dim).astype(np.int64) - p.input_zero_point
    pos = int(position)
    if pos < 0 or pos + t > p.max_positions:
        raise ShapeError(
            f"ROPE {p.name!r}: positions {pos}..{pos + t - 1} outside the table "
            f"(max_positions={p.max_positions})"
        )
    if fast:
        return fastpath.rope(x, pos, p)
    acc = rope_accumulate(v, np.arange(pos, pos + t), p)
    y = np.asarray(
        fp.multiply_by_quantized_multiplier(acc, p.output_multiplier, p.output_shift, p.rounding),
        dtype=np.int64,
    )
    dt = QDType.parse(p.output_dtype)
    return np.clip(y + p.output_zero_point, dt.qmin, dt.qmax).astype(dt.storage).reshape(x.shape)


def float_rope(
    x: np.ndarray, positions: np.ndarray, head_dim: int, theta: float, convention: Convention
) -> np.ndarray:
    """Float64 RoPE of ``x`` [T, H, D] (the reference for error bounds)."""
    first, second = pair_indices(head_dim, convention)
    w = np.power(float(theta), -2.0 * np.arange(head_dim // 2) / head_dim)
    ang = np.asarray(positions, dtype=np.float64)[:, None] * w[None, :]
    c, s = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
    out = np.empty_like(np.asarray(x, dtype=np.float64))
    a, b = x[..., first], x[..., second]
    out[..., first] = a * c - b * s
    out[..., second] = b * c + a * s
    return out


# --- graph adapter ---------------------------------------------------------------------------


def _position(value: np.ndarray | None, name: str) -> int:
    if value is None:
        return 0
    arr = np.asarray(value)
    if arr.size != 1 or arr.dtype.kind not in "iu":
        raise ShapeError(f"{name}: position must be one integer, got {arr.dtype} {arr.shape}")
    return int(arr.reshape(-1)[0])


def prepare_rope_node(node: Any, tensors: Mapping[str, Any], profile: Profile) -> RopeParams:
    """ROPE(x[, position]) with attrs ``head_dim``, ``max_positions``, ``theta``,
    ``convention``."""
    if len(node.inputs) not in (1, 2) or len(node.outputs) != 1:
        raise ShapeError(f"ROPE node {node.name!r} takes (x, position) and one output")
    t_in, t_out = tensors[node.inputs[0]], tensors[node.outputs[0]]
    for t in (t_in, t_out):
        if not t.quantized or t.dtype != "int8":
            raise UnsupportedError(f"ROPE node {node.name!r}: tensor {t.name!r} must be int8")
    try:
        head_dim = int(node.attrs["head_dim"])
        max_positions = int(node.attrs["max_positions"])
    except KeyError as exc:
        raise QuantSpecError(f"ROPE node {node.name!r}: missing attr {exc.args[0]!r}") from None
    return prepare_rope(
        t_in.scalar_scale(),
        t_in.scalar_zero_point(),
        t_out.scalar_scale(),
        t_out.scalar_zero_point(),
        head_dim=head_dim,
        max_positions=max_positions,
        theta=float(node.attrs.get("theta", 10000.0)),
        convention=node.attrs.get("convention", "rotate_half"),
        rounding=profile.rounding,
        name=node.name,
    )


def run_rope_node(params: RopeParams, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    x = inputs[0]
    pos = _position(inputs[1] if len(inputs) > 1 else None, f"ROPE {params.name!r}")
    return [rope(x, pos, params)]


register("ROPE", prepare=prepare_rope_node, run=run_rope_node)

__all__ = [
    "CONVENTIONS",
    "TABLE_FRAC_BITS",
    "RopeParams",
    "exact_cos_sin",
    "float_rope",
    "pair_indices",
    "prepare_rope",
    "rope",
    "rope_accumulate",
    "rope_tables",
]
