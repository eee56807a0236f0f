"""An int32 residual stream: refq ops ``ADD32`` and ``ROW_NORMALIZE`` (config ``bits: 32``).

Why: in SmolLM2 the attention-sink token carries residual values near 28,500 while other tokens'
residuals have an rms of a few units; one int16 scale for the stream (step ~0.87) drowns them
(docs/ptq.md measures it). TFLM's ADD and the integer norms stop at int16, so a residual point
whose rule says ``bits: 32`` is lowered to these two integer ops instead (no peer has them and the C
generator does not lower them).

``ADD32(a, b) -> y`` (int8 / int16 / int32 inputs, int32 output, all symmetric or with zero
points): with the real multipliers ``r_i = s_i / s_y`` turned into integers
``M_i = round(r_i 2^k)`` for the largest ``k <= 31`` keeping every ``M_i < 2^31``::

    y = clamp((M_a (a - z_a) + M_b (b - z_b) + 2^(k-1)) >> k,  -2^31, 2^31 - 1)    (int64)

(``M_i = 2^k`` exactly when ``s_i = s_y``: the residual input passes unchanged). Round half up.

``ROW_NORMALIZE(x) -> y`` (int32 in, int16 out, same declared scale): per row ``t``,
``e_t = max(0, bitlen(max_k |x[t, k]|) - 15)`` and
``y[t, k] = clamp(RoundingDivideByPOT(x[t, k], e_t), -32767, 32767)`` (half away from zero).
Row ``t`` of ``y`` is row ``t`` of ``x`` divided by ``2^e_t``: only consumers invariant to a
per-row scale may read it, which the lowering guarantees (RMS_NORM / LAYER_NORM: ``x / rms(x)``
is unchanged) except for its ``epsilon``, whose integer form (``round(eps n / s^2)`` added to
the sum of squares) would be wrong by ``4^e_t`` on shifted rows: the lowering sets
``epsilon = 0`` on those norms, which changes a normalized row by at most ``eps / (2 mean(x^2))``
relative (``5e-6`` for SmolLM2's residual stream, whose rows have an rms above 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from refq.errors import ShapeError, UnsupportedError
from refq.kernels.registry import register
from refq.profiles import Profile

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


@dataclass(frozen=True)
class Add32Params:
    multipliers: tuple[int, int]
    zero_points: tuple[int, int]
    shift: int
    name: str


def add32_multipliers(s_a: float, s_b: float, s_y: float) -> tuple[tuple[int, int], int]:
    """Integer multipliers ``round(s_i / s_y * 2^k)`` and ``k`` (module docstring)."""
    ratios = [float(np.float32(s)) / float(np.float32(s_y)) for s in (s_a, s_b)]
    k = 31
    while k > -31 and max(round(r * 2.0**k) for r in ratios) >= 1 << 31:
        k -= 1
    return (round(ratios[0] * 2.0**k), round(ratios[1] * 2.0**k)), k


def add32(a: np.ndarray, b: np.ndarray, p: Add32Params) -> np.ndarray:
    """``ADD32`` of two code arrays (module docstring)."""
    (ma, mb), (za, zb) = p.multipliers, p.zero_points
    acc = (a.astype(np.int64) - za) * ma + (b.astype(np.int64) - zb) * mb
    y = (acc + (1 << (p.shift - 1))) >> p.shift if p.shift > 0 else acc << -p.shift
    return np.clip(y, INT32_MIN, INT32_MAX).astype(np.int32)


def row_normalize(x: np.ndarray) -> np.ndarray:
    """``ROW_NORMALIZE`` of int32 codes ``(..., D)`` (module docstring)."""
    v = np.asarray(x).astype(np.int64)
    if v.ndim == 0:
        raise ShapeError("ROW_NORMALIZE needs rows")
    m = np.abs(v).max(axis=-1, keepdims=True)
    e = np.maximum(0, np.frexp(m.astype(np.float64))[1].astype(np.int64) - 15)  # exact: m < 2^53
    mask = (np.int64(1) << e) - 1
    q = v >> e
    rem = v & mask
    thr = (mask >> 1) + (v < 0)
    y = q + (rem > thr)
    return np.clip(y, -32767, 32767).astype(np.int16)


def _prepare_add32(node: Any, tensors: Mapping[str, Any], profile: Profile) -> Add32Params:
    if len(node.inputs) != 2 or len(node.outputs) != 1:
        raise ShapeError(f"ADD32 node {node.name!r} takes two inputs and one output")
    ins = [tensors[n] for n in node.inputs]
    out = tensors[node.outputs[0]]
    if out.dtype != "int32" or any(t.dtype not in ("int8", "int16", "int32") for t in ins):
        raise UnsupportedError(f"ADD32 node {node.name!r}: int8/16/32 inputs, int32 output")
    for t in (*ins, out):
        if not t.quantized or t.per_channel:
            raise UnsupportedError(f"ADD32 node {node.name!r}: {t.name!r} needs one scale")
    if out.scalar_zero_point() != 0:
        raise UnsupportedError(f"ADD32 node {node.name!r}: the int32 output is symmetric")
    mults, k = add32_multipliers(ins[0].scalar_scale(), ins[1].scalar_scale(), out.scalar_scale())
    zps = (ins[0].scalar_zero_point(), ins[1].scalar_zero_point())
    return Add32Params(mults, zps, k, node.name)


def _run_add32(p: Add32Params, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    return [add32(np.asarray(inputs[0]), np.asarray(inputs[1]), p)]


def _prepare_rownorm(node: Any, tensors: Mapping[str, Any], profile: Profile) -> str:
    x, y = tensors[node.inputs[0]], tensors[node.outputs[0]]
    if x.dtype != "int32" or y.dtype != "int16":
        raise UnsupportedError(f"ROW_NORMALIZE node {node.name!r}: int32 in, int16 out")
    return node.name


def _run_rownorm(p: str, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    return [row_normalize(np.asarray(inputs[0]))]


register("ADD32", prepare=_prepare_add32, run=_run_add32)
register("ROW_NORMALIZE", prepare=_prepare_rownorm, run=_run_rownorm)
