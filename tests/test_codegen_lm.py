"""The shipped tiny LM as generated C (codegen.lm), against refq's integer engine.

The tiny LM is quantized with the shipped w8a8 config (refq.ptq), its one-token graph lowered to
C with the LM API (lm.h: init / step / argmax / generate) and the LM test harness, and built for
the host (UBSan + ASan), Cortex-M7 (DSP path) and Cortex-M4 (plain-C path) under QEMU. Greedy
generation of 64 tokens after a 100-token prompt (the context of 128 fills and is re-encoded
half way) must give the tokens of ``refq.models.integer.IntegerLM.generate`` and, at every
step, the same logit bytes; stepping token by token must give the logits of the reference's
whole-sequence prefill. Also: single rounding, edge prompts, refusals, the static memory plan,
the STM32H743 budget and the flash allowance. The w8a16 (int16 activations: 16x8
FULLY_CONNECTED, int16 RMS_NORM / ADD / MUL / LOGISTIC, int16 logits) and mixed (int8 with
16x8 FFN output projections) configs go through the same greedy comparison on the host and
Cortex-M7 (w8a16 also on the Cortex-M4 plain-C path).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from codegen.budget import Budget
from codegen.build import build
from codegen.emit import write_tree
from codegen.lm import HARNESS_OUTPUTS, decode_graph, harness_inputs, reference_generate, render_lm
from codegen.run import EXIT_STATUS_NEGATIVE_BASE, run
from refq.demo import quantize_tiny_lm
from refq.errors import BudgetError, InvalidDataError, ShapeError
from refq.graph import Graph, Node, TensorInfo
from refq.models.integer import IntegerLM
from refq.models.tiny_lm import TINY_LM, corpus
from tests.codegen_image import CONFIGS, require_config
from tests.conftest import require_tool

N_TOKENS = 64
LM_CONFIGS = ("host-ubsan-asan", "m7", "m4-plain-c")


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> SimpleNamespace:
    qm = quantize_tiny_lm("w8a8")
    graph = qm.graph()
    generated = render_lm(graph, harness=True)
    root = tmp_path_factory.mktemp("codegen_lm")
    src = write_tree(root / "src", generated.files)
    ref = IntegerLM(graph, qm.profile)
    text = corpus("heldout")
    prompt = text[:100].astype(np.int64)
    tokens, logits = reference_generate(ref, prompt, N_TOKENS)
    return SimpleNamespace(
        qm=qm,
        graph=graph,
        generated=generated,
        root=root,
        src=src,
        ref=ref,
        text=text,
        prompt=prompt,
        tokens=tokens,
        logits=logits,
        builds={},
    )


def _build(lm: SimpleNamespace, config: str):
    if config not in lm.builds:
        require_config(config)
        target, sanitize, flags = CONFIGS[config]
        lm.builds[config] = build(
            lm.src,
            target,
            build_dir=lm.root / f"build-{config}",
            sanitize=sanitize,
            extra_cflags=flags,
            jobs=2,
        )
    return lm.builds[config]


def _generate(
    prog, prompt: np.ndarray, n: int, logit_dtype: str = "int8"
) -> tuple[np.ndarray, np.ndarray]:
    res = run(prog, harness_inputs(0, prompt, n), HARNESS_OUTPUTS, timeout=600)
    tokens = np.frombuffer(res.outputs["lm_tokens.bin"], "<i4").astype(np.int64)
    dtype = np.dtype(logit_dtype).newbyteorder("<")
    logits = np.frombuffer(res.outputs["lm_logits.bin"], dtype).reshape(-1, TINY_LM.vocab_size)
    return tokens, logits.astype(np.dtype(logit_dtype))


@pytest.mark.parametrize("config", LM_CONFIGS)
def test_generated_lm_matches_reference(lm, config, checked):
    assert lm.prompt.size + N_TOKENS > lm.generated.context  # the re-encode path runs
    tokens, logits = _generate(_build(lm, config), lm.prompt, N_TOKENS)
    assert np.array_equal(tokens, lm.tokens), (tokens, lm.tokens)
    assert np.array_equal(logits, lm.logits)
    checked(f"tiny LM C greedy generation on {config} vs IntegerLM", N_TOKENS, logits.size)


WIDE_LM_CASES = (
    ("w8a16", "host-ubsan-asan"),
    ("w8a16", "m7"),
    ("w8a16", "m4-plain-c"),
    ("mixed", "host-ubsan-asan"),
    ("mixed", "m7"),
)


@pytest.fixture(scope="module")
def wide_lms(tmp_path_factory) -> dict[str, SimpleNamespace]:
    """The w8a16 and mixed LMs, rendered and referenced on first use."""
    return {"root": tmp_path_factory.mktemp("codegen_lm_wide")}


def _wide_lm(cache: dict, name: str) -> SimpleNamespace:
    if name not in cache:
        qm = quantize_tiny_lm(name)
        graph = qm.graph()
        generated = render_lm(graph, harness=True)
        root = cache["root"] / name
        src = write_tree(root / "src", generated.files)
        prompt = corpus("heldout")[:100].astype(np.int64)
        tokens, logits = reference_generate(IntegerLM(graph, qm.profile), prompt, N_TOKENS)
        cache[name] = SimpleNamespace(
            generated=generated,
            root=root,
            src=src,
            prompt=prompt,
            tokens=tokens,
            logits=logits,
            builds={},
        )
    return cache[name]


@pytest.mark.parametrize(("name", "config"), WIDE_LM_CASES)
def test_wide_lm_configs_match_reference(wide_lms, name, config, checked):
    """w8a16 and mixed: every greedy token and every logit byte (int16 logits for w8a16)."""
    lm = _wide_lm(wide_lms, name)
    want = {"w8a16": "int16", "mixed": "int8"}[name]
    assert lm.generated.logit_dtype == want and lm.logits.dtype == np.dtype(want)
    assert f"typedef {want}_t refq_lm_logit;" in lm.generated.files["lm.h"]
    kernels = {k.name for k in lm.generated.lowered.kernels}
    assert "refq_fully_connected_s16" in kernels
    if name == "w8a16":
        assert {"refq_add_s16", "refq_mul_s16", "refq_logistic_s16"} <= kernels
    tokens, logits = _generate(_build(lm, config), lm.prompt, N_TOKENS, want)
    assert np.array_equal(tokens, lm.tokens), (tokens, lm.tokens)
    assert np.array_equal(logits, lm.logits)
    checked(f"tiny LM ({name}) C greedy generation on {config} vs IntegerLM", N_TOKENS, logits.size)


def test_edge_prompts_on_host(lm, checked):
    """A one-token prompt, and a prompt longer than the context (only its last 128 tokens
    count, and the full context is re-encoded before the first new token is fed back)."""
    prog = _build(lm, "host-ubsan-asan")
    for prompt in (lm.text[:1], lm.text[200:400]):
        want_tokens, want_logits = reference_generate(lm.ref, prompt.astype(np.int64), 8)
        tokens, logits = _generate(prog, prompt, 8)
        assert np.array_equal(tokens, want_tokens)
        assert np.array_equal(logits, want_logits)
    checked("tiny LM C generation from edge prompts vs IntegerLM", 16)


def test_steps_equal_whole_sequence_prefill(lm, checked):
    """Token-by-token C steps give, at every position, the logits of the reference's prefill of
    the whole sequence at once (the equivalence the one-token graph relies on)."""
    prog = _build(lm, "host-ubsan-asan")
    seq = lm.text[1000 : 1000 + TINY_LM.max_seq_len].astype(np.int64)
    res = run(prog, harness_inputs(1, seq), HARNESS_OUTPUTS, timeout=600)
    logits = np.frombuffer(res.outputs["lm_logits.bin"], np.int8).reshape(seq.size, -1)
    assert np.array_equal(logits, lm.ref.prefill(seq))
    checked("tiny LM C steps vs IntegerLM prefill of 128 tokens", seq.size, logits.size)


def test_single_rounding_profile(lm, tmp_path, checked):
    """The same graph under cmsis-nn-single (single rounding everywhere) on the host."""
    require_config("host")
    generated = render_lm(lm.graph, "cmsis-nn-single", harness=True)
    src = write_tree(tmp_path / "src", generated.files)
    prog = build(src, "host", build_dir=tmp_path / "build", jobs=2)
    ref = IntegerLM(lm.graph, "cmsis-nn-single")
    want_tokens, want_logits = reference_generate(ref, lm.prompt, N_TOKENS)
    tokens, logits = _generate(prog, lm.prompt, N_TOKENS)
    assert np.array_equal(tokens, want_tokens)
    assert np.array_equal(logits, want_logits)
    checked("tiny LM C (cmsis-nn-single) generation vs IntegerLM", N_TOKENS, logits.size)


def test_step_refusals(lm):
    """A token outside the vocabulary and a step past the context: the reference raises, the C
    returns REFQ_ARG_ERROR (harness exit status 17)."""
    prog = _build(lm, "host-ubsan-asan")
    with pytest.raises(InvalidDataError):
        lm.ref.step(np.array([256]), 0)
    with pytest.raises(ShapeError):
        lm.ref.step(np.array([1]), TINY_LM.max_seq_len)
    for seq in ([1, 2, 256], list(lm.text[: TINY_LM.max_seq_len + 1])):
        res = run(prog, harness_inputs(1, seq), HARNESS_OUTPUTS, check=False)
        assert res.returncode == EXIT_STATUS_NEGATIVE_BASE + 1, res.status


def test_static_memory_and_budget(lm):
    """One arena within 1.05x of its lower bound, the KV cache static (n_layers * 2 * context *
    kv_dim bytes), no allocator anywhere, the STM32H743 budget, and flash <= weight bytes +
    64 KB from arm-none-eabi-size (the whole test program: startup, harness, model, kernels)."""
    m = lm.generated.lowered
    cfg = TINY_LM
    assert m.plan.arena_size <= 1.05 * m.plan.lower_bound
    assert m.state_size == cfg.n_layers * 2 * lm.generated.context * cfg.kv_dim
    assert {t.region for t in m.state} == {"state"}
    assert m.budget_use.budget.name == "stm32h743"
    assert m.budget_use.flash <= m.budget_use.budget.flash
    assert m.budget_use.sram <= m.budget_use.budget.sram
    allocation = re.compile(r"\b(malloc|calloc|realloc|free)\s*\(")
    for name, text in lm.generated.files.items():
        assert not allocation.search(text), name
    prog = _build(lm, "m7")
    assert prog.size.flash <= m.weight_bytes + 64 * 1024, (prog.size, m.weight_bytes)
    nm = require_tool("arm-none-eabi-nm")
    symbols = subprocess.run(
        [nm, str(prog.program)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert not {"malloc", "_malloc_r", "free", "_sbrk"} & set(symbols)


def test_budget_overflow_is_refused(lm):
    with pytest.raises(BudgetError, match=r"'f446-half'.*flash"):
        render_lm(lm.graph, budget=Budget("f446-half", 256 * 1024, 64 * 1024))


def test_decode_graph():
    """Run-time token dimensions become 1; graphs that are not decoders are refused."""
    t = {
        "tokens": TensorInfo("tokens", "int32", (None,)),
        "position": TensorInfo("position", "int32", ()),
        "table": TensorInfo("table", "int8", (4, 3), 0.1, 0, data=np.zeros((4, 3), np.int8)),
        "logits": TensorInfo("logits", "int8", (None, 3), 0.1, 0),
    }
    g = Graph(
        t,
        [Node("EMBEDDING_LOOKUP", ("tokens", "table"), ("logits",))],
        ["tokens", "position"],
        ["logits"],
        name="toy",
    )
    d = decode_graph(g)
    assert d.tensors["tokens"].shape == (1,) and d.tensors["logits"].shape == (1, 3)
    assert g.tensors["tokens"].shape == (None,)  # the original is untouched
    with pytest.raises(ShapeError, match="not a decoder graph"):
        decode_graph(Graph(t, g.nodes, ["tokens"], ["logits"]))
    t2 = {**t, "tokens": TensorInfo("tokens", "int32", (2,))}
    with pytest.raises(ShapeError, match="run-time or 1"):
        decode_graph(Graph(t2, g.nodes, ["tokens", "position"], ["logits"]))
    t3 = {**t, "logits": TensorInfo("logits", "float32", (None, 3))}
    with pytest.raises(ShapeError, match="integer logits"):
        decode_graph(Graph(t3, g.nodes, ["tokens", "position"], ["logits"]))


def test_lm_api_header(lm):
    """lm.h declares the API with the model's vocabulary, context and logit type."""
    header = lm.generated.files["lm.h"]
    for text in (
        "refq_status refq_lm_init(void);",
        "refq_status refq_lm_step(int32_t token, refq_lm_logit *logits);",
        "int32_t refq_lm_argmax(const refq_lm_logit *logits);",
        "#define REFQ_LM_VOCAB 256",
        "#define REFQ_LM_CONTEXT 128",
        "typedef int8_t refq_lm_logit;",
    ):
        assert text in header
    assert Path(lm.src / "lm.c").is_file() and Path(lm.src / "model.h").is_file()
