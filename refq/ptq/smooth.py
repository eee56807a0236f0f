"""SmoothQuant-style migration of activation outliers into the weights (config ``smooth``).

For a linear input point ``x`` (channels ``j``) read by the linears ``W_1 .. W_m``
(``(out, in)`` matrices), with ``a_j = max |x_j|`` over calibration data and
``w_j = max_i max_o |W_i[o, j]|``::

    s_j = clamp(a_j^alpha / w_j^(1 - alpha), 1e-5, 1e5)      (s_j = 1 where a_j or w_j is 0)
    x'_j = x_j / s_j,     W_i'[:, j] = W_i[:, j] * s_j

The product ``W x`` is unchanged; the division of ``x`` is folded into whatever produces it, so
the integer graph is the same shape with different constants (no run-time cost):

- an RMSNorm / LayerNorm output: ``gamma' = gamma / s`` (and ``beta' = beta / s``);
- a product ``a * u`` of two points where ``u`` is a linear's output (SwiGLU's up projection,
  ``ffn.hidden = silu(gate) * up``): that linear's rows (and bias) ``/ s``;
- an attention context (``ctx = probs @ v`` per head): the rows of the value projection
  (and bias) ``/ s``; with grouped-query heads every query head of a group reads the same value
  channel, so ``s`` is shared by the group (``a`` and ``w`` are maxima over the group).

Other producers (GELU, the residual stream) cannot absorb a per-channel scale: such points are
refused with an error naming them. Zhao-style ``alpha = 0.5`` balances the two ranges; larger
``alpha`` moves more of the outlier into the weights (which are quantized per output channel,
so a large ``s_j`` widens every row's range a little, not one row's).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from refq.calibration.observers import MinMaxObserver
from refq.calibration.readers import iterate
from refq.errors import UnsupportedError
from refq.models.config import ModelConfig
from refq.models.layout import Op, model_graph
from refq.ptq.config import QuantConfig


def smoothing_points(cfg: ModelConfig, qc: QuantConfig) -> dict[str, list[Op]]:
    """Input point -> the linears reading it, for every point a smoothed weight reads."""
    ops = model_graph(cfg)
    readers: dict[str, list[Op]] = {}
    for op in ops:
        if op.kind == "linear":
            readers.setdefault(op.inputs[0], []).append(op)
    out = {}
    for point, lins in readers.items():
        if any(qc.smooths(op.weights[0]) for op in lins):
            out[point] = lins
    return out


def _fold_target(cfg: ModelConfig, point: str) -> tuple[str, Op]:
    """How the producer of ``point`` absorbs ``1/s``: ('norm' | 'rows' | 'vrows', op)."""
    ops = model_graph(cfg)
    by_out = {op.output: op for op in ops}
    prod = by_out.get(point)
    if prod is None:
        raise UnsupportedError(f"smooth: point {point!r} has no producer op")
    if prod.kind in ("rmsnorm", "layernorm"):
        return "norm", prod
    if prod.kind == "mul":
        for inp in prod.inputs:
            src = by_out.get(inp)
            if src is not None and src.kind == "linear":
                return "rows", src
    if prod.kind == "attn_context":
        v = by_out[prod.inputs[1]]
        if v.kind == "linear":
            return "vrows", v
    raise UnsupportedError(
        f"smooth: the input {point!r} is produced by a {prod.kind} op, which cannot absorb a "
        "per-channel scale; remove its linear from smooth.match"
    )


def collect_absmax(
    cfg: ModelConfig,
    weights: dict[str, np.ndarray],
    points: Iterable[str],
    reader: Iterable[np.ndarray],
    forward: Callable,
    progress: bool,
) -> dict[str, np.ndarray]:
    """Per-channel ``max |x|`` of ``points`` over the calibration windows (float model)."""
    obs = {p: MinMaxObserver(axis=-1, name=p) for p in points}

    def hook(point: str, value: np.ndarray) -> None:
        o = obs.get(point)
        if o is not None:
            o.update(value)

    for window in iterate(reader, "smooth: channel ranges", progress):
        forward(weights, window, hook)
    out = {}
    for p, o in obs.items():
        lo, hi = o.range()
        out[p] = np.maximum(np.abs(lo), np.abs(hi))
    return out


def migrate(
    cfg: ModelConfig,
    weights: dict[str, np.ndarray],
    absmax: dict[str, np.ndarray],
    readers: dict[str, list[Op]],
    alpha: float,
) -> tuple[dict[str, np.ndarray], dict[str, dict[str, float]]]:
    """Smoothed copies of the affected weights (others shared) and per-point statistics."""
    out = dict(weights)
    stats: dict[str, dict[str, float]] = {}
    for point, lins in readers.items():
        kind, target = _fold_target(cfg, point)
        a = absmax[point].astype(np.float64)
        w = np.max([np.abs(out[op.weights[0]]).max(axis=0) for op in lins], axis=0)
        w = w.astype(np.float64)
        if kind == "vrows":
            h = cfg.n_heads
            hkv = getattr(cfg, "n_kv_heads", h)
            d = cfg.head_dim
            g = h // hkv
            a = a.reshape(hkv, g, d).max(axis=1)
            w = w.reshape(hkv, g, d).max(axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = np.where((a > 0) & (w > 0), a**alpha / w ** (1.0 - alpha), 1.0)
        s = np.clip(s, 1e-5, 1e5)
        if kind == "vrows":
            s_in = np.repeat(s[:, None, :], g, axis=1).reshape(-1)
            s_rows = s.reshape(-1)
        else:
            s_in = s_rows = s.reshape(-1)
        s32 = s_in.astype(np.float32)
        for op in lins:
            out[op.weights[0]] = (out[op.weights[0]] * s32[None, :]).astype(np.float32)
        r32 = s_rows.astype(np.float32)
        if kind == "norm":
            for wn in target.weights:  # gamma (and beta)
                out[wn] = (out[wn] / r32).astype(np.float32)
        else:
            wn = target.weights[0]
            out[wn] = (out[wn] / r32[:, None]).astype(np.float32)
            if f"{wn}.bias" in out:
                out[f"{wn}.bias"] = (out[f"{wn}.bias"] / r32).astype(np.float32)
        stats[point] = {
            "absmax_before": float(a.max()),
            "absmax_after": float((absmax[point] / s_in).max()),
            "scale_min": float(s.min()),
            "scale_max": float(s.max()),
        }
    return out, stats
