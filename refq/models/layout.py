"""The named graph of each architecture: ops in execution order, their activation points and
the weights they read.

This is the contract between the float forward passes (which call ``observe(point, value)`` at
every op output listed here, in this order), calibration (which records activations by point
name) and the integer model (which walks the same ops). Point names are distinct from weight
names: ``layers.3.attn.wq`` is a weight, ``layers.3.attn_norm.out`` the activation feeding it.

Shapes seen by ``observe`` for one sequence of ``T`` new tokens (``S`` = cached + new):
per-token points are ``(T, features)``; ``attn.scores`` / ``attn.probs`` are
``(n_heads, T, S)`` (BERT: ``(batch, n_heads, T, T)`` and per-token points ``(batch, T, f)``).
Masked slots of ``attn.scores`` (future positions, padded keys) are ``-inf`` and their
``attn.probs`` are 0: observers must skip non-finite values. The float passes re-apply the
mask after ``observe``, so a replacement cannot unmask a slot.
"""

from __future__ import annotations

from dataclasses import dataclass

from refq.models.config import BertConfig, LlamaConfig, ModelConfig


@dataclass(frozen=True)
class Op:
    """One op of the model graph.

    ``kind`` is one of: embedding, rmsnorm, layernorm, linear, rope, attn_scores, softmax,
    attn_context, add, mul, silu, gelu, pool. ``features`` is the size of the output's last
    axis (``None`` for attention scores / probabilities, whose last axis is the key length).
    """

    kind: str
    output: str
    inputs: tuple[str, ...]
    weights: tuple[str, ...] = ()
    features: int | None = None


def llama_graph(cfg: LlamaConfig) -> list[Op]:
    """The Llama decoder as in :func:`refq.models.llama.forward`.

    ``attn_scores`` reads ``q_rot`` and the key cache (``k_rot`` of this and earlier steps) and
    includes the 1/sqrt(head_dim) factor; ``softmax`` applies the causal mask.
    """
    d, kv, f = cfg.dim, cfg.kv_dim, cfg.ffn_dim
    ops = [Op("embedding", "embed", ("tokens",), ("tok_embeddings",), d)]
    x = "embed"
    for i in range(cfg.n_layers):
        p = f"layers.{i}"
        a = f"{p}.attn"
        ops += [
            Op("rmsnorm", f"{p}.attn_norm.out", (x,), (f"{p}.attn_norm",), d),
            Op("linear", f"{a}.q", (f"{p}.attn_norm.out",), (f"{a}.wq",), d),
            Op("linear", f"{a}.k", (f"{p}.attn_norm.out",), (f"{a}.wk",), kv),
            Op("linear", f"{a}.v", (f"{p}.attn_norm.out",), (f"{a}.wv",), kv),
            Op("rope", f"{a}.q_rot", (f"{a}.q",), (), d),
            Op("rope", f"{a}.k_rot", (f"{a}.k",), (), kv),
            Op("attn_scores", f"{a}.scores", (f"{a}.q_rot", f"{a}.k_rot"), (), None),
            Op("softmax", f"{a}.probs", (f"{a}.scores",), (), None),
            Op("attn_context", f"{a}.ctx", (f"{a}.probs", f"{a}.v"), (), d),
            Op("linear", f"{a}.out", (f"{a}.ctx",), (f"{a}.wo",), d),
            Op("add", f"{p}.attn_resid", (x, f"{a}.out"), (), d),
            Op("rmsnorm", f"{p}.ffn_norm.out", (f"{p}.attn_resid",), (f"{p}.ffn_norm",), d),
            Op("linear", f"{p}.ffn.gate", (f"{p}.ffn_norm.out",), (f"{p}.ffn.w1",), f),
            Op("linear", f"{p}.ffn.up", (f"{p}.ffn_norm.out",), (f"{p}.ffn.w3",), f),
            Op("silu", f"{p}.ffn.act", (f"{p}.ffn.gate",), (), f),
            Op("mul", f"{p}.ffn.hidden", (f"{p}.ffn.act", f"{p}.ffn.up"), (), f),
            Op("linear", f"{p}.ffn.out", (f"{p}.ffn.hidden",), (f"{p}.ffn.w2",), d),
            Op("add", f"{p}.ffn_resid", (f"{p}.attn_resid", f"{p}.ffn.out"), (), d),
        ]
        x = f"{p}.ffn_resid"
    ops.append(Op("rmsnorm", "norm.out", (x,), ("norm",), d))
    head = "tok_embeddings" if cfg.tied_embeddings else "output"
    ops.append(Op("linear", "logits", ("norm.out",), (head,), cfg.vocab_size))
    return ops


