"""Model descriptions shared by float and integer execution.

A model is a config dataclass plus a flat ``dict[str, np.ndarray]`` of weights whose names are
fixed by :func:`llama_weight_shapes` / :func:`bert_weight_shapes` (documented in
docs/tiny-lm.md). Matrices are stored ``(out_features, in_features)``: a linear layer computes
``y = x @ W.T``, so per-output-channel quantization is along axis 0. Every bias is named
``<module>.bias``; Llama has none.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from refq.errors import ModelFormatError, ShapeError


@dataclass(frozen=True)
class LlamaConfig:
    """A Llama-style decoder: RMSNorm, RoPE (interleaved pairs), GQA attention, SwiGLU MLP."""

    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    ffn_dim: int
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    max_seq_len: int = 2048
    tied_embeddings: bool = True

    arch = "llama"

    def __post_init__(self) -> None:
        for field in ("vocab_size", "dim", "n_layers", "n_heads", "n_kv_heads", "ffn_dim"):
            if int(getattr(self, field)) <= 0:
                raise ModelFormatError(
                    f"llama config: {field} must be positive, got {getattr(self, field)}"
                )
        if self.dim % self.n_heads:
            raise ModelFormatError(
                f"llama config: dim {self.dim} not divisible by n_heads {self.n_heads}"
            )
        if self.n_heads % self.n_kv_heads:
            raise ModelFormatError(
                f"llama config: n_heads {self.n_heads} not divisible by "
                f"n_kv_heads {self.n_kv_heads}"
            )
        if self.head_dim % 2:
            raise ModelFormatError(f"llama config: head_dim {self.head_dim} must be even for RoPE")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, **dataclasses.asdict(self)}


@dataclass(frozen=True)
class BertConfig:
    """A BERT-style encoder: post-LayerNorm, erf GELU, padding mask, mean pooling + L2 norm."""

    vocab_size: int
    dim: int
    n_layers: int
    n_heads: int
    ffn_dim: int
    max_pos: int = 512
    type_vocab_size: int = 2
    norm_eps: float = 1e-12
    # sentence-transformers all-MiniLM-L6-v2: mean over unmasked tokens, then L2 normalize.
    pooling: str = "mean"
    normalize: bool = True

    arch = "bert"

    def __post_init__(self) -> None:
        for field in ("vocab_size", "dim", "n_layers", "n_heads", "ffn_dim", "max_pos"):
            if int(getattr(self, field)) <= 0:
                raise ModelFormatError(
                    f"bert config: {field} must be positive, got {getattr(self, field)}"
                )
        if self.dim % self.n_heads:
            raise ModelFormatError(
                f"bert config: dim {self.dim} not divisible by n_heads {self.n_heads}"
            )
        if self.pooling not in ("mean", "cls"):
            raise ModelFormatError(
                f"bert config: pooling must be 'mean' or 'cls', got {self.pooling!r}"
            )

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch, **dataclasses.asdict(self)}


ModelConfig = LlamaConfig | BertConfig


def config_from_dict(d: dict[str, Any]) -> ModelConfig:
    """Rebuild a config from :meth:`to_dict` output (the ``arch`` key selects the class)."""
    if not isinstance(d, dict):
        raise ModelFormatError(f"model config must be a JSON object, got {type(d).__name__}")
    d = dict(d)
    arch = d.pop("arch", None)
    classes = {"llama": LlamaConfig, "bert": BertConfig}
    if arch not in classes:
        raise ModelFormatError(f"unknown architecture {arch!r}; known: {', '.join(classes)}")
    cls = classes[arch]
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ModelFormatError(f"{arch} config: unknown fields {unknown}")
    try:
        return cls(**d)
    except TypeError as exc:
        raise ModelFormatError(f"{arch} config: {exc}") from None


def llama_weight_shapes(cfg: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """Every weight of a Llama model, in forward order: name -> shape."""
    d, hd = cfg.dim, cfg.head_dim
    shapes: dict[str, tuple[int, ...]] = {"tok_embeddings": (cfg.vocab_size, d)}
    for i in range(cfg.n_layers):
        p = f"layers.{i}"
        shapes[f"{p}.attn_norm"] = (d,)
        shapes[f"{p}.attn.wq"] = (cfg.n_heads * hd, d)
        shapes[f"{p}.attn.wk"] = (cfg.n_kv_heads * hd, d)
        shapes[f"{p}.attn.wv"] = (cfg.n_kv_heads * hd, d)
        shapes[f"{p}.attn.wo"] = (d, cfg.n_heads * hd)
        shapes[f"{p}.ffn_norm"] = (d,)
        shapes[f"{p}.ffn.w1"] = (cfg.ffn_dim, d)  # gate
        shapes[f"{p}.ffn.w3"] = (cfg.ffn_dim, d)  # up
        shapes[f"{p}.ffn.w2"] = (d, cfg.ffn_dim)  # down
    shapes["norm"] = (d,)
    if not cfg.tied_embeddings:
        shapes["output"] = (cfg.vocab_size, d)
    return shapes


def bert_weight_shapes(cfg: BertConfig) -> dict[str, tuple[int, ...]]:
    """Every weight of a BERT encoder, in forward order: name -> shape."""
    d, f = cfg.dim, cfg.ffn_dim
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word": (cfg.vocab_size, d),
        "embeddings.position": (cfg.max_pos, d),
        "embeddings.token_type": (cfg.type_vocab_size, d),
        "embeddings.norm": (d,),
        "embeddings.norm.bias": (d,),
    }
    for i in range(cfg.n_layers):
        p = f"layers.{i}"
        for w in ("wq", "wk", "wv", "wo"):
            shapes[f"{p}.attn.{w}"] = (d, d)
            shapes[f"{p}.attn.{w}.bias"] = (d,)
        shapes[f"{p}.attn_norm"] = (d,)
        shapes[f"{p}.attn_norm.bias"] = (d,)
        shapes[f"{p}.ffn.w1"] = (f, d)
        shapes[f"{p}.ffn.w1.bias"] = (f,)
        shapes[f"{p}.ffn.w2"] = (d, f)
        shapes[f"{p}.ffn.w2.bias"] = (d,)
        shapes[f"{p}.ffn_norm"] = (d,)
        shapes[f"{p}.ffn_norm.bias"] = (d,)
    return shapes


def weight_shapes(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Expected weight names and shapes for any supported config."""
    if isinstance(cfg, LlamaConfig):
        return llama_weight_shapes(cfg)
    return bert_weight_shapes(cfg)


