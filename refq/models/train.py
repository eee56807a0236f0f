"""Pure-NumPy training of a byte-level Llama-style LM (the tiny LM shipped in refq/data/).

AdamW (decoupled weight decay on matrices only), linear warm-up then cosine learning-rate
decay, global-norm gradient clipping, random windows drawn from a seeded generator, periodic
held-out evaluation and atomic checkpoints. The same seed, corpus and config reproduce the
same weights on the same NumPy/BLAS build (BLAS threading can change float summation order).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from refq.atomicfile import write_atomic
from refq.errors import ModelFormatError, ShapeError
from refq.models import llama
from refq.models import llama_trainable as lt
from refq.models.config import LlamaConfig, check_weights, config_from_dict, init_llama_weights
from refq.models.eval_text import bits_per_token


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation hyper-parameters."""

    steps: int = 2000
    batch_size: int = 32
    seq_len: int = 128
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    eps: float = 1e-8
    grad_clip: float = 1.0
    init_std: float = 0.02
    eval_every: int = 250
    eval_bytes: int = 16384
    seed: int = 0


def lr_at(step: int, tc: TrainConfig) -> float:
    """Linear warm-up to ``lr`` over ``warmup`` steps, then cosine decay to ``min_lr``."""
    if step < tc.warmup:
        return tc.lr * (step + 1) / tc.warmup
    t = min(1.0, (step - tc.warmup) / max(1, tc.steps - tc.warmup))
    return tc.min_lr + 0.5 * (tc.lr - tc.min_lr) * (1.0 + math.cos(math.pi * t))


class AdamW:
    """Adam with decoupled weight decay (Loshchilov & Hutter), bias-corrected moments."""

    def __init__(self, params: dict[str, np.ndarray], tc: TrainConfig) -> None:
        self.tc = tc
        self.m = {n: np.zeros_like(p) for n, p in params.items()}
        self.v = {n: np.zeros_like(p) for n, p in params.items()}
        self.t = 0

    def step(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray], lr: float) -> None:
        tc = self.tc
        self.t += 1
        c1 = 1.0 - tc.beta1**self.t
        c2 = 1.0 - tc.beta2**self.t
        for n, p in params.items():
            g = grads[n]
            m, v = self.m[n], self.v[n]
            m *= tc.beta1
            m += (1.0 - tc.beta1) * g
            v *= tc.beta2
            v += (1.0 - tc.beta2) * (g * g)
            if p.ndim >= 2 and tc.weight_decay:  # no decay on norm weights
                p *= 1.0 - lr * tc.weight_decay
            p -= (lr / c1) * m / (np.sqrt(v / c2) + tc.eps)


def clip_grads(grads: dict[str, np.ndarray], max_norm: float) -> float:
    """Scale all gradients so their global L2 norm is at most ``max_norm``; return the norm."""
    norm = math.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
    if max_norm > 0 and norm > max_norm:
        f = np.float32(max_norm / (norm + 1e-6))
        for g in grads.values():
            g *= f
    return norm


