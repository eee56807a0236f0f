"""``refq eval MODEL [-c CFG]... [-q FILE.refq]...``: accuracy of float, fake-quantized and
integer-only execution.

MODEL is the float model (``tiny``, ``smollm2``, ``minilm`` or a path, as for ``refq
quantize``) or a quantized ``.refq`` file (its float model is the ``source_model`` recorded by
``refq quantize``). Each ``-c CFG`` quantizes MODEL in memory with the calibration defaults of
``refq quantize`` (its size is measured by writing the model file to a temporary directory);
each ``-q FILE`` evaluates a model file written by ``refq quantize``.

Decoders (``--engines``, default ``float,sim,int``): perplexity on held-out text
(:mod:`refq.evaluation.perplexity`) and teacher-forced top-1 agreement with the float model's
greedy decoding of ``--agree`` tokens (default 256) after the first ``--prompt-tokens`` tokens
of the text (:mod:`refq.evaluation.agreement`). Default text: ``shakespeare_heldout.txt`` for
byte-level models (window = the model's context), the first 16,384 tokens of
``pydoc_topics_3.11.7.txt`` for SmolLM2 (window 2048); ``refq quantize`` calibrates on
``shakespeare_train.txt`` / the pydoc tokens after 16,384, so evaluation text is never
calibration text. ``--windows N`` scores the first N windows only.

Encoders: cosine similarity of sentence embeddings against float over
``refq/data/eval_sentences.txt`` (:mod:`refq.evaluation.embeddings`).

Prints the table (and the exact command) on stdout; ``--json OUT`` writes the full record.
Example::

    refq eval tiny -c w8a8 -c w4g32a8 --windows 8 --json tiny.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from refq.errors import InvalidDataError, ModelFormatError, ShapeError, UnsupportedError

ENGINES = ("float", "sim", "int")
DATA = Path(__file__).resolve().parent.parent / "data"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="tiny | smollm2 | minilm | float model path | quantized .refq")
    p.add_argument(
        "-c", "--config", action="append", default=[], help="quantize with this config (repeat)"
    )
    p.add_argument(
        "-q", "--quantized", action="append", default=[], help="a quantized .refq file (repeat)"
    )
    p.add_argument("--engines", default="float,sim,int", help="subset of float,sim,int")
    p.add_argument("--text", help="held-out text file (default: see the command's help)")
    p.add_argument("--tokens", type=int, help="use the first N tokens of the text")
    p.add_argument("--window", type=int, help="tokens per perplexity window")
    p.add_argument("--windows", type=int, help="score the first N windows only")
    p.add_argument("--agree", type=int, default=256, help="greedy tokens for agreement (0: off)")
    p.add_argument("--prompt-tokens", type=int, default=64, help="prompt length for agreement")
    p.add_argument("--sentences", help="sentence file for encoders (one per line)")
    p.add_argument("--max-sentences", type=int, help="use the first N sentences")
    p.add_argument("--calib", help="calibration text for -c (as refq quantize --calib)")
    p.add_argument("--calib-window", type=int, help="calibration window for -c")
    p.add_argument("--calib-windows", type=int, help="calibration windows for -c")
    p.add_argument("--profile", help="arithmetic profile of the integer engine")
    p.add_argument("--json", help="write the full result record here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars on stderr")


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _argv(args: argparse.Namespace) -> list[str]:
    """The options that produced this run (non-default ones), to print next to the numbers."""
    out = [args.model]
    for c in args.config:
        out += ["-c", c]
    for q in args.quantized:
        out += ["-q", q]
    defaults = {"engines": "float,sim,int", "agree": 256, "prompt_tokens": 64}
    for key in (
        "engines",
        "text",
        "tokens",
        "window",
        "windows",
        "agree",
        "prompt_tokens",
        "sentences",
        "max_sentences",
        "calib",
        "calib_window",
        "calib_windows",
        "profile",
        "json",
    ):
        v = getattr(args, key)
        if v is not None and v != defaults.get(key):
            out += [f"--{key.replace('_', '-')}", str(v)]
    if args.no_progress:
        out.append("--no-progress")
    return out


def _engines(spec: str) -> list[str]:
    out = [e.strip() for e in spec.split(",") if e.strip()]
    bad = [e for e in out if e not in ENGINES]
    if bad or not out:
        raise UnsupportedError(f"--engines {spec!r}: unknown engine {bad}; use {list(ENGINES)}")
    return out


def _source_of(path: Path) -> str | None:
    """The float model a quantized .refq was made from, or None for a float .refq."""
    from refq.models import modelfile

    manifest, _ = modelfile.read_manifest(path)
    if not manifest.get("quantization"):
        return None
    src = (manifest.get("metadata") or {}).get("source_model")
    if not isinstance(src, str) or not src:
        raise ModelFormatError(
            f"{path}: the manifest records no source_model; give the float model: "
            f"refq eval FLOAT_MODEL -q {path}"
        )
    return src


def _quantized_models(args: argparse.Namespace, model: str, cfg, weights, tok, files):
    """(name, QuantizedModel, size info) for every -q file and -c config. Files are loaded (and
    their hashes verified) and configs parsed before anything runs; each config quantizes when
    its turn comes, so only one quantized SmolLM2 is held in memory at a time."""
    from refq.ptq.model import load_quantized
    from refq.ptq.quantize_cmd import load_config, quantize_float_model

    loaded = []
    for f in files:
        qm = load_quantized(f)
        if qm.config != cfg:
            raise ModelFormatError(
                f"{f}: its architecture {qm.config.to_dict()} is not the float model's "
                f"{cfg.to_dict()}"
            )
        loaded.append(
            (Path(f).stem, qm, {"source": f"file {f}", "file_bytes": Path(f).stat().st_size})
        )
    configs = [(c, load_config(c, args.profile)) for c in args.config]

    def generate():
        yield from loaded
        loaded.clear()
        for c, qcfg in configs:
            _say(f"quantizing {model} with {qcfg.name}")
            qm = quantize_float_model(
                model,
                cfg,
                weights,
                tok,
                qcfg,
                calib=args.calib,
                window=args.calib_window,
                windows=args.calib_windows,
                progress=not args.no_progress,
            )
            with tempfile.TemporaryDirectory() as d:
                file_bytes = qm.save(Path(d) / "model.refq").stat().st_size
            yield qcfg.name, qm, {"source": f"config {c}", "file_bytes": file_bytes}

    return len(loaded) + len(configs), generate()


def _text_tokens(args: argparse.Namespace, model: str, cfg, tok) -> tuple[np.ndarray, str]:
    if args.text:
        p = Path(args.text)
        if not p.is_file():
            raise InvalidDataError(f"--text {args.text!r}: no such file")
        name = str(p)
        if tok is None:
            ids = np.frombuffer(p.read_bytes(), np.uint8).astype(np.int64)
        else:
            ids = np.asarray(tok.encode(p.read_text(encoding="utf-8")).ids, np.int64)
        limit = args.tokens
    elif tok is None:
        name = "refq/data/shakespeare_heldout.txt"
        ids = np.frombuffer((DATA / "shakespeare_heldout.txt").read_bytes(), np.uint8)
        ids = ids.astype(np.int64)
        limit = args.tokens
    else:
        from refq.models.eval_text import pydoc_topics_text
        from refq.ptq.quantize_cmd import EVAL_TOKENS

        name = "refq/data/pydoc_topics_3.11.7.txt"
        ids = np.asarray(tok.encode(pydoc_topics_text()).ids, np.int64)
        # refq quantize calibrates on the tokens after EVAL_TOKENS: never evaluate past them.
        limit = min(args.tokens or EVAL_TOKENS, EVAL_TOKENS)
    if limit is not None:
        ids = ids[:limit]
    if ids.size and int(ids.max()) >= cfg.vocab_size:
        raise ShapeError(f"text token {int(ids.max())} is outside the vocabulary of {model}")
    return ids, name


def _float_size(weights: dict[str, np.ndarray]) -> int:
    return int(sum(np.asarray(a).size * 4 for a in weights.values()))


def _eval_decoder(args, model, cfg, weights, tok, quantized, engines) -> dict[str, Any]:
    from refq.evaluation.agreement import top1_agreement
    from refq.evaluation.perplexity import evaluate_perplexity
    from refq.models import llama
    from refq.models.sampling import llama_generate

    progress = not args.no_progress
    ids, text_name = _text_tokens(args, model, cfg, tok)
    window = args.window or (cfg.max_seq_len if tok is None else min(cfg.max_seq_len, 2048))
    if window > cfg.max_seq_len:
        raise ShapeError(f"--window {window} exceeds the model's context of {cfg.max_seq_len}")
    n_agree = max(int(args.agree), 0)
    prompt = ids[: args.prompt_tokens]
    if n_agree and prompt.size == 0:
        raise ShapeError("agreement needs a non-empty prompt (--prompt-tokens >= 1)")
    # The integer graph's KV cache must hold a perplexity window and an agreement segment.
    context = min(cfg.max_seq_len, max(window, prompt.size + n_agree if n_agree else 0))
    setup: dict[str, Any] = {
        "text": text_name,
        "tokens": int(ids.size),
        "window": int(window),
        "windows": args.windows or "all",
    }
    record: dict[str, Any] = {"kind": "lm", "setup": setup, "float": {}, "quantized": []}
    greedy = None
    if n_agree:
        t0 = time.perf_counter()
        greedy = llama_generate(weights, cfg, prompt, n_agree)
        setup["agreement"] = {
            "prompt_tokens": int(prompt.size),
            "new_tokens": n_agree,
            "float_greedy_seconds": round(time.perf_counter() - t0, 2),
        }
        if tok is None:
            from refq.models.tiny_lm import decode

            setup["agreement"]["float_greedy_text"] = decode(greedy)
        else:
            setup["agreement"]["float_greedy_text"] = tok.decode(greedy.tolist())
    if "float" in engines:
        res = evaluate_perplexity(
            lambda t: llama.forward(weights, cfg, t),
            ids,
            window,
            args.windows,
            progress=progress,
            label="float ppl",
        )
        record["float"] = {"perplexity": res.to_json(), "size_bytes": _float_size(weights)}
    else:
        record["float"] = {"size_bytes": _float_size(weights)}
    for name, qm, info in quantized:
        entry = _entry(args, name, qm, info)
        for engine in engines:
            if engine == "float":
                continue
            t0 = time.perf_counter()
            if engine == "sim":

                def fn(t, qm=qm):
                    return qm.simulate(t, context)

                codes_fn = fn
            else:
                runner = qm.runner(context, args.profile)
                fn = runner.logits
                codes_fn = runner.prefill  # argmax / ties on the integer codes themselves
            res = evaluate_perplexity(
                fn, ids, window, args.windows, progress=progress, label=f"{name} {engine} ppl"
            )
            e: dict[str, Any] = {"perplexity": res.to_json()}
            if greedy is not None:
                e["agreement"] = top1_agreement(codes_fn, prompt, greedy, cfg.max_seq_len).to_json()
            e["seconds"] = round(time.perf_counter() - t0, 2)
            entry[engine] = e
            fn = codes_fn = runner = None  # drop the engine (SmolLM2: hundreds of MB)
        record["quantized"].append(entry)
        del qm
    return record


def _entry(args, name: str, qm, info: dict[str, Any]) -> dict[str, Any]:
    """The record of one quantized model before its engines' results are added."""
    return {
        "name": name,
        "profile": args.profile or qm.profile,
        **info,
        "size_bytes": qm.weight_bytes(),
    }


