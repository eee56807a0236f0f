"""ATTENTION: refq_attention_s8, one step of causal grouped-query attention over a static int8 KV
cache (the model's state region, written at the current position).

Consumes :class:`refq.kernels.attention.AttentionParams` as prepared for the profile: head counts,
zero points, the k / v cache stores (copy or requantization), the score multiplier (1/sqrt(D)
folded in), the softmax of the score dtype (int8: the two reversed 256-entry exponential
tables of :mod:`codegen.ops.softmax`; int16: the multiplier and the 513-entry tables) and the
output multiplier, all with the profile's rounding. The position comes from the graph's int32
tensor at run time; the kernel refuses positions past the cache (the reference raises).
"""

from __future__ import annotations

from codegen.lower import KernelSpec, LowerContext, lowering, register_kernel
from codegen.ops.common import ROUNDING
from codegen.ops.softmax import s8_tables, s16_tables
from refq.graph import Node
from refq.kernels.attention import AttentionParams, Requant
from refq.kernels.softmax import SoftmaxS8Params, SoftmaxS16Params

register_kernel(
    KernelSpec(
        "refq_attention_s8",
        code_bytes=4000,
        support=("refq_softmax_rows.h", "refq_requant.h"),
    )
)

MAX_HEAD_DIM = 32768
"""Exact int32 scores need ``D * 255 * 255 < 2^31``."""


def _round4(v: int) -> int:
    return (v + 3) & ~3


def attention_buffer_size(head_dim: int, max_seq: int) -> int:
    """refq_attention_s8_get_buffer_size: the query row (int16), one row of scores and one of
    probabilities (int16 each) and D int32 accumulators."""
    return 2 * _round4(head_dim) + 4 * _round4(max_seq) + 4 * head_dim


def _store(r: Requant) -> str:
    return (
        f"{{{int(r.copy)}, {-int(r.input_zero_point)}, {int(r.multiplier)}, {int(r.shift)}, "
        f"{int(r.output_zero_point)}}}"
    )


@lowering("ATTENTION")
def lower_attention(ctx: LowerContext, node: Node, p: AttentionParams) -> None:
    q, k, v, position, k_cache, v_cache = node.inputs
    (y,) = node.outputs
    d, hq, hkv = p.head_dim, p.num_heads, p.num_kv_heads
    if d > MAX_HEAD_DIM:
        raise ctx.unsupported(
            f"ATTENTION with head_dim {d} (int32 scores need D <= {MAX_HEAD_DIM})"
        )
    tokens = ctx.shape(q)[0]
    if ctx.count(q) != tokens * hq * d or ctx.count(k) != tokens * hkv * d:
        raise ctx.unsupported(f"ATTENTION of q {ctx.shape(q)}, k {ctx.shape(k)}")
    if ctx.info(position).dtype != "int32" or ctx.count(position) != 1:
        raise ctx.unsupported(f"ATTENTION position {position!r} that is not one int32")
    for cache in (k_cache, v_cache):
        if not ctx.info(cache).is_state:
            raise ctx.unsupported(f"ATTENTION cache {cache!r} that is not a state tensor")
    sm = p.softmax
    if isinstance(sm, SoftmaxS8Params):
        s8, s16 = s8_tables(ctx, sm, f"{node.name}/softmax"), "{0, 0, 0, NULL, NULL}"
        bits = 8
    elif isinstance(sm, SoftmaxS16Params):
        s8, s16 = "{NULL, NULL}", s16_tables(ctx, sm, f"{node.name}/softmax")
        bits = 16
    else:
        raise ctx.unsupported(f"ATTENTION softmax {type(sm).__name__}")
    if p.score.input_zero_point or p.score.output_zero_point or p.output.input_zero_point:
        raise ctx.unsupported("ATTENTION with zero points on the score or accumulator side")
    ctx.call(
        "refq_attention_s8",
        [
            ("num_heads", hq),
            ("num_kv_heads", hkv),
            ("head_dim", d),
            ("max_seq", p.max_seq),
            ("q_offset", -p.q_zero_point),
            ("k_store", _store(p.k_store)),
            ("v_store", _store(p.v_store)),
            ("k_cache_offset", -p.k_cache_zero_point),
            ("v_cache_offset", -p.v_cache_zero_point),
            ("score_bits", bits),
            ("score_multiplier", p.score.multiplier),
            ("score_shift", p.score.shift),
            ("softmax_s8", s8),
            ("softmax_s16", s16),
            ("output_multiplier", p.output.multiplier),
            ("output_shift", p.output.shift),
            ("output_offset", p.output.output_zero_point),
            ("rounding", ROUNDING[p.rounding]),
        ],
        [
            tokens,
            ctx.ptr(q),
            ctx.ptr(k),
            ctx.ptr(v),
            ctx.ptr(position),
            ctx.ptr(k_cache),
            ctx.ptr(v_cache),
            ctx.ptr(y),
        ],
        scratch=attention_buffer_size(d, p.max_seq),
    )
