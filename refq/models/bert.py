"""Float32 NumPy reference of a BERT-style encoder and sentence-transformers pooling.

Embeddings: ``LayerNorm(word[ids] + position[0..T-1] + token_type[types])``. Each layer is
post-LayerNorm (BERT): ``h = LN(x + Wo·attn(Wq·x+bq, Wk·x+bk, Wv·x+bv))``,
``x = LN(h + W2·gelu(W1·h + b1) + b2)``, with ``LN(x) = (x - mean) / sqrt(var + eps) * g + b``
(biased variance) and the exact erf GELU ``0.5 x (1 + erf(x / sqrt(2)))``. Keys where
``attention_mask == 0`` get probability 0. :func:`sentence_embedding` then averages the final
hidden states over unmasked tokens and L2-normalizes, as all-MiniLM-L6-v2 (sentence-transformers
Pooling(mean) + Normalize) does.

``observe(point, value)`` is called at the points of :func:`refq.models.layout.bert_graph`.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from refq.errors import InvalidDataError, ShapeError
from refq.models.config import BertConfig
from refq.models.llama import softmax
from refq.models.observe import Observe
from refq.models.observe import emit as _emit


@numba.vectorize(["float32(float32)", "float64(float64)"], cache=True)
def _erf(x):  # NumPy has no erf; math.erf is the C library's correctly rounded-ish erf
    return math.erf(x)


def gelu(x: np.ndarray) -> np.ndarray:
    """Exact GELU ``0.5 x (1 + erf(x / sqrt 2))`` (BERT ``hidden_act = "gelu"``), in x's dtype."""
    half, r2 = x.dtype.type(0.5), x.dtype.type(1.0 / math.sqrt(2.0))
    return half * x * (x.dtype.type(1.0) + _erf(x * r2))


def layernorm(x: np.ndarray, g: np.ndarray, b: np.ndarray, eps: float) -> np.ndarray:
    """``(x - mean) / sqrt(var + eps) * g + b`` over the last axis (biased variance)."""
    mu = x.mean(axis=-1, keepdims=True)
    xc = x - mu
    var = (xc * xc).mean(axis=-1, keepdims=True)
    return (xc / np.sqrt(var + np.float32(eps))) * g + b


