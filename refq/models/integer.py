"""The integer engine: run a quantized model's integer graph (refq.ptq.lower) token by token.

:class:`IntegerLM` (decoders) wraps a :class:`~refq.graph.Program` of the graph: the graph's
inputs are ``tokens`` (int32 ``(T,)``) and ``position`` (tokens already in the KV cache, whose
state tensors persist in the program between calls). ``step(tokens, start_pos)`` appends ``T``
tokens at ``start_pos``; the same graph serves prefill (``T`` tokens at 0) and decode (one
token at a time), and because every kernel row depends only on its own token and the cache
prefix, both give the same logit codes bit for bit. Outputs are integer logit codes (int8 or
int16, the ``logits`` point's dtype) with :meth:`IntegerLM.dequantize` giving
``(code - zp) * scale`` in float32. Greedy / sampled generation uses
:func:`refq.models.sampling.generate` (ties of integer logits go to the lowest token id).

:class:`IntegerEncoder` (BERT): the encoder graph has a fixed sequence length (RESHAPE), so
one program per length is prepared on first use and kept. The graph outputs the final hidden
states as int8; sentence embeddings are their dequantized mean over tokens, L2-normalized
(float post-processing, as sentence-transformers' Pooling + Normalize).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from refq.errors import InvalidDataError, ShapeError
from refq.graph import Graph, Program


class IntegerLM:
    """A decoder's integer graph under a profile, with its KV cache (module docstring)."""

    def __init__(self, graph: Graph, profile: str = "tflm") -> None:
        if "position" not in graph.inputs:
            raise ShapeError(f"graph {graph.name!r} is not a decoder graph (no 'position' input)")
        self.graph = graph
        self.program = Program(graph, profile)
        self.context = int(graph.metadata.get("context", 0)) or None
        out = graph.tensors[graph.outputs[0]]
        self.out_scale = np.float32(out.scale)
        self.out_zero_point = int(out.zero_point)
        self.vocab_size = int(out.shape[-1])
        self.position = 0

    def reset(self) -> None:
        """Empty the KV cache."""
        self.program.reset()
        self.position = 0

    def step(self, tokens: np.ndarray, start_pos: int) -> np.ndarray:
        """Logit codes ``(T, vocab)`` of ``T`` tokens at positions ``start_pos ..``."""
        t = np.asarray(tokens).reshape(-1)
        if t.size == 0:
            raise ShapeError("step needs at least one token")
        if t.min() < 0 or t.max() >= self.vocab_size:
            bad = int(t[(t < 0) | (t >= self.vocab_size)][0])
            raise InvalidDataError(f"token id {bad} outside vocabulary [0, {self.vocab_size})")
        if start_pos < 0 or (self.context is not None and start_pos + t.size > self.context):
            raise ShapeError(
                f"positions {start_pos}..{start_pos + t.size - 1} exceed the integer graph's "
                f"context of {self.context} (build the graph with a larger context)"
            )
        (codes,) = self.program.run(
            {"tokens": t.astype(np.int32), "position": np.asarray(start_pos, np.int32)}
        )
        self.position = start_pos + t.size
        return codes

    def prefill(self, tokens: np.ndarray) -> np.ndarray:
        """Reset the cache and run ``tokens`` from position 0: logit codes ``(T, vocab)``."""
        self.reset()
        return self.step(tokens, 0)

    def decode(self, token: int) -> np.ndarray:
        """One more token after the cached ones: logit codes ``(vocab,)``."""
        return self.step(np.asarray([token]), self.position)[0]

    def dequantize(self, codes: np.ndarray) -> np.ndarray:
        """``(codes - zp) * scale`` in float32."""
        return (
            (np.asarray(codes, np.int32) - self.out_zero_point).astype(np.float32) * self.out_scale
        ).astype(np.float32)

    def logits(self, tokens: np.ndarray) -> np.ndarray:
        """Dequantized logits of ``tokens`` from an empty cache (for perplexity)."""
        return self.dequantize(self.prefill(tokens))

    def generate(
        self,
        prompt: np.ndarray,
        n_new: int,
        temperature: float = 0.0,
        top_k: int = 0,
        seed: int = 0,
    ) -> np.ndarray:
        """``n_new`` tokens after ``prompt`` (greedy when ``temperature <= 0``)."""
        from refq.models.sampling import generate

        def make_step() -> Callable[[np.ndarray, int], np.ndarray]:
            self.reset()
            return lambda t, p: self.step(t, p)

        limit = self.context or int(np.asarray(prompt).size + n_new)
        return generate(make_step, prompt, n_new, limit, temperature, top_k, seed)


class IntegerEncoder:
    """A BERT encoder's integer graphs, one per sequence length (module docstring)."""

    def __init__(self, qmodel: Any, profile: str | None = None) -> None:
        self.qmodel = qmodel
        self.profile = profile or qmodel.profile
        self.programs: dict[int, Program] = {}

    def program(self, length: int) -> Program:
        if length not in self.programs:
            self.programs[length] = Program(self.qmodel.graph(length), self.profile)
        return self.programs[length]

    def hidden_codes(self, ids: np.ndarray, token_types: np.ndarray | None = None) -> np.ndarray:
        """int8 final hidden states ``(T, dim)`` of one unpadded sequence."""
        t = np.asarray(ids).reshape(-1)
        tt = np.zeros_like(t) if token_types is None else np.asarray(token_types).reshape(-1)
        prog = self.program(t.size)
        (codes,) = prog.run(
            {
                "tokens": t.astype(np.int32),
                "positions": np.arange(t.size, dtype=np.int32),
                "token_types": tt.astype(np.int32),
            }
        )
        return codes

    def hidden(self, ids: np.ndarray) -> np.ndarray:
        codes = self.hidden_codes(ids)
        prog = self.program(np.asarray(ids).size)
        out = prog.graph.tensors[prog.graph.outputs[0]]
        return ((codes.astype(np.int32) - int(out.zero_point)) * np.float32(out.scale)).astype(
            np.float32
        )

    def sentence_embedding(self, ids: np.ndarray) -> np.ndarray:
        """Mean of the dequantized hidden states, L2-normalized (``pooling`` of the config)."""
        h = self.hidden(ids)
        cfg = self.qmodel.config
        v = h[0] if getattr(cfg, "pooling", "mean") == "cls" else h.mean(axis=0)
        if getattr(cfg, "normalize", True):
            v = v / max(float(np.linalg.norm(v)), 1e-12)
        return v.astype(np.float32)
