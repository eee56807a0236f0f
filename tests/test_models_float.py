"""Float references: Llama decoder (KV cache, RoPE, GQA, observe points), BERT encoder,
the shipped tiny LM, training steps and sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest

from refq.errors import InvalidDataError, ModelFormatError, ShapeError
from refq.models import bert, llama, tiny_lm
from refq.models import llama_trainable as lt
from refq.models.config import (
    BertConfig,
    LlamaConfig,
    bert_weight_shapes,
    config_from_dict,
    init_llama_weights,
    n_params,
)
from refq.models.layout import activation_points, bert_graph, linears, llama_graph
from refq.models.sampling import generate, llama_generate, pick

CFG = LlamaConfig(
    vocab_size=40, dim=24, n_layers=2, n_heads=6, n_kv_heads=2, ffn_dim=20, max_seq_len=32,
    rope_theta=500.0,
)  # fmt: skip


def weights_for(cfg: LlamaConfig, seed: int = 0) -> dict[str, np.ndarray]:
    w = init_llama_weights(cfg, seed=seed, std=0.3)
    rng = np.random.default_rng(seed + 100)
    for n in w:
        if w[n].ndim == 1:
            w[n] = (1 + 0.3 * rng.standard_normal(w[n].shape)).astype(np.float32)
    return w


def toks(n: int, seed: int = 0, vocab: int = 40) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, n)


# --- Llama ----------------------------------------------------------------------------------


def test_kv_cache_decode_equals_full_forward():
    w = weights_for(CFG)
    t = toks(20)
    full = llama.forward(w, CFG, t)
    cache = llama.KVCache(CFG)
    pieces, pos = [], 0
    for n in (5, 1, 1, 3, 1, 7, 2):  # prefill, single steps and chunks
        pieces.append(llama.forward(w, CFG, t[pos : pos + n], cache, pos))
        pos += n
    np.testing.assert_allclose(np.concatenate(pieces), full, rtol=1e-4, atol=1e-5)


def test_causal_future_tokens_do_not_change_past_logits():
    w = weights_for(CFG)
    a, b = toks(12), toks(12)
    b[:7] = a[:7]
    np.testing.assert_array_equal(llama.forward(w, CFG, a)[:7], llama.forward(w, CFG, b)[:7])


def test_rope_matches_complex_rotation():
    """Pair (x[2i], x[2i+1]) as a complex number times exp(i p theta^(-2i/hd))."""
    hd, theta = 8, 10000.0
    pos = np.array([0, 1, 5, 127])
    x = np.random.default_rng(1).standard_normal((4, 3, hd)).astype(np.float32)
    cos, sin = llama.rope_tables(pos, hd, theta)
    got = llama.apply_rope(x, cos, sin)
    z = x[..., 0::2].astype(np.float64) + 1j * x[..., 1::2]
    ang = pos[:, None, None] * theta ** (-2.0 * np.arange(hd // 2) / hd)
    ref = z * np.exp(1j * ang)
    np.testing.assert_allclose(got[..., 0::2], ref.real, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got[..., 1::2], ref.imag, rtol=1e-5, atol=1e-6)


def test_rotate_half_weights_permute_to_interleaved():
    """Hugging Face rotate-half RoPE on W·x equals interleaved RoPE on permute(W)·x, up to the
    same row permutation of the output (so attention scores are identical)."""
    n_heads, hd, d_in = 3, 8, 5
    rng = np.random.default_rng(2)
    w_hf = rng.standard_normal((n_heads * hd, d_in))
    x = rng.standard_normal((4, d_in))
    pos = np.arange(4)
    ang = pos[:, None] * 10000.0 ** (-2.0 * np.arange(hd // 2) / hd)  # (T, hd/2)
    q = (x @ w_hf.T).reshape(4, n_heads, hd)
    cos = np.concatenate([np.cos(ang)] * 2, -1)[:, None]
    sin = np.concatenate([np.sin(ang)] * 2, -1)[:, None]
    rot_half = np.concatenate([-q[..., hd // 2 :], q[..., : hd // 2]], -1)
    q_hf = q * cos + rot_half * sin  # HF apply_rotary_pos_emb
    w_il = llama.permute_rotate_half_to_interleaved(w_hf, n_heads)
    c, s = llama.rope_tables(pos, hd, 10000.0)
    q_il = llama.apply_rope((x @ w_il.T).reshape(4, n_heads, hd), c, s)
    perm = np.arange(hd).reshape(2, hd // 2).T.reshape(-1)  # interleaved slot -> HF slot
    np.testing.assert_allclose(q_il, q_hf[..., perm], rtol=1e-5, atol=1e-6)


def test_gqa_equals_mha_with_repeated_kv_heads():
    w = weights_for(CFG)
    d = CFG.to_dict()
    d.pop("arch")
    d["n_kv_heads"] = CFG.n_heads
    mha = LlamaConfig(**d)
    g, hd = CFG.n_heads // CFG.n_kv_heads, CFG.head_dim
    w2 = dict(w)
    for i in range(CFG.n_layers):
        for m in ("wk", "wv"):
            heads = w[f"layers.{i}.attn.{m}"].reshape(CFG.n_kv_heads, hd, -1)
            w2[f"layers.{i}.attn.{m}"] = np.repeat(heads, g, axis=0).reshape(-1, CFG.dim)
    t = toks(9)
    np.testing.assert_allclose(
        llama.forward(w, CFG, t), llama.forward(w2, mha, t), rtol=1e-5, atol=1e-6
    )


def test_rmsnorm_silu_softmax_formulas():
    x = np.random.default_rng(3).standard_normal((4, 16)).astype(np.float32)
    g = np.random.default_rng(4).standard_normal(16).astype(np.float32)
    ref = x.astype(np.float64) / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(llama.rmsnorm(x, g, 1e-5), ref * g, rtol=1e-5)
    z = np.array([-800.0, -20.0, 0.0, 3.0, 50.0], dtype=np.float32)
    sil = [v / (1 + math.exp(-v)) if v > -700 else 0.0 for v in z.astype(float)]
    np.testing.assert_allclose(llama.silu(z), sil, rtol=1e-6, atol=1e-30)


def test_observe_visits_every_graph_point_in_order_and_can_replace():
    w = weights_for(CFG)
    t = toks(6)
    seen: list[tuple[str, tuple[int, ...]]] = []
    llama.forward(w, CFG, t, observe=lambda n, v: seen.append((n, v.shape)))
    assert [n for n, _ in seen] == activation_points(CFG)
    shapes = dict(seen)
    for op in llama_graph(CFG):
        if op.features is not None:
            assert shapes[op.output] == (6, op.features), op.output
    assert shapes["layers.0.attn.scores"] == (CFG.n_heads, 6, 6)
    # replacing a value changes what follows (fake-quantization hook)
    base = llama.forward(w, CFG, t)
    zeroed = llama.forward(
        w, CFG, t, observe=lambda n, v: np.zeros_like(v) if n == "layers.1.ffn.hidden" else None
    )
    assert not np.allclose(base, zeroed)
    with pytest.raises(ShapeError):
        llama.forward(w, CFG, t, observe=lambda n, v: v[:1] if n == "embed" else None)


def test_linears_cover_every_matrix_once():
    mats = [n for n, s in init_llama_weights(CFG).items() if len(s.shape) == 2]
    lin = [op.weights[0] for op in linears(CFG)]
    # tied embeddings: the head reuses tok_embeddings
    assert sorted(set(lin)) == sorted(mats)
    assert all(
        op.inputs[0] in activation_points(CFG) or op.inputs[0] == "tokens" for op in linears(CFG)
    )


def test_trainable_hook_visits_the_graph_points_and_can_replace():
    w = weights_for(CFG)
    seen: list[str] = []
    t = np.stack([toks(5, 1), toks(5, 2)])
    lt.forward(lt.as_params(w), CFG, t, hook=lambda n, v: seen.append(n))
    assert seen == activation_points(CFG)
    from refq.models import autograd as ag

    def fq(name, v):  # fake-quantize the input of every down-projection (QAT-style)
        return ag.fake_quant_ste(v, 0.05, 0, -128, 127) if name.endswith("ffn.hidden") else None

    params = lt.as_params(w)
    loss = lt.loss(params, CFG, t, t, hook=fq)
    loss.backward()
    assert float(loss.data) != float(lt.loss(lt.as_params(w), CFG, t, t).data)
    assert all(np.all(np.isfinite(p.grad)) for p in params.values())


def test_autograd_forward_equals_numpy_forward():
    w = weights_for(CFG)
    t = np.stack([toks(10, 1), toks(10, 2)])
    got = lt.forward(lt.as_params(w, np.float64), CFG, t).data
    for b in range(2):  # the NumPy reference computes in float32
        np.testing.assert_allclose(got[b], llama.forward(w, CFG, t[b]), rtol=1e-4, atol=1e-5)


def test_forward_rejects_bad_input():
    w = weights_for(CFG)
    with pytest.raises(InvalidDataError, match="40"):
        llama.forward(w, CFG, np.array([1, 40]))
    with pytest.raises(ShapeError):
        llama.forward(w, CFG, np.zeros((2, 2), int))
    with pytest.raises(ShapeError):
        llama.forward(w, CFG, np.array([1]), llama.KVCache(CFG, max_seq_len=4), start_pos=4)
    with pytest.raises(ShapeError):
        llama.forward(w, CFG, np.array([1]), None, start_pos=3)


def test_config_validation_and_roundtrip():
    assert config_from_dict(CFG.to_dict()) == CFG
    with pytest.raises(ModelFormatError, match="n_kv_heads"):
        LlamaConfig(vocab_size=8, dim=12, n_layers=1, n_heads=6, n_kv_heads=4, ffn_dim=8)
    with pytest.raises(ModelFormatError, match="unknown architecture"):
        config_from_dict({"arch": "mamba"})
    with pytest.raises(ModelFormatError, match="unknown fields"):
        config_from_dict({**CFG.to_dict(), "bogus": 1})


# --- training --------------------------------------------------------------------------------


def test_training_steps_reduce_loss_and_checkpoint_roundtrip(tmp_path):
    from refq.models.train import TrainConfig, load_checkpoint, sample_batch, train, train_step

    cfg = LlamaConfig(
        vocab_size=256, dim=16, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=16, max_seq_len=16
    )
    data = np.frombuffer(b"to be or not to be, that is the question. " * 20, np.uint8)
    tc = TrainConfig(steps=3, batch_size=4, seq_len=16, lr=1e-2, warmup=1, eval_every=0, seed=1)
    out = tmp_path / "ck.npz"
    weights, hist = train(cfg, tc, data, data[:200], out=out, log=lambda s: None)
    # the loss of one fixed batch, before vs after the three steps
    x, y = sample_batch(data, 4, 16, np.random.default_rng(5))
    w0 = init_llama_weights(cfg, seed=1)
    losses = [train_step(w0, cfg, x, y)[0], train_step(weights, cfg, x, y)[0]]
    assert losses[1] < losses[0]
    cfg2, w2, meta = load_checkpoint(out)
    assert cfg2 == cfg and meta["history"] == hist
    for n in weights:
        np.testing.assert_array_equal(w2[n], weights[n])
    assert not list(tmp_path.glob(".*tmp"))  # atomic write leaves no temp file


def test_training_is_reproducible_from_the_seed():
    from refq.models.train import TrainConfig, train

    cfg = LlamaConfig(
        vocab_size=256, dim=16, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=16, max_seq_len=16
    )
    data = np.frombuffer(b"now is the winter of our discontent " * 10, np.uint8)
    runs = [
        train(cfg, TrainConfig(steps=2, batch_size=2, seq_len=8, eval_every=0, seed=s), data,
              log=lambda m: None)[0]
        for s in (4, 4, 5)
    ]  # fmt: skip
    assert all(np.array_equal(runs[0][n], runs[1][n]) for n in runs[0])
    assert not all(np.array_equal(runs[0][n], runs[2][n]) for n in runs[0])


def test_lr_schedule_and_clipping():
    from refq.models.train import TrainConfig, clip_grads, lr_at

    tc = TrainConfig(steps=100, warmup=10, lr=1.0, min_lr=0.1)
    assert lr_at(0, tc) == pytest.approx(0.1) and lr_at(9, tc) == pytest.approx(1.0)
    assert lr_at(10, tc) == pytest.approx(1.0) and lr_at(99, tc) > 0.1
    assert lr_at(100, tc) == pytest.approx(0.1)
    g = {"a": np.full(3, 4.0, np.float32), "b": np.full(1, 4.0, np.float32)}
    assert clip_grads(g, 1.0) == pytest.approx(8.0)
    assert math.sqrt(sum(float((v**2).sum()) for v in g.values())) == pytest.approx(1.0, rel=1e-5)


# --- sampling --------------------------------------------------------------------------------


def test_greedy_generate_with_cache_equals_recomputation():
    w = weights_for(CFG)
    prompt = toks(4)
    got = llama_generate(w, CFG, prompt, 10)
    seq = list(prompt)
    for _ in range(10):
        seq.append(int(np.argmax(llama.forward(w, CFG, np.array(seq))[-1])))
    assert got.tolist() == seq[4:]


def test_generate_past_the_context_window_reencodes():
    w = weights_for(CFG)
    calls = []

    def make_step():
        cache = llama.KVCache(CFG)

        def step(t, p):
            calls.append((len(t), p))
            return llama.forward(w, CFG, t, cache, p)

        return step

    out = generate(make_step, toks(30), 10, CFG.max_seq_len)
    assert out.size == 10
    assert calls[0] == (30, 0) and (CFG.max_seq_len // 2, 0) in calls


def test_pick_temperature_and_top_k():
    rng = np.random.default_rng(0)
    logits = np.array([0.0, 5.0, 4.9, -3.0])
    assert pick(logits, 0.0, rng) == 1
    draws = {pick(logits, 1.0, rng, top_k=2) for _ in range(200)}
    assert draws == {1, 2}


# --- BERT ------------------------------------------------------------------------------------

BCFG = BertConfig(vocab_size=30, dim=12, n_layers=2, n_heads=3, ffn_dim=20, max_pos=16)


def bert_weights(cfg: BertConfig, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        n: (
            rng.standard_normal(s) * (0.5 if len(s) == 2 else 0.2)
            + (1.0 if n.endswith("norm") else 0.0)
        ).astype(np.float32)
        for n, s in bert_weight_shapes(cfg).items()
    }


def test_gelu_and_layernorm_formulas():
    x = np.array([-6.0, -1.5, -0.1, 0.0, 0.7, 3.0], dtype=np.float64)
    ref = [0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x]
    np.testing.assert_allclose(bert.gelu(x), ref, rtol=1e-15, atol=1e-300)
    y = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    g, b = np.arange(8, dtype=np.float32), np.ones(8, np.float32)
    y64 = y.astype(np.float64)
    ref = (y64 - y64.mean(-1, keepdims=True)) / np.sqrt(y64.var(-1, keepdims=True) + 1e-12) * g + b
    np.testing.assert_allclose(bert.layernorm(y, g, b, 1e-12), ref, rtol=1e-5, atol=1e-5)


def test_bert_padding_mask_and_pooling():
    w = bert_weights(BCFG)
    ids = toks(5, vocab=30)
    alone = bert.sentence_embedding(w, BCFG, ids)
    padded = np.concatenate([ids, [0, 0, 0]])[None]
    mask = np.array([[1] * 5 + [0] * 3])
    with_pad = bert.sentence_embedding(w, BCFG, padded, mask)
    np.testing.assert_allclose(with_pad, alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(alone, axis=-1), 1.0, rtol=1e-6)
    hidden = bert.forward(w, BCFG, ids)
    mean = hidden[0].mean(0)
    np.testing.assert_allclose(alone[0], mean / np.linalg.norm(mean), rtol=1e-5, atol=1e-6)
    with pytest.raises(InvalidDataError):
        bert.sentence_embedding(w, BCFG, padded, np.zeros((1, 8), int))


def test_bert_observe_points_match_graph():
    w = bert_weights(BCFG)
    seen: list[str] = []
    bert.sentence_embedding(w, BCFG, toks(4, vocab=30), observe=lambda n, v: seen.append(n))
    assert seen == [op.output for op in bert_graph(BCFG)]


# --- the shipped tiny LM ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    return tiny_lm.load_tiny_lm()


def test_tiny_lm_fits_the_mcu_and_the_size_limits(tiny):
    cfg, w = tiny
    assert cfg == tiny_lm.TINY_LM
    assert 200_000 <= n_params(cfg) <= 500_000
    assert cfg.max_seq_len >= 128 and cfg.vocab_size == 256
    assert tiny_lm.WEIGHTS.stat().st_size < 2 * 1024 * 1024
    assert all(v.dtype == np.float32 for v in w.values())
    mem = tiny_lm.mcu_memory(cfg)
    assert mem["flash"] <= tiny_lm.FLASH_BUDGET and mem["sram"] <= tiny_lm.SRAM_BUDGET
    assert mem["kv_cache"] == cfg.n_layers * 2 * cfg.max_seq_len * cfg.kv_dim
    matrices = sum(v.size for n, v in w.items() if v.ndim == 2)
    assert mem["flash"] >= matrices  # at least one byte per int8 weight


def test_tiny_lm_heldout_quality(tiny):
    """A regression gate, far from the measured value in docs/tiny-lm.md: an order-0 byte
    model of this text needs 4.83 bits/byte."""
    from refq.models.train import bits_per_byte

    cfg, w = tiny
    held = tiny_lm.corpus("heldout")[:4096]
    assert bits_per_byte(w, cfg, held, cfg.max_seq_len) < 3.0


def test_corpus_splits_are_disjoint_and_decodable():
    train, held = tiny_lm.corpus("train"), tiny_lm.corpus("heldout")
    assert train.size > 800_000 and 40_000 < held.size < 60_000
    assert held[:2000].tobytes() not in train.tobytes()
    assert tiny_lm.decode(tiny_lm.encode("ROMEO: ô")) == "ROMEO: ô"
