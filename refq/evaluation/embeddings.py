"""Sentence embeddings of an encoder (MiniLM): integer-only vs float, by cosine similarity.

``cos(a, b) = a.b / (|a| |b|)`` per sentence, in float64; the report gives the mean, the
minimum, the median and the 5th percentile over the sentence set.

The sentence set (``refq/data/eval_sentences.txt``, 128 lines) is derived from the committed
corpora by :func:`derive_sentences`: 64 sentences of the held-out Shakespeare slice and 64 of
the pydoc topics slice, each a sentence of 6-40 words, taken at evenly spaced indices of the
candidates. The encoders' default calibration (``refq quantize minilm``) reads lines of
``shakespeare_train.txt``, which is disjoint from both.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refq.calibration.readers import Progress
from refq.errors import InvalidDataError, ShapeError

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
SENTENCES = DATA_DIR / "eval_sentences.txt"

EmbedFn = Callable[[str], np.ndarray]


@dataclass
class EmbeddingResult:
    """Cosine similarities of ``n`` sentence embeddings (quantized vs float)."""

    cosines: list[float]
    seconds: float = 0.0

    @property
    def n(self) -> int:
        return len(self.cosines)

    def summary(self) -> dict[str, float]:
        c = np.asarray(self.cosines, np.float64)
        return {
            "mean": float(c.mean()),
            "min": float(c.min()),
            "median": float(np.median(c)),
            "p05": float(np.percentile(c, 5)),
        }

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "n": self.n, **self.summary()}


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity of two ``(n, d)`` arrays, in float64."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    if a.shape != b.shape or a.ndim != 2:
        raise ShapeError(f"cosine needs two (n, d) arrays of one shape, got {a.shape}, {b.shape}")
    na = np.linalg.norm(a, axis=1)
    nb = np.linalg.norm(b, axis=1)
    bad = np.flatnonzero((na == 0) | (nb == 0))
    if bad.size:
        raise InvalidDataError(f"embedding row {int(bad[0])} is all zeros; cosine is undefined")
    return np.einsum("ij,ij->i", a, b) / (na * nb)


def _sentences_of(text: str) -> list[str]:
    flat = re.sub(r"\s+", " ", text).strip()
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", flat) if s.strip()]


def _spread(items: Sequence[str], k: int) -> list[str]:
    if len(items) < k:
        raise InvalidDataError(f"only {len(items)} candidate sentences, {k} needed")
    return [items[(i * len(items)) // k] for i in range(k)]


def _keep(s: str) -> bool:
    n = len(s.split())
    return 6 <= n <= 40 and s[0].isupper() and not re.search(r"[*=_`|<>{}\[\]]", s)


def derive_sentences(per_source: int = 64) -> list[str]:
    """The evaluation sentences (module docstring) from the committed corpora.

    Shakespeare: each blank-line separated speech without its ``NAME:`` line; pydoc: each
    blank-line separated paragraph whose lines are not indented (prose, not grammar or code).
    Both are split after ``.``, ``!`` or ``?`` followed by white space."""
    shakespeare, pydoc = [], []
    text = (DATA_DIR / "shakespeare_heldout.txt").read_text(encoding="utf-8")
    for block in text.split("\n\n"):
        lines = block.strip().splitlines()
        if len(lines) >= 2 and lines[0].endswith(":"):
            shakespeare += [s for s in _sentences_of(" ".join(lines[1:])) if _keep(s)]
    text = (DATA_DIR / "pydoc_topics_3.11.7.txt").read_text(encoding="utf-8")
    for block in text.split("\n\n"):
        lines = block.splitlines()
        if lines and not any(ln.startswith((" ", "\t")) for ln in lines):
            pydoc += [s for s in _sentences_of(" ".join(lines)) if _keep(s)]
    uniq = lambda xs: list(dict.fromkeys(xs))  # noqa: E731 - order-preserving dedup
    return _spread(uniq(shakespeare), per_source) + _spread(uniq(pydoc), per_source)


def load_sentences(path: str | os.PathLike | None = None) -> list[str]:
    """Non-empty lines of a sentence file (default: the committed evaluation set)."""
    p = Path(path) if path is not None else SENTENCES
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidDataError(f"sentence file {str(p)!r} cannot be read ({exc})") from None
    out = [s.strip() for s in lines if s.strip()]
    if not out:
        raise InvalidDataError(f"sentence file {str(p)!r} has no sentence")
    return out


def embed_all(
    embed: EmbedFn, sentences: Sequence[str], *, progress: bool = False, label: str = "embed"
) -> np.ndarray:
    """``(n, dim)`` embeddings, one sentence at a time (no padding), with a progress bar."""
    bar = Progress(len(sentences), label, enabled=progress)
    rows = []
    for s in sentences:
        rows.append(np.asarray(embed(s), np.float32).reshape(-1))
        bar.advance()
    return np.stack(rows)


def compare_embeddings(
    reference: np.ndarray,
    candidate: EmbedFn,
    sentences: Sequence[str],
    *,
    progress: bool = False,
    label: str = "embed quantized",
) -> tuple[EmbeddingResult, np.ndarray]:
    """Cosine of ``candidate``'s embedding of every sentence against the ``reference`` rows
    (the float embeddings, :func:`embed_all`); returns the result and the candidate matrix."""
    ref = np.asarray(reference)
    if ref.ndim != 2 or ref.shape[0] != len(sentences):
        raise ShapeError(f"{len(sentences)} sentences but reference embeddings {ref.shape}")
    t0 = time.perf_counter()
    cand = embed_all(candidate, sentences, progress=progress, label=label)
    res = EmbeddingResult([float(c) for c in cosine_rows(cand, ref)], time.perf_counter() - t0)
    return res, cand
