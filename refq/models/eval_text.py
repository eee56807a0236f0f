"""Perplexity of a causal LM on text, and the committed evaluation corpora.

Convention (used for every number in docs/): the token sequence is cut into consecutive,
non-overlapping windows of ``window`` tokens (a shorter last window is kept if it has >= 2
tokens); each window is run from an empty context and its tokens ``1..n-1`` are predicted
from the preceding ones. Perplexity ``= exp(total NLL / predictions)``; bits per byte (byte
models) ``= total NLL / predictions / ln 2``.

Run the SmolLM2 check by hand (minutes)::

    OPENBLAS_NUM_THREADS=1 nice -n 10 python -m refq.models.eval_text smollm2
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from refq.errors import ShapeError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
PYDOC_TOPICS = DATA_DIR / "pydoc_topics_3.11.7.txt"

LogitsFn = Callable[[np.ndarray], np.ndarray]


def window_nll(
    logits_fn: LogitsFn,
    tokens: np.ndarray,
    window: int,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[float, int]:
    """(summed NLL in nats, number of predictions) over non-overlapping windows."""
    tokens = np.asarray(tokens).reshape(-1)
    if window < 2:
        raise ShapeError(f"perplexity window must be >= 2 tokens, got {window}")
    starts = [s for s in range(0, tokens.size, window) if tokens.size - s >= 2]
    total, count = 0.0, 0
    for i, s in enumerate(starts):
        chunk = tokens[s : s + window]
        logits = np.asarray(logits_fn(chunk[:-1]), dtype=np.float64)
        m = logits.max(axis=-1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(logits - m).sum(axis=-1))
        tgt = chunk[1:].astype(np.int64)
        total += float(np.sum(lse - logits[np.arange(tgt.size), tgt]))
        count += tgt.size
        if progress is not None:
            progress(i + 1, len(starts))
    return total, count


def perplexity(logits_fn: LogitsFn, tokens: np.ndarray, window: int, **kw) -> float:
    """``exp(mean NLL)`` under the windowing convention of this module."""
    nats, n = window_nll(logits_fn, tokens, window, **kw)
    return math.exp(nats / n)


def bits_per_token(logits_fn: LogitsFn, tokens: np.ndarray, window: int, **kw) -> float:
    """Mean NLL in bits (bits per byte for a byte-level model)."""
    nats, n = window_nll(logits_fn, tokens, window, **kw)
    return nats / n / math.log(2)


def pydoc_topics_text() -> str:
    """The committed slice of CPython 3.11.7 ``pydoc_data/topics.py``: the topics sorted by
    key and joined by blank lines, cut at a blank line after 75,000 characters."""
    return PYDOC_TOPICS.read_text(encoding="utf-8")


def _bar(done: int, total: int) -> None:
    sys.stderr.write(f"\r  window {done}/{total}")
    if done == total:
        sys.stderr.write("\n")
    sys.stderr.flush()


def smollm2_perplexity(n_tokens: int = 16384, window: int = 2048) -> dict[str, float]:
    """Float perplexity of SmolLM2-135M-Instruct (dequantized GGUF) on the first ``n_tokens``
    tokens of the pydoc topics slice, no BOS (the GGUF sets ``add_bos_token = false``)."""
    from refq.models import llama
    from refq.models.gguf_loader import load_smollm2

    t0 = time.perf_counter()
    cfg, weights, tok = load_smollm2()
    ids = np.asarray(tok.encode(pydoc_topics_text()).ids[:n_tokens], dtype=np.int64)
    if ids.size < n_tokens:
        raise ShapeError(f"the pydoc slice has only {ids.size} tokens, {n_tokens} asked")
    t1 = time.perf_counter()
    nats, n = window_nll(lambda t: llama.forward(weights, cfg, t), ids, window, progress=_bar)
    return {
        "perplexity": math.exp(nats / n),
        "predictions": n,
        "tokens": int(ids.size),
        "window": window,
        "load_seconds": t1 - t0,
        "eval_seconds": time.perf_counter() - t1,
    }


if __name__ == "__main__":
    if sys.argv[1:] != ["smollm2"]:
        sys.exit("usage: python -m refq.models.eval_text smollm2")
    print(smollm2_perplexity())
