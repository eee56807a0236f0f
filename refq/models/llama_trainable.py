"""The Llama forward pass on autograd :class:`~refq.models.autograd.Tensor` s, batched (B, T).

Same graph and weight names as :func:`refq.models.llama.forward` (no KV cache: training sees
whole windows). ``hook(point, tensor)`` is called at every activation point of
:func:`refq.models.layout.llama_graph`, in graph order;
returning a Tensor replaces the value, which is how quantization-aware training inserts
:func:`~refq.models.autograd.fake_quant_ste` at the points a quantization config names.
Layouts differ from the NumPy pass where batching needs it: per-token points are
``(B, T, features)``; ``q_rot`` / ``k_rot`` are ``(B, heads, T, head_dim)``; ``scores`` /
``probs`` are ``(B, n_kv_heads, group, T, T)`` with the causal mask applied inside the softmax
(``scores`` holds unmasked values).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from refq.errors import ShapeError
from refq.models import autograd as ag
from refq.models.autograd import Tensor
from refq.models.config import LlamaConfig
from refq.models.llama import rope_tables

Hook = Callable[[str, Tensor], "Tensor | None"]


def _emit(hook: Hook | None, name: str, t: Tensor) -> Tensor:
    if hook is None:
        return t
    out = hook(name, t)
    return t if out is None else out


def forward(
    params: dict[str, Tensor], cfg: LlamaConfig, tokens: np.ndarray, hook: Hook | None = None
) -> Tensor:
    """Logits (B, T, vocab) of token windows ``tokens`` (B, T), causal within each window."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise ShapeError(f"tokens must be (batch, time), got shape {tokens.shape}")
    B, T = tokens.shape
    H, KV, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    g = H // KV
    dtype = params["tok_embeddings"].data.dtype
    cos, sin = (t.astype(dtype) for t in rope_tables(np.arange(T), hd, cfg.rope_theta))

    x = _emit(hook, "embed", ag.embedding(params["tok_embeddings"], tokens))
    for layer in range(cfg.n_layers):
        p = f"layers.{layer}"
        a = f"{p}.attn"
        h = _emit(hook, f"{p}.attn_norm.out", ag.rmsnorm(x, params[f"{p}.attn_norm"], cfg.norm_eps))
        q = _emit(hook, f"{a}.q", ag.linear(h, params[f"{a}.wq"]))
        k = _emit(hook, f"{a}.k", ag.linear(h, params[f"{a}.wk"]))
        v = _emit(hook, f"{a}.v", ag.linear(h, params[f"{a}.wv"]))
        q = ag.rope(ag.transpose(ag.reshape(q, (B, T, H, hd)), (0, 2, 1, 3)), cos, sin)
        q = _emit(hook, f"{a}.q_rot", q)
        k = ag.rope(ag.transpose(ag.reshape(k, (B, T, KV, hd)), (0, 2, 1, 3)), cos, sin)
        k = _emit(hook, f"{a}.k_rot", k)
        v = ag.transpose(ag.reshape(v, (B, T, KV, hd)), (0, 2, 1, 3))
        # GQA: the g query heads of a group share one key/value head (broadcast axis 2).
        qg = ag.reshape(q, (B, KV, g, T, hd))
        kt = ag.transpose(ag.reshape(k, (B, KV, 1, T, hd)), (0, 1, 2, 4, 3))
        scores = _emit(hook, f"{a}.scores", ag.scale(ag.matmul(qg, kt), 1.0 / np.sqrt(hd)))
        probs = _emit(hook, f"{a}.probs", ag.causal_softmax(scores))
        ctx = ag.matmul(probs, ag.reshape(v, (B, KV, 1, T, hd)))  # (B, KV, g, T, hd)
        ctx = ag.reshape(ag.transpose(ctx, (0, 3, 1, 2, 4)), (B, T, H * hd))
        ctx = _emit(hook, f"{a}.ctx", ctx)
        out = _emit(hook, f"{a}.out", ag.linear(ctx, params[f"{a}.wo"]))
        x = _emit(hook, f"{p}.attn_resid", ag.add(x, out))
        h = _emit(hook, f"{p}.ffn_norm.out", ag.rmsnorm(x, params[f"{p}.ffn_norm"], cfg.norm_eps))
        gate = _emit(hook, f"{p}.ffn.gate", ag.linear(h, params[f"{p}.ffn.w1"]))
        up = _emit(hook, f"{p}.ffn.up", ag.linear(h, params[f"{p}.ffn.w3"]))
        act = _emit(hook, f"{p}.ffn.act", ag.silu(gate))
        hidden = _emit(hook, f"{p}.ffn.hidden", ag.mul(act, up))
        out = _emit(hook, f"{p}.ffn.out", ag.linear(hidden, params[f"{p}.ffn.w2"]))
        x = _emit(hook, f"{p}.ffn_resid", ag.add(x, out))
    x = _emit(hook, "norm.out", ag.rmsnorm(x, params["norm"], cfg.norm_eps))
    head = params["tok_embeddings"] if cfg.tied_embeddings else params["output"]
    return _emit(hook, "logits", ag.linear(x, head))


def loss(
    params: dict[str, Tensor],
    cfg: LlamaConfig,
    tokens: np.ndarray,
    targets: np.ndarray,
    hook: Hook | None = None,
) -> Tensor:
    """Mean next-token cross-entropy (nats) of ``forward(tokens)`` against ``targets``."""
    return ag.cross_entropy(forward(params, cfg, tokens, hook), targets)


def as_params(weights: dict[str, np.ndarray], dtype: type = np.float32) -> dict[str, Tensor]:
    """Wrap a weight dict as trainable leaf tensors (copies, in ``dtype``)."""
    return {
        n: Tensor(np.array(w, dtype=dtype), requires_grad=True, name=n) for n, w in weights.items()
    }
