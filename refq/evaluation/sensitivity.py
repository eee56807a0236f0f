"""Which activation points a model can afford at low precision: a fake-quantized sweep.

Two quantizations of one model share weights (8-bit per-channel, symmetric) and calibration:
*base* (every activation point at ``--base`` bits, default 16) and *probe* (every point at
``--probe`` bits, default 8). For each point group ``G`` (an ``fnmatch`` pattern over the points
of refq.models.layout), the simulation (refq.ptq.simulate) rounds the points of ``G`` as the
probe graph does (``--probe 0``: not at all) and every other point as the base graph does, and
the metric is measured: perplexity on held-out windows (decoders, as ``refq eval``) or the mean
cosine of sentence embeddings against float (encoders). Rows: weights only (no activation
rounding), base everywhere, probe everywhere, then probe only at each group. This measures the
cost of each group in isolation, by simulation: it is a guide to configs, not an integer-only
result.

    python -m refq.evaluation.sensitivity smollm2 --windows 1 --window 512 "*.ffn.hidden" ...
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def _quantize(model: str, cfg: Any, weights: dict, tok: Any, bits: int, args) -> Any:
    from refq.ptq.config import QuantConfig
    from refq.ptq.quantize_cmd import quantize_float_model

    qc = QuantConfig.from_dict(
        {
            "name": f"a{bits}",
            "weights": [{"match": "*", "bits": 8, "granularity": "per-channel", "symmetric": True}],
            "activations": [{"match": "*", "bits": bits, "symmetric": bits == 16}],
        }
    )
    return quantize_float_model(
        model, cfg, weights, tok, qc, window=args.calib_window, windows=args.calib_windows
    )


def mixed_points(
    base: dict[str, list], probe: dict[str, list], pick: Callable[[str], bool]
) -> dict[str, list]:
    """Each point's quantization chain from ``probe`` where ``pick(point)``, else ``base``."""
    return {p: (probe.get(p, []) if pick(p) else base.get(p, [])) for p in {*base, *probe}}


def run(argv: Sequence[str] | None = None) -> int:
    from refq.evaluation.embeddings import cosine_rows, load_sentences
    from refq.evaluation.perplexity import evaluate_perplexity
    from refq.models import bert, llama
    from refq.ptq.quantize_cmd import load_float_model
    from refq.ptq.simulate import make_hook, simulation_weights

    ap = argparse.ArgumentParser(prog="python -m refq.evaluation.sensitivity")
    ap.add_argument("model")
    ap.add_argument("groups", nargs="*", help="point patterns, e.g. 'layers.*.ffn.hidden'")
    ap.add_argument("--base", type=int, default=16, choices=(8, 16))
    ap.add_argument(
        "--probe", type=int, default=8, choices=(0, 8, 16), help="0: the group is not rounded"
    )
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--windows", type=int, default=1)
    ap.add_argument("--sentences", type=int, default=128, help="encoders: first N sentences")
    ap.add_argument("--calib-window", type=int)
    ap.add_argument("--calib-windows", type=int)
    args = ap.parse_intermixed_args(argv)
    t0 = time.perf_counter()
    cfg, w, tok = load_float_model(args.model)
    qb = _quantize(args.model, cfg, w, tok, args.base, args)
    qp = _quantize(args.model, cfg, w, tok, args.probe, args) if args.probe else None
    sw = simulation_weights(qb)
    print(f"# {args.model}: base a{args.base}, probe a{args.probe}, W8 per-channel "
          f"(PTQ {time.perf_counter() - t0:.0f} s)", flush=True)  # fmt: skip

    if cfg.arch == "llama":
        from refq.evaluation.eval_cmd import _text_tokens

        ns = argparse.Namespace(text=None, tokens=None)
        ids, _ = _text_tokens(ns, args.model, cfg, tok)
        gb = qb.graph(args.window).metadata["points"]
        gp = qp.graph(args.window).metadata["points"] if qp is not None else {}

        def metric(points: dict[str, list] | None) -> float:
            def fn(t: np.ndarray) -> np.ndarray:
                if points is None:
                    return llama.forward(w, cfg, t)
                return llama.forward(sw, cfg, t, observe=make_hook(qb, t, points))

            return evaluate_perplexity(fn, ids, args.window, args.windows).perplexity

        ref = metric(None)
        print(f"# metric: perplexity, {args.windows} window(s) of {args.window} tokens")
        print(f"{'float':40s} {ref:12.4f}", flush=True)

        def row(name: str, pick: Callable[[str], bool] | None) -> None:
            v = metric({} if pick is None else mixed_points(gb, gp, pick))
            print(f"{name:40s} {v:12.4f} {100 * (v / ref - 1):+9.2f}%", flush=True)

    else:
        sents = load_sentences()[: args.sentences]
        encs = [tok.encode(s) for s in sents]
        ref_emb = np.stack(
            [
                bert.sentence_embedding(
                    w, cfg, np.asarray(e.ids), token_type_ids=np.asarray(e.type_ids)
                )[0]
                for e in encs
            ]
        )

        def metric_b(pick: Callable[[str], bool] | None) -> float:
            out = []
            for e in encs:
                ids = np.asarray(e.ids)
                if pick is None:
                    pts: dict[str, list] = {}
                else:
                    gb = qb.graph(ids.size).metadata["points"]
                    gp = qp.graph(ids.size).metadata["points"] if qp is not None else {}
                    pts = mixed_points(gb, gp, pick)
                h = bert.forward(sw, cfg, ids[None], observe=make_hook(qb, ids, pts))[0]
                out.append(bert.pool(h[None], np.ones((1, h.shape[0])), cfg)[0])
            return float(cosine_rows(np.stack(out), ref_emb).mean())

        print(f"# metric: mean cosine against float over {len(sents)} sentences", flush=True)

        def row(name: str, pick: Callable[[str], bool] | None) -> None:
            print(f"{name:40s} {metric_b(pick):12.5f}", flush=True)

    row("weights only (activations not rounded)", None)
    row(f"a{args.base} everywhere", lambda p: False)
    probe = f"a{args.probe}" if args.probe else "unrounded"
    if args.probe:
        row(f"{probe} everywhere", lambda p: True)
    for g in args.groups:
        row(f"{probe} only at {g}", lambda p, g=g: fnmatch.fnmatchcase(p, g))
    print(f"# {time.perf_counter() - t0:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(run())
