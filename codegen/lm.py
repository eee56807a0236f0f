"""Decoder LMs in C: the one-token graph, the LM API (lm.h / lm.c) and its test harness.

A decoder's integer graph (:mod:`refq.ptq.lower`) takes ``tokens`` (int32 ``(T,)``) and
``position`` (int32 scalar) and returns ``logits`` ``(T, vocab)``, with per-token tensors of
run-time length ``T`` and the KV caches as state tensors. The C generator needs fixed shapes, so
:func:`decode_graph` fixes ``T = 1`` (one token per step; every kernel row depends only on its
own token and the cache prefix, so stepping through a prompt gives the logits of a whole-prompt
prefill bit for bit). :func:`render_lm` lowers it with the generic lowering
(:func:`codegen.generate.render_model`, model API ``<api>_graph``) and adds:

* ``lm.h`` / ``lm.c`` (templates/lm.h.j2, lm.c.j2): ``<api>_init``, ``_reset``, ``_position``,
  ``_step(token, logits)``, ``_argmax`` (lowest index on ties) and
  ``_generate(prompt, n, tokens, step_logits)``, the same sequence of steps as
  :func:`refq.models.sampling.generate` with temperature 0 (context re-encoding included);
* optionally ``harness_entry.c`` for firmware/harness.c (templates/lm_harness_entry.c.j2): mode 0
  runs ``_generate``, mode 1 steps through given tokens and counts each step's instructions.

:func:`reference_generate` is the Python side of the comparison: greedy tokens from
:class:`refq.models.integer.IntegerLM` and the logits each token was picked from.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from codegen.budget import Budget
from codegen.emit import write_tree
from codegen.generate import GeneratedModel, _banner, _c_float, _render, render_model, tree_files
from codegen.lower import check_api
from refq.errors import CodegenError, ShapeError
from refq.graph import Graph, TensorInfo
from refq.profiles import Profile

HARNESS_MAX_TOKENS = 256
"""Prompt tokens / generated tokens the LM harness holds (its buffers are static)."""

LM_CODE_BYTES = 600
"""Flash estimate of lm.c (init, step, argmax, generate)."""


def decode_graph(graph: Graph) -> Graph:
    """``graph`` with every run-time dimension fixed to 1: one token per invocation.

    Raises :class:`ShapeError` unless ``graph`` is a decoder graph: inputs ``tokens`` (int32,
    one dimension) and ``position`` (int32 scalar), one integer ``logits`` output ``(T, vocab)``.
    """
    names = list(graph.inputs)
    if names != ["tokens", "position"] or len(graph.outputs) != 1:
        raise ShapeError(
            f"graph {graph.name!r} is not a decoder graph: inputs {names} (expected ['tokens', "
            f"'position']), outputs {list(graph.outputs)} (expected one logits tensor)"
        )
    tok, pos = graph.tensors["tokens"], graph.tensors["position"]
    if (
        tok.dtype != "int32"
        or len(tok.shape) != 1
        or tok.shape[0] not in (None, 1)
        or pos.dtype != "int32"
        or pos.shape != ()
    ):
        raise ShapeError(
            f"graph {graph.name!r}: tokens must be int32 (T,) with T run-time or 1 and position an "
            "int32 scalar, got "
            f"{tok.dtype} {tok.shape} and {pos.dtype} {pos.shape}"
        )
    out = graph.tensors[graph.outputs[0]]
    if len(out.shape) != 2 or out.dtype not in ("int8", "int16") or out.shape[1] is None:
        raise ShapeError(
            f"graph {graph.name!r}: output {out.name!r} must be integer logits (T, vocab), got "
            f"{out.dtype} {out.shape}"
        )

    def fixed(info: TensorInfo) -> TensorInfo:
        if all(d is not None for d in info.shape):
            return info
        shape = tuple(1 if d is None else d for d in info.shape)
        return dataclasses.replace(info, shape=shape)

    return Graph(
        tensors={name: fixed(info) for name, info in graph.tensors.items()},
        nodes=list(graph.nodes),
        inputs=list(graph.inputs),
        outputs=list(graph.outputs),
        name=graph.name,
        metadata=dict(graph.metadata),
    )


def graph_profile(graph: Graph, profile: str | Profile | None) -> str | Profile:
    """``profile``, or the profile the graph was quantized for (metadata), or ``tflm``."""
    if profile is not None:
        return profile
    return str(graph.metadata.get("profile") or "tflm")


@dataclass
class GeneratedLM:
    """A rendered LM: the generated model (``model``), the LM files and the tree's files."""

    model: GeneratedModel
    api: str
    vocab: int
    context: int
    logit_dtype: str
    files: dict[str, str]

    @property
    def lowered(self):
        return self.model.lowered

    def report(self) -> str:
        return self.model.report()


