"""``refq generate MODEL --prompt TEXT [-n N]``: text from the integer engine.

MODEL is a quantized ``.refq`` decoder (``refq quantize``), or a float model (``tiny``,
``smollm2``, a path) together with ``--config CFG``, quantized in memory first with the
calibration defaults of ``refq quantize``. Decoding runs integer-only with the KV cache
(:class:`refq.models.integer.IntegerLM`): greedy by default, ``--temperature`` / ``--top-k`` /
``--seed`` for sampling (the sampler itself works on the dequantized logits, in float).

Tokenizer: bytes for byte-level models (vocab 256); otherwise ``--tokenizer`` (a ``.gguf``
file, a ``tokenizer.json`` or a model directory) or the ``source_model`` recorded in the model
file (``smollm2``, a ``.gguf`` path). Prints the prompt and the continuation on stdout and the
speed on stderr.

    refq generate tiny-w8a8.refq --prompt "ROMEO:" -n 200
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from refq.errors import ModelFormatError, ShapeError, UnsupportedError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="quantized .refq decoder, or a float model with --config")
    p.add_argument("--prompt", required=True, help="prompt text")
    p.add_argument("-n", "--new-tokens", type=int, default=64, help="tokens to generate")
    p.add_argument("--temperature", type=float, default=0.0, help="0: greedy")
    p.add_argument("--top-k", type=int, default=0, help="sample from the k largest (0: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--config", "-c", help="quantize a float MODEL with this config first")
    p.add_argument("--tokenizer", help=".gguf, tokenizer.json or model directory")
    p.add_argument("--context", type=int, help="KV cache positions (default: prompt + n)")
    p.add_argument("--profile", help="arithmetic profile (default: the model's)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


class ByteTokenizer:
    """UTF-8 bytes as token ids (byte-level models)."""

    def encode_ids(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8", errors="replace")


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` behind the same two methods."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok

    def encode_ids(self, text: str) -> list[int]:
        return list(self.tok.encode(text).ids)

    def decode(self, ids: list[int]) -> str:
        # Control tokens (<|im_end|>...) are shown: they are part of what the model generated.
        return self.tok.decode(ids, skip_special_tokens=False)


def load_tokenizer(spec: str | None, vocab_size: int) -> ByteTokenizer | HFTokenizer:
    """The tokenizer named by ``spec`` (see the module docstring)."""
    if spec in (None, "tiny", "bytes") or (spec and spec.endswith(".npz")):
        if vocab_size != 256:
            raise ModelFormatError(
                f"the model has a vocabulary of {vocab_size}, not bytes; give --tokenizer"
            )
        return ByteTokenizer()
    if spec == "smollm2":
        from refq.models.gguf_loader import load_gguf_tokenizer, smollm2_path

        return HFTokenizer(load_gguf_tokenizer(smollm2_path()))
    p = Path(spec)
    if not p.exists():
        raise ModelFormatError(f"tokenizer {spec!r}: no such file or directory")
    if p.suffix == ".gguf":
        from refq.models.gguf_loader import load_gguf_tokenizer

        return HFTokenizer(load_gguf_tokenizer(p))
    from refq.errors import require_extra

    tk = require_extra("tokenizers", "models")
    f = p / "tokenizer.json" if p.is_dir() else p
    try:
        return HFTokenizer(tk.Tokenizer.from_file(str(f)))
    except Exception as exc:  # tokenizers raises its own Exception type
        raise ModelFormatError(f"tokenizer {str(f)!r} cannot be read ({exc})") from None


def _quantized(args: argparse.Namespace):
    """(QuantizedModel, tokenizer source) for the MODEL argument."""
    from refq.ptq.model import load_quantized

    p = Path(args.model)
    if args.config is None:
        if p.suffix != ".refq" or not p.is_file():
            raise ModelFormatError(
                f"model {args.model!r}: give a quantized .refq file, or a float model with "
                "--config CFG"
            )
        qm = load_quantized(p)
        return qm, qm.metadata.get("source_model")
    from refq.ptq.quantize_cmd import load_config, load_float_model, quantize_float_model

    qcfg = load_config(args.config, args.profile)
    cfg, weights, tok = load_float_model(args.model)
    if cfg.arch != "llama":
        raise UnsupportedError(f"refq generate needs a decoder; {args.model!r} is {cfg.arch}")
    qm = quantize_float_model(args.model, cfg, weights, tok, qcfg, progress=not args.no_progress)
    return qm, args.model


def run(args: argparse.Namespace) -> int:
    if args.new_tokens < 1:
        raise ShapeError(f"-n must be >= 1, got {args.new_tokens}")
    qm, source = _quantized(args)
    cfg = qm.config
    if cfg.arch != "llama":
        raise UnsupportedError(f"refq generate needs a decoder; {args.model!r} is {cfg.arch}")
    tok = load_tokenizer(args.tokenizer or source, cfg.vocab_size)
    prompt = np.asarray(tok.encode_ids(args.prompt), np.int64)
    if prompt.size == 0:
        raise ShapeError("--prompt encodes to no token")
    context = args.context or min(cfg.max_seq_len, prompt.size + args.new_tokens)
    runner = qm.runner(context, args.profile)
    t0 = time.perf_counter()
    out = runner.generate(prompt, args.new_tokens, args.temperature, args.top_k, args.seed)
    dt = time.perf_counter() - t0
    sys.stdout.write(args.prompt + tok.decode([int(t) for t in out]) + "\n")
    print(
        f"{out.size} tokens in {dt:.2f} s ({out.size / dt:.1f} tokens/s including the "
        f"{prompt.size}-token prefill and first-call setup; bench/bench_llm.py measures decoding), "
        f"profile {args.profile or qm.profile}",
        file=sys.stderr,
    )
    return 0
