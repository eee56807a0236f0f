"""Top-1 agreement of a quantized engine with the float model's greedy decoding.

The float model generates ``n`` tokens greedily after a prompt (:func:`refq.models.sampling.
generate`: argmax, lowest id on ties; when the context of ``max_seq_len`` positions is full,
the last ``max_seq_len // 2`` tokens are re-encoded from position 0). The quantized engine is
then *teacher-forced* along that same token sequence, with the same contexts, and

    agreement = #{i : argmax(quantized logits predicting token i) == float token i} / n.

``first_mismatch`` is the index of the first disagreement (``n`` if none): the length of the
common prefix the two engines would generate if both decoded freely. ``tied`` counts the
predictions whose quantized maximum is shared by several tokens (int8 logits over a large
vocabulary tie often), ``tie_hits`` those where the float token is among the tied maxima.

Teacher forcing runs one full-sequence pass per context segment (:func:`greedy_segments`)
instead of one call per token: causal attention makes the logits at position ``p`` depend only
on tokens ``0..p`` (for the integer engine bit for bit, refq.models.integer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from refq.errors import ShapeError

LogitsFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Segment:
    """One context from position 0: its ``tokens``; the logits at ``positions[j]`` predict
    generated token ``targets[j]``."""

    tokens: np.ndarray
    positions: tuple[int, ...]
    targets: tuple[int, ...]


@dataclass
class AgreementResult:
    matches: int
    total: int
    first_mismatch: int
    tied: int
    tie_hits: int

    @property
    def agreement(self) -> float:
        return self.matches / self.total

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "agreement": self.agreement}


def greedy_segments(prompt: np.ndarray, generated: np.ndarray, max_seq_len: int) -> list[Segment]:
    """The contexts in which :func:`refq.models.sampling.generate` produced ``generated``
    after ``prompt`` (same window rule), as segments to teacher-force (module docstring)."""
    prompt = np.asarray(prompt, dtype=np.int64).reshape(-1)
    gen = np.asarray(generated, dtype=np.int64).reshape(-1)
    if prompt.size == 0:
        raise ShapeError("agreement needs a non-empty prompt")
    if gen.size == 0:
        raise ShapeError("agreement needs at least one generated token")
    if max_seq_len < 1:
        raise ShapeError(f"max_seq_len must be >= 1, got {max_seq_len}")
    keep = max(1, max_seq_len // 2)
    history = list(prompt)
    seg = list(prompt[-max_seq_len:])
    positions, targets = [len(seg) - 1], [0]
    out: list[Segment] = []
    for i in range(gen.size - 1):  # token i is fed; the next logits predict token i + 1
        history.append(int(gen[i]))
        if len(seg) >= max_seq_len:  # the window is full: generate re-encodes the recent tokens
            out.append(Segment(np.asarray(seg, np.int64), tuple(positions), tuple(targets)))
            seg = history[-keep:]
            positions, targets = [len(seg) - 1], [i + 1]
        else:
            seg.append(int(gen[i]))
            positions.append(len(seg) - 1)
            targets.append(i + 1)
    out.append(Segment(np.asarray(seg, np.int64), tuple(positions), tuple(targets)))
    return out


def top1_agreement(
    logits_fn: LogitsFn,
    prompt: np.ndarray,
    generated: np.ndarray,
    max_seq_len: int,
) -> AgreementResult:
    """Teacher-forced top-1 agreement of ``logits_fn`` (a window from an empty context ->
    ``(T, vocab)`` logits, float or integer codes) with the float greedy tokens ``generated``."""
    gen = np.asarray(generated, dtype=np.int64).reshape(-1)
    matches = tied = tie_hits = 0
    first = gen.size
    for seg in greedy_segments(prompt, gen, max_seq_len):
        logits = np.asarray(logits_fn(seg.tokens))
        if logits.ndim != 2 or logits.shape[0] != seg.tokens.size:
            raise ShapeError(
                f"logits of a {seg.tokens.size}-token segment have shape {logits.shape}"
            )
        for pos, tgt in zip(seg.positions, seg.targets, strict=True):
            row = logits[pos]
            best = row.max()
            n_best = int(np.count_nonzero(row == best))
            want = int(gen[tgt])
            if int(np.argmax(row)) == want:
                matches += 1
            elif tgt < first:
                first = tgt
            if n_best > 1:
                tied += 1
            if row[want] == best:
                tie_hits += 1
    return AgreementResult(matches, int(gen.size), int(first), tied, tie_hits)
