"""Integer LayerNorm and RMSNorm (graph ops ``LAYER_NORM`` and ``RMS_NORM``).

TFLite / TFLite Micro have no LayerNorm kernel (converters decompose it into MEAN,
SQUARED_DIFFERENCE, RSQRT, MUL, ADD; that form is built by :mod:`refq.kernels.decomposed`).
This module is the direct integer form of I-BERT (Kim et al. 2021) and I-ViT (Li & Gu 2023),
stated as exact integer arithmetic (the papers' released code evaluates it on float tensors,
peer-facts section 7), followed by an integer affine that folds gamma / beta and the output
scale into one rounding.

Per row of ``n`` codes ``x`` (the normalized axis is the last one), with ``P = 31`` for 8-bit
inputs and ``P = 39`` for 16-bit inputs (8 more reciprocal bits for 8 more input bits)::

    d      = x - round_half_even(sum(x) / n)     LayerNorm (torch.round of the integer mean)
    d      = x - zp_in                           RMSNorm
    var    = sum(d^2) + var_offset               int64; var_offset = round(eps * n / s_in^2)
    std    = floor(sqrt(var))                    sqrt="exact" (I-BERT's i-sqrt converges to it)
             k = 2^16; 10 x k = (k + var // k) // 2      sqrt="newton10" (I-ViT as published)
    factor = numerator // std   (0 if std == 0)  numerator = 2^P (I-BERT), 2^P - 1 (I-ViT)
    y      = floor(d * factor / 2^(P - 30))      |y| <= 2^30 since std >= |d|;  y ~ d/std * 2^30
    t      = y * A[c] + B[c]                     int64, |t| < 2^62
    out    = clamp(floor((t + 2^(K-1)) / 2^K) + zp_out, qmin, qmax)      round half up

``y * sqrt(n) / 2^30`` is the normalized value ``(x - mean) / sqrt(var_pop + eps)`` (``std`` is
``sqrt(n)`` times the population std in input units), so the real output
``gamma[c] * z + beta[c]`` is ``(y * A[c] + B[c]) / 2^K`` output steps with the prepare-time
constants, each the *correctly rounded* value of its real definition (half away from zero,
computed exactly with Python integers, no float)::

    A[c] = round(gamma[c] * sqrt(n) * 2^(K - 30) / s_out)      |A[c]| <= 2^30 (int32)
    B[c] = round(beta[c] * 2^K / s_out)                        clamped to +-2^61 (int64)
    K    = the largest shift in [1, 58 - out_bits] with max |A[c]| <= 2^30

Clamping ``B`` never changes an output: a clamped ``|B| = 2^61`` keeps ``|t| >= 2^60`` which
saturates any output type as ``K <= 58 - out_bits``. The rounding error of ``A``, ``B`` is below
``2^(29 - K)`` output steps. Errors against float LayerNorm come from the integer mean (at most
1/2 input step) and ``floor(sqrt)``; tests/test_kernels_norms.py states and checks the bound.

Both roots come from :func:`refq.kernels.ivit.integer_sqrt`. Measured: newton10 is
``floor(sqrt(var))`` or one more for ``34596 <= var <= ~6.9e13`` (exhaustive up to 2^23, sampled
above); below that the ten steps have not come down from 2^16 (``var = 0`` gives 64), above it
they have not come down from the first step's overshoot. ``std == 0`` (only exact, only for
``var == 0``: every ``d`` is 0) gives ``factor = 0``: the output is ``beta``.

Profiles: ``nonlinear`` ``tflm`` / ``ibert`` take I-BERT's numerator ``2^P``, ``ivit`` takes
I-ViT's ``2^P - 1``; ``sqrt`` selects the square root (``ivit``: newton10, ``ivit-exact`` and
all others: exact). ``rounding`` / ``requant`` do not apply (no gemmlowp multiplier here).
I-BERT's adaptive pre-shift of ``d`` (kept to fit var in int32 when its input is a 32-bit
accumulator) is not needed: ``var`` is int64, exact for any row refq accepts. With ``epsilon=0``
(attr) the normalization is exactly the published algorithms'.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from refq.errors import InvalidDataError, QuantSpecError, ShapeError, UnsupportedError
from refq.kernels import fastpath
from refq.kernels.ivit import integer_sqrt
from refq.profiles import Profile, Sqrt

NormKind = Literal["layer", "rms"]

IO_RANGES: dict[str, tuple[int, int]] = {
    "int8": (-128, 127),
    "uint8": (0, 255),
    "int16": (-32768, 32767),
}
"""Input / output types of the integer norms and their code ranges."""

ACC_LIMIT = 1 << 62
"""Prepare checks that the largest ``var`` (n full-range squares plus ``var_offset``) is below."""
B_LIMIT = 1 << 61
A_LIMIT = 1 << 30
"""``|B| <= 2^61`` and ``|A| <= 2^30`` with ``|y| <= 2^30`` keep ``|t| < 2^62`` (int64)."""


@dataclass(frozen=True, eq=False)
class NormParams:
    """Every integer constant of one LAYER_NORM / RMS_NORM (the C generator emits them as-is).

    ``multiplier`` (int32) and ``bias`` (int64) hold ``A[c]`` / ``B[c]`` per channel of the
    normalized axis; see the module docstring for the formula each constant enters.
    """

    kind: NormKind
    n: int
    subtract_mean: bool
    input_zero_point: int
    var_offset: int
    sqrt: Sqrt
    recip_numerator: int
    recip_shift: int
    multiplier: NDArray[np.int32]
    bias: NDArray[np.int64]
    out_shift: int
    output_zero_point: int
    qmin: int
    qmax: int
    input_dtype: str
    output_dtype: str


# ---------------------------------------------------------------------------------------------
# Exact prepare-time helpers (Python integers and Fractions)
# ---------------------------------------------------------------------------------------------


def _round_half_away(q: Fraction) -> int:
    m = math.floor(abs(q) + Fraction(1, 2))
    return m if q >= 0 else -m


def _round_sqrt(q: Fraction) -> int:
    """``floor(sqrt(q) + 1/2)`` for a rational ``q >= 0``, exactly.

    ``floor(sqrt(q) + 1/2) = floor((floor(2 sqrt(q)) + 1) / 2)`` and
    ``floor(2 sqrt(q)) = isqrt(floor(4q))`` (nested floors of monotone functions).
    """
    return (math.isqrt((4 * q.numerator) // q.denominator) + 1) // 2


def _affine_multiplier(gamma: Fraction, n: int, k: int, out_scale: Fraction) -> int:
    """``round_half_away(gamma * sqrt(n) * 2^(k - 30) / out_scale)``, exact though sqrt(n) is not
    rational."""
    q = gamma * gamma * n * Fraction(2) ** (2 * k - 60) / (out_scale * out_scale)
    magnitude = _round_sqrt(q)
    return -magnitude if gamma < 0 else magnitude


def _fractions(values: Sequence[Any] | np.ndarray, what: str) -> list[Fraction]:
    out = []
    for i, v in enumerate(np.asarray(values, dtype=object).reshape(-1)):
        if isinstance(v, Fraction):
            out.append(v)
            continue
        f = float(v)
        if not math.isfinite(f):
            raise InvalidDataError(f"{what} has {f!r} at index {i}; values must be finite")
        out.append(Fraction(f))
    return out


def _positive_scale(scale: float | Fraction, what: str) -> Fraction:
    if not isinstance(scale, Fraction):
        value = float(scale)
        if not math.isfinite(value):
            raise QuantSpecError(f"{what} = {value!r}; scales must be positive and finite")
        scale = Fraction(value)
    if not scale > 0:
        raise QuantSpecError(f"{what} = {float(scale)!r}; scales must be positive and finite")
    return scale


def prepare_norm(
    kind: NormKind,
    *,
    n: int,
    input_scale: float | Fraction,
    input_zero_point: int,
    input_dtype: str,
    gamma: Sequence[Any] | np.ndarray,
    beta: Sequence[Any] | np.ndarray | None,
    epsilon: float,
    output_scale: float | Fraction,
    output_zero_point: int,
    output_dtype: str,
    sqrt: Sqrt = "exact",
    numerator: Literal["ibert", "ivit"] = "ibert",
    what: str = "norm",
) -> NormParams:
    """Derive :class:`NormParams` from real scales (float or exact :class:`Fraction`).

    ``gamma`` / ``beta`` hold one real value per channel (floats are taken at their exact binary
    value; pass Fractions for dequantized constants); ``beta=None`` means zeros.
    """
    if kind not in ("layer", "rms"):
        raise UnsupportedError(f"{what}: unknown norm kind {kind!r}")
    for role, dt in (("input", input_dtype), ("output", output_dtype)):
        if dt not in IO_RANGES:
            raise UnsupportedError(f"{what}: {role} dtype {dt!r} is not one of {list(IO_RANGES)}")
    if sqrt not in ("exact", "newton10"):
        raise UnsupportedError(f"{what}: sqrt must be 'exact' or 'newton10', got {sqrt!r}")
    if numerator not in ("ibert", "ivit"):
        raise UnsupportedError(f"{what}: numerator must be 'ibert' or 'ivit', got {numerator!r}")
    if not isinstance(n, int | np.integer) or n < 1:
        raise ShapeError(f"{what}: normalized axis length must be a positive int, got {n!r}")
    n = int(n)
    s_in = _positive_scale(input_scale, f"{what}: input scale")
    s_out = _positive_scale(output_scale, f"{what}: output scale")
    in_lo, in_hi = IO_RANGES[input_dtype]
    out_lo, out_hi = IO_RANGES[output_dtype]
    zp_in, zp_out = int(input_zero_point), int(output_zero_point)
    if not in_lo <= zp_in <= in_hi:
        raise QuantSpecError(f"{what}: input zero point {zp_in} is outside {input_dtype}")
    if not out_lo <= zp_out <= out_hi:
        raise QuantSpecError(f"{what}: output zero point {zp_out} is outside {output_dtype}")
    eps = float(epsilon)
    if not (math.isfinite(eps) and eps >= 0):
        raise QuantSpecError(f"{what}: epsilon = {eps!r} must be finite and >= 0")

    g = _fractions(gamma, f"{what}: gamma")
    b = [Fraction(0)] * n if beta is None else _fractions(beta, f"{what}: beta")
    if len(g) != n or len(b) != n:
        raise ShapeError(
            f"{what}: gamma / beta need {n} values (the normalized axis), got {len(g)} / {len(b)}"
        )

    var_offset = _round_half_away(Fraction(eps) * n / (s_in * s_in))
    span = in_hi - in_lo
    if n * span * span + var_offset >= ACC_LIMIT:
        raise QuantSpecError(
            f"{what}: n = {n} with epsilon {eps!r} at input scale {float(s_in)!r} overflows the "
            f"int64 variance (var_offset = {var_offset})"
        )
    p = 31 if in_hi - in_lo < 256 else 39

    out_bits = 8 if out_hi - out_lo < 256 else 16
    k_max = 58 - out_bits
    g_max = max((abs(v) for v in g), default=Fraction(0))
    k = k_max
    while k >= 1 and _affine_multiplier(g_max, n, k, s_out) > A_LIMIT:
        k -= 1
    if k < 1:
        raise QuantSpecError(
            f"{what}: gamma {float(g_max)!r} * sqrt({n}) / output scale {float(s_out)!r} is too "
            "large for the integer affine"
        )
    mult = np.array([_affine_multiplier(v, n, k, s_out) for v in g], dtype=np.int32)
    scale_k = Fraction(1 << k) / s_out
    bias = np.array(
        [max(-B_LIMIT, min(B_LIMIT, _round_half_away(v * scale_k))) for v in b], dtype=np.int64
    )
    return NormParams(
        kind=kind,
        n=n,
        subtract_mean=kind == "layer",
        input_zero_point=zp_in,
        var_offset=var_offset,
        sqrt=sqrt,
        recip_numerator=(1 << p) - (1 if numerator == "ivit" else 0),
        recip_shift=p - 30,
        multiplier=mult,
        bias=bias,
        out_shift=k,
        output_zero_point=zp_out,
        qmin=out_lo,
        qmax=out_hi,
        input_dtype=input_dtype,
        output_dtype=output_dtype,
    )


# ---------------------------------------------------------------------------------------------
# Run time: integer arithmetic only
# ---------------------------------------------------------------------------------------------


def round_half_even_div(total: NDArray[np.int64], n: int) -> NDArray[np.int64]:
    """``round_half_even(total / n)`` for int64 ``total`` and ``n >= 1`` (torch.round of a mean)."""
    q = total // n
    twice_r = 2 * (total - q * n)
    up = (twice_r > n) | ((twice_r == n) & ((q & 1) == 1))
    return q + up


def row_std(var: NDArray[np.int64], sqrt: Sqrt) -> NDArray[np.int64]:
    """``std`` of the module docstring: exact ``floor(sqrt(var))`` or I-ViT's 10 Newton steps
    from 2^16 (:func:`refq.kernels.ivit.integer_sqrt`). The Newton form is never below
    ``floor(sqrt(var))`` (AM-GM on each step) and never 0 (it at most halves per step)."""
    return np.asarray(integer_sqrt(var, sqrt), dtype=np.int64).reshape(var.shape)


def integer_norm(x: np.ndarray, p: NormParams, fast: bool = True) -> np.ndarray:
    """LayerNorm / RMSNorm over the last axis of ``x`` with the constants ``p`` (see module).
    ``fast``: the compiled loop of :func:`refq.kernels.fastpath.integer_norm` (same arithmetic);
    ``False``: the NumPy steps below."""
    arr = np.asarray(x)
    expected = np.dtype(p.input_dtype)
    if arr.dtype != expected:
        raise ShapeError(f"{p.kind} norm: input must be {p.input_dtype}, got {arr.dtype}")
    if arr.ndim == 0 or arr.shape[-1] != p.n:
        raise ShapeError(f"{p.kind} norm: last axis must have {p.n} elements, got {arr.shape}")
    if fast:
        return fastpath.integer_norm(arr, p)
    rows = arr.reshape(-1, p.n).astype(np.int64)
    if p.subtract_mean:
        d = rows - round_half_even_div(rows.sum(axis=1), p.n)[:, None]
    else:
        d = rows - p.input_zero_point
    var = np.einsum("ij,ij->i", d, d) + p.var_offset
    std = row_std(var, p.sqrt)
    factor = np.where(std > 0, p.recip_numerator // np.maximum(std, 1), 0)
    y = (d * factor[:, None]) >> p.recip_shift
    t = y * p.multiplier.astype(np.int64) + p.bias
    out = ((t + (1 << (p.out_shift - 1))) >> p.out_shift) + p.output_zero_point
    return np.clip(out, p.qmin, p.qmax).astype(p.output_dtype).reshape(arr.shape)


def layer_norm(x: np.ndarray, p: NormParams) -> np.ndarray:
    """Integer LayerNorm (I-BERT / I-ViT form, see the module docstring)."""
    if p.kind != "layer":
        raise UnsupportedError("layer_norm needs LayerNorm parameters (kind='layer')")
    return integer_norm(x, p)


def rms_norm(x: np.ndarray, p: NormParams) -> np.ndarray:
    """Integer RMSNorm: the LayerNorm machinery with ``d = x - zp_in`` (no mean)."""
    if p.kind != "rms":
        raise UnsupportedError("rms_norm needs RMSNorm parameters (kind='rms')")
    return integer_norm(x, p)


# ---------------------------------------------------------------------------------------------
# Graph adapters
# ---------------------------------------------------------------------------------------------


def _profile_choices(profile: Profile) -> tuple[Sqrt, Literal["ibert", "ivit"]]:
    return profile.sqrt, "ivit" if profile.nonlinear == "ivit" else "ibert"


def _channel_values(info: Any, n: int, node_name: str, role: str) -> list[Fraction]:
    """A constant gamma / beta tensor as exact reals: float data, or dequantized integer codes."""
    if info.data is None:
        raise UnsupportedError(f"node {node_name!r}: {role} {info.name!r} must be a constant")
    data = np.asarray(info.data)
    if data.size != n:
        raise ShapeError(
            f"node {node_name!r}: {role} {info.name!r} has {data.size} values, the normalized "
            f"axis has {n}"
        )
    if data.dtype.kind == "f":
        return _fractions(data, f"node {node_name!r}: {role} {info.name!r}")
    if not info.quantized:
        raise UnsupportedError(
            f"node {node_name!r}: integer {role} {info.name!r} needs a scale (or float data)"
        )
    scales = np.broadcast_to(np.asarray(info.scale, dtype=np.float32).reshape(-1), (n,))
    zps = np.broadcast_to(np.asarray(info.zero_point, dtype=np.int64).reshape(-1), (n,))
    return [
        (int(q) - int(z)) * Fraction(float(s))
        for q, z, s in zip(data.reshape(-1), zps, scales, strict=True)
    ]


def _prepare_node(kind: NormKind, node: Any, tensors: Mapping[str, Any], profile: Profile):
    name = node.name
    if len(node.inputs) not in (2, 3) or len(node.outputs) != 1 or node.inputs[0] is None:
        raise ShapeError(f"node {name!r}: {node.op} takes (x, gamma[, beta]) and one output")
    x = tensors[node.inputs[0]]
    y = tensors[node.outputs[0]]
    for role, info in (("input", x), ("output", y)):
        if not info.quantized:
            raise UnsupportedError(f"node {name!r}: {role} {info.name!r} is not quantized")
        if info.per_channel:
            raise UnsupportedError(f"node {name!r}: {role} {info.name!r} must be per-tensor")
    rank = len(x.shape)
    axis = int(node.attrs.get("axis", -1))
    if rank == 0 or axis not in (-1, rank - 1):
        raise UnsupportedError(
            f"node {name!r}: {node.op} normalizes the last axis only (axis={axis}, rank {rank})"
        )
    n = x.shape[-1]
    if n is None:
        raise ShapeError(f"node {name!r}: the normalized axis of {x.name!r} must have a fixed size")
    gamma_name = node.inputs[1]
    if gamma_name is None:
        raise ShapeError(f"node {name!r}: {node.op} needs a gamma input")
    gamma = _channel_values(tensors[gamma_name], n, name, "gamma")
    beta_name = node.inputs[2] if len(node.inputs) == 3 else None
    beta = None if beta_name is None else _channel_values(tensors[beta_name], n, name, "beta")
    sqrt, numerator = _profile_choices(profile)
    return prepare_norm(
        kind,
        n=int(n),
        input_scale=x.scalar_scale(),
        input_zero_point=x.scalar_zero_point(),
        input_dtype=x.dtype,
        gamma=gamma,
        beta=beta,
        epsilon=float(node.attrs.get("epsilon", 1e-5)),
        output_scale=y.scalar_scale(),
        output_zero_point=y.scalar_zero_point(),
        output_dtype=y.dtype,
        sqrt=sqrt,
        numerator=numerator,
        what=f"node {name!r}",
    )


def _prepare_layer_norm(node: Any, tensors: Mapping[str, Any], profile: Profile) -> NormParams:
    return _prepare_node("layer", node, tensors, profile)


def _prepare_rms_norm(node: Any, tensors: Mapping[str, Any], profile: Profile) -> NormParams:
    return _prepare_node("rms", node, tensors, profile)


def _run(params: NormParams, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    return [integer_norm(inputs[0], params)]


def _register() -> None:
    from refq.kernels.registry import register

    register("LAYER_NORM", prepare=_prepare_layer_norm, run=_run)
    register("RMS_NORM", prepare=_prepare_rms_norm, run=_run)


_register()
