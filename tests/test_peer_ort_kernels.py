"""FULLY_CONNECTED / BATCH_MATMUL under the ``onnx`` and ``ort-x86-u8s8`` profiles against
onnxruntime (CPU, one thread): QLinearMatMul, MatMulInteger and a QDQ graph, bit for bit.

* QLinearMatMul with constant ``b`` is FULLY_CONNECTED with weights ``b^T`` (per tensor or per
  column); with run-time ``b`` it is BATCH_MATMUL. u8u8 and s8s8 are exact in onnxruntime.
* u8 x s8: onnxruntime on x86 AVX2 without VNNI saturates pairs of products to int16
  (peer-facts 3); with VNNI (or AMX) it is exact. The test detects which path this machine's
  onnxruntime takes by comparing with both the exact result and refq's emulation, and asserts
  the one taken (a machine taking neither fails).
* DequantizeLinear -> MatMul -> QuantizeLinear: onnxruntime 1.32 fuses it to QLinearMatMul for
  u8 activations (u8u8, u8s8) and leaves s8 x s8 in float; the test reads the optimized graph
  and asserts bit-exactness where it is fused, and records the combos left in float.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from refq.graph import Graph, Node, Program, TensorInfo
from refq.kernels.fully_connected import fc_accumulators
from tests.conftest import require_module

ONNX_TYPES = {"uint8": TensorProto.UINT8, "int8": TensorProto.INT8}
COMBOS = [("uint8", "uint8"), ("int8", "int8"), ("uint8", "int8")]


@pytest.fixture(scope="module")
def ort():
    return require_module("onnxruntime")


def session(ort, model: onnx.ModelProto, optimized: str | None = None):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    if optimized:
        opts.optimized_model_filepath = optimized
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def model(nodes, inputs: dict, inits: dict, outputs: dict) -> onnx.ModelProto:
    def vi(name, dt, shape):
        return helper.make_tensor_value_info(name, ONNX_TYPES.get(dt, TensorProto.INT32), shape)

    g = helper.make_graph(
        nodes,
        "g",
        [vi(n, dt, shape) for n, (dt, shape) in inputs.items()],
        [vi(n, dt, shape) for n, (dt, shape) in outputs.items()],
        initializer=[numpy_helper.from_array(np.asarray(v), n) for n, v in inits.items()],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


def draw(rng: np.random.Generator, adt: str, wdt: str, per_column: bool, m=None, k=None, n=None):
    m = int(rng.integers(1, 40)) if m is None else m
    k = int(rng.integers(1, 300)) if k is None else k
    n = int(rng.integers(1, 40)) if n is None else n
    ia, iw = np.iinfo(adt), np.iinfo(wdt)
    nc = n if per_column else 1
    q = {
        "sa": np.float32(2.0 ** rng.uniform(-8, 0)),
        "za": np.array(rng.integers(ia.min, ia.max + 1), adt),
        "sb": np.float32(2.0 ** rng.uniform(-8, -2, nc)),
        "zb": rng.integers(iw.min, iw.max + 1, nc).astype(wdt),
    }
    q["so"] = np.float32(q["sa"] * q["sb"].max() * np.sqrt(k) * 2.0 ** rng.uniform(2, 7))
    q["zo"] = np.array(rng.integers(ia.min, ia.max + 1), adt)
    a = rng.integers(ia.min, ia.max + 1, (m, k)).astype(adt)
    b = rng.integers(iw.min, iw.max + 1, (k, n)).astype(wdt)
    return a, b, q


def fc_graph(a, b, q, adt: str, wdt: str) -> Graph:
    m, k = a.shape
    n = b.shape[1]
    pc = q["sb"].size > 1
    t = {
        "x": TensorInfo("x", adt, (m, k), q["sa"], int(q["za"])),
        "w": TensorInfo(
            "w",
            wdt,
            (n, k),
            q["sb"] if pc else q["sb"][0],
            q["zb"].astype(np.int64) if pc else int(q["zb"][0]),
            0 if pc else None,
            np.ascontiguousarray(b.T),
        ),
        "y": TensorInfo("y", adt, (m, n), q["so"], int(q["zo"])),
    }
    return Graph(t, [Node("FULLY_CONNECTED", ("x", "w"), ("y",))], ["x"], ["y"])


def qlinear_model(a, b, q, adt: str, const_b: bool = True) -> onnx.ModelProto:
    sb = q["sb"] if q["sb"].size > 1 else q["sb"][0]
    zb = q["zb"] if q["zb"].size > 1 else q["zb"][0]
    inits = {"sa": q["sa"], "za": q["za"], "sb": np.asarray(sb), "zb": np.asarray(zb)}
    inits.update(so=q["so"], zo=q["zo"])
    inputs = {"a": (adt, list(a.shape))}
    if const_b:
        inits["b"] = b
    else:
        inputs["b"] = (str(b.dtype), list(b.shape))
    out_shape = [*np.broadcast_shapes(a.shape[:-2], b.shape[:-2]), a.shape[-2], b.shape[-1]]
    node = helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "so", "zo"], ["y"])
    return model([node], inputs, inits, {"y": (adt, out_shape)})


@pytest.mark.parametrize("combo", COMBOS[:2], ids=lambda c: "".join(c))
def test_ort_qlinear_matmul_constant_weights(ort, combo, checked) -> None:
    adt, wdt = combo
    rng = np.random.default_rng(71 + COMBOS.index(combo))
    configs, elements = 150, 0
    for i in range(configs):
        a, b, q = draw(rng, adt, wdt, per_column=i % 2 == 1)
        want = session(ort, qlinear_model(a, b, q, adt)).run(None, {"a": a})[0]
        got = Program(fc_graph(a, b, q, adt, wdt), "onnx").run([a])[0]
        assert np.array_equal(got, want)
        elements += got.size
    checked(f"ORT QLinearMatMul {adt}x{wdt} const b = FULLY_CONNECTED (onnx)", configs, elements)


@pytest.mark.parametrize("adt", ["uint8", "int8"])
def test_ort_qlinear_matmul_runtime_operands(ort, adt, checked) -> None:
    rng = np.random.default_rng(81 + (adt == "int8"))
    configs, elements = 100, 0
    for _ in range(configs):
        m, k, n = (int(v) for v in rng.integers(1, 30, 3))
        batch = tuple(int(v) for v in rng.integers(1, 4, int(rng.integers(0, 2))))
        _, _, q = draw(rng, adt, adt, per_column=False, m=m, k=k, n=n)
        info = np.iinfo(adt)
        a = rng.integers(info.min, info.max + 1, (*batch, m, k)).astype(adt)
        b = rng.integers(info.min, info.max + 1, (*batch, k, n)).astype(adt)
        want = session(ort, qlinear_model(a, b, q, adt, const_b=False)).run(None, {"a": a, "b": b})
        t = {
            "a": TensorInfo("a", adt, a.shape, q["sa"], int(q["za"])),
            "b": TensorInfo("b", adt, b.shape, q["sb"][0], int(q["zb"][0])),
            "y": TensorInfo("y", adt, want[0].shape, q["so"], int(q["zo"])),
        }
        g = Graph(t, [Node("BATCH_MATMUL", ("a", "b"), ("y",))], ["a", "b"], ["y"])
        got = Program(g, "onnx").run([a, b])[0]
        assert np.array_equal(got, want[0])
        elements += got.size
    checked(f"ORT QLinearMatMul {adt}x{adt} run-time b = BATCH_MATMUL (onnx)", configs, elements)


def _u8s8_path(ort) -> str:
    """``saturating`` or ``exact``: which u8 x s8 kernel this machine's onnxruntime runs,
    decided from MatMulInteger's int32 output on full-range data, where the two differ."""
    from refq.intmatmul import int_matmul, int_matmul_u8s8_sat16

    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (16, 256)).astype(np.uint8)
    b = rng.integers(-128, 128, (256, 16)).astype(np.int8)
    node = helper.make_node("MatMulInteger", ["a", "b"], ["y"])
    mdl = model([node], {"a": ("uint8", [16, 256])}, {"b": b}, {"y": ("int32", [16, 16])})
    want = session(ort, mdl).run(None, {"a": a})[0]
    exact = int_matmul(a, b)
    emulated = int_matmul_u8s8_sat16(a, b)
    assert not np.array_equal(exact, emulated)  # the probe separates the two paths
    if np.array_equal(want, emulated):
        return "saturating"
    assert np.array_equal(want, exact), "onnxruntime's u8s8 matches neither path"
    return "exact"