def check_weights(
    cfg: ModelConfig, weights: dict[str, np.ndarray], source: str = "weights"
) -> None:
    """Raise if ``weights`` lacks a tensor, has an extra one, or one has the wrong shape."""
    expected = weight_shapes(cfg)
    missing = [n for n in expected if n not in weights]
    if missing:
        raise ModelFormatError(
            f"{source}: missing tensors {missing[:5]}{'...' if len(missing) > 5 else ''}"
        )
    extra = sorted(set(weights) - set(expected))
    if extra:
        raise ModelFormatError(
            f"{source}: unexpected tensors {extra[:5]}{'...' if len(extra) > 5 else ''}"
        )
    for name, shape in expected.items():
        if tuple(weights[name].shape) != shape:
            raise ShapeError(
                f"{source}: tensor {name!r} has shape {tuple(weights[name].shape)}, "
                f"expected {shape}"
            )


def n_params(cfg: ModelConfig) -> int:
    """Number of parameters (tied embeddings counted once)."""
    return int(sum(int(np.prod(s)) for s in weight_shapes(cfg).values()))


def init_llama_weights(cfg: LlamaConfig, seed: int = 0, std: float = 0.02) -> dict[str, np.ndarray]:
    """Random float32 weights: N(0, std) matrices (output projections scaled by 1/sqrt(2L),
    as GPT-2 does, so the residual stream does not grow with depth), unit norm weights."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for name, shape in llama_weight_shapes(cfg).items():
        if len(shape) == 1:
            out[name] = np.ones(shape, np.float32)
            continue
        s = std / np.sqrt(2 * cfg.n_layers) if name.endswith((".wo", ".w2")) else std
        out[name] = (rng.standard_normal(shape) * s).astype(np.float32)
    return out