def render_lm(
    graph: Graph,
    profile: str | Profile | None = None,
    *,
    api: str = "refq_lm",
    budget: str | Budget | None = None,
    harness: bool = False,
    max_tokens: int = HARNESS_MAX_TOKENS,
) -> GeneratedLM:
    """Lower the one-token form of decoder ``graph`` and render the whole tree (module
    docstring); ``profile`` defaults to the graph's own (``graph.metadata["profile"]``)."""
    check_api(api)
    model_api = f"{api}_graph"
    check_api(model_api)
    if not 1 <= max_tokens <= 1 << 16:
        raise CodegenError(f"max_tokens {max_tokens} must be in [1, 65536]")
    step = decode_graph(graph)
    model = render_model(step, graph_profile(graph, profile), api=model_api, budget=budget)
    out = step.tensors[step.outputs[0]]
    vocab = int(out.shape[1])
    context = int(graph.metadata.get("context") or 0)
    if context < 1:
        caches = [step.tensors[n].shape for n in step.state]
        if not caches:
            raise ShapeError(f"graph {graph.name!r} has no KV cache and no context in metadata")
        context = int(caches[0][1])
    ctype = "int8_t" if out.dtype == "int8" else "int16_t"
    context_vars = {
        "api": api,
        "API": api.upper(),
        "model_api": model_api,
        "MODEL_API": model_api.upper(),
        "vocab": vocab,
        "context": context,
        "logit_ctype": ctype,
        "logit_scale": _c_float(out.scalar_scale()),
        "logit_zero_point": out.scalar_zero_point(),
        "profile": model.lowered.profile.name,
        "max_tokens": int(max_tokens),
    }
    files = tree_files([model])
    files["lm.h"] = _render("lm.h.j2", {**context_vars, "banner": _banner("lm.h")})
    files["lm.c"] = _render("lm.c.j2", {**context_vars, "banner": _banner("lm.c")})
    if harness:
        files["harness_entry.c"] = _render(
            "lm_harness_entry.c.j2", {**context_vars, "banner": _banner("harness_entry.c")}
        )
    return GeneratedLM(model, api, vocab, context, out.dtype, files)


def generate_lm(
    graph: Graph,
    out_dir: str | os.PathLike[str],
    *,
    profile: str | Profile | None = None,
    api: str = "refq_lm",
    target_budget: str | Budget | None = None,
    force: bool = False,
    harness: bool = False,
) -> GeneratedLM:
    """Write the C tree of decoder ``graph`` (model, kernels, lm.h / lm.c, optionally the
    harness entry) to ``out_dir`` atomically; see :func:`render_lm`."""
    lm = render_lm(graph, profile, api=api, budget=target_budget, harness=harness)
    write_tree(out_dir, lm.files, force=force)
    return lm


def reference_generate(
    lm: object, prompt: Sequence[int] | np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Greedy ``n`` tokens after ``prompt`` from an :class:`refq.models.integer.IntegerLM`
    (through :func:`refq.models.sampling.generate`) and the logit row each token was picked
    from, ``(n, vocab)``: what ``<api>_generate`` must reproduce byte for byte."""
    from refq.models.sampling import generate

    rows: list[np.ndarray] = []

    def make_step():
        lm.reset()

        def step(tokens: np.ndarray, pos: int) -> np.ndarray:
            out = lm.step(tokens, pos)
            rows.append(np.array(out[-1]))
            return out

        return step

    limit = lm.context or int(np.asarray(prompt).size + n)
    tokens = generate(make_step, np.asarray(prompt), n, limit)
    # one step call precedes every pick (and one more follows the last)
    logits = np.stack(rows[:n]) if n else np.zeros((0, lm.vocab_size), np.int8)
    return tokens.astype(np.int64), logits


def harness_inputs(mode: int, prompt: Sequence[int] | np.ndarray, n: int = 0) -> dict[str, bytes]:
    """The input files of the LM harness (templates/lm_harness_entry.c.j2)."""
    tokens = np.asarray(prompt, dtype="<i4").reshape(-1)
    return {
        "lm_cmd.bin": np.asarray([mode, n], dtype="<i4").tobytes(),
        "lm_prompt.bin": tokens.tobytes(),
    }


HARNESS_OUTPUTS = ("lm_tokens.bin", "lm_logits.bin", "lm_ticks.bin")

__all__ = [
    "HARNESS_MAX_TOKENS",
    "HARNESS_OUTPUTS",
    "GeneratedLM",
    "decode_graph",
    "generate_lm",
    "graph_profile",
    "harness_inputs",
    "reference_generate",
    "render_lm",
]
