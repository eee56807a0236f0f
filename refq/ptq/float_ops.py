"""``FLOAT_OP``: a layout op executed in float32, for comparison runs (config ``float_ops``).

Not an integer kernel and not for deployment: it lets a quantized graph keep chosen ops in
float (e.g. the down projections, to measure what their quantization costs) while everything
else runs in integers. Inputs and outputs are float32 tensors; the lowering puts DEQUANTIZE /
QUANTIZE at the borders. The op is registered in the kernel registry under the name
``FLOAT_OP`` when this module is imported (:mod:`refq.ptq.lower` does); the C code generator
does not implement it.

Attr ``kind`` selects the computation, with the float reference's formulas
(:mod:`refq.models.llama`, :mod:`refq.models.bert`): ``embedding`` (rows of a float table),
``rmsnorm`` / ``layernorm`` (attr ``epsilon``), ``linear`` (``x @ W.T [+ b]``), ``rope`` (attrs
``head_dim``, ``theta``; input ``position``), ``attention`` (causal GQA with float32 KV-cache
state tensors ``[Hkv, max_seq, D]``; attrs ``num_heads``, ``num_kv_heads``), ``add``, ``mul``,
``silu``, ``swiglu`` (``silu(gate) * up``), ``gelu``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from refq.errors import ShapeError, UnsupportedError
from refq.kernels.registry import register
from refq.profiles import Profile

KINDS = (
    "embedding",
    "rmsnorm",
    "layernorm",
    "linear",
    "rope",
    "attention",
    "add",
    "mul",
    "silu",
    "swiglu",
    "gelu",
)


@dataclass(frozen=True)
class FloatOpParams:
    kind: str
    attrs: tuple[tuple[str, Any], ...]
    name: str

    def attr(self, key: str, default: Any = None) -> Any:
        return dict(self.attrs).get(key, default)


def _prepare(node: Any, tensors: Mapping[str, Any], profile: Profile) -> FloatOpParams:
    kind = node.attrs.get("kind")
    if kind not in KINDS:
        raise UnsupportedError(f"FLOAT_OP node {node.name!r}: kind {kind!r} not in {KINDS}")
    for n in (*node.inputs, *node.outputs):
        if n is not None and tensors[n].dtype not in ("float32", "int32"):
            raise UnsupportedError(
                f"FLOAT_OP node {node.name!r}: tensor {n!r} is {tensors[n].dtype}, not float32"
            )
    attrs = tuple(sorted((k, v) for k, v in node.attrs.items() if k != "kind"))
    return FloatOpParams(kind, attrs, node.name)


def _position(v: np.ndarray) -> int:
    a = np.asarray(v)
    if a.size != 1 or a.dtype.kind not in "iu":
        raise ShapeError("FLOAT_OP: position must be one integer")
    return int(a.reshape(-1)[0])


def _run(p: FloatOpParams, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    from refq.models import bert, llama

    k = p.kind
    f32 = np.float32
    if k == "embedding":
        ids, table = inputs
        return [np.asarray(table)[np.asarray(ids).astype(np.int64)].astype(f32)]
    if k == "rmsnorm":
        x, g = inputs
        return [llama.rmsnorm(x, g, p.attr("epsilon", 1e-5)).astype(f32)]
    if k == "layernorm":
        x, g, b = inputs
        return [bert.layernorm(x, g, b, p.attr("epsilon", 1e-12)).astype(f32)]
    if k == "linear":
        x, w = inputs[0], inputs[1]
        y = x @ np.asarray(w).T
        if len(inputs) > 2 and inputs[2] is not None:
            y = y + inputs[2]
        return [y.astype(f32)]
    if k == "rope":
        x, pos = inputs
        hd = int(p.attr("head_dim"))
        t = x.shape[0]
        cos, sin = llama.rope_tables(
            np.arange(_position(pos), _position(pos) + t), hd, float(p.attr("theta"))
        )
        return [llama.apply_rope(x.reshape(t, -1, hd), cos, sin).reshape(x.shape).astype(f32)]
    if k == "attention":
        q, kk, v, pos, kc, vc = inputs
        return [_attention(q, kk, v, _position(pos), kc, vc, p)]
    if k == "add":
        return [(inputs[0] + inputs[1]).astype(f32)]
    if k == "mul":
        return [(inputs[0] * inputs[1]).astype(f32)]
    if k == "silu":
        return [llama.silu(inputs[0]).astype(f32)]
    if k == "swiglu":
        return [(llama.silu(inputs[0]) * inputs[1]).astype(f32)]
    return [bert.gelu(np.asarray(inputs[0], f32)).astype(f32)]  # gelu


def _attention(q, k, v, pos: int, kc, vc, p: FloatOpParams) -> np.ndarray:
    """Causal GQA over float caches [Hkv, S, D] (as refq.models.llama.forward)."""
    from refq.models.llama import softmax

    h, hkv = int(p.attr("num_heads")), int(p.attr("num_kv_heads"))
    d = kc.shape[2]
    t = q.shape[0]
    end = pos + t
    if end > kc.shape[1]:
        raise ShapeError(f"FLOAT_OP {p.name!r}: positions up to {end} exceed the cache")
    kc[:, pos:end] = k.reshape(t, hkv, d).transpose(1, 0, 2)
    vc[:, pos:end] = v.reshape(t, hkv, d).transpose(1, 0, 2)
    g = h // hkv
    qh = q.reshape(t, hkv, g, d).transpose(1, 2, 0, 3)  # (Hkv, g, T, D)
    scores = (qh @ kc[:, None, :end].transpose(0, 1, 3, 2)) * np.float32(1.0 / np.sqrt(d))
    mask = np.arange(end)[None, :] > (pos + np.arange(t))[:, None]
    probs = softmax(np.where(mask, -np.inf, scores), axis=-1).astype(np.float32)
    ctx = probs @ vc[:, None, :end]  # (Hkv, g, T, D)
    return ctx.transpose(2, 0, 1, 3).reshape(t, h * d).astype(np.float32)


register("FLOAT_OP", prepare=_prepare, run=_run)
