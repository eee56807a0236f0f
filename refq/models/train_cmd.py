"""``refq train-tiny``: train (or re-evaluate) the tiny byte-level Shakespeare LM.

Reproduce the shipped weights with::

    OPENBLAS_NUM_THREADS=1 nice -n 10 refq train-tiny --seed 0 -o refq/data/tiny_lm.npz

Prints the parameter count, the STM32H743 flash / SRAM estimate at int8, the training log,
the held-out bits per byte and a greedy and a sampled continuation.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

from refq.errors import BudgetError

DEFAULT_STEPS = 5000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", default="refq/data/tiny_lm.npz", help="checkpoint (.npz)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument(
        "--eval-only", action="store_true", help="skip training; evaluate the checkpoint at -o"
    )
    p.add_argument("--prompt", default="ROMEO:\n", help="prompt of the printed samples")
    p.add_argument("--sample-bytes", type=int, default=400)


def _report(cfg, weights, prompt: str, n: int) -> None:
    from refq.models import tiny_lm
    from refq.models.sampling import llama_generate
    from refq.models.train import bits_per_byte

    t = time.perf_counter()
    held = tiny_lm.corpus("heldout")
    bpb = bits_per_byte(weights, cfg, held, cfg.max_seq_len)
    print(
        f"held-out: {held.size} bytes, {bpb:.4f} bits/byte, perplexity {2**bpb:.3f} per byte "
        f"({time.perf_counter() - t:.1f} s)"
    )
    p = tiny_lm.encode(prompt)
    for temp in (0.0, 0.8):
        out = llama_generate(weights, cfg, p, n, temperature=temp, seed=0)
        print(f"--- sample (temperature {temp}, seed 0) ---\n{prompt}{tiny_lm.decode(out)}\n---")


def run(args: argparse.Namespace) -> int:
    from refq.models import tiny_lm
    from refq.models.config import n_params
    from refq.models.train import TrainConfig, load_checkpoint, train

    cfg = tiny_lm.TINY_LM
    mem = tiny_lm.mcu_memory(cfg)
    print(f"config: {json.dumps(cfg.to_dict())}")
    print(f"parameters: {n_params(cfg):,}")
    print(
        f"STM32H743 at int8: flash {mem['flash']:,} B (budget {tiny_lm.FLASH_BUDGET:,}); "
        f"SRAM {mem['sram']:,} B = KV cache {mem['kv_cache']:,} + activations "
        f"{mem['activations']:,} (budget {tiny_lm.SRAM_BUDGET:,})"
    )
    if mem["flash"] > tiny_lm.FLASH_BUDGET or mem["sram"] > tiny_lm.SRAM_BUDGET:
        raise BudgetError("the tiny LM config does not fit the STM32H743 budget")
    if args.eval_only:
        cfg, weights, meta = load_checkpoint(args.output)
        if meta.get("history"):
            print(f"trained: {json.dumps(meta['history'][-1])}")
    else:
        tc = TrainConfig(
            steps=args.steps,
            batch_size=args.batch_size,
            seq_len=cfg.max_seq_len,
            lr=args.lr,
            min_lr=args.lr / 10,
            warmup=min(200, max(1, args.steps // 20)),
            eval_every=args.eval_every,
            seed=args.seed,
        )
        print(f"training: {json.dumps(dataclasses.asdict(tc))}")
        weights, _ = train(
            cfg,
            tc,
            tiny_lm.corpus("train"),
            tiny_lm.corpus("heldout"),
            out=args.output,
            log=lambda s: print(s, flush=True),
        )
        print(f"wrote {args.output}")
    _report(cfg, weights, args.prompt, args.sample_bytes)
    return 0
