"""ATTENTION: int8 multi-head attention with grouped-query heads, causal mask and an int8 KV cache.

refq op ``ATTENTION(q, k, v, position, k_cache, v_cache) -> out`` (no single peer op; every step
is a peer kernel's arithmetic). Shapes: ``q [T, Hq*D]``, ``k``, ``v [T, Hkv*D]`` (already projected
and rotated), ``position`` an int32 scalar (tokens already cached), state tensors
``k_cache``, ``v_cache [Hkv, max_seq, D]`` (int8, mutated in place). Query head ``h`` reads kv
head ``h // (Hq / Hkv)`` (Hugging Face ``repeat_kv`` order). For token ``t`` (absolute position
``position + t``):

1. **Cache write**: ``cache[:, position + t] = k[t]`` (``v`` alike); when the cache's
   quantization differs from the input's, ``clamp(MBQM(k - zp_k, M, shift) + zp_cache)`` with
   ``M 2^shift = s_k / s_cache``.
2. **Scores**: ``acc[h, t, j] = sum_d (q - zp_q)(k_cache[g, j] - zp_kc)`` (exact int32) for the
   causal prefix ``j <= position + t``; ``sc = clamp(MBQM(acc, M_s, shift_s) + zp_s)`` as int8 or
   int16 codes (attr ``score_dtype``) of scale ``s_score`` (attr ``score_scale``), with
   ``M_s 2^shift_s = s_q s_kc / (sqrt(D) s_score)``: the ``1/sqrt(D)`` is folded into the
   multiplier.
3. **Softmax** over the causal prefix only (masked positions are absent, not ``-inf`` codes):
   int8 scores use TFLM's int8 softmax (:func:`refq.kernels.softmax.softmax_rows_s8`, beta 1,
   probabilities ``P = code + 128`` in [0, 255] of scale 1/256; attr ``long_rows`` for contexts
   with 512+ tokens near the row maximum), int16 scores TFLM's int16 softmax (``P`` in
   [0, 32767], scale 1/32768).
4. **Values**: ``acc_o[h, t, d] = sum_j P[h, t, j] (v_cache[g, j, d] - zp_vc)`` (exact int32) and
   ``out = clamp(MBQM(acc_o, M_o, shift_o) + zp_out)``, ``M_o 2^shift_o = s_P s_vc / s_out``.

Every row depends only on its own query and cache prefix, so decoding one token at a time and
processing a whole sequence at once give identical outputs (tested bit for bit). All heads and
tokens are computed together (batched exact integer matmuls, ``refq.intmatmul``), with no
Python loop over tokens or heads. :class:`AttentionParams` records every intermediate's
quantization for the C code generator.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from refq import fixedpoint as fp
from refq.errors import QuantSpecError, ShapeError, UnsupportedError
from refq.intmatmul import int_matmul
from refq.kernels import fastpath
from refq.kernels.registry import register
from refq.kernels.softmax import (
    SoftmaxS8Params,
    SoftmaxS16Params,
    prepare_softmax_s8,
    prepare_softmax_s16,
    softmax_rows_s8,
    softmax_rows_s16,
)
from refq.profiles import Profile, Rounding
from refq.spec import QDType


@dataclass(frozen=True)
class Requant:
    """``y = clamp(MBQM(x - input_zero_point, multiplier, shift) + output_zero_point)`` into
    ``dtype``; ``copy`` when input and output quantization are equal (``y = x``)."""

    input_zero_point: int
    multiplier: int
    shift: int
    output_zero_point: int
    dtype: str
    copy: bool = False

    def apply(self, x: np.ndarray, rounding: Rounding) -> NDArray[np.int64]:
        x = np.asarray(x, dtype=np.int64)
        if self.copy:
            return x
        y = fp.multiply_by_quantized_multiplier(
            x - self.input_zero_point, self.multiplier, self.shift, rounding
        )
        dt = QDType.parse(self.dtype)
        return np.clip(np.asarray(y, np.int64) + self.output_zero_point, dt.qmin, dt.qmax)


def make_requant(
    s_in: float, zp_in: int, s_out: float, zp_out: int, dtype: str, rounding: Rounding, what: str
) -> Requant:
    """A :class:`Requant` from real scales (``copy`` when the quantization is unchanged)."""
    if float(s_in) == float(s_out) and zp_in == zp_out:
        return Requant(zp_in, 0, 0, zp_out, dtype, copy=True)
    real = float(s_in) / float(s_out)
    m, shift = fp.quantize_multiplier(real, rounding)
    if not -31 <= shift <= 30:
        raise QuantSpecError(f"{what}: multiplier {real!r} gives shift {shift} outside [-31, 30]")
    return Requant(zp_in, m, shift, zp_out, dtype)


@dataclass(frozen=True)
class AttentionParams:
    """Every constant of ATTENTION (see the module docstring for the steps they belong to)."""

    num_heads: int
    num_kv_heads: int
    head_dim: int
    max_seq: int
    q_zero_point: int
    k_store: Requant
    v_store: Requant
    k_cache_zero_point: int
    v_cache_zero_point: int
    score_scale: float
    score_dtype: str
    score: Requant  # acc -> score codes (input zero point 0)
    softmax: SoftmaxS8Params | SoftmaxS16Params
    prob_offset: int  # P = softmax code + prob_offset
    prob_scale: float
    output: Requant  # acc_o -> output codes (input zero point 0)
    rounding: Rounding = "double"
    name: str = "attention"

    @property
    def group(self) -> int:
        return self.num_heads // self.num_kv_heads


def prepare_attention(
    *,
    num_heads: int,
    num_kv_heads: int,
    head_dim: int,
    max_seq: int,
    q: tuple[float, int],
    k: tuple[float, int],
    v: tuple[float, int],
    k_cache: tuple[float, int],
    v_cache: tuple[float, int],
    out: tuple[float, int],
    score_scale: float,
    score_dtype: str = "int8",
    long_rows: str = "raise",
    rounding: Rounding = "double",
    name: str = "attention",
) -> AttentionParams:
    """Derive :class:`AttentionParams`; quantizations are ``(scale, zero_point)`` pairs."""
    if num_heads <= 0 or num_kv_heads <= 0 or num_heads % num_kv_heads:
        raise ShapeError(
            f"ATTENTION {name!r}: num_heads {num_heads} must be a positive multiple of "
            f"num_kv_heads {num_kv_heads}"
        )
    if head_dim <= 0 or max_seq <= 0:
        raise ShapeError(f"ATTENTION {name!r}: head_dim and max_seq must be positive")
    if score_dtype not in ("int8", "int16"):
        raise UnsupportedError(f"ATTENTION {name!r}: score_dtype must be int8 or int16")
    if not (math.isfinite(score_scale) and score_scale > 0):
        raise QuantSpecError(
            f"ATTENTION {name!r}: score_scale must be positive, got {score_scale!r}"
        )
    k_store = make_requant(*k, *k_cache, "int8", rounding, f"ATTENTION {name!r} k -> k_cache")
    v_store = make_requant(*v, *v_cache, "int8", rounding, f"ATTENTION {name!r} v -> v_cache")
    score_real = float(q[0]) * float(k_cache[0]) / (math.sqrt(head_dim) * float(score_scale))
    m_s, sh_s = fp.quantize_multiplier(score_real, rounding)
    if not -31 <= sh_s <= 30:
        raise QuantSpecError(f"ATTENTION {name!r}: score multiplier {score_real!r} out of range")
    score = Requant(0, m_s, sh_s, 0, score_dtype)
    sm_name = f"{name}/softmax"
    if score_dtype == "int8":
        softmax: SoftmaxS8Params | SoftmaxS16Params = prepare_softmax_s8(
            score_scale, 1.0, output_bits=8, rounding=rounding, long_rows=long_rows, name=sm_name
        )
        prob_offset, prob_scale = 128, 1.0 / 256
    else:
        softmax = prepare_softmax_s16(score_scale, 1.0, rounding=rounding, name=sm_name)
        prob_offset, prob_scale = 0, 1.0 / 32768
    out_real = prob_scale * float(v_cache[0]) / float(out[0])
    m_o, sh_o = fp.quantize_multiplier(out_real, rounding)
    if not -31 <= sh_o <= 30:
        raise QuantSpecError(f"ATTENTION {name!r}: output multiplier {out_real!r} out of range")
    output = Requant(0, m_o, sh_o, int(out[1]), "int8")
    return AttentionParams(
        num_heads,
        num_kv_heads,
        head_dim,
        max_seq,
        int(q[1]),
        k_store,
        v_store,
        int(k_cache[1]),
        int(v_cache[1]),
        float(score_scale),
        score_dtype,
        score,
        softmax,
        prob_offset,
        prob_scale,
        output,
        rounding,
        name,
    )


def _heads(x: np.ndarray, heads: int, d: int, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.dtype != np.int8:
        raise ShapeError(f"{what}: must be int8 codes, got {x.dtype}")
    if x.ndim == 2 and x.shape[1] == heads * d:
        return x.reshape(x.shape[0], heads, d)
    if x.ndim == 3 and x.shape[1:] == (heads, d):
        return x
    raise ShapeError(f"{what}: expected [T, {heads * d}] or [T, {heads}, {d}], got {x.shape}")


def attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    position: int,
    k_cache: np.ndarray,
    v_cache: np.ndarray,
    p: AttentionParams,
    fast: bool = True,
) -> NDArray[np.int8]:
    """Run ATTENTION (module docstring); writes the new keys / values into the caches in place
    and returns ``[T, Hq * D]`` int8. ``fast``: the compiled loops of
    :func:`refq.kernels.fastpath.attention` (same arithmetic); ``False``: the NumPy steps below."""
    hq, hkv, d, g = p.num_heads, p.num_kv_heads, p.head_dim, p.group
    q3 = _heads(q, hq, d, f"ATTENTION {p.name!r} q")
    k3 = _heads(k, hkv, d, f"ATTENTION {p.name!r} k")
    v3 = _heads(v, hkv, d, f"ATTENTION {p.name!r} v")
    t = q3.shape[0]
    if k3.shape[0] != t or v3.shape[0] != t:
        raise ShapeError(
            f"ATTENTION {p.name!r}: q, k, v have {t}, {k3.shape[0]}, {v3.shape[0]} tokens"
        )
    for cache, what in ((k_cache, "k_cache"), (v_cache, "v_cache")):
        if cache.shape != (hkv, p.max_seq, d) or cache.dtype != np.int8:
            raise ShapeError(
                f"ATTENTION {p.name!r}: {what} must be int8 [{hkv}, {p.max_seq}, {d}], got "
                f"{cache.dtype} {cache.shape}"
            )
    pos = int(position)
    end = pos + t
    if pos < 0 or end > p.max_seq:
        raise ShapeError(
            f"ATTENTION {p.name!r}: position {pos} + {t} tokens exceeds the cache length "
            f"max_seq={p.max_seq}"
        )
    if fast:  # decode / prefill speed; None where the NumPy steps raise (they then do)
        out = fastpath.attention(q3, k3, v3, pos, k_cache, v_cache, p)
        if out is not None:
            return out
    k_cache[:, pos:end, :] = p.k_store.apply(k3, p.rounding).transpose(1, 0, 2)
    v_cache[:, pos:end, :] = p.v_store.apply(v3, p.rounding).transpose(1, 0, 2)

    # Query heads grouped by kv head: [Hkv, G*T, D] (head h = kv * G + j).
    qh = (q3.astype(np.int32) - p.q_zero_point).transpose(1, 0, 2).reshape(hkv, g * t, d)
    kh = k_cache[:, :end, :].astype(np.int32) - p.k_cache_zero_point
    acc = int_matmul(qh, kh.transpose(0, 2, 1))  # [Hkv, G*T, L], exact int32
    scores = p.score.apply(acc, p.rounding).reshape(hq * t, end)
    causal = np.arange(end)[None, :] <= pos + np.arange(t)[:, None]  # [T, L]
    valid = np.broadcast_to(causal, (hq, t, end)).reshape(hq * t, end)
    if isinstance(p.softmax, SoftmaxS8Params):
        probs = softmax_rows_s8(scores, p.softmax, valid, shape=(hq, t, end)) + p.prob_offset
        probs = np.where(valid, probs, 0)
    else:
        probs = softmax_rows_s16(scores, p.softmax, valid, shape=(hq, t, end))
    vh = v_cache[:, :end, :].astype(np.int32) - p.v_cache_zero_point
    acc_o = int_matmul(probs.reshape(hkv, g * t, end).astype(np.int32), vh)  # [Hkv, G*T, D]
    out = p.output.apply(acc_o, p.rounding).reshape(hq, t, d).transpose(1, 0, 2)
    return out.reshape(t, hq * d).astype(np.int8)


def float_attention(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, num_heads: int, num_kv_heads: int
) -> np.ndarray:
    """Float64 causal attention of a whole sequence (``[T, H, D]`` inputs), for error bounds."""
    t, _, d = q.shape
    g = num_heads // num_kv_heads
    kk = np.repeat(k, g, axis=1)
    vv = np.repeat(v, g, axis=1)
    s = np.einsum("thd,shd->hts", q, kk) / math.sqrt(d)
    s = np.where(np.tril(np.ones((t, t), bool))[None], s, -np.inf)
    s = np.exp(s - s.max(axis=-1, keepdims=True))
    s = s / s.sum(axis=-1, keepdims=True)
    return np.einsum("hts,shd->thd", s, vv)


# --- graph adapter ---------------------------------------------------------------------------


def _qp(t: Any, node: Any) -> tuple[float, int]:
    if not t.quantized or t.dtype != "int8":
        raise UnsupportedError(
            f"ATTENTION node {node.name!r}: tensor {t.name!r} must be quantized int8"
        )
    return t.scalar_scale(), t.scalar_zero_point()


def prepare_attention_node(
    node: Any, tensors: Mapping[str, Any], profile: Profile
) -> AttentionParams:
    """ATTENTION(q, k, v, position, k_cache, v_cache); attrs ``num_heads``, ``num_kv_heads``,
    ``score_scale`` (required), ``score_dtype`` (int8), ``long_rows`` (raise)."""
    if len(node.inputs) != 6 or len(node.outputs) != 1:
        raise ShapeError(
            f"ATTENTION node {node.name!r} takes (q, k, v, position, k_cache, v_cache) -> out"
        )
    tq, tk, tv, _, tkc, tvc = (tensors[n] for n in node.inputs)
    t_out = tensors[node.outputs[0]]
    for t in (tkc, tvc):
        if not t.is_state or len(t.shape) != 3:
            raise ShapeError(
                f"ATTENTION node {node.name!r}: {t.name!r} must be a state tensor [Hkv, max_seq, D]"
            )
    hkv, max_seq, d = tkc.shape
    if "score_scale" not in node.attrs:
        raise QuantSpecError(
            f"ATTENTION node {node.name!r}: attr 'score_scale' (the real value of one score code, "
            "1/sqrt(D) included) is required; calibrate it on the score range"
        )
    return prepare_attention(
        num_heads=int(node.attrs.get("num_heads", hkv)),
        num_kv_heads=int(node.attrs.get("num_kv_heads", hkv)),
        head_dim=int(d),
        max_seq=int(max_seq),
        q=_qp(tq, node),
        k=_qp(tk, node),
        v=_qp(tv, node),
        k_cache=_qp(tkc, node),
        v_cache=_qp(tvc, node),
        out=_qp(t_out, node),
        score_scale=float(node.attrs["score_scale"]),
        score_dtype=str(node.attrs.get("score_dtype", "int8")),
        long_rows=str(node.attrs.get("long_rows", "raise")),
        rounding=profile.rounding,
        name=node.name,
    )


def run_attention_node(
    params: AttentionParams, inputs: Sequence[np.ndarray | None]
) -> list[np.ndarray]:
    q, k, v, position, k_cache, v_cache = inputs
    pos = np.asarray(position)
    if pos.size != 1 or pos.dtype.kind not in "iu":
        raise ShapeError(f"ATTENTION {params.name!r}: position must be one integer")
    return [attention(q, k, v, int(pos.reshape(-1)[0]), k_cache, v_cache, params)]


register("ATTENTION", prepare=prepare_attention_node, run=run_attention_node)

__all__ = [
    "AttentionParams",
    "Requant",
    "attention",
    "float_attention",
    "make_requant",
    "prepare_attention",
]
