"""Fake-quantized float simulation of a quantized model, through the forward passes' hook.

The float reference (:func:`refq.models.llama.forward` / :func:`refq.models.bert.forward`) runs
with every quantized weight replaced by its dequantized value (``(codes - zp) * scale``; the
per-block products ``sc * q`` times ``d``) and, at every activation point, the value replaced
by ``(clamp(round_half_even(v / s) + z, qmin, qmax) - z) * s`` for each quantization the integer
graph applies to that point, in order (``graph.metadata["points"]``, written by
:mod:`refq.ptq.lower`: a point stored as int16 and read as int8 is rounded twice, attention
scores and probabilities are rounded as inside ATTENTION). Points the graph never materializes
(the SiLU inside a fused SWIGLU) and ops left in float stay float. Embedding outputs are the
dequantized rows of the lookup table; linear biases that the float reference has no slot for
(Llama, from bias correction) are added at the linear's output point.

What it does not model: the integer kernels' own approximations (fixed-point sigmoid, softmax
exp, integer RMSNorm / LayerNorm, the 7-bit SwiGLU intermediate, RoPE Q15 tables), bias
rounding, and the per-row int16 shift (ROW_NORMALIZE) of an int32 residual before a norm.
The gap between this simulation and the integer run measures exactly those.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from refq.models.config import BertConfig, LlamaConfig, weight_shapes
from refq.ptq.model import QuantizedModel


def fake_quant_chain(value: np.ndarray, chain: list[dict[str, Any]]) -> np.ndarray:
    """Apply each quantization of ``chain`` in turn (non-finite values pass unchanged)."""
    v = np.asarray(value, dtype=np.float32)
    finite = np.isfinite(v)
    out = np.where(finite, v, 0.0).astype(np.float32)
    for q in chain:
        s = np.float32(q["scale"])
        z = np.float32(q["zero_point"])
        codes = np.clip(np.rint(out / s) + z, q["qmin"], q["qmax"])
        out = ((codes - z) * s).astype(np.float32)
    return np.where(finite, out, v).astype(np.float32)


def simulation_weights(qm: QuantizedModel) -> dict[str, np.ndarray]:
    """The float weights the simulation runs: dequantized where the graph holds integers."""
    out: dict[str, np.ndarray] = {}
    for name in weight_shapes(qm.config):
        if name in qm.weights:
            out[name] = qm.weights[name].dequantize()
        elif name in qm.floats:
            out[name] = np.asarray(qm.floats[name], np.float32)
        elif name in qm.tables:
            out[name] = qm.tables[name].dequantize()
        else:
            raise KeyError(f"weight {name!r} is in neither the quantized nor the float tensors")
    return out


def make_hook(
    qm: QuantizedModel, tokens: np.ndarray, points: dict[str, list[dict[str, Any]]]
) -> Callable[[str, np.ndarray], np.ndarray | None]:
    """The ``observe`` hook of the simulation for one call with ``tokens``."""
    shapes = weight_shapes(qm.config)
    extra_bias = {
        n.removesuffix(".bias"): qm.floats[n]
        for n in qm.floats
        if n.endswith(".bias") and n not in shapes
    }
    out_of: dict[str, str] = {}
    from refq.models.layout import model_graph

    for op in model_graph(qm.config):
        if op.kind == "linear":
            out_of[op.output] = op.weights[0]
    lookup = None
    if isinstance(qm.config, LlamaConfig) and "tok_embeddings" in qm.tables:
        embed_op = model_graph(qm.config)[0]
        if not qm.qconfig.is_float(embed_op.output):
            lookup = qm.tables["tok_embeddings"].dequantize()

    def hook(point: str, value: np.ndarray) -> np.ndarray | None:
        v = value
        if point == "embed" and lookup is not None:
            return lookup[np.asarray(tokens, np.int64)]
        w = out_of.get(point)
        if w is not None and w in extra_bias:
            v = (v + extra_bias[w]).astype(np.float32)
        chain = points.get(point)
        if chain:
            return fake_quant_chain(v, chain)
        return v if v is not value else None

    return hook


def simulate(qm: QuantizedModel, tokens: np.ndarray, context: int | None = None) -> np.ndarray:
    """Logits (decoder, ``(T, vocab)``) or final hidden states (encoder, ``(T, dim)``) of the
    fake-quantized model for one sequence (see the module docstring)."""
    from refq.models import bert, llama

    tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
    bert_like = isinstance(qm.config, BertConfig)
    graph = qm.graph(tokens.size) if bert_like else qm.graph(context)
    if "sim_weights" not in qm._cache:
        qm._cache["sim_weights"] = simulation_weights(qm)
    cache = qm._cache["sim_weights"]
    hook = make_hook(qm, tokens, graph.metadata["points"])
    if isinstance(qm.config, LlamaConfig):
        return llama.forward(cache, qm.config, tokens, observe=hook)
    return bert.forward(cache, qm.config, tokens[None], observe=hook)[0]