def test_ort_qlinear_matmul_u8s8_path_detected(ort, checked) -> None:
    path = _u8s8_path(ort)
    profile = "ort-x86-u8s8" if path == "saturating" else "onnx"
    rng = np.random.default_rng(91)
    configs, elements, differ = 80, 0, 0
    for i in range(configs):
        a, b, q = draw(rng, "uint8", "int8", per_column=i % 2 == 1)
        g = fc_graph(a, b, q, "uint8", "int8")
        want = session(ort, qlinear_model(a, b, q, "uint8")).run(None, {"a": a})[0]
        assert np.array_equal(Program(g, profile).run([a])[0], want)
        other = "onnx" if profile == "ort-x86-u8s8" else "ort-x86-u8s8"
        differ += int(np.sum(Program(g, other).run([a])[0] != want))
        elements += want.size
    what = (
        "ORT QLinearMatMul u8xs8: AVX2 saturating path taken, ort-x86-u8s8 reproduces it"
        if path == "saturating"
        else "ORT QLinearMatMul u8xs8: saturating path NOT taken on this CPU (exact, onnx)"
    )
    checked(f"{what}; the other profile differs on {differ} elements", configs, elements)


def matmul_integer_model(a, b, q, adt: str) -> onnx.ModelProto:
    """MatMulInteger with constant ``b`` and zero points (per tensor or per column)."""
    zb = q["zb"] if q["zb"].size > 1 else q["zb"][0]
    node = helper.make_node("MatMulInteger", ["a", "b", "za", "zb"], ["y"])
    return model(
        [node],
        {"a": (adt, list(a.shape))},
        {"b": b, "za": q["za"], "zb": np.asarray(zb)},
        {"y": ("int32", [a.shape[0], b.shape[1]])},
    )


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: "".join(c))
def test_ort_matmul_integer(ort, combo, checked) -> None:
    """MatMulInteger's int32 output is FULLY_CONNECTED's accumulator (no bias)."""
    adt, wdt = combo
    profile = "onnx"
    if combo == ("uint8", "int8") and _u8s8_path(ort) == "saturating":
        profile = "ort-x86-u8s8"
    rng = np.random.default_rng(101 + COMBOS.index(combo))
    configs, elements = 60, 0
    for i in range(configs):
        a, b, q = draw(rng, adt, wdt, per_column=i % 2 == 1)
        want = session(ort, matmul_integer_model(a, b, q, adt)).run(None, {"a": a})[0]
        prog = Program(fc_graph(a, b, q, adt, wdt), profile)
        got = fc_accumulators(a, prog.steps[0][2])
        assert np.array_equal(got, want.astype(np.int64))
        elements += want.size
    checked(f"ORT MatMulInteger {adt}x{wdt} = FC accumulators ({profile})", configs, elements)