def sample_batch(
    data: np.ndarray, batch_size: int, seq_len: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random windows: inputs ``data[i:i+T]`` and targets ``data[i+1:i+T+1]``."""
    if data.size < seq_len + 1:
        raise ShapeError(
            f"training data of {data.size} tokens is shorter than a window of {seq_len + 1}"
        )
    starts = rng.integers(0, data.size - seq_len - 1, size=batch_size)
    idx = starts[:, None] + np.arange(seq_len + 1)[None, :]
    w = data[idx].astype(np.int64)
    return w[:, :-1], w[:, 1:]


def train_step(
    weights: dict[str, np.ndarray],
    cfg: LlamaConfig,
    tokens: np.ndarray,
    targets: np.ndarray,
) -> tuple[float, dict[str, np.ndarray]]:
    """Loss (nats) and gradients of every weight for one batch."""
    params = {n: lt.Tensor(w, requires_grad=True, name=n) for n, w in weights.items()}
    loss = lt.loss(params, cfg, tokens, targets)
    loss.backward()
    return float(loss.data), {n: p.grad for n, p in params.items()}


def bits_per_byte(
    weights: dict[str, np.ndarray], cfg: LlamaConfig, data: np.ndarray, window: int
) -> float:
    """Held-out bits per byte of the float model (natural-log NLL / ln 2 per predicted byte)."""
    return bits_per_token(lambda t: llama.forward(weights, cfg, t), data, window)


def save_checkpoint(
    path: str | os.PathLike,
    weights: dict[str, np.ndarray],
    cfg: LlamaConfig,
    meta: dict,
) -> None:
    """Write ``weights`` + config JSON to an .npz atomically (temp file, then os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {n: np.ascontiguousarray(w, dtype=np.float32) for n, w in weights.items()}
    arrays["__config__"] = np.frombuffer(json.dumps(cfg.to_dict()).encode(), dtype=np.uint8)
    arrays["__meta__"] = np.frombuffer(json.dumps(meta, sort_keys=True).encode(), dtype=np.uint8)
    write_atomic(path, lambda f: np.savez(f, **arrays))


def load_checkpoint(path: str | os.PathLike) -> tuple[LlamaConfig, dict[str, np.ndarray], dict]:
    """Read a checkpoint written by :func:`save_checkpoint`: (config, weights, meta)."""
    import zipfile

    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {n: z[n] for n in z.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ModelFormatError(f"{path}: not a readable checkpoint ({exc})") from None
    if "__config__" not in arrays:
        raise ModelFormatError(f"{path}: checkpoint has no __config__ entry")
    try:
        cfg = config_from_dict(json.loads(arrays.pop("__config__").tobytes()))
        meta = json.loads(arrays.pop("__meta__").tobytes()) if "__meta__" in arrays else {}
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFormatError(f"{path}: corrupt config/meta JSON ({exc})") from None
    if not isinstance(cfg, LlamaConfig):
        raise ModelFormatError(f"{path}: expected a llama checkpoint, got {cfg.arch}")
    check_weights(cfg, arrays, str(path))
    return cfg, arrays, meta


def train(
    cfg: LlamaConfig,
    tc: TrainConfig,
    train_data: np.ndarray,
    eval_data: np.ndarray | None = None,
    out: str | os.PathLike | None = None,
    log: Callable[[str], None] = print,
    init: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], list[dict]]:
    """Train from ``init`` (or a seeded random init); return (weights, history).

    ``history`` holds one record per evaluation (step, train loss, held-out bits/byte, time).
    With ``out``, a checkpoint is written atomically at every evaluation and at the end."""
    if tc.seq_len > cfg.max_seq_len:
        raise ShapeError(f"seq_len {tc.seq_len} exceeds the model's max_seq_len {cfg.max_seq_len}")
    rng = np.random.default_rng(tc.seed)
    weights = (
        {n: np.array(w, np.float32) for n, w in init.items()}
        if init is not None
        else init_llama_weights(cfg, seed=tc.seed, std=tc.init_std)
    )
    opt = AdamW(weights, tc)
    history: list[dict] = []
    t0 = time.perf_counter()
    running = None
    for step in range(tc.steps):
        x, y = sample_batch(train_data, tc.batch_size, tc.seq_len, rng)
        loss, grads = train_step(weights, cfg, x, y)
        if not math.isfinite(loss):
            raise ArithmeticError(f"training diverged at step {step}: loss {loss}")
        gnorm = clip_grads(grads, tc.grad_clip)
        lr = lr_at(step, tc)
        opt.step(weights, grads, lr)
        running = loss if running is None else 0.95 * running + 0.05 * loss
        last = step == tc.steps - 1
        if (tc.eval_every and (step + 1) % tc.eval_every == 0) or last:
            rec = {
                "step": step + 1,
                "train_loss": round(running, 4),
                "lr": lr,
                "grad_norm": round(gnorm, 3),
                "seconds": round(time.perf_counter() - t0, 1),
            }
            if eval_data is not None:
                ev = eval_data[: tc.eval_bytes] if tc.eval_bytes else eval_data
                rec["eval_bpb"] = round(bits_per_byte(weights, cfg, ev, tc.seq_len), 4)
                # the same measure on a fixed training slice shows the generalisation gap
                tr = train_data[: ev.size]
                rec["train_bpb"] = round(bits_per_byte(weights, cfg, tr, tc.seq_len), 4)
            history.append(rec)
            log(json.dumps(rec))
            if out is not None:
                save_checkpoint(out, weights, cfg, {"train": asdict(tc), "history": history})
    return weights, history
