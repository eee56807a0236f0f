"""refq as an ONNX backend: ONNX's own BackendTest runner and a bit-exact pass over the same cases.

The node cases come from the generators in the installed onnx wheel (run in this test), never
from copied values. onnx's runner compares floats with a tolerance, so every case is also
compared bit for bit here.
"""

from __future__ import annotations

import io
import unittest
from collections import Counter

import numpy as np
import onnx
import onnx.backend.test
import pytest
from onnx import TensorProto, helper, numpy_helper

from refq.errors import (
    InvalidDataError,
    ModelFormatError,
    QuantSpecError,
    ShapeError,
    UnsupportedError,
)
from refq.onnx.backend import RefqBackend
from refq.onnx.conformance import NODE_OPS, collect_node_cases, variant_of
from refq.onnx.tensor import (
    ELEM_TYPES,
    OnnxTensor,
    bit_mismatches,
    from_numpy,
    onnx_numpy_dtype,
    round_to_bfloat16,
    to_numpy,
)

# What onnx 1.23.2 (the version in .ci/constraints.txt) defines: peer-facts section 3.
ONNX_1_23_2_COUNTS = {
    "QuantizeLinear": 13,
    "DequantizeLinear": 14,
    "DynamicQuantizeLinear": 6,
    "QLinearMatMul": 8,
    "QLinearConv": 1,
    "MatMulInteger": 1,
    "ConvInteger": 2,
}


@pytest.fixture(scope="module")
def node_cases():
    return collect_node_cases()


def _arrays(values):
    return [
        numpy_helper.to_array(v) if isinstance(v, onnx.TensorProto) else np.asarray(v)
        for v in values
    ]


def test_case_counts(node_cases):
    counts = Counter(c.op for c in node_cases)
    assert set(counts) == set(NODE_OPS), f"every op has generated cases: {counts}"
    if onnx.__version__ == "1.23.2":
        assert dict(counts) == ONNX_1_23_2_COUNTS
        assert len(node_cases) == 45


def test_onnx_backend_test_runner(node_cases, checked):
    """onnx.backend.test.BackendTest runs exactly the generated quantization cases on refq."""
    names = sorted({c.name for c in node_cases})
    backend_test = onnx.backend.test.BackendTest(RefqBackend, __name__)
    for name in names:
        backend_test.include(f"^{name}_cpu$")
    case_class = backend_test.test_cases["OnnxBackendNodeModelTest"]
    suite = unittest.TestSuite(case_class(f"{name}_cpu") for name in names)
    result = unittest.TextTestRunner(stream=io.StringIO(), verbosity=0).run(suite)
    problems = [(str(t), tb.splitlines()[-1]) for t, tb in result.failures + result.errors]
    assert not problems
    assert not result.skipped
    assert result.testsRun == len(names)
    # CUDA variants exist and are skipped by supports_device.
    assert not RefqBackend.supports_device("CUDA")
    checked("onnx BackendTest node cases (quantization ops, tolerance compare)", len(names))


def test_node_cases_bit_exact(node_cases, checked):
    """Every generated case, every output element: identical bits (codes, ints, float bits)."""
    failures = []
    elements = 0
    for case in node_cases:
        rep = RefqBackend.prepare(case.model)
        got = rep.run_tensors(_arrays(case.inputs))
        for i, (g, w) in enumerate(zip(got, case.outputs, strict=True)):
            declared = case.model.graph.output[i].type.tensor_type.elem_type
            want = from_numpy(_arrays([w])[0], declared)
            elements += want.data.size
            bad = bit_mismatches(g, want)
            if bad:
                failures.append((case.name, i, bad))
    assert not failures
    checked(
        "ONNX node cases bit-exact (generated from the installed onnx)", len(node_cases), elements
    )


