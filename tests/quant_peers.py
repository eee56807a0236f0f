"""Run single ONNX quantization nodes on onnxruntime and onnx.reference for peer checks.

Outputs of types numpy cannot hold (int4, uint4, float8e5m2) are returned as the raw bytes of
the ORT tensor (read through ``OrtValue.data_ptr``), i.e. ONNX-packed for 4-bit types.
"""

from __future__ import annotations

import ctypes

import numpy as np

from tests.conftest import require_module

ONNX_TYPES = {
    "int8": 3,
    "uint8": 2,
    "int16": 5,
    "uint16": 4,
    "int4": 22,
    "uint4": 21,
    "float8e4m3fn": 17,
    "float8e5m2": 19,
}
_RAW = {"int4", "uint4", "float8e5m2"}


def _zero_point_tensor(helper, dtype: str, zp: np.ndarray):
    tt = ONNX_TYPES[dtype]
    vals = zp.reshape(-1).tolist() if zp.size else []
    return helper.make_tensor("z", tt, list(zp.shape), vals)


def _model(
    op: str,
    in_type: int,
    out_type: int,
    shape,
    scale: np.ndarray,
    zp_tensor,
    attrs: dict,
    opset: int,
):
    onnx = require_module("onnx")
    from onnx import helper, numpy_helper

    node = helper.make_node(op, ["x", "s", "z"], ["y"], **attrs)
    graph = helper.make_graph(
        [node],
        op,
        [helper.make_tensor_value_info("x", in_type, list(shape))],
        [helper.make_tensor_value_info("y", out_type, list(shape))],
        initializer=[numpy_helper.from_array(scale, "s"), zp_tensor],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    return model


def _attrs(axis: int | None, block_size: int | None, saturate: bool | None) -> dict:
    attrs: dict = {}
    if axis is not None:
        attrs["axis"] = axis
    if block_size:
        attrs["block_size"] = block_size
    if saturate is not None:
        attrs["saturate"] = int(saturate)
    return attrs


def ort_quantize(
    x: np.ndarray,
    scale: np.ndarray,
    zp: np.ndarray,
    dtype: str,
    *,
    axis: int | None = None,
    block_size: int | None = None,
    saturate: bool | None = None,
) -> np.ndarray:
    """onnxruntime QuantizeLinear-21; raw bytes for int4 / uint4 / float8e5m2 outputs."""
    ort = require_module("onnxruntime")
    from onnx import TensorProto, helper

    model = _model(
        "QuantizeLinear",
        TensorProto.FLOAT,
        ONNX_TYPES[dtype],
        x.shape,
        scale,
        _zero_point_tensor(helper, dtype, zp),
        _attrs(axis, block_size, saturate),
        21,
    )
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    if dtype not in _RAW:
        return sess.run(None, {"x": x})[0]
    out = sess.run_with_ort_values(["y"], {"x": ort.OrtValue.ortvalue_from_numpy(x)})[0]
    nbytes = -(-x.size // 2) if dtype in ("int4", "uint4") else x.size
    return np.frombuffer(ctypes.string_at(out.data_ptr(), nbytes), dtype=np.uint8).copy()


def ort_dequantize(
    q: np.ndarray,
    scale: np.ndarray,
    zp: np.ndarray,
    dtype: str,
    *,
    axis: int | None = None,
    block_size: int | None = None,
) -> np.ndarray:
    """onnxruntime DequantizeLinear-21 on codes held in numpy integer arrays (8/16-bit types)."""
    ort = require_module("onnxruntime")
    from onnx import TensorProto, helper

    model = _model(
        "DequantizeLinear",
        ONNX_TYPES[dtype],
        TensorProto.FLOAT,
        q.shape,
        scale,
        _zero_point_tensor(helper, dtype, zp),
        _attrs(axis, block_size, None),
        21,
    )
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": q})[0]


def dynamic_quantize_models():
    """DynamicQuantizeLinear-20 on a 1-D float32 input, as an onnx ModelProto."""
    require_module("onnx")
    from onnx import TensorProto, helper

    node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    graph = helper.make_graph(
        [node],
        "dql",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        [
            helper.make_tensor_value_info("y", TensorProto.UINT8, [None]),
            helper.make_tensor_value_info("s", TensorProto.FLOAT, []),
            helper.make_tensor_value_info("z", TensorProto.UINT8, []),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    model.ir_version = 9
    return model
