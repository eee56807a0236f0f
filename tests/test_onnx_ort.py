"""refq's ONNX quantization ops against onnxruntime on random data (seeded), bit for bit.

Each case builds one small model, runs it on onnxruntime (CPU, one thread) and on refq's backend,
and compares every output element: integers by value, floats by bit pattern (NaN by NaN-ness:
its payload is not defined by ONNX). onnxruntime's Python API has no NumPy type for int4 / int2
or most float8 types, so such outputs get a trailing ``Cast`` to int8 / uint8 / float32 (exact)
in *both* runs, and such inputs travel as initializers.

Accumulation is exact in onnxruntime for u8 x u8 and s8 x s8; u8 x s8 only when no pair of
products saturates int16 on x86 AVX2 without VNNI, so u8 x s8 uses 7-bit weights here, and
``test_u8s8_saturating_path`` detects which path this machine's onnxruntime takes.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx.shape_inference
import pytest
from onnx import TensorProto, helper, numpy_helper

from refq.intmatmul import int_matmul, int_matmul_u8s8_sat16
from refq.onnx.backend import RefqBackend
from refq.onnx.tensor import BY_NAME, onnx_numpy_dtype
from tests.conftest import require_module

SEED = 20261107


@pytest.fixture(scope="module")
def ort():
    return require_module("onnxruntime")


def build(nodes, inputs: dict, inits: dict, outputs: list[str], opset: int):
    vis = [
        helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
        for n, v in inputs.items()
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        vis,
        [helper.make_empty_tensor_value_info(o) for o in outputs],
        initializer=[numpy_helper.from_array(np.asarray(v), n) for n, v in inits.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    # Output types from ONNX's own shape inference (the checker wants them declared).
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def run_both(ort, model, inputs: dict):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    theirs = sess.run(None, inputs)
    ours = RefqBackend.prepare(model).run(inputs)
    return list(ours), theirs


def mismatches(ours: np.ndarray, theirs: np.ndarray) -> int:
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    if theirs.dtype == np.uint8 and ours.dtype.kind == "V":
        ours = ours.view(np.uint8)  # onnxruntime hands float8e4m3fn out as its uint8 codes
    if ours.shape != theirs.shape or ours.dtype != theirs.dtype:
        return max(ours.size, theirs.size, 1)
    if ours.dtype.kind == "f":
        nan_o, nan_t = np.isnan(ours), np.isnan(theirs)
        bits = {2: np.uint16, 4: np.uint32, 8: np.uint64}[ours.dtype.itemsize]
        differ = (ours.view(bits) != theirs.view(bits)) & ~(nan_o & nan_t)
        return int(np.count_nonzero(differ))
    return int(np.count_nonzero(ours != theirs))


class Tally:
    """Counts cases and elements per variant; remembers failures."""

    def __init__(self) -> None:
        self.cases: Counter[str] = Counter()
        self.elements: Counter[str] = Counter()
        self.failures: list[tuple[str, int, str]] = []

    def check(self, variant: str, ours, theirs, detail: str = "") -> None:
        for o, t in zip(ours, theirs, strict=True):
            bad = mismatches(o, t)
            self.elements[variant] += np.asarray(t).size
            if bad:
                self.failures.append((variant, bad, detail))
        self.cases[variant] += 1

    def report(self, checked, what: str) -> None:
        assert not self.failures, self.failures[:10]
        checked(what, sum(self.cases.values()), sum(self.elements.values()))


# Cast targets that make onnxruntime's outputs readable from Python (exact conversions).
READABLE = {
    "int4": TensorProto.INT8,
    "uint4": TensorProto.UINT8,
    "int2": TensorProto.INT8,
    "uint2": TensorProto.UINT8,
    "float8e5m2": TensorProto.FLOAT,
    "float8e4m3fnuz": TensorProto.FLOAT,
    "float8e5m2fnuz": TensorProto.FLOAT,
}
QTYPES = [
    "int8",
    "uint8",
    "int16",
    "uint16",
    "int4",
    "uint4",
    "int2",
    "uint2",
    "float8e4m3fn",
    "float8e5m2",
    "float8e4m3fnuz",
    "float8e5m2fnuz",
]


# onnxruntime 1.32, saturate=0: |x / s| in [lo, hi) encodes to `code` (| sign) where the ONNX
# Cast table gives NaN (e4m3fn: [x] = 480 > 448) or +-Inf (e5m2: [x] >= 61440 > 57344).
ORT_NONSAT_BANDS = {"float8e4m3fn": (480.0, 496.0, 0x7E), "float8e5m2": (61440.0, 65536.0, 0x7F)}


def random_granularity(rng, shape):
    kind = rng.choice(["tensor", "axis", "block"])
    if kind == "tensor":
        return "tensor", {}, ()
    axis = int(rng.integers(0, len(shape)))
    if kind == "axis":
        return "axis", {"axis": axis}, (shape[axis],)
    block = int(rng.integers(1, shape[axis] + 1))
    pshape = list(shape)
    pshape[axis] = -(-shape[axis] // block)
    if np.prod(pshape) == 1:  # onnxruntime reads a one-element scale as per-tensor
        return "tensor", {}, ()
    return "block", {"axis": axis, "block_size": block}, tuple(pshape)


def expand(param: np.ndarray, shape: tuple[int, ...], attrs: dict) -> np.ndarray:
    """A scale / zero point per element (per-tensor, per-axis or blocked)."""
    if not param.shape:
        return np.broadcast_to(param, shape)
    axis = attrs["axis"]
    if "block_size" not in attrs:
        dims = [1] * len(shape)
        dims[axis] = -1
        return np.broadcast_to(param.reshape(dims), shape)
    rep = np.repeat(param, attrs["block_size"], axis)
    return rep.take(np.arange(shape[axis]), axis)


def random_scales(rng, pshape, dtype=np.float32, negative=True):
    s = np.exp(rng.uniform(-6, 3, pshape)).astype(dtype)
    if negative:
        s = np.where(rng.random(pshape) < 0.1, -s, s).astype(dtype)
    return np.asarray(s, dtype)


def random_zero_points(rng, name, pshape):
    info = BY_NAME[name]
    if info.kind == "code":  # float8 zero points are 0 in practice; +0.0
        return np.zeros(pshape, np.uint8).view(onnx_numpy_dtype(info.code))
    z = rng.integers(info.lo, info.hi, pshape, endpoint=True).astype(info.storage)
    return z.astype(onnx_numpy_dtype(info.code))


def test_quantize_linear(ort, checked):
    rng = np.random.default_rng(SEED)
    tally = Tally()
    for i in range(240):
        name = QTYPES[i % len(QTYPES)]
        shape = tuple(int(d) for d in rng.integers(1, 9, rng.integers(1, 4)))
        gran, attrs, pshape = random_granularity(rng, shape)
        f16 = rng.random() < 0.25
        dt = np.float16 if f16 else np.float32
        s = random_scales(rng, pshape, dt)
        mag = rng.choice([1e-2, 1.0, 1e2, 1e4]) if not f16 else rng.choice([1e-2, 1.0, 1e2])
        x = (rng.standard_normal(shape) * mag).astype(dt)
        # values next to rounding ties of x / s, and infinities
        ties = (rng.integers(-300, 300, shape) + 0.5) * expand(s, shape, attrs)
        x = np.where(rng.random(shape) < 0.3, ties, x).astype(dt)
        x = np.where(rng.random(shape) < 0.05, np.inf * np.sign(x + 0.5), x).astype(dt)
        z = random_zero_points(rng, name, pshape)
        code = BY_NAME[name]
        if code.kind == "code":
            sat = int(rng.integers(0, 2))
            attrs = {**attrs, "saturate": sat}
            if not sat and name in ORT_NONSAT_BANDS:
                # documented onnxruntime deviations, see test_ort_float8_nonsaturating_bands
                lo, hi = ORT_NONSAT_BANDS[name][:2]
                with np.errstate(over="ignore"):
                    q = np.abs(x / expand(s, shape, attrs))
                    x = np.where((q >= lo) & (q < hi), dt(0), x).astype(dt)
        opset = 25 if name in ("int2", "uint2") else int(rng.choice([21, 23, 25]))
        nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attrs)]
        out = "q"
        if name in READABLE:
            nodes.append(helper.make_node("Cast", ["q"], ["y"], to=READABLE[name]))
            out = "y"
        model = build(nodes, {"x": x, "s": s}, {"z": z}, [out], opset)
        ours, theirs = run_both(ort, model, {"x": x, "s": s})
        variant = f"{name} {gran} {'f16' if f16 else 'f32'}"
        tally.check(variant, ours, theirs, f"case {i}: x={x.ravel()[:6]} s={s.ravel()[:3]}")
    tally.report(checked, "onnxruntime QuantizeLinear (int2..uint16, float8 x4; tensor/axis/block)")


@pytest.mark.parametrize("name", sorted(ORT_NONSAT_BANDS))
def test_ort_float8_nonsaturating_bands(ort, name, checked):
    """Pin down where onnxruntime's non-saturating float8 cast leaves the ONNX Cast table.

    refq follows the table (NaN for e4m3fn, Inf for e5m2 when ``[x] > max``); onnxruntime 1.32
    writes ``ORT_NONSAT_BANDS[name][2]`` for ``|x|`` in the band. Everything else agrees.
    """
    lo, hi, ort_code = ORT_NONSAT_BANDS[name]
    x = np.arange(lo / 2, hi * 2, lo / 512, dtype=np.float32)
    x = np.concatenate([x, -x])
    s = np.asarray(1, np.float32)
    code = BY_NAME[name].code
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], saturate=0)]
    # Bitcast-free readout: e4m3fn comes back as uint8 codes; e5m2 through an exact Cast.
    out = "q"
    if name in READABLE:
        nodes.append(helper.make_node("Cast", ["q"], ["y"], to=READABLE[name]))
        out = "y"
    z = np.zeros((), np.uint8).view(onnx_numpy_dtype(code))
    ours, theirs = run_both(
        ort, build(nodes, {"x": x, "s": s}, {"z": z}, [out], 21), {"x": x, "s": s}
    )
    band = (np.abs(x) >= lo) & (np.abs(x) < hi)
    assert mismatches(ours[0][~band], theirs[0][~band]) == 0
    sign = np.where(x < 0, 0x80, 0).astype(np.uint8)
    want_ort = (np.uint8(ort_code) | sign)[band]
    got_ort = np.asarray(theirs[0])[band]
    if name in READABLE:  # compare through the exact float32 decode
        ours_band = np.asarray(ours[0])[band]
        assert np.all(np.isinf(ours_band))  # refq: +-Inf per the table
        assert np.all(np.isnan(got_ort)), "onnxruntime no longer writes NaN here"
    else:
        assert np.array_equal(got_ort, want_ort), "onnxruntime no longer writes +-max here"
        ours_codes = np.asarray(ours[0]).view(np.uint8)[band]
        assert np.all((ours_codes & 0x7F) == 0x7F)  # refq: NaN per the table
    checked(f"onnxruntime {name} saturate=0 band (known deviation, refq follows ONNX)", band.sum())


def test_dequantize_linear(ort, checked):
    rng = np.random.default_rng(SEED + 1)
    tally = Tally()
    names = [*QTYPES, "int32"]
    for i in range(240):
        name = names[i % len(names)]
        info = BY_NAME[name]
        shape = tuple(int(d) for d in rng.integers(1, 9, rng.integers(1, 4)))
        gran, attrs, pshape = random_granularity(rng, shape)
        f16 = rng.random() < 0.25
        s = random_scales(rng, pshape, np.float16 if f16 else np.float32)
        if info.kind == "code":
            codes = rng.integers(0, 256, shape).astype(np.uint8)
            x = codes.view(onnx_numpy_dtype(info.code))
        else:
            x = rng.integers(info.lo, info.hi, shape, endpoint=True).astype(info.storage)
            x = x.astype(onnx_numpy_dtype(info.code))
        inits = {"x": x}
        ins = ["x", "s"]
        if name != "int32" and rng.random() < 0.8:
            inits["z"] = random_zero_points(rng, name, pshape)
            ins.append("z")
        opset = 25 if name in ("int2", "uint2") else int(rng.choice([21, 23, 25]))
        node = helper.make_node("DequantizeLinear", ins, ["y"], **attrs)
        model = build([node], {"s": s}, inits, ["y"], opset)
        ours, theirs = run_both(ort, model, {"s": s})
        tally.check(f"{name} {gran} {'f16' if f16 else 'f32'}", ours, theirs, f"case {i}")
    tally.report(
        checked, "onnxruntime DequantizeLinear (int2..int32, float8 x4; tensor/axis/block)"
    )


def test_dynamic_quantize_linear(ort, checked):
    rng = np.random.default_rng(SEED + 2)
    tally = Tally()
    for i in range(200):
        shape = tuple(int(d) for d in rng.integers(1, 8, rng.integers(1, 4)))
        kind = i % 5
        x = rng.standard_normal(shape) * 10.0 ** rng.uniform(-8, 8)
        if kind == 1:
            x = np.abs(x)  # all positive: zero point 0
        elif kind == 2:
            x = -np.abs(x)  # all negative: zero point 255
        elif kind == 3:
            x = x + rng.uniform(-3, 3)
        elif kind == 4 and i % 20 == 4:
            x = np.zeros(shape)
        x = x.astype(np.float32)
        node = helper.make_node("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])
        model = build([node], {"x": x}, {}, ["y", "s", "z"], 11)
        ours, theirs = run_both(ort, model, {"x": x})
        tally.check("uint8", ours, theirs, f"case {i}")
    tally.report(checked, "onnxruntime DynamicQuantizeLinear (y, scale, zero point)")


def random_matmul_operands(rng, kind: str):
    m, k, n = (int(v) for v in rng.integers(1, 40, 3))
    batch = [int(v) for v in rng.integers(1, 4, rng.integers(0, 3))]
    b_batch = batch if rng.random() < 0.5 else []
    if kind == "u8u8":
        ta, tb, b_lo, b_hi = np.uint8, np.uint8, 0, 255
    elif kind == "s8s8":
        ta, tb, b_lo, b_hi = np.int8, np.int8, -128, 127
    else:  # u8s8 with 7-bit weights: exact on every x86 path
        ta, tb, b_lo, b_hi = np.uint8, np.int8, -64, 63
    ia = np.iinfo(ta)
    a = rng.integers(ia.min, ia.max, (*batch, m, k), endpoint=True).astype(ta)
    b = rng.integers(b_lo, b_hi, (*b_batch, k, n), endpoint=True).astype(tb)
    za = np.array(rng.integers(ia.min, ia.max, endpoint=True), ta)
    # per column: onnxruntime wants B's rank with a 1 in the K position
    zb_shape = (*b.shape[:-2], 1, n) if rng.random() < 0.5 else ()
    zb = rng.integers(b_lo, b_hi, zb_shape, endpoint=True).astype(tb)
    return a, b, za, zb


def test_qlinear_matmul(ort, checked):
    rng = np.random.default_rng(SEED + 3)
    tally = Tally()
    for i in range(210):
        kind = ("u8u8", "s8s8", "u8s8")[i % 3]
        a, b, za, zb = random_matmul_operands(rng, kind)
        f16 = rng.random() < 0.3
        dt = np.float16 if f16 else np.float32
        k = a.shape[-1]
        sa = random_scales(rng, (), dt, negative=False)
        sb = random_scales(rng, zb.shape, dt, negative=False)
        sy = np.float32(sa) * np.float32(np.max(sb)) * np.float32(k * 40 * rng.uniform(0.2, 5))
        sy = np.asarray(min(sy, np.float32(6e4)), dt)  # finite in float16
        ty = a.dtype.type  # onnxruntime implements y of a's type only
        zy = np.asarray(rng.integers(np.iinfo(ty).min, np.iinfo(ty).max, endpoint=True), ty)
        feeds = {"a": a, "sa": sa, "za": za, "b": b, "sb": sb, "zb": zb, "sy": sy, "zy": zy}
        node = helper.make_node("QLinearMatMul", list(feeds), ["y"])
        model = build([node], feeds, {}, ["y"], 21 if f16 or i % 2 else 10)
        ours, theirs = run_both(ort, model, feeds)
        tally.check(f"{kind} {'f16' if f16 else 'f32'}", ours, theirs, f"case {i}")
    tally.report(checked, "onnxruntime QLinearMatMul (u8u8, s8s8, u8s8 7-bit; f32/f16 scales)")


def test_matmul_integer(ort, checked):
    rng = np.random.default_rng(SEED + 4)
    tally = Tally()
    for i in range(120):
        kind = ("u8u8", "s8s8", "u8s8")[i % 3]
        a, b, za, zb = random_matmul_operands(rng, kind)
        feeds = {"a": a, "b": b, "za": za, "zb": zb}
        node = helper.make_node("MatMulInteger", list(feeds), ["y"])
        ours, theirs = run_both(ort, build([node], feeds, {}, ["y"], 10), feeds)
        tally.check(kind, ours, theirs, f"case {i}")
    tally.report(checked, "onnxruntime MatMulInteger (u8u8, s8s8, u8s8 7-bit)")


def test_u8s8_saturating_path(ort, checked):
    """Which u8 x s8 path does this machine's onnxruntime take? Assert refq reproduces it.

    Full-range u8 x s8 data saturates int16 pairs on x86 AVX2 without VNNI. If onnxruntime
    returns the exact product, it took an exact (VNNI / non-x86) kernel and refq's exact
    MatMulInteger must match it; otherwise ``int_matmul_u8s8_sat16`` must match it exactly.
    """
    rng = np.random.default_rng(SEED + 5)
    a = rng.integers(0, 256, (64, 256)).astype(np.uint8)
    b = rng.integers(-128, 128, (256, 48)).astype(np.int8)
    za, zb = np.uint8(rng.integers(0, 256)), np.int8(rng.integers(-128, 128))
    feeds = {"a": a, "b": b, "za": np.asarray(za), "zb": np.asarray(zb)}
    node = helper.make_node("MatMulInteger", list(feeds), ["y"])
    ours, theirs = run_both(ort, build([node], feeds, {}, ["y"], 10), feeds)
    exact = int_matmul(a.astype(np.int16) - za, b.astype(np.int16) - zb, accumulate="int32_wrap")
    sat = int_matmul_u8s8_sat16(a, b, int(za), int(zb))
    assert not np.array_equal(exact, sat), "the data must saturate some int16 pairs"
    if np.array_equal(theirs[0], exact):
        assert np.array_equal(ours[0], theirs[0])
        checked("onnxruntime u8s8 MatMulInteger: exact path on this machine (VNNI)", 1, exact.size)
        pytest.skip(
            "onnxruntime takes an exact u8s8 kernel on this machine (VNNI or non-x86); the "
            "int16-saturating AVX2 path is checked by test_peer_ort_emulated.py under QEMU"
        )
    assert np.array_equal(theirs[0], sat), (
        "onnxruntime u8s8 is neither exact nor refq's sat16 emulation: "
        f"{np.count_nonzero(theirs[0] != sat)} of {sat.size} differ"
    )
    checked("onnxruntime u8s8 MatMulInteger == int_matmul_u8s8_sat16", 1, sat.size)


def random_conv(rng):
    nd = int(rng.integers(1, 3))
    group = int(rng.integers(1, 3))
    cg, mg = (int(v) for v in rng.integers(1, 4, 2))
    kernel = [int(v) for v in rng.integers(1, 4, nd)]
    dil = [int(v) for v in rng.integers(1, 3, nd)]
    strides = [int(v) for v in rng.integers(1, 3, nd)]
    size = [int(rng.integers((k - 1) * d + 1, 9)) for k, d in zip(kernel, dil, strict=True)]
    attrs = {"group": group, "dilations": dil, "strides": strides, "kernel_shape": kernel}
    mode = rng.choice(["NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"])
    if mode.startswith("SAME"):
        dil = [1] * nd  # onnxruntime: "Dilation not supported for AutoPadType::SAME_*"
        attrs["dilations"] = dil
    if mode == "NOTSET":
        attrs["pads"] = [int(v) for v in rng.integers(0, 3, 2 * nd)]
    else:
        attrs["auto_pad"] = str(mode)
    x_shape = (int(rng.integers(1, 3)), group * cg, *size)
    w_shape = (group * mg, cg, *kernel)
    return x_shape, w_shape, attrs


def test_conv_integer(ort, checked):
    rng = np.random.default_rng(SEED + 6)
    tally = Tally()
    for i in range(80):
        x_shape, w_shape, attrs = random_conv(rng)
        x = rng.integers(0, 256, x_shape).astype(np.uint8)
        w = rng.integers(0, 256, w_shape).astype(np.uint8)
        zx, zw = (np.asarray(v, np.uint8) for v in rng.integers(0, 256, 2))
        feeds = {"x": x, "w": w, "zx": zx, "zw": zw}
        node = helper.make_node("ConvInteger", list(feeds), ["y"], **attrs)
        ours, theirs = run_both(ort, build([node], feeds, {}, ["y"], 10), feeds)
        tally.check(attrs.get("auto_pad", "pads"), ours, theirs, f"case {i} {attrs}")
    tally.report(
        checked, "onnxruntime ConvInteger (u8; groups, strides, dilations, pads, auto_pad)"
    )


def test_qlinear_conv(ort, checked):
    rng = np.random.default_rng(SEED + 7)
    tally = Tally()
    for i in range(90):
        x_shape, w_shape, attrs = random_conv(rng)
        kind = ("u8u8", "s8s8", "u8s8")[i % 3]
        tx = np.int8 if kind == "s8s8" else np.uint8
        tw = np.uint8 if kind == "u8u8" else np.int8
        w_lo, w_hi = {"u8u8": (0, 255), "s8s8": (-128, 127), "u8s8": (-64, 63)}[kind]
        ix = np.iinfo(tx)
        m = w_shape[0]
        x = rng.integers(ix.min, ix.max, x_shape, endpoint=True).astype(tx)
        w = rng.integers(w_lo, w_hi, w_shape, endpoint=True).astype(tw)
        per_channel = rng.random() < 0.5
        sx = random_scales(rng, (), negative=False)
        sw = random_scales(rng, (m,) if per_channel else (), negative=False)
        k = int(np.prod(w_shape[1:]))
        sy = np.asarray(np.float32(sx) * np.float32(np.max(sw)) * np.float32(k * 30), np.float32)
        feeds = {
            "x": x,
            "sx": sx,
            "zx": np.asarray(rng.integers(ix.min, ix.max, endpoint=True), tx),
            "w": w,
            "sw": sw,
            "zw": rng.integers(w_lo, w_hi, (m,) if per_channel else (), endpoint=True).astype(tw),
            "sy": sy,
            "zy": np.asarray(rng.integers(0, 256), np.uint8),
        }
        if kind == "s8s8":
            feeds["zy"] = np.asarray(rng.integers(-128, 128), np.int8)
        if rng.random() < 0.5:
            feeds["B"] = rng.integers(-(2**20), 2**20, m).astype(np.int32)
        node = helper.make_node("QLinearConv", list(feeds), ["y"], **attrs)
        ours, theirs = run_both(ort, build([node], feeds, {}, ["y"], 10), feeds)
        tally.check(kind, ours, theirs, f"case {i} {attrs}")
    tally.report(checked, "onnxruntime QLinearConv (u8u8, s8s8, u8s8 7-bit; per-channel)")


def test_large_tensors_take_the_compiled_paths(ort, checked):
    """Tensors above refq.quantize's Numba threshold (4096 elements), every granularity."""
    rng = np.random.default_rng(SEED + 8)
    tally = Tally()
    for i in range(12):
        name = ("int8", "uint8", "int16", "uint16")[i % 4]
        shape = (int(rng.integers(40, 80)), int(rng.integers(100, 200)))
        gran, attrs, pshape = random_granularity(rng, shape)
        s = random_scales(rng, pshape)
        x = (rng.standard_normal(shape) * rng.choice([1.0, 100.0])).astype(np.float32)
        ties = (rng.integers(-300, 300, shape) + 0.5) * expand(s, shape, attrs)
        x = np.where(rng.random(shape) < 0.3, ties, x).astype(np.float32)
        z = random_zero_points(rng, name, pshape)
        node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], **attrs)
        model = build([node], {"x": x, "s": s}, {"z": z}, ["q"], 21)
        ours, theirs = run_both(ort, model, {"x": x, "s": s})
        tally.check(f"quantize {name} {gran}", ours, theirs, f"case {i}")
        node = helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"], **attrs)
        model = build([node], {"s": s}, {"q": theirs[0], "z": z}, ["y"], 21)
        ours, theirs = run_both(ort, model, {"s": s})
        tally.check(f"dequantize {name} {gran}", ours, theirs, f"case {i}")
    tally.report(checked, "onnxruntime Quantize/DequantizeLinear, large tensors")
