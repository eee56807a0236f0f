"""The tiny byte-level Shakespeare LM shipped in refq/data/: config, corpus, weights, MCU budget.

Corpus: Tiny Shakespeare (public domain), split once into ``shakespeare_train.txt`` (training and
calibration) and ``shakespeare_heldout.txt`` (evaluation only); see refq/data/README.md.
Tokens are raw UTF-8 bytes (vocab 256).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from refq.errors import ModelFormatError
from refq.models.config import LlamaConfig, llama_weight_shapes

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
WEIGHTS = DATA_DIR / "tiny_lm.npz"

TINY_LM = LlamaConfig(
    vocab_size=256,
    dim=128,
    n_layers=4,
    n_heads=4,
    n_kv_heads=2,
    ffn_dim=128,
    rope_theta=10000.0,
    norm_eps=1e-5,
    max_seq_len=128,
    tied_embeddings=True,
)

# STM32H743: 2 MB flash (we allow the model 512 KB of it) and 1 MB SRAM of which the
# 512 KB AXI SRAM is contiguous; we allow the model 192 KB.
FLASH_BUDGET = 512 * 1024
SRAM_BUDGET = 192 * 1024


def encode(text: str) -> np.ndarray:
    """UTF-8 bytes as token ids (int64)."""
    return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int64)


def decode(tokens: np.ndarray) -> str:
    """Token ids back to text (invalid UTF-8 sequences become U+FFFD)."""
    return bytes(np.asarray(tokens, dtype=np.uint8).tolist()).decode("utf-8", errors="replace")


def corpus(split: str) -> np.ndarray:
    """The committed corpus as uint8 tokens: ``split`` is ``"train"`` or ``"heldout"``."""
    if split not in ("train", "heldout"):
        raise ValueError(f"unknown corpus split {split!r}; use 'train' or 'heldout'")
    return np.frombuffer((DATA_DIR / f"shakespeare_{split}.txt").read_bytes(), dtype=np.uint8)


def load_tiny_lm(path: str | Path | None = None) -> tuple[LlamaConfig, dict[str, np.ndarray]]:
    """The trained float32 weights (default: refq/data/tiny_lm.npz) and their config."""
    from refq.models.train import load_checkpoint

    p = Path(path) if path is not None else WEIGHTS
    if not p.exists():
        raise ModelFormatError(f"{p}: tiny LM weights not found (train with `refq train-tiny`)")
    cfg, weights, _ = load_checkpoint(p)
    return cfg, weights


def mcu_memory(
    cfg: LlamaConfig,
    weight_bytes: float = 1.0,
    act_bytes: int = 1,
    kv_bytes: int = 1,
    context: int | None = None,
) -> dict[str, int]:
    """Flash and SRAM estimate of the integer model decoding one token at a time.

    Flash: every matrix at ``weight_bytes`` per element, plus 8 bytes per output channel
    (int32 multiplier + shift for per-channel requantization) and 4 bytes per norm weight.
    SRAM: the KV cache (``n_layers * 2 * context * kv_dim * kv_bytes``) plus every per-token
    buffer of one decode step held at once, without reuse (an upper bound): residual,
    normed input, q/k/v, ctx (``act_bytes``), int32 attention scores + ``act_bytes`` probs for
    all heads over the context, int32 gate / up, the hidden product, one int32 accumulator row
    of the widest linear, and int32 logits."""
    n = context or cfg.max_seq_len
    flash = 0
    for _name, shape in llama_weight_shapes(cfg).items():
        if len(shape) == 2:
            flash += math.ceil(shape[0] * shape[1] * weight_bytes) + 8 * shape[0]
        else:
            flash += 4 * shape[0]
    kv = cfg.n_layers * 2 * n * cfg.kv_dim * kv_bytes
    d, f = cfg.dim, cfg.ffn_dim
    acts = (
        act_bytes * (d + d + d + 2 * cfg.kv_dim + d)  # x, norm out, q, k, v, ctx
        + cfg.n_heads * n * (4 + act_bytes)  # scores (int32) and probs
        + 2 * f * 4  # gate, up as int32
        + f * act_bytes  # hidden
        + 4 * max(d, f, cfg.vocab_size)  # accumulator row
        + 4 * cfg.vocab_size  # logits
    )
    return {"flash": flash, "kv_cache": kv, "activations": acts, "sram": kv + acts}
