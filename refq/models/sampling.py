"""Token generation with a KV cache: greedy (temperature 0) or temperature / top-k sampling.

Works with any ``step(tokens, start_pos) -> logits (T, vocab)`` that keeps its own KV cache
(the float reference here, :class:`refq.models.integer.IntegerLM`), so both generate the same
way. When the context is full, the last ``max_seq_len // 2`` tokens are re-encoded from
position 0 (a fresh cache) and decoding continues: deterministic, and the same for every engine.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from refq.errors import ShapeError

Step = Callable[[np.ndarray, int], np.ndarray]


def pick(logits: np.ndarray, temperature: float, rng: np.random.Generator, top_k: int = 0) -> int:
    """Greedy argmax (lowest index on ties) if ``temperature <= 0``, else a softmax sample of
    ``logits / temperature`` restricted to the ``top_k`` largest (all if 0)."""
    if temperature <= 0:
        return int(np.argmax(logits))
    z = logits.astype(np.float64) / temperature
    if top_k and top_k < z.size:
        kth = np.partition(z, -top_k)[-top_k]
        z = np.where(z < kth, -np.inf, z)
    p = np.exp(z - z.max())
    p /= p.sum()
    return int(rng.choice(z.size, p=p))


def generate(
    make_step: Callable[[], Step],
    prompt: np.ndarray,
    n_new: int,
    max_seq_len: int,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int = 0,
) -> np.ndarray:
    """``n_new`` tokens after ``prompt``. ``make_step()`` returns a step function with a fresh
    KV cache (called again when the context window is re-encoded)."""
    prompt = np.asarray(prompt, dtype=np.int64).reshape(-1)
    if prompt.size == 0:
        raise ShapeError("generate needs a non-empty prompt")
    rng = np.random.default_rng(seed)
    keep = max(1, max_seq_len // 2)
    ctx = prompt[-max_seq_len:]
    step = make_step()
    logits = step(ctx, 0)[-1]
    pos = ctx.size
    out: list[int] = []
    history = list(ctx)
    for _ in range(n_new):
        tok = pick(logits, temperature, rng, top_k)
        out.append(tok)
        history.append(tok)
        if pos >= max_seq_len:  # window full: re-encode the most recent tokens
            ctx = np.asarray(history[-keep:], dtype=np.int64)
            step = make_step()
            logits = step(ctx, 0)[-1]
            pos = ctx.size
        else:
            logits = step(np.asarray([tok]), pos)[-1]
            pos += 1
    return np.asarray(out, dtype=np.int64)


def llama_generate(
    weights: dict[str, np.ndarray],
    cfg,
    prompt: np.ndarray,
    n_new: int,
    temperature: float = 0.0,
    top_k: int = 0,
    seed: int = 0,
) -> np.ndarray:
    """:func:`generate` with the float reference :func:`refq.models.llama.forward`."""
    from refq.models import llama

    # A cache as long as this generation needs (SmolLM2's 8,192 positions would be 377 MB).
    cache_len = min(cfg.max_seq_len, np.asarray(prompt).size + n_new)

    def make_step() -> Step:
        cache = llama.KVCache(cfg, max_seq_len=cache_len)
        return lambda t, p: llama.forward(weights, cfg, t, cache, p)

    return generate(make_step, prompt, n_new, cfg.max_seq_len, temperature, top_k, seed)