def _eval_encoder(args, cfg, weights, tok, quantized, engines) -> dict[str, Any]:
    from refq.evaluation.embeddings import compare_embeddings, embed_all, load_sentences
    from refq.models import bert
    from refq.models.integer import IntegerEncoder

    progress = not args.no_progress
    sentences = load_sentences(args.sentences)[: args.max_sentences]
    setup = {"sentences": args.sentences or "refq/data/eval_sentences.txt", "n": len(sentences)}
    record: dict[str, Any] = {"kind": "embeddings", "setup": setup, "float": {}, "quantized": []}

    def float_embed(s: str) -> np.ndarray:
        enc = tok.encode(s)
        return bert.sentence_embedding(
            weights, cfg, np.asarray(enc.ids), token_type_ids=np.asarray(enc.type_ids)
        )[0]

    ref = embed_all(float_embed, sentences, progress=progress, label="embed float")
    record["float"] = {"size_bytes": _float_size(weights)}
    for name, qm, info in quantized:
        entry = _entry(args, name, qm, info)
        for engine in engines:
            if engine == "float":
                continue
            if engine == "sim":

                def embed(s: str, qm=qm) -> np.ndarray:
                    h = qm.simulate(np.asarray(tok.encode(s).ids))
                    return bert.pool(h[None], np.ones((1, h.shape[0])), cfg)[0]
            else:
                enc = IntegerEncoder(qm, args.profile)

                def embed(s: str, enc=enc) -> np.ndarray:
                    return enc.sentence_embedding(np.asarray(tok.encode(s).ids))

            res, _ = compare_embeddings(
                ref, embed, sentences, progress=progress, label=f"{name} {engine} embed"
            )
            entry[engine] = {"embeddings": res.to_json(), "seconds": round(res.seconds, 2)}
        record["quantized"].append(entry)
    return record


