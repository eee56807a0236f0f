"""ONNX DynamicQuantizeLinear, opset 11 (float32 -> uint8, per-tensor).

The operator is defined by its ONNX function body, all in float32:

    lo = min(0, min(x));  hi = max(0, max(x))
    y_scale = (hi - lo) / 255
    y_zero_point = uint8(round_half_even(clip(0 - lo / y_scale, 0, 255)))
    y = QuantizeLinear(x, y_scale, y_zero_point)       # saturate(rint(x / s) + zp) to [0, 255]

Where the body is undefined refq follows onnxruntime 1.32: an input whose range is zero (all
zeros, or empty) gives ``y_scale = 1``, ``y_zero_point = 0`` (``onnx.reference`` gives 1/255).
NaN or infinite inputs have no meaningful scale and raise :class:`InvalidDataError`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from onnx import TensorProto

from refq.errors import InvalidDataError
from refq.onnx.node import NodeContext
from refq.onnx.tensor import OnnxTensor, make

OP_TYPE = "DynamicQuantizeLinear"


def dynamic_quantize_linear(
    ctx: NodeContext, x: OnnxTensor
) -> tuple[OnnxTensor, OnnxTensor, OnnxTensor]:
    """``(y, y_scale, y_zero_point)`` as the function body computes them (module docstring)."""
    v = x.data.astype(np.float32)
    flat = v.reshape(-1)
    bad = ~np.isfinite(flat)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InvalidDataError(
            f"{ctx.where}: x has {float(flat[i])!r} at flat index {i}; DynamicQuantizeLinear "
            f"needs finite inputs to choose a scale"
        )
    f0 = np.float32(0)
    lo = min(f0, flat.min()) if flat.size else f0
    hi = max(f0, flat.max()) if flat.size else f0
    if hi == lo:
        scale, zp = np.float32(1), np.float32(0)
    else:
        scale = np.float32(hi - lo) / np.float32(255)
        # 0 - lo / scale in float32, clipped, then rounded half to even.
        zp = np.rint(np.clip(f0 - np.float32(lo / scale), np.float32(0), np.float32(255)))
    y = np.clip(np.rint(v / scale).astype(np.float64) + float(zp), 0, 255)
    return (
        make(TensorProto.UINT8, y),
        make(TensorProto.FLOAT, np.array(scale, dtype=np.float32)),
        make(TensorProto.UINT8, np.array(zp)),
    )


def run(ctx: NodeContext, inputs: Sequence[OnnxTensor | None]) -> list[OnnxTensor]:
    return list(dynamic_quantize_linear(ctx, inputs[0]))