@pytest.mark.parametrize("combo", COMBOS, ids=lambda c: "".join(c))
def test_ort_qdq_matmul(ort, combo, tmp_path, checked) -> None:
    adt, wdt = combo
    rng = np.random.default_rng(111 + COMBOS.index(combo))
    configs, elements, fused_configs = 40, 0, 0
    for _ in range(configs):
        a, b, q = draw(rng, adt, wdt, per_column=False)
        if wdt == "int8":
            q["zb"][:] = 0  # the QDQ quantizer's symmetric int8 weights
        nodes = [
            helper.make_node("DequantizeLinear", ["a", "sa", "za"], ["af"]),
            helper.make_node("DequantizeLinear", ["b", "sb", "zb"], ["bf"]),
            helper.make_node("MatMul", ["af", "bf"], ["yf"]),
            helper.make_node("QuantizeLinear", ["yf", "so", "zo"], ["y"]),
        ]
        inits = dict(sa=q["sa"], za=q["za"], b=b, sb=q["sb"][0], zb=q["zb"][0])
        inits.update(so=q["so"], zo=q["zo"])
        mdl = model(
            nodes, {"a": (adt, list(a.shape))}, inits, {"y": (adt, [a.shape[0], b.shape[1]])}
        )
        path = str(tmp_path / "opt.onnx")
        want = session(ort, mdl, optimized=path).run(None, {"a": a})[0]
        ops = [n.op_type for n in onnx.load(path).graph.node]
        if "QLinearMatMul" not in ops:
            assert "MatMul" in ops
            continue
        fused_configs += 1
        profile = "onnx"
        if combo == ("uint8", "int8") and _u8s8_path(ort) == "saturating":
            profile = "ort-x86-u8s8"
        got = Program(fc_graph(a, b, q, adt, wdt), profile).run([a])[0]
        assert np.array_equal(got, want)
        elements += got.size
    status = "fused to QLinearMatMul, bit-exact" if fused_configs else "NOT fused (float MatMul)"
    checked(f"ORT QDQ DQ->MatMul->Q {adt}x{wdt}: {status}", fused_configs or configs, elements)