def run(args: argparse.Namespace) -> int:
    from refq.evaluation.report import command_line, render, write_json
    from refq.ptq.quantize_cmd import load_float_model

    engines = _engines(args.engines)
    model = args.model
    files = list(args.quantized)
    p = Path(model)
    if p.suffix == ".refq" and p.is_file():
        src = _source_of(p)
        if src is not None:
            files.insert(0, model)
            model = src
    t0 = time.perf_counter()
    cfg, weights, tok = load_float_model(model)
    if cfg.arch not in ("llama", "bert"):
        raise UnsupportedError(f"refq eval: architecture {cfg.arch!r} is not supported")
    n_quantized, quantized = _quantized_models(args, model, cfg, weights, tok, files)
    if not n_quantized and "float" not in engines:
        raise UnsupportedError("nothing to evaluate: give -c CFG or -q FILE, or --engines float")
    if cfg.arch == "llama":
        record = _eval_decoder(args, model, cfg, weights, tok, quantized, engines)
    else:
        if tok is None:
            raise UnsupportedError(f"{model}: an encoder needs its tokenizer (a model directory)")
        record = _eval_encoder(args, cfg, weights, tok, quantized, engines)
    record = {
        "model": model,
        "command": command_line(["eval", *_argv(args)]),
        "architecture": cfg.to_dict(),
        **record,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    sys.stdout.write(render(record))
    if args.json:
        write_json(args.json, record)
    return 0