def _check_inputs(
    cfg: BertConfig, ids: np.ndarray, mask: np.ndarray | None, types: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ids = np.asarray(ids)
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.shape[1] == 0:
        raise ShapeError(f"input_ids must be (batch, time) with time >= 1, got shape {ids.shape}")
    if ids.shape[1] > cfg.max_pos:
        raise ShapeError(f"sequence of {ids.shape[1]} tokens exceeds max_pos {cfg.max_pos}")
    if ids.min() < 0 or ids.max() >= cfg.vocab_size:
        raise InvalidDataError(f"input_ids outside vocabulary [0, {cfg.vocab_size})")
    mask = np.ones(ids.shape, np.int64) if mask is None else np.asarray(mask).reshape(ids.shape)
    types = np.zeros(ids.shape, np.int64) if types is None else np.asarray(types).reshape(ids.shape)
    if types.min() < 0 or types.max() >= cfg.type_vocab_size:
        raise InvalidDataError(f"token_type_ids outside [0, {cfg.type_vocab_size})")
    if np.any(mask.sum(axis=1) == 0):
        raise InvalidDataError("attention_mask has a row with no unmasked token")
    return ids, mask, types


def forward(
    weights: dict[str, np.ndarray],
    cfg: BertConfig,
    input_ids: np.ndarray,
    attention_mask: np.ndarray | None = None,
    token_type_ids: np.ndarray | None = None,
    observe: Observe | None = None,
) -> np.ndarray:
    """Final hidden states (batch, T, dim); 1-D ``input_ids`` are a batch of one."""
    ids, mask, types = _check_inputs(cfg, input_ids, attention_mask, token_type_ids)
    B, T = ids.shape
    H, hd = cfg.n_heads, cfg.head_dim
    e = "embeddings"
    x = (
        weights[f"{e}.word"][ids]
        + weights[f"{e}.position"][np.arange(T)][None]
        + weights[f"{e}.token_type"][types]
    ).astype(np.float32)
    x = _emit(observe, "embed", x)
    x = _emit(
        observe,
        "embed_norm.out",
        layernorm(x, weights[f"{e}.norm"], weights[f"{e}.norm.bias"], cfg.norm_eps),
    )
    key_masked = (mask == 0)[:, None, None, :]  # (B, 1, 1, T)
    scale = np.float32(1.0 / math.sqrt(hd))

    def lin(v: np.ndarray, name: str) -> np.ndarray:
        return v @ weights[name].T + weights[f"{name}.bias"]

    for layer in range(cfg.n_layers):
        p = f"layers.{layer}"
        a = f"{p}.attn"
        q = _emit(observe, f"{a}.q", lin(x, f"{a}.wq"))
        k = _emit(observe, f"{a}.k", lin(x, f"{a}.wk"))
        v = _emit(observe, f"{a}.v", lin(x, f"{a}.wv"))
        qh = q.reshape(B, T, H, hd).transpose(0, 2, 1, 3)
        kh = k.reshape(B, T, H, hd).transpose(0, 2, 3, 1)
        vh = v.reshape(B, T, H, hd).transpose(0, 2, 1, 3)
        # padded keys are -inf before and after observe (B, H, T, T)
        scores = _emit(observe, f"{a}.scores", np.where(key_masked, -np.inf, (qh @ kh) * scale))
        probs = softmax(np.where(key_masked, -np.inf, scores), axis=-1).astype(np.float32)
        probs = _emit(observe, f"{a}.probs", probs)
        ctx = (probs @ vh).transpose(0, 2, 1, 3).reshape(B, T, H * hd)
        ctx = _emit(observe, f"{a}.ctx", ctx)
        out = _emit(observe, f"{a}.out", lin(ctx, f"{a}.wo"))
        h = _emit(observe, f"{p}.attn_resid", x + out)
        h = layernorm(h, weights[f"{p}.attn_norm"], weights[f"{p}.attn_norm.bias"], cfg.norm_eps)
        h = _emit(observe, f"{p}.attn_norm.out", h)
        up = _emit(observe, f"{p}.ffn.up", lin(h, f"{p}.ffn.w1"))
        hidden = _emit(observe, f"{p}.ffn.hidden", gelu(up))
        out = _emit(observe, f"{p}.ffn.out", lin(hidden, f"{p}.ffn.w2"))
        x = _emit(observe, f"{p}.ffn_resid", h + out)
        x = layernorm(x, weights[f"{p}.ffn_norm"], weights[f"{p}.ffn_norm.bias"], cfg.norm_eps)
        x = _emit(observe, f"{p}.ffn_norm.out", x)
    return x


def pool(hidden: np.ndarray, attention_mask: np.ndarray, cfg: BertConfig) -> np.ndarray:
    """Mean over unmasked tokens (or the first token for ``pooling="cls"``), then L2 normalize
    with a 1e-12 floor on the norm (sentence-transformers Normalize)."""
    m = np.asarray(attention_mask, dtype=np.float32).reshape(hidden.shape[:2])[..., None]
    if cfg.pooling == "cls":
        pooled = hidden[:, 0]
    else:
        pooled = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), np.float32(1e-9))
    if cfg.normalize:
        pooled = pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)
    return pooled.astype(np.float32)


def sentence_embedding(
    weights: dict[str, np.ndarray],
    cfg: BertConfig,
    input_ids: np.ndarray,
    attention_mask: np.ndarray | None = None,
    token_type_ids: np.ndarray | None = None,
    observe: Observe | None = None,
) -> np.ndarray:
    """Sentence embeddings (batch, dim): :func:`forward` then :func:`pool`."""
    ids = np.asarray(input_ids)
    if ids.ndim == 1:
        ids = ids[None]
    mask = np.ones(ids.shape, np.int64) if attention_mask is None else np.asarray(attention_mask)
    hidden = forward(weights, cfg, ids, mask, token_type_ids, observe)
    return _emit(observe, "pooled", pool(hidden, mask, cfg))