def test_bit_comparison_sees_one_ulp():
    """The exact comparison really compares bits: one ulp, a -0 and a NaN payload differ."""
    a = from_numpy(np.array([1.0, 2.0, 3.0], np.float32))
    b = from_numpy(np.array([1.0, np.nextafter(np.float32(2), np.float32(3)), 3.0], np.float32))
    assert bit_mismatches(a, b) == 1
    nan = np.array([np.nan], np.float32)
    payload = (nan.view(np.uint32) | 1).view(np.float32)
    assert bit_mismatches(from_numpy(nan), from_numpy(payload)) == 1
    neg = from_numpy(np.array([-0.0], np.float32))
    assert bit_mismatches(neg, from_numpy(np.array([0.0], np.float32))) == 1
    codes = from_numpy(
        np.array([1.0], np.float32).astype(onnx_numpy_dtype(TensorProto.FLOAT8E4M3FN))
    )
    assert bit_mismatches(codes, OnnxTensor(TensorProto.FLOAT8E4M3FN, codes.data ^ 1)) == 1
    assert bit_mismatches(codes, from_numpy(np.array([1], np.uint8))) == 1  # type differs


def test_variant_names():
    assert variant_of("test_quantizelinear", "QuantizeLinear") == "default"
    assert variant_of("test_dynamicquantizelinear_expanded", "DynamicQuantizeLinear") == "expanded"


@pytest.mark.parametrize("code", sorted(ELEM_TYPES))
def test_boundary_round_trip(code):
    """from_numpy(to_numpy(t)) is the identity for every element type's full code range."""
    info = ELEM_TYPES[code]
    rng = np.random.default_rng(code)
    if info.kind == "int":
        data = rng.integers(info.lo, info.hi, 64, endpoint=True, dtype=info.storage)
    elif info.kind == "code":
        data = np.arange(1 << info.bits, dtype=np.uint8)
    elif code == TensorProto.BFLOAT16:
        data = round_to_bfloat16(rng.standard_normal(64).astype(np.float32))
    else:
        data = rng.standard_normal(64).astype(info.storage)
    t = OnnxTensor(code, data)
    arr = to_numpy(t)
    assert arr.dtype == onnx_numpy_dtype(code)
    back = from_numpy(arr, code)
    assert bit_mismatches(back, t) == 0
    # through a TensorProto as onnx stores it (packing of int4 / int2 / float4 included)
    proto = numpy_helper.from_array(arr)
    assert proto.data_type == code
    assert bit_mismatches(from_numpy(numpy_helper.to_array(proto), code), t) == 0


def test_round_to_bfloat16_exact():
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    got = round_to_bfloat16(x).view(np.uint32)
    for b, g in zip(bits[:3000].tolist(), got[:3000].tolist(), strict=True):
        exp = (b >> 23) & 0xFF
        mant = b & 0x7FFFFF
        if exp == 0xFF and mant:  # NaN: stays NaN
            assert (g >> 23) & 0xFF == 0xFF and g & 0x7FFFFF
            continue
        hi, lo = b >> 16, b & 0xFFFF
        if lo > 0x8000 or (lo == 0x8000 and hi & 1):
            hi += 1
        assert g == hi << 16