def bert_graph(cfg: BertConfig) -> list[Op]:
    """The BERT encoder as in :func:`refq.models.bert.forward` (post-LayerNorm blocks)."""
    d, f = cfg.dim, cfg.ffn_dim
    e = "embeddings"
    ops = [
        Op(
            "embedding",
            "embed",
            ("tokens", "positions", "token_types"),
            (f"{e}.word", f"{e}.position", f"{e}.token_type"),
            d,
        ),
        Op("layernorm", "embed_norm.out", ("embed",), (f"{e}.norm", f"{e}.norm.bias"), d),
    ]
    x = "embed_norm.out"
    for i in range(cfg.n_layers):
        p = f"layers.{i}"
        a = f"{p}.attn"
        ops += [
            Op("linear", f"{a}.q", (x,), (f"{a}.wq", f"{a}.wq.bias"), d),
            Op("linear", f"{a}.k", (x,), (f"{a}.wk", f"{a}.wk.bias"), d),
            Op("linear", f"{a}.v", (x,), (f"{a}.wv", f"{a}.wv.bias"), d),
            Op("attn_scores", f"{a}.scores", (f"{a}.q", f"{a}.k"), (), None),
            Op("softmax", f"{a}.probs", (f"{a}.scores",), (), None),
            Op("attn_context", f"{a}.ctx", (f"{a}.probs", f"{a}.v"), (), d),
            Op("linear", f"{a}.out", (f"{a}.ctx",), (f"{a}.wo", f"{a}.wo.bias"), d),
            Op("add", f"{p}.attn_resid", (x, f"{a}.out"), (), d),
            Op(
                "layernorm",
                f"{p}.attn_norm.out",
                (f"{p}.attn_resid",),
                (f"{p}.attn_norm", f"{p}.attn_norm.bias"),
                d,
            ),
            Op(
                "linear",
                f"{p}.ffn.up",
                (f"{p}.attn_norm.out",),
                (f"{p}.ffn.w1", f"{p}.ffn.w1.bias"),
                f,
            ),
            Op("gelu", f"{p}.ffn.hidden", (f"{p}.ffn.up",), (), f),
            Op(
                "linear",
                f"{p}.ffn.out",
                (f"{p}.ffn.hidden",),
                (f"{p}.ffn.w2", f"{p}.ffn.w2.bias"),
                d,
            ),
            Op("add", f"{p}.ffn_resid", (f"{p}.attn_norm.out", f"{p}.ffn.out"), (), d),
            Op(
                "layernorm",
                f"{p}.ffn_norm.out",
                (f"{p}.ffn_resid",),
                (f"{p}.ffn_norm", f"{p}.ffn_norm.bias"),
                d,
            ),
        ]
        x = f"{p}.ffn_norm.out"
    ops.append(Op("pool", "pooled", (x, "attention_mask"), (), d))
    return ops


def model_graph(cfg: ModelConfig) -> list[Op]:
    """The op list of any supported architecture."""
    return llama_graph(cfg) if isinstance(cfg, LlamaConfig) else bert_graph(cfg)


def linears(cfg: ModelConfig) -> list[Op]:
    """The linear layers (weight name in ``op.weights[0]``, input point in ``op.inputs[0]``)."""
    return [op for op in model_graph(cfg) if op.kind == "linear"]


def activation_points(cfg: ModelConfig) -> list[str]:
    """Every point ``observe`` is called with, in call order (per forward call)."""
    return [op.output for op in model_graph(cfg)]
