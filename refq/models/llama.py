"""Float32 NumPy reference of a Llama-style decoder, top to bottom like llama2.c.

Per layer: ``x += Wo·attn(rope(Wq·n), rope(Wk·n), Wv·n)`` with ``n = rmsnorm(x)``, then
``x += W2·(silu(W1·m) * W3·m)`` with ``m = rmsnorm(x)``; logits ``= rmsnorm(x)·E^T`` (tied).

- RMSNorm: ``y = x / sqrt(mean(x^2) + eps) * w``.
- RoPE, interleaved pairs (llama.cpp's ``LLAMA_ROPE_TYPE_NORM``, used for GGUF ``llama``
  models such as SmolLM2, and Meta's original layout): within each head, the pair
  ``(x[2i], x[2i+1])`` at position ``p`` is rotated by ``p * theta^(-2i/head_dim)``.
  Hugging Face checkpoints use rotate-half pairs ``(x[i], x[i + hd/2])`` instead; their Q/K
  rows convert with :func:`permute_rotate_half_to_interleaved` (llama.cpp's converter applies
  the same permutation when writing GGUF, so GGUF weights load unchanged).
- GQA: query head ``h`` reads key/value head ``h // (n_heads // n_kv_heads)``.
- Causal mask: the token at absolute position ``p`` attends to positions ``0..p``.

``forward(weights, cfg, tokens, cache, start_pos)`` takes ``T >= 1`` new tokens; with a
:class:`KVCache` decoding one token at a time gives the logits of the full-sequence pass.
``observe(point, value)`` is called at every activation point of
:func:`refq.models.layout.llama_graph`, in that order; returning an array replaces the value
(fake-quantization simulation), returning ``None`` keeps it (calibration).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from refq.errors import InvalidDataError, ShapeError
from refq.models.config import LlamaConfig
from refq.models.observe import Observe
from refq.models.observe import emit as _emit


@dataclass
class KVCache:
    """Post-RoPE keys and values per layer: ``k[l]``, ``v[l]`` of shape (max_seq_len, kv_dim)."""

    cfg: LlamaConfig
    max_seq_len: int = 0
    dtype: type = np.float32
    k: list[np.ndarray] = field(default_factory=list)
    v: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = self.max_seq_len or self.cfg.max_seq_len
        self.max_seq_len = n
        self.k = [np.zeros((n, self.cfg.kv_dim), self.dtype) for _ in range(self.cfg.n_layers)]
        self.v = [np.zeros((n, self.cfg.kv_dim), self.dtype) for _ in range(self.cfg.n_layers)]


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """``x / sqrt(mean(x^2, -1) + eps) * w`` in float32."""
    ms = np.mean(x * x, axis=-1, keepdims=True, dtype=np.float32)
    return (x * (1.0 / np.sqrt(ms + np.float32(eps)))).astype(np.float32) * w


def rope_tables(
    positions: np.ndarray, head_dim: int, theta: float
) -> tuple[np.ndarray, np.ndarray]:
    """cos / sin of ``p * theta^(-2i/head_dim)``, shape (len(positions), head_dim // 2).

    Angles are formed in float64 and rounded once to float32, so a position's table does not
    depend on how many positions are computed together."""
    i = np.arange(head_dim // 2, dtype=np.float64)
    inv_freq = theta ** (-2.0 * i / head_dim)
    ang = positions.astype(np.float64)[:, None] * inv_freq[None, :]
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


def apply_rope(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotate interleaved pairs of ``x`` (T, n_heads, head_dim) by the (T, head_dim/2) tables."""
    x0, x1 = x[..., 0::2], x[..., 1::2]
    c, s = cos[:, None, :], sin[:, None, :]
    out = np.empty_like(x)
    out[..., 0::2] = x0 * c - x1 * s
    out[..., 1::2] = x0 * s + x1 * c
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    """``1 / (1 + exp(-x))`` without overflow and without cancellation for large ``|x|``."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)


def silu(x: np.ndarray) -> np.ndarray:
    """``x * sigmoid(x)``."""
    return x * sigmoid(x)


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


def permute_rotate_half_to_interleaved(w: np.ndarray, n_heads: int) -> np.ndarray:
    """Reorder the rows of a Q or K weight (n_heads*hd, in) from rotate-half to interleaved RoPE.

    Row ``h*hd + 2i + s`` of the result is row ``h*hd + s*hd/2 + i`` of ``w`` (s in {0, 1}),
    so pair ``(i, i + hd/2)`` of the rotate-half layout becomes pair ``(2i, 2i+1)``."""
    rows = w.shape[0]
    if rows % (2 * n_heads):
        raise ShapeError(f"cannot permute {rows} rows into {n_heads} heads of even size")
    hd = rows // n_heads
    return w.reshape(n_heads, 2, hd // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def forward(
    weights: dict[str, np.ndarray],
    cfg: LlamaConfig,
    tokens: np.ndarray,
    cache: KVCache | None = None,
    start_pos: int = 0,
    observe: Observe | None = None,
) -> np.ndarray:
    """Logits (T, vocab) for ``T`` new tokens at positions ``start_pos .. start_pos+T-1``.

    Without a cache, ``start_pos`` must be 0 (a temporary cache holds the T positions)."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1 or tokens.size == 0:
        raise ShapeError(f"tokens must be a non-empty 1-D array, got shape {tokens.shape}")
    if tokens.min() < 0 or tokens.max() >= cfg.vocab_size:
        bad = int(tokens[(tokens < 0) | (tokens >= cfg.vocab_size)][0])
        raise InvalidDataError(f"token id {bad} outside vocabulary [0, {cfg.vocab_size})")
    T = tokens.size
    if cache is None:
        if start_pos != 0:
            raise ShapeError("start_pos > 0 needs the KV cache of the earlier positions")
        cache = KVCache(cfg, max_seq_len=T)
    end = start_pos + T
    if start_pos < 0 or end > cache.max_seq_len:
        raise ShapeError(
            f"positions {start_pos}..{end - 1} do not fit the KV cache of {cache.max_seq_len}"
        )
    H, KV, hd = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    group = H // KV
    cos, sin = rope_tables(np.arange(start_pos, end), hd, cfg.rope_theta)
    # Query at absolute position start_pos+t sees keys 0..start_pos+t.
    mask = np.arange(end)[None, :] > np.arange(start_pos, end)[:, None]
    scale = np.float32(1.0 / np.sqrt(hd))

    x = _emit(observe, "embed", weights["tok_embeddings"][tokens].astype(np.float32))
    for layer in range(cfg.n_layers):
        p = f"layers.{layer}"
        a = f"{p}.attn"
        # --- attention ---
        xb = _emit(
            observe, f"{p}.attn_norm.out", rmsnorm(x, weights[f"{p}.attn_norm"], cfg.norm_eps)
        )
        q = _emit(observe, f"{a}.q", xb @ weights[f"{a}.wq"].T)
        k = _emit(observe, f"{a}.k", xb @ weights[f"{a}.wk"].T)
        v = _emit(observe, f"{a}.v", xb @ weights[f"{a}.wv"].T)
        q = apply_rope(q.reshape(T, H, hd), cos, sin).reshape(T, H * hd)
        q = _emit(observe, f"{a}.q_rot", q)
        k = apply_rope(k.reshape(T, KV, hd), cos, sin).reshape(T, KV * hd)
        k = _emit(observe, f"{a}.k_rot", k)
        cache.k[layer][start_pos:end] = k
        cache.v[layer][start_pos:end] = v
        keys = cache.k[layer][:end].reshape(end, KV, hd)
        vals = cache.v[layer][:end].reshape(end, KV, hd)
        # (KV, group, T, hd) @ (KV, 1, hd, S) -> (KV, group, T, S) -> (H, T, S)
        qh = q.reshape(T, KV, group, hd).transpose(1, 2, 0, 3)
        scores = ((qh @ keys.transpose(1, 2, 0)[:, None]) * scale).reshape(H, T, end)
        # masked (future) slots are -inf before and after observe: they are not scores
        scores = _emit(observe, f"{a}.scores", np.where(mask[None], -np.inf, scores))
        probs = softmax(np.where(mask[None], -np.inf, scores), axis=-1).astype(np.float32)
        probs = _emit(observe, f"{a}.probs", probs)
        ctx = probs.reshape(KV, group, T, end) @ vals.transpose(1, 0, 2)[:, None]  # (KV,g,T,hd)
        ctx = _emit(observe, f"{a}.ctx", ctx.transpose(2, 0, 1, 3).reshape(T, H * hd))
        out = _emit(observe, f"{a}.out", ctx @ weights[f"{a}.wo"].T)
        x = _emit(observe, f"{p}.attn_resid", x + out)
        # --- SwiGLU feed-forward ---
        xb = _emit(observe, f"{p}.ffn_norm.out", rmsnorm(x, weights[f"{p}.ffn_norm"], cfg.norm_eps))
        gate = _emit(observe, f"{p}.ffn.gate", xb @ weights[f"{p}.ffn.w1"].T)
        up = _emit(observe, f"{p}.ffn.up", xb @ weights[f"{p}.ffn.w3"].T)
        act = _emit(observe, f"{p}.ffn.act", silu(gate))
        hidden = _emit(observe, f"{p}.ffn.hidden", act * up)
        out = _emit(observe, f"{p}.ffn.out", hidden @ weights[f"{p}.ffn.w2"].T)
        x = _emit(observe, f"{p}.ffn_resid", x + out)
    x = _emit(observe, "norm.out", rmsnorm(x, weights["norm"], cfg.norm_eps))
    head = weights["tok_embeddings"] if cfg.tied_embeddings else weights["output"]
    return _emit(observe, "logits", (x @ head.T).astype(np.float32))
