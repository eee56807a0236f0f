"""The integer engine (refq.models.integer) on quantized models.

* KV-cache decoding (one token at a time, or any split into chunks) gives the logit codes of
  the full-sequence integer forward bit for bit: the tiny LM and a small random Llama under
  every shipped config (int8 / int16 / int4 / per-block paths, SWIGLU, 16x8 FC, requantized
  residuals);
* the tiny LM end to end as in CI: calibrate on a slice of shakespeare_train.txt, W8A8,
  integer-only perplexity on a held-out slice within 3% of float;
* greedy generation equals the argmax of step-by-step decoding; encoders; errors.
"""

from __future__ import annotations

import numpy as np
import pytest

from refq.calibration import byte_windows
from refq.errors import InvalidDataError, QuantSpecError, ShapeError
from refq.models import bert, llama
from refq.models.eval_text import perplexity
from refq.models.integer import IntegerEncoder, IntegerLM
from refq.models.tiny_lm import DATA_DIR, corpus, load_tiny_lm
from refq.ptq import QuantConfig, quantize_model
from tests.test_ptq import SMALL, quantize_small, small_bert, windows

CONFIGS = ("w8a8", "w8a16", "w4g32a8", "mixed", "w8a8-outliers")


@pytest.fixture(scope="module")
def tiny_w8a8():
    cfg, w = load_tiny_lm()
    reader = byte_windows(DATA_DIR / "shakespeare_train.txt", 128, 8, end=200_000)
    return cfg, w, quantize_model(cfg, w, QuantConfig.load("w8a8"), reader)


def check_decode_equals_prefill(runner: IntegerLM, tokens: np.ndarray, rng, checked, what):
    full = runner.prefill(tokens)
    runner.reset()
    steps = np.stack([runner.decode(int(t)) for t in tokens])
    assert steps.dtype == full.dtype and np.array_equal(steps, full)
    cases = 1
    for _ in range(3):  # random chunkings: prefill a prefix, then chunks
        cuts = np.sort(rng.choice(np.arange(1, tokens.size), size=3, replace=False))
        runner.reset()
        parts, start = [], 0
        for end in [*cuts.tolist(), tokens.size]:
            parts.append(runner.step(tokens[start:end], start))
            start = end
        assert np.array_equal(np.concatenate(parts), full)
        cases += 1
    checked(f"{what}: KV-cache decode == full-sequence integer forward", cases + 1, full.size * 4)


def test_tiny_lm_decode_equals_full_sequence(tiny_w8a8, checked):
    _, _, qm = tiny_w8a8
    tokens = corpus("heldout")[1000:1100].astype(np.int64)
    rng = np.random.default_rng(0)
    check_decode_equals_prefill(qm.runner(128), tokens, rng, checked, "tiny LM w8a8")


INT32_RESIDUAL = {
    "name": "int32-residual",
    "activations": [
        {"match": ["layers.*.attn_resid", "layers.*.ffn_resid"], "bits": 32},
        {"match": ["layers.*.attn.out", "layers.*.ffn.out"], "bits": 16},
    ],
}


@pytest.mark.parametrize("config", [*CONFIGS, INT32_RESIDUAL], ids=[*CONFIGS, "int32-residual"])
def test_small_llama_decode_equals_full_sequence(config, checked):
    qm = quantize_small(config)
    tokens = windows(1, 30, seed=11)[0]
    rng = np.random.default_rng(1)
    check_decode_equals_prefill(
        qm.runner(32), tokens, rng, checked, f"random llama {qm.qconfig.name}"
    )


def test_static_decode_graph_matches(tiny_w8a8, checked):
    """``graph(context, tokens=1)``: static shapes (for the C generator), same codes."""
    _, _, qm = tiny_w8a8
    g1 = qm.graph(128, tokens=1)
    assert g1.tensors["tokens"].shape == (1,) and g1.tensors["logits"].shape == (1, 256)
    assert all(None not in t.shape for t in g1.tensors.values())
    static = IntegerLM(g1)
    tokens = corpus("heldout")[:50].astype(np.int64)
    codes = np.stack([static.decode(int(t)) for t in tokens])
    assert np.array_equal(codes, qm.runner(128).prefill(tokens))
    checked("tiny LM w8a8: static decode graph == dynamic graph", 1, codes.size)
    with pytest.raises(QuantSpecError, match="tokens per call"):
        qm.graph(128, tokens=0)
    with pytest.raises(QuantSpecError, match="exceeds the model's max_seq_len"):
        qm.graph(129)


def test_tiny_lm_w8a8_perplexity_within_target(tiny_w8a8):
    cfg, w, qm = tiny_w8a8
    held = corpus("heldout")[:4096].astype(np.int64)
    p_float = perplexity(lambda t: llama.forward(w, cfg, t), held, 128)
    runner = qm.runner(128)
    p_int = perplexity(runner.logits, held, 128)
    p_sim = perplexity(lambda t: qm.simulate(t, 128), held, 128)
    assert p_int <= 1.03 * p_float, (p_float, p_sim, p_int)
    assert p_sim <= 1.03 * p_float
    assert runner.graph.tensors["logits"].dtype == "int8"


def test_greedy_generation_follows_the_decoded_argmax(tiny_w8a8):
    _, _, qm = tiny_w8a8
    runner = qm.runner(128)
    prompt = corpus("heldout")[:40].astype(np.int64)
    out = runner.generate(prompt, 30)
    runner.reset()
    logits = runner.prefill(prompt)[-1]
    want = []
    for _ in range(30):
        tok = int(np.argmax(logits))
        want.append(tok)
        logits = runner.decode(tok)
    assert out.tolist() == want
    # past the context the window is re-encoded (refq.models.sampling), deterministically
    long = runner.generate(prompt, 100)
    assert long.size == 100 and np.array_equal(long, runner.generate(prompt, 100))


def test_encoder_runs_per_length_and_tracks_float():
    cfg, w = small_bert()
    rng = np.random.default_rng(3)
    calib = [rng.integers(0, 50, size=int(rng.integers(4, 16))) for _ in range(6)]
    qm = quantize_model(cfg, w, QuantConfig.load("w8a8"), calib)
    enc = IntegerEncoder(qm)
    for n in (5, 12, 5):
        x = rng.integers(0, 50, size=n)
        e = enc.sentence_embedding(x)
        ref = bert.sentence_embedding(w, cfg, x)[0]
        assert abs(float(np.linalg.norm(e)) - 1.0) < 1e-5
        assert float(e @ ref) > 0.98
    assert sorted(enc.programs) == [5, 12]
    assert enc.hidden_codes(np.arange(5)).dtype == np.int8


def test_engine_errors():
    qm = quantize_small("w8a8")
    r = qm.runner(16)
    with pytest.raises(ShapeError, match="context of 16"):
        r.prefill(np.zeros(17, np.int64))
    with pytest.raises(InvalidDataError, match="token id 64"):
        r.prefill(np.array([1, 64]))
    with pytest.raises(ShapeError, match="at least one token"):
        r.step(np.array([], np.int64), 0)
    cfg, w = small_bert()
    bq = quantize_model(cfg, w, QuantConfig.load("w8a8"), [np.arange(6)])
    with pytest.raises(ShapeError, match="not a decoder graph"):
        IntegerLM(bq.graph(6))
    assert SMALL.max_seq_len == 32