def _model(node, inputs, outputs, opset):
    graph = helper.make_graph([node], "g", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def _vi(name, elem, shape=None):
    return helper.make_tensor_value_info(name, elem, shape)


def test_run_node_and_named_outputs():
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    x = np.array([0.0, 1.5, -300.0], np.float32)
    out = RefqBackend.run_node(node, [x, np.float32(0.5), np.int8(1)], opset_version=13)
    assert out["y"].dtype == np.int8
    assert out[0].tolist() == [1, 4, -128]  # rne(3) + 1 = 4; -600 saturates


def test_unsupported_op_names_op_and_node():
    node = helper.make_node("Relu", ["x"], ["y"], name="act1")
    model = _model(node, [_vi("x", TensorProto.FLOAT, [2])], [_vi("y", TensorProto.FLOAT, [2])], 13)
    with pytest.raises(UnsupportedError, match=r"Relu node 'act1'"):
        RefqBackend.prepare(model)
    assert not RefqBackend.is_compatible(model)


def test_type_not_allowed_in_opset():
    # int16 outputs arrived in QuantizeLinear-21: opset 19 must refuse them.
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    args = [np.zeros(3, np.float32), np.float32(1), np.int16(0)]
    with pytest.raises(UnsupportedError, match=r"int16.*opset 19"):
        RefqBackend.run_node(node, args, opset_version=19)
    assert RefqBackend.run_node(node, args, opset_version=21)[0].dtype == np.int16


@pytest.mark.parametrize(
    ("scale", "error", "pattern"),
    [
        (np.float32(0), QuantSpecError, r"scale 'y_scale' has 0\.0"),
        (np.float32(np.inf), QuantSpecError, r"scale 'y_scale' has inf"),
        (np.array([1, 2], np.float32), ShapeError, r"'y_scale' of shape \(2,\)"),
    ],
)
def test_bad_scales(scale, error, pattern):
    node = helper.make_node("QuantizeLinear", ["x", "s"], ["y"], axis=0)
    with pytest.raises(error, match=pattern):
        RefqBackend.run_node(node, [np.zeros((3, 2), np.float32), scale], opset_version=21)


def test_nan_input_is_refused():
    node = helper.make_node("QuantizeLinear", ["x", "s"], ["y"], name="q")
    x = np.array([1.0, np.nan], np.float32)
    with pytest.raises(InvalidDataError, match=r"QuantizeLinear node 'q'.*flat index 1"):
        RefqBackend.run_node(node, [x, np.float32(1)], opset_version=21)
    dql = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
    with pytest.raises(InvalidDataError, match="flat index 1"):
        RefqBackend.run_node(dql, [x], opset_version=11)


def test_float8_qlinearmatmul_is_refused():
    f8 = onnx_numpy_dtype(TensorProto.FLOAT8E4M3FN)
    a = np.ones((2, 2), np.float32).astype(f8)
    zero = np.zeros((), np.float32).astype(f8)
    node = helper.make_node(
        "QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "sy", "zy"], ["y"], name="mm"
    )
    s = np.float32(1)
    with pytest.raises(UnsupportedError, match=r"QLinearMatMul node 'mm'.*float8e4m3fn"):
        RefqBackend.run_node(node, [a, s, zero, a, s, zero, s, zero], opset_version=21)


def test_model_input_errors():
    node = helper.make_node("DequantizeLinear", ["x", "s"], ["y"])
    model = _model(
        node,
        [_vi("x", TensorProto.UINT8, [2]), _vi("s", TensorProto.FLOAT, [])],
        [_vi("y", TensorProto.FLOAT, [2])],
        21,
    )
    rep = RefqBackend.prepare(model)
    with pytest.raises(ModelFormatError, match=r"declared uint8.*int8"):
        rep.run([np.zeros(2, np.int8), np.float32(1)])
    with pytest.raises(ModelFormatError, match="1 input arrays given for 2"):
        rep.run([np.zeros(2, np.uint8)])
    y = rep.run({"x": np.array([1, 3], np.uint8), "s": np.float32(0.5)})
    assert y[0].tolist() == [0.5, 1.5]
    with pytest.raises(UnsupportedError, match="CPU only"):
        RefqBackend.prepare(model, "CUDA")


def test_conv_shape_errors():
    node = helper.make_node("ConvInteger", ["x", "w"], ["y"], group=2, name="c")
    x = np.zeros((1, 3, 4, 4), np.uint8)
    w = np.zeros((2, 1, 2, 2), np.uint8)
    with pytest.raises(ShapeError, match=r"ConvInteger node 'c'.*group=2"):
        RefqBackend.run_node(node, [x, w], opset_version=10)
    node = helper.make_node("ConvInteger", ["x", "w"], ["y"], kernel_shape=[3, 3])
    with pytest.raises(ShapeError, match="kernel_shape"):
        RefqBackend.run_node(node, [x, np.zeros((2, 3, 2, 2), np.uint8)], opset_version=10)


# --- plumbing ops (DynamicQuantizeLinear's function body) ---------------------------------------


def _run(op, inputs, opset, **attrs):
    names = [f"i{k}" if v is not None else "" for k, v in enumerate(inputs)]
    node = helper.make_node(op, names, ["y"], **attrs)
    return RefqBackend.run_node(node, [v for v in inputs if v is not None], opset_version=opset)[0]


def test_plumbing_cast():
    x = np.array([200, -3, 7, 130], np.int16)
    # integer -> integer wraps (two's complement), also into int4
    assert _run("Cast", [x], 21, to=TensorProto.INT8).tolist() == [-56, -3, 7, -126]
    int4 = _run("Cast", [x], 21, to=TensorProto.INT4)
    assert int4.astype(np.int8).tolist() == [((v + 8) % 16) - 8 for v in x.tolist()]
    f = np.array([2.7, -2.7, 255.9, -0.5], np.float32)
    assert _run("Cast", [f[:3]], 13, to=TensorProto.INT16).tolist() == [2, -2, 255]
    with pytest.raises(InvalidDataError, match="out of range for uint8"):
        _run("Cast", [f], 13, to=TensorProto.UINT8)  # -2.7 truncates to -2: undefined
    with pytest.raises(InvalidDataError, match="nan"):
        _run("Cast", [np.array([np.nan], np.float32)], 13, to=TensorProto.INT32)
    # float -> bfloat16 / float16 round to nearest even
    v = np.array([1 + 2**-8, 1 + 3 * 2**-9, 70000.0], np.float32)
    assert _run("Cast", [v], 13, to=TensorProto.BFLOAT16).astype(np.float32).tolist() == [
        1.0,
        1.0 + 2**-7,
        70144.0,
    ]
    assert np.isinf(_run("Cast", [v], 13, to=TensorProto.FLOAT16)[2])
    # float -> float8 follows saturate
    big = np.array([1000.0], np.float32)
    sat = _run("Cast", [big], 19, to=TensorProto.FLOAT8E4M3FN)
    nosat = _run("Cast", [big], 19, to=TensorProto.FLOAT8E4M3FN, saturate=0)
    assert float(sat[0]) == 448.0 and np.isnan(float(nosat[0]))


def test_plumbing_arithmetic():
    a = np.array([7, -7, 7, -7], np.int32)
    b = np.array([2, 2, -2, -2], np.int32)
    assert _run("Div", [a, b], 14).tolist() == [3, -3, -3, 3]  # truncation toward zero
    with pytest.raises(InvalidDataError, match="division by zero"):
        _run("Div", [a, np.zeros(4, np.int32)], 14)
    assert _run("Sub", [np.array([-128], np.int8), np.array([1], np.int8)], 14).tolist() == [127]
    f = np.array([1.0, 2.0, 3.0], np.float32)
    assert _run("Div", [f, np.float32(3)], 14).tolist() == (f / np.float32(3)).tolist()
    assert _run("Max", [f, np.float32(2), np.array([[0], [5]], np.float32)], 13).tolist() == [
        [2, 2, 3],
        [5, 5, 5],
    ]
    assert _run("Min", [f, np.float32(2)], 13).tolist() == [1, 2, 2]
    r = _run("Round", [np.array([0.5, 1.5, 2.5, -0.5, -1.5], np.float32)], 11)
    assert r.tolist() == [0, 2, 2, 0, -2]  # half to even


def test_plumbing_clip_and_reduce():
    x = np.array([[-5.0, 0.5], [3.0, 9.0]], np.float32)
    assert _run("Clip", [x], 6, min=-1.0, max=4.0).tolist() == [[-1, 0.5], [3, 4]]
    assert _run("Clip", [x, np.float32(0), None], 13).tolist() == [[0, 0.5], [3, 9]]
    assert _run("Clip", [x, None, np.float32(1)], 13).tolist() == [[-5, 0.5], [1, 1]]
    assert _run("ReduceMin", [x], 11, keepdims=0).tolist() == -5.0
    assert _run("ReduceMax", [x], 13, axes=[1]).tolist() == [[0.5], [9.0]]
    assert _run("ReduceMin", [x, np.array([0], np.int64)], 18, keepdims=0).tolist() == [-5, 0.5]
    assert _run("ReduceMax", [x], 18, noop_with_empty_axes=1).tolist() == x.tolist()
    node = helper.make_node("Constant", [], ["y"], value_floats=[1.5, 2.0])
    assert RefqBackend.run_node(node, [], opset_version=13)[0].tolist() == [1.5, 2.0]


def test_float8_zero_point_must_be_zero():
    f8 = onnx_numpy_dtype(TensorProto.FLOAT8E4M3FN)
    node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])
    args = [np.ones(2, np.float32), np.float32(1), np.ones((), np.float32).astype(f8)]
    with pytest.raises(QuantSpecError, match="float8 zero points must be 0"):
        RefqBackend.run_node(node, args, opset_version=21)
    node = helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"])
    args = [np.ones(2, np.float32).astype(f8), np.float32(1), np.ones((), np.float32).astype(f8)]
    with pytest.raises(QuantSpecError, match="float8 zero points must be 0"):
        RefqBackend.run_node(node, args, opset_version=21)
