"""Decoding speed with a KV cache: integer-only engine vs the float NumPy reference, same run.

Run:  .venv/bin/python bench/bench_llm.py [--model tiny|smollm2|all] [--config w8a8]
          [--tokens N] [--prompt-tokens P] [--threads T] [--quantized FILE.refq]

For each model: the float reference (:func:`refq.models.llama.forward` with a
:class:`~refq.models.llama.KVCache`) and the integer engine (:class:`refq.models.integer.
IntegerLM`, the graph of a quantized model under its profile) prefill the first ``P`` tokens of
the held-out text, then decode the next ``N`` tokens one at a time (teacher-forced: both read
the same tokens, so both do the same work). Only the decode steps are timed; tokens/s =
``N / seconds`` for the best of ``--repeat`` runs of each engine (alternating). Before printing
any time the script asserts that the integer engine's decoded logit codes equal those of one
integer prefill over the same ``P + N`` tokens, bit for bit.

The quantized model is made in-process with ``--config`` (calibration on 4 windows of the
calibration text: speed does not depend on calibration quality) unless ``--quantized`` names a
model file. ``--threads`` sets OPENBLAS_NUM_THREADS / NUMBA_NUM_THREADS for both engines (set
before NumPy is imported).

Targets (issue 4): tiny LM >= 1000 tokens/s integer-only; SmolLM2-135M >= 10 tokens/s integer
-only and >= 0.5x the float reference's tokens/s.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

TARGETS = {"tiny": (1000.0, None), "smollm2": (10.0, 0.5)}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="all", choices=["tiny", "smollm2", "all"])
    p.add_argument("--config", default="w8a8", help="quantization config (name or JSON file)")
    p.add_argument("--quantized", help="a quantized .refq file instead of --config")
    p.add_argument("--tokens", type=int, help="decode steps (default 256 tiny, 32 smollm2)")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--repeat", type=int, default=5, help="best of this many timed runs")
    p.add_argument("--threads", type=int, help="BLAS / Numba threads (default: library default)")
    p.add_argument("--profile", help="arithmetic profile (default: the config's)")
    return p.parse_args()


ARGS = parse()
if ARGS.threads:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(ARGS.threads)

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from refq.models import llama  # noqa: E402


def load(model: str):
    """(config, float weights, held-out tokens, calibration reader factory)."""
    from refq.calibration.readers import TokenWindows, byte_windows

    if model == "tiny":
        from refq.models.tiny_lm import corpus, load_tiny_lm

        cfg, w = load_tiny_lm()
        text = corpus("heldout").astype(np.int64)
        return cfg, w, text, lambda: byte_windows("refq/data/shakespeare_train.txt", 128, 4)
    from refq.models.eval_text import pydoc_topics_text
    from refq.models.gguf_loader import load_smollm2

    cfg, w, tok = load_smollm2()
    ids = np.asarray(tok.encode(pydoc_topics_text()).ids, np.int64)
    return cfg, w, ids[:16384], lambda: TokenWindows(ids[16384:], 128, 4, name="pydoc[16384:]")


def quantized_model(model: str, cfg, weights, calib):
    from refq.ptq import QuantConfig, load_quantized, quantize_model

    if ARGS.quantized:
        return load_quantized(ARGS.quantized)
    return quantize_model(cfg, weights, QuantConfig.load(ARGS.config), calib())


def float_decode(cfg, weights, prompt: np.ndarray, steps: np.ndarray) -> float:
    """Seconds for ``len(steps)`` single-token float forwards after a prefill of ``prompt``."""
    cache = llama.KVCache(cfg, max_seq_len=prompt.size + steps.size)
    llama.forward(weights, cfg, prompt, cache, 0)
    pos = prompt.size
    t0 = time.perf_counter()
    for t in steps:
        llama.forward(weights, cfg, np.asarray([t]), cache, pos)
        pos += 1
    return time.perf_counter() - t0


def int_decode(runner, prompt: np.ndarray, steps: np.ndarray) -> tuple[float, np.ndarray]:
    """Seconds for the integer decode steps, and the decoded logit codes."""
    runner.prefill(prompt)
    out = []
    t0 = time.perf_counter()
    for t in steps:
        out.append(runner.decode(int(t)))
    return time.perf_counter() - t0, np.stack(out)


def bench(model: str) -> list[str]:
    n = ARGS.tokens or (256 if model == "tiny" else 32)
    t0 = time.perf_counter()
    cfg, w, text, calib = load(model)
    qm = quantized_model(model, cfg, w, calib)
    prep = time.perf_counter() - t0
    p = ARGS.prompt_tokens
    if p + n > cfg.max_seq_len:
        n = cfg.max_seq_len - p
    prompt, steps = text[:p], text[p : p + n]
    context = p + n
    t1 = time.perf_counter()
    runner = qm.runner(context, ARGS.profile)
    build = time.perf_counter() - t1
    # Warm-up (Numba compilation, caches), then the exactness check on the warm engine.
    int_decode(runner, prompt, steps[: min(4, n)])
    float_decode(cfg, w, prompt, steps[: min(4, n)])
    t_int, codes = int_decode(runner, prompt, steps)
    full = runner.prefill(np.concatenate([prompt, steps]))
    if not np.array_equal(codes, full[p:]):  # row p + i: logits after step token i
        raise SystemExit(f"{model}: integer decode differs from the integer prefill")
    # Best of --repeat runs each, alternating the engines (the machine is shared).
    t_float = float_decode(cfg, w, prompt, steps)
    for _ in range(ARGS.repeat - 1):
        t_int = min(t_int, int_decode(runner, prompt, steps)[0])
        t_float = min(t_float, float_decode(cfg, w, prompt, steps))
    int_tps, float_tps = n / t_int, n / t_float
    target, ratio_target = TARGETS[model]
    ratio = int_tps / float_tps
    ok = int_tps >= target and (ratio_target is None or ratio >= ratio_target)
    rt = f", >= {ratio_target}x float" if ratio_target else ""
    return [
        f"{model}: {cfg.n_layers} layers, dim {cfg.dim}, vocab {cfg.vocab_size}; config "
        f"{qm.qconfig.name}, profile {ARGS.profile or qm.profile}; prompt {p}, decode {n} "
        f"tokens, best of {ARGS.repeat} (load + PTQ {prep:.1f} s, graph + prepare {build:.1f} s)",
        "  bit-exact: integer decode logits == integer prefill logits (asserted)",
        f"  float32 NumPy reference  {float_tps:9.1f} tokens/s  ({1e3 / float_tps:8.2f} ms/token)",
        f"  integer-only engine      {int_tps:9.1f} tokens/s  ({1e3 / int_tps:8.2f} ms/token)",
        f"  integer / float          {ratio:9.2f}x",
        f"  target >= {target:g} tokens/s{rt}: {'MET' if ok else 'MISSED'}",
    ]


def main() -> int:
    import numba

    models = ["tiny", "smollm2"] if ARGS.model == "all" else [ARGS.model]
    print(
        f"refq LLM decode benchmark ({platform.machine()}, {os.cpu_count()} CPUs, load "
        f"{os.getloadavg()[0]:.1f}; Python {platform.python_version()}, NumPy {np.__version__}, "
        f"Numba {numba.__version__}; threads {ARGS.threads or 'default'})"
    )
    for m in models:
        for line in bench(m):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
