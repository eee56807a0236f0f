"""Perplexity of any engine (float, fake-quantized, integer-only) on held-out tokens.

The windowing convention is :mod:`refq.models.eval_text`'s (every number in docs/ uses it):
the tokens are cut into consecutive, non-overlapping windows of ``window`` tokens (a shorter
last window is kept if it has >= 2 tokens), each window runs from an empty context, and its
tokens ``1..n-1`` are predicted. With ``z = logits[i]`` predicting target ``y``, the NLL is
``logsumexp(z) - z[y]`` (float64), and

    perplexity = exp(sum NLL / predictions),    bits per token = sum NLL / predictions / ln 2.

:func:`evaluate_perplexity` scores the first ``max_windows`` windows only when asked (the
SmolLM2 integer runs take minutes per window), keeps the NLL of every window so subsets can be
compared between engines, and draws a progress bar on stderr.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from refq.calibration.readers import Progress
from refq.errors import ShapeError
from refq.models.eval_text import window_nll

LogitsFn = Callable[[np.ndarray], np.ndarray]


@dataclass
class PerplexityResult:
    """Summed NLL (nats) and prediction count over the scored windows (module docstring)."""

    nll: float
    predictions: int
    window: int
    tokens: int
    seconds: float = 0.0
    window_nll: list[float] = field(default_factory=list)
    window_predictions: list[int] = field(default_factory=list)

    @property
    def windows(self) -> int:
        return len(self.window_nll)

    @property
    def perplexity(self) -> float:
        return math.exp(self.nll / self.predictions)

    @property
    def bits_per_token(self) -> float:
        return self.nll / self.predictions / math.log(2)

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(
            perplexity=self.perplexity,
            bits_per_token=self.bits_per_token,
            windows=self.windows,
        )
        return d


def eval_windows(
    tokens: np.ndarray, window: int, max_windows: int | None = None
) -> list[np.ndarray]:
    """The windows of the convention (module docstring), the first ``max_windows`` of them."""
    t = np.asarray(tokens, dtype=np.int64).reshape(-1)
    if window < 2:
        raise ShapeError(f"perplexity window must be >= 2 tokens, got {window}")
    if max_windows is not None and max_windows < 1:
        raise ShapeError(f"the number of perplexity windows must be >= 1, got {max_windows}")
    out = [t[s : s + window] for s in range(0, t.size, window) if t.size - s >= 2]
    if not out:
        raise ShapeError(f"perplexity needs at least 2 tokens of text, got {t.size}")
    return out[:max_windows]


def evaluate_perplexity(
    logits_fn: LogitsFn,
    tokens: np.ndarray,
    window: int,
    max_windows: int | None = None,
    *,
    progress: bool = False,
    label: str = "perplexity",
) -> PerplexityResult:
    """Score ``logits_fn`` (one window of ``n`` tokens -> ``(n, vocab)`` logits, from an empty
    context) on the first ``max_windows`` windows of ``tokens`` (all if None)."""
    chunks = eval_windows(tokens, window, max_windows)
    bar = Progress(len(chunks), label, enabled=progress)
    res = PerplexityResult(0.0, 0, int(window), int(sum(c.size for c in chunks)))
    t0 = time.perf_counter()
    for chunk in chunks:
        # One window at a time through eval_text's NLL, so the convention has one definition.
        nats, n = window_nll(logits_fn, chunk, chunk.size)
        res.window_nll.append(nats)
        res.window_predictions.append(n)
        res.nll += nats
        res.predictions += n
        bar.advance()
    res.seconds = time.perf_counter() - t0
    return res
