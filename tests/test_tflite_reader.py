"""The .tflite reader and runner: round trips, golden outputs against TFLite Micro, and the
checks that turn inconsistent files into clear errors.

Models come from refq's writer (random graphs from :mod:`tests.tflite_models`) or are edited
through the schema's object API, so every rejected file is otherwise well formed and the test
pins the one inconsistency it introduces.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refq.errors import ModelFormatError, RefqError, ShapeError, UnsupportedError
from refq.graph import Graph
from tests.conftest import require_module
from tests.peers import run_litert, run_tflm
from tests.tflite_models import KINDS, available_kinds, fc_graph, random_inputs

SCHEMA = "tflite_micro.tensorflow.lite.micro.python.schema_py_generated"


@pytest.fixture(autouse=True)
def _needs_schema():
    require_module(SCHEMA)


def _s():
    from refq.tflite.schema import schema

    return schema()


def write(graph: Graph) -> bytes:
    from refq.tflite.writer import write_tflite

    return write_tflite(graph)


def read(data: bytes) -> Graph:
    from refq.tflite.reader import read_tflite

    return read_tflite(data)


def pack(model) -> bytes:
    import flatbuffers

    b = flatbuffers.Builder(1024)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def edit(data: bytes, fn) -> bytes:
    """Unpack with the schema's object API, let ``fn`` change the ModelT, pack again."""
    m = _s().ModelT.InitFromPackedBuf(data, 0)
    fn(m)
    return pack(m)


def tflm(model: bytes, inputs, n_outputs: int) -> list[np.ndarray]:
    """TFLite Micro in process (valid models only), with an arena big enough for any test graph."""
    return run_tflm(model, inputs, n_outputs, arena_size=max(1 << 21, 16 * len(model)))


def fc_model(seed: int = 0, **kw) -> tuple[Graph, bytes]:
    kw.setdefault("int4", False)
    g = fc_graph(np.random.default_rng(seed), **kw)
    return g, write(g)


def tensor_index(m, name: str) -> int:
    names = [
        t.name.decode() if isinstance(t.name, bytes) else t.name for t in m.subgraphs[0].tensors
    ]
    return names.index(name)


# ---------------------------------------------------------------------------------------------
# Round trips: writer -> reader gives back the graph (property over random graphs)
# ---------------------------------------------------------------------------------------------


def assert_same_graph(orig: Graph, got: Graph) -> None:
    from refq.tflite.optable import options_to_attrs

    assert got.inputs == orig.inputs and got.outputs == orig.outputs
    assert set(got.tensors) == set(orig.tensors)
    for name, a in orig.tensors.items():
        b = got.tensors[name]
        assert (b.dtype, b.shape, b.is_state) == (a.dtype, a.shape, a.is_state), name
        assert b.quantized == a.quantized, name
        if a.quantized:
            assert np.array_equal(np.atleast_1d(b.scale), np.atleast_1d(a.scale)), name
            assert np.array_equal(np.atleast_1d(b.zero_point), np.atleast_1d(a.zero_point)), name
            assert b.per_channel == a.per_channel and (not a.per_channel or b.axis == a.axis)
        assert b.is_constant == a.is_constant, name
        if a.is_constant:
            assert b.data.dtype == a.np_dtype and np.array_equal(b.data, a.data), name
    assert len(got.nodes) == len(orig.nodes)
    for na, nb in zip(orig.nodes, got.nodes, strict=True):
        assert (nb.op, nb.inputs, nb.outputs) == (na.op, na.inputs, na.outputs)
        assert nb.attrs == {**options_to_attrs(na.op, None), **na.attrs}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(KINDS)), seed=st.integers(0, 2**32 - 1))
def test_round_trip_random_graphs(kind, seed):
    g = KINDS[kind][0](np.random.default_rng(seed))
    assert_same_graph(g, read(write(g)))


def test_int4_constants_unpack_low_nibble_first():
    """INT4 buffers hold two codes per byte, element 0 in the low nibble; odd counts pad the
    last high nibble. The expected bytes are computed here from that rule, not by refq."""
    rng = np.random.default_rng(3)
    for n, k in ((3, 5), (4, 8), (1, 1), (7, 3)):
        g = fc_graph(rng, int4=True, per_channel=False)
        w = g.tensors["fc_w"]
        codes = rng.integers(-8, 8, (n, k)).astype(np.int8)
        g.tensors["fc_w"].data, g.tensors["fc_w"].shape = codes, (n, k)
        g.tensors["x"].shape = (*g.tensors["x"].shape[:-1], k)
        y = g.tensors["y"]
        y.shape = (*y.shape[:-1], n)
        g.nodes[0].inputs = ("x", "fc_w")
        data = write(g)
        m = _s().ModelT.InitFromPackedBuf(data, 0)
        t = m.subgraphs[0].tensors[tensor_index(m, "fc_w")]
        stored = bytes(bytearray(m.buffers[t.buffer].data))
        flat = [int(c) & 0xF for c in codes.reshape(-1)] + [0]
        expected = bytes(flat[i] | (flat[i + 1] << 4) for i in range(0, n * k, 2))
        assert stored == expected
        got = read(data).tensors["fc_w"]
        assert got.dtype == "int4" and w.dtype == "int4"
        assert got.data.dtype == np.int8 and np.array_equal(got.data, codes)


# ---------------------------------------------------------------------------------------------
# Golden outputs: run_tflite under tflm equals the tflite-micro interpreter bit for bit
# ---------------------------------------------------------------------------------------------

CONFIGS_PER_KIND = 60


@pytest.mark.peer("tflite-micro")
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_run_tflite_matches_tflm(kind, checked):
    from refq.tflite.run import prepare_tflite

    assert kind in available_kinds(), f"kernels for {KINDS[kind][1]} are not all registered"
    rng = np.random.default_rng(1000 + sorted(KINDS).index(kind))
    elements = 0
    for _ in range(CONFIGS_PER_KIND):
        g = KINDS[kind][0](rng)
        if any(t.dtype == "int4" and t.per_channel for t in g.tensors.values()):
            g = KINDS[kind][0](rng)  # TFLM refuses per-channel INT4 weights; redraw once
            if any(t.dtype == "int4" and t.per_channel for t in g.tensors.values()):
                continue
        data = write(g)
        prog = prepare_tflite(data, "tflm")
        for _ in range(2):
            xs = random_inputs(g, rng)
            ours = prog.run(xs)
            theirs = tflm(data, xs, len(g.outputs))
            for a, b in zip(ours, theirs, strict=True):
                assert a.dtype == b.dtype and a.shape == b.shape
                assert np.array_equal(a, b)
                elements += a.size
    checked(f"run_tflite({kind}) == tflite-micro, profile tflm", 2 * CONFIGS_PER_KIND, elements)


@pytest.mark.peer("ai-edge-litert")
def test_int4_models_match_litert(checked):
    """INT4 weights end to end (per channel, which the tflite-micro wheel refuses, and per
    tensor): LiteRT's reference kernels run them; refq under ``litert-ref`` on the same bytes
    equals LiteRT."""
    from refq.tflite.run import run_tflite

    assert "fc" in available_kinds(), "FULLY_CONNECTED kernel not registered"
    rng = np.random.default_rng(44)
    elements = 0
    n = 60
    for _ in range(n):
        g = fc_graph(rng, int4=True)
        data, xs = write(g), random_inputs(g, rng)
        (ours,), (theirs,) = run_tflite(data, xs, "litert-ref"), run_litert(data, xs)
        assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)
        elements += ours.size
    checked("run_tflite(fc, INT4 weights) == LiteRT reference, profile litert-ref", n, elements)


def test_run_tflite_inputs_forms(tmp_path):
    from refq.tflite.run import load_tflite, run_tflite

    g, data = fc_model(5)
    x = random_inputs(g, np.random.default_rng(0))[0]
    path = tmp_path / "m.tflite"
    path.write_bytes(data)
    want = tflm(data, [x], 1)[0]
    for model in (data, str(path), path, bytearray(data), memoryview(data)):
        for inputs in ([x], x, {"x": x}):
            (y,) = run_tflite(model, inputs)
            assert np.array_equal(y, want)
    assert load_tflite(path).name == "m"
    with pytest.raises(ModelFormatError, match=r"nope\.tflite"):
        load_tflite(tmp_path / "nope.tflite")
    with pytest.raises(ShapeError, match="'x'"):
        run_tflite(data, [x.astype(np.int16)])
    with pytest.raises(ShapeError, match="'x'"):
        run_tflite(data, [x[..., :-1]])


# ---------------------------------------------------------------------------------------------
# >2 GB form: buffer data outside the flatbuffer at offset / size from the file start
# ---------------------------------------------------------------------------------------------


def to_offset_buffers(data: bytes, align: int = 16) -> bytes:
    """Move every non-empty buffer after the flatbuffer (Buffer.offset / size), as converters do
    for models over 2 GB."""
    m = _s().ModelT.InitFromPackedBuf(data, 0)
    blobs = {}
    for i, buf in enumerate(m.buffers):
        if buf.data is not None and len(buf.data):
            blobs[i] = bytes(bytearray(buf.data))
            buf.data, buf.offset, buf.size = None, 1 << 40, len(blobs[i])
    head = pack(m)
    pos, where = len(head), {}
    for i, blob in blobs.items():
        pos = -(-pos // align) * align
        where[i] = pos
        pos += len(blob)
    for i in blobs:
        m.buffers[i].offset = where[i]
    out = bytearray(pack(m))
    assert len(out) == len(head)
    for i, blob in blobs.items():
        out += bytes(where[i] - len(out)) + blob
    return bytes(out)


def test_offset_buffers_read_like_inline(checked):
    rng = np.random.default_rng(11)
    n = 0
    for kind in ("fc", "chain", "branches"):
        g = KINDS[kind][0](rng)
        inline = write(g)
        outside = to_offset_buffers(inline)
        assert len(outside) > len(inline)
        assert_same_graph(g, read(outside))
        n += 1
    checked("offset/size buffers read as the inline model", n)


@pytest.mark.peer("ai-edge-litert")
def test_offset_buffers_run_like_litert():
    """LiteRT honours Buffer.offset / size; refq's result on those bytes equals LiteRT's and TFLM's
    on the inline bytes (the tflite-micro wheel ignores offset buffers: it reads empty data)."""
    from refq.tflite.run import run_tflite

    assert "fc" in available_kinds(), "FULLY_CONNECTED kernel not registered"
    g, inline = fc_model(12, per_channel=False, bias=True)
    outside = to_offset_buffers(inline)
    x = random_inputs(g, np.random.default_rng(1))
    ours = run_tflite(outside, x, "litert-ref")[0]
    assert np.array_equal(ours, run_litert(outside, x)[0])
    assert np.array_equal(run_litert(inline, x)[0], run_litert(outside, x)[0])
    assert np.array_equal(run_tflite(outside, x)[0], tflm(inline, x, 1)[0])


def test_offset_buffers_out_of_file_rejected():
    _, inline = fc_model(1)
    outside = to_offset_buffers(inline)
    m = _s().ModelT.InitFromPackedBuf(outside, 0)
    idx = next(i for i, b in enumerate(m.buffers) if b.offset > 1)

    def set_(offset, size, data=None):
        def fn(mm):
            mm.buffers[idx].offset, mm.buffers[idx].size = offset, size
            if data is not None:
                mm.buffers[idx].data = data

        return edit(outside, fn) + outside[len(pack(m)) :]

    for offset, size in ((len(outside) - 3, 8), (2**64 - 256, 512), (2**63, 2**63)):
        with pytest.raises(ModelFormatError, match=rf"buffers\[{idx}\].*past the end"):
            read(set_(offset, size))
    with pytest.raises(ModelFormatError, match="both inline data and an offset"):
        read(set_(m.buffers[idx].offset, m.buffers[idx].size, [1, 2, 3]))
    with pytest.raises(ModelFormatError, match="size 8 but no offset"):
        read(set_(0, 8))


# ---------------------------------------------------------------------------------------------
# Unsupported ops and types name the op / tensor and its index
# ---------------------------------------------------------------------------------------------


def _single_op_model(
    opcode: int, custom: str | None = None, dtype: str = "INT8", out_q: tuple = (0.5, 0)
) -> bytes:
    from refq.tflite.schema import model_editor

    s, me = _s(), model_editor()
    sg = me.Subgraph()
    t = getattr(s.TensorType, dtype)
    x = sg.add_tensor(shape=(1, 4), dtype=t, quantization=me.Quantization(0.5, 0), name="in0")
    y = sg.add_tensor(shape=(1, 4), dtype=t, quantization=me.Quantization(*out_q), name="out0")
    kw = {"custom_code": custom} if custom else {}
    sg.add_operator(opcode=opcode, inputs=[x], outputs=[y], **kw)
    sg.inputs, sg.outputs = [x], [y]
    return bytes(me.Model(subgraphs=[sg]).build())


def test_unsupported_ops_are_named():
    s = _s()
    with pytest.raises(UnsupportedError, match=r"operator 0 is CONV_2D"):
        read(_single_op_model(s.BuiltinOperator.CONV_2D))
    with pytest.raises(UnsupportedError, match=r"operator 0 is the custom op 'MyGelu'"):
        read(_single_op_model(s.BuiltinOperator.CUSTOM, custom="MyGelu"))

    def unknown(m):
        m.operatorCodes[0].builtinCode = 4321

    with pytest.raises(UnsupportedError, match="operator 0 has unknown builtin operator code 4321"):
        read(edit(_single_op_model(s.BuiltinOperator.TANH), unknown))


def test_builtin_code_is_max_of_deprecated_and_new():
    """Codes below 127 may sit in deprecated_builtin_code only (older files)."""
    s = _s()
    _, data = fc_model(2)

    def old_style(m):
        m.operatorCodes[0].deprecatedBuiltinCode = s.BuiltinOperator.FULLY_CONNECTED
        m.operatorCodes[0].builtinCode = 0

    assert read(edit(data, old_style)).nodes[0].op == "FULLY_CONNECTED"


def test_op_without_kernel_fails_at_prepare_naming_node(monkeypatch):
    """An op the reader knows but no kernel implements (TANH with its kernel unregistered)."""
    import refq.kernels  # noqa: F401  (registers every kernel before one is taken away)
    from refq.kernels import registry
    from refq.tflite.run import run_tflite

    op = "TANH"
    monkeypatch.delitem(registry._OPS, op)
    data = _single_op_model(getattr(_s().BuiltinOperator, op))
    assert read(data).nodes[0].op == op
    with pytest.raises(UnsupportedError, match=rf"{op}.*{op.lower()}_0"):
        run_tflite(data, [np.zeros((1, 4), np.int8)])


@pytest.mark.parametrize("dtype", ["FLOAT16", "STRING", "COMPLEX64", "UINT4", "FLOAT64"])
def test_unsupported_tensor_types_name_the_tensor(dtype):
    _, data = fc_model(3)

    def retype(m):
        m.subgraphs[0].tensors[tensor_index(m, "y")].type = getattr(_s().TensorType, dtype)

    with pytest.raises(UnsupportedError, match=rf"tensor 'y' \(index \d+\).*{dtype}"):
        read(edit(data, retype))


# ---------------------------------------------------------------------------------------------
# Model-level checks
# ---------------------------------------------------------------------------------------------


def test_header_and_version_checks():
    _, data = fc_model(4)
    assert read(data)
    with pytest.raises(ModelFormatError, match="file identifier"):
        read(data[:4] + b"TFL2" + data[8:])
    with pytest.raises(ModelFormatError, match="too short"):
        read(data[:7])

    def version(v):
        def fn(m):
            m.version = v

        return fn

    with pytest.raises(ModelFormatError, match="version is 2"):
        read(edit(data, version(2)))

    def no_subgraphs(m):
        m.subgraphs = []

    with pytest.raises(ModelFormatError, match="no subgraphs"):
        read(edit(data, no_subgraphs))

    def two_subgraphs(m):
        m.subgraphs = [m.subgraphs[0], m.subgraphs[0]]

    with pytest.raises(UnsupportedError, match="2 subgraphs"):
        read(edit(data, two_subgraphs))


def _tensor_edit(name: str, **fields):
    def fn(m):
        t = m.subgraphs[0].tensors[tensor_index(m, name)]
        for k, v in fields.items():
            if k.startswith("q_"):
                setattr(t.quantization, k[2:], v)
            else:
                setattr(t, k, v)

    return fn


QUANT_CASES = [
    ("x", {"q_zeroPoint": [1, 2]}, ModelFormatError, r"tensor 'x'.* 1 scales but 2 zero points"),
    ("x", {"q_zeroPoint": None}, ModelFormatError, r"tensor 'x'.*1 scales but 0 zero points"),
    ("x", {"q_scale": [0.0]}, ModelFormatError, r"tensor 'x'.*scale 0\.0 at index 0"),
    ("x", {"q_scale": [-0.5]}, ModelFormatError, r"tensor 'x'.*scale -0\.5"),
    ("x", {"q_scale": [math.inf]}, ModelFormatError, r"tensor 'x'.*scale inf"),
    ("x", {"q_scale": [math.nan]}, ModelFormatError, r"tensor 'x'.*scale nan"),
    ("x", {"q_zeroPoint": [128]}, ModelFormatError, r"tensor 'x'.*zero point 128.*int8"),
    ("y", {"q_zeroPoint": [-129]}, ModelFormatError, r"tensor 'y'.*zero point -129.*int8"),
    ("x", {"q_scale": [], "q_zeroPoint": [3]}, ModelFormatError, r"'x'.*1 zero points but no sc"),
    ("fc_w", {"q_quantizedDimension": 2}, ModelFormatError, r"'fc_w'.*quantized_dimension 2"),
    ("fc_w", {"q_quantizedDimension": 1}, ModelFormatError, r"'fc_w'.*quantized_dimension 1"),
    ("fc_w", {"q_detailsType": 1}, UnsupportedError, r"'fc_w'.*quantization details"),
]


@pytest.mark.parametrize(("name", "fields", "exc", "msg"), QUANT_CASES)
def test_quantization_checks(name, fields, exc, msg):
    _, data = fc_model(6, per_channel=True, bias=True)
    n_out, k = read(data).tensors["fc_w"].shape
    assert n_out != k  # so that quantized_dimension 1 mismatches the per-channel scale count
    if "q_detailsType" in fields:
        # A union value needs a table: give it the CustomQuantization one.
        def fn(m):
            q = m.subgraphs[0].tensors[tensor_index(m, name)].quantization
            q.detailsType = 1
            q.details = _s().CustomQuantizationT()
            q.details.custom = [1, 2, 3]

        bad = edit(data, fn)
    else:
        bad = edit(data, _tensor_edit(name, **fields))
    with pytest.raises(exc, match=msg):
        read(bad)


def test_per_channel_zero_points_must_be_zero():
    """TFLM's per-channel FULLY_CONNECTED ignores weight zero points (measured: the output equals
    the one with zero points 0), so such files have no defined TFLM answer and are refused."""
    _, data = fc_model(7, per_channel=True)
    n = read(data).tensors["fc_w"].shape[0]
    zps = [0] * n
    zps[-1] = 5
    with pytest.raises(ModelFormatError, match=rf"'fc_w'.*zero point 5 at channel {n - 1}"):
        read(edit(data, _tensor_edit("fc_w", q_zeroPoint=zps)))


@pytest.mark.peer("tflite-micro")
def test_tflm_per_channel_fc_ignores_weight_zero_points(checked):
    """The measurement behind the rule above: the same per-channel FULLY_CONNECTED with nonzero
    weight zero points gives exactly the output it gives with zero points 0 (with one output
    channel, i.e. one scale, TFLM takes the per-tensor path, which honours the zero point)."""
    rng = np.random.default_rng(8)
    cases = 0
    for seed in range(20):
        _, data = fc_model(20 + seed, per_channel=True)
        n = read(data).tensors["fc_w"].shape[0]
        if n < 2 or cases == 10:
            continue
        zps = [int(z) * int(rng.choice([-1, 1])) for z in rng.integers(1, 21, n)]
        x = random_inputs(read(data), rng)
        shifted = edit(data, _tensor_edit("fc_w", q_zeroPoint=zps))
        assert np.array_equal(tflm(shifted, x, 1)[0], tflm(data, x, 1)[0]), zps
        cases += 1
    assert cases == 10
    checked("TFLM per-channel FULLY_CONNECTED ignores weight zero points", cases)


def test_per_channel_count_must_match_dimension():
    _, data = fc_model(8, per_channel=True)
    g = read(data)
    n = g.tensors["fc_w"].shape[0]
    scales = [0.01] * (n + 1)
    with pytest.raises(ModelFormatError, match=rf"'fc_w'.*{n + 1} per-channel scales"):
        read(edit(data, _tensor_edit("fc_w", q_scale=scales, q_zeroPoint=[0] * (n + 1))))


def test_shape_and_buffer_checks():
    _, data = fc_model(9, bias=True, per_channel=False)
    g = read(data)
    wshape = list(g.tensors["fc_w"].shape)
    with pytest.raises(ModelFormatError, match=r"'x'.*negative dimension"):
        read(edit(data, _tensor_edit("x", shape=[-1, 4])))
    with pytest.raises(ModelFormatError, match=r"'fc_w'.*needs \d+ bytes.*holds \d+"):
        read(edit(data, _tensor_edit("fc_w", shape=[wshape[0] + 1, wshape[1]])))
    with pytest.raises(ModelFormatError, match=r"'fc_w'.*needs \d+ bytes"):
        read(edit(data, _tensor_edit("fc_w", type=_s().TensorType.INT16)))
    with pytest.raises(ModelFormatError, match=r"'fc_w' refers to buffer 999"):
        read(edit(data, _tensor_edit("fc_w", buffer=999)))
    with pytest.raises(ModelFormatError, match=r"'y'.*more than 2 GB"):
        read(edit(data, _tensor_edit("y", shape=[65536, 65536])))

    def buffer0(m):
        m.buffers[0].data = [1]

    with pytest.raises(ModelFormatError, match=r"buffers\[0\] must be the empty"):
        read(edit(data, buffer0))

    def constant_input(m):
        sg = m.subgraphs[0]
        sg.inputs = [tensor_index(m, "fc_w")]

    with pytest.raises(ModelFormatError, match="graph input 'fc_w' has constant data"):
        read(edit(data, constant_input))
    for name in ("fc_w", "x", "y"):
        with pytest.raises(UnsupportedError, match=rf"tensor '{name}' .* is a variable tensor"):
            read(edit(data, _tensor_edit(name, isVariable=True)))

    def absent_weights(m):
        m.subgraphs[0].operators[0].inputs = [tensor_index(m, "x"), -1]

    with pytest.raises(ModelFormatError, match=r"operator 0 \(FULLY_CONNECTED\) input 1 is absent"):
        read(edit(data, absent_weights))

    def bool_bias(m):
        t = m.subgraphs[0].tensors[tensor_index(m, "fc_b")]
        t.type, t.quantization = _s().TensorType.BOOL, None
        m.buffers[t.buffer].data = [0, 1, 2] + [0] * (t.shape[0] - 3) if t.shape[0] >= 3 else [2]

    with pytest.raises(ModelFormatError, match=r"'fc_b'.*(other than 0/1|needs)"):
        read(edit(data, bool_bias))


def test_operator_checks():
    s = _s()
    _, data = fc_model(10, bias=True)
    g = read(data)
    x, y = (tensor_index(s.ModelT.InitFromPackedBuf(data, 0), n) for n in ("x", "y"))
    w = tensor_index(s.ModelT.InitFromPackedBuf(data, 0), "fc_w")

    def op(**fields):
        def fn(m):
            for k, v in fields.items():
                setattr(m.subgraphs[0].operators[0], k, v)

        return fn

    cases = [
        (op(opcodeIndex=3), ModelFormatError, "operator 0: opcode_index 3 is out of range"),
        (op(inputs=[x, 99]), ModelFormatError, r"operator 0 \(FULLY_CONNECTED\) input tensor 99"),
        (op(inputs=[x, -2]), ModelFormatError, "input tensor -2 is out of range"),
        (op(outputs=[77]), ModelFormatError, "output tensor 77 is out of range"),
        (op(outputs=[]), ModelFormatError, "operator 0 .FULLY_CONNECTED. has no outputs"),
        (op(outputs=[w]), ModelFormatError, "writes tensor 'fc_w'.*constant"),
        (op(outputs=[x]), ModelFormatError, "writes tensor 'x'.*graph input"),
        (op(inputs=[y, w]), ModelFormatError, "reads tensor 'y'.*neither a constant"),
        (
            op(builtinOptionsType=s.BuiltinOptions.AddOptions),
            ModelFormatError,
            "union type .*expected FullyConnectedOptions",
        ),
    ]
    for fn, exc, msg in cases:
        with pytest.raises(exc, match=msg):
            read(edit(data, fn))

    def twice(m):
        sg = m.subgraphs[0]
        sg.operators = [sg.operators[0], sg.operators[0]]

    with pytest.raises(ModelFormatError, match=r"'y' .* written by operators 0 and 1"):
        read(edit(data, twice))

    def shuffled(m):
        m.subgraphs[0].operators[0].builtinOptions.weightsFormat = 1

    with pytest.raises(UnsupportedError, match=r"operator 0 \(FULLY_CONNECTED\) uses shuffled"):
        read(edit(data, shuffled))

    def bad_activation(m):
        m.subgraphs[0].operators[0].builtinOptions.fusedActivationFunction = 9

    with pytest.raises(UnsupportedError, match="operator 0: FULLY_CONNECTED: unknown fused"):
        read(edit(data, bad_activation))

    def no_table(m):
        m.subgraphs[0].operators[0].builtinOptions = None

    # TFLM reads options of the right type but without a table as all defaults.
    assert read(edit(data, no_table)).nodes[0].attrs == {
        "activation": "NONE",
        "keep_num_dims": False,
    }

    def graph_output_is_extra(m):
        m.subgraphs[0].outputs = [y, tensor_index(m, "fc_b") + 100]

    with pytest.raises(ModelFormatError, match="outputs refer to tensor"):
        read(edit(data, graph_output_is_extra))

    def no_outputs(m):
        m.subgraphs[0].outputs = []

    with pytest.raises(ModelFormatError, match="no outputs"):
        read(edit(data, no_outputs))
    assert g.nodes[0].name == "fully_connected_0"


@pytest.mark.peer("tflite-micro")
def test_reshape_new_shape_limit_matches_tflm():
    """TFLite copies RESHAPE's new_shape into an 8-entry array: 9 entries fail TFLM's parse
    (found by the byte-flip fuzz: a flipped vector length), 8 do not."""
    from tests.tflm_subprocess import TflmWorker

    s = _s()
    data = _single_op_model(s.BuiltinOperator.RESHAPE)
    x = np.zeros((1, 4), np.int8)

    def new_shape(n):
        def fn(m):
            op = m.subgraphs[0].operators[0]
            op.builtinOptionsType = s.BuiltinOptions.ReshapeOptions
            op.builtinOptions = s.ReshapeOptionsT()
            op.builtinOptions.newShape = [1, 4] + [1] * (n - 2)

        return edit(data, fn)

    with TflmWorker() as worker:
        assert worker.run(new_shape(8), [x], 1)[0] == "ok"
        assert worker.run(new_shape(9), [x], 1)[0] == "error"
    assert read(new_shape(8)).nodes[0].attrs["new_shape"] == [1, 4, 1, 1, 1, 1, 1, 1]
    with pytest.raises(ModelFormatError, match=r"operator 0 \(RESHAPE\): option new_shape has 9"):
        read(new_shape(9))


def test_non_finite_float_option():
    s = _s()
    data = _single_op_model(s.BuiltinOperator.SOFTMAX)

    def beta(v):
        def fn(m):
            m.subgraphs[0].operators[0].builtinOptionsType = s.BuiltinOptions.SoftmaxOptions
            m.subgraphs[0].operators[0].builtinOptions = s.SoftmaxOptionsT()
            m.subgraphs[0].operators[0].builtinOptions.beta = v

        return fn

    assert read(edit(data, beta(0.5))).nodes[0].attrs == {"beta": 0.5}
    for v in (math.nan, math.inf, -math.inf):
        with pytest.raises(ModelFormatError, match="option beta"):
            read(edit(data, beta(v)))


@pytest.mark.peer("tflite-micro")
def test_absent_options_are_schema_defaults():
    """A SOFTMAX without options has beta 0 in TFLite (zeroed params), not refq's attr default
    of 1: TFLM aborts on it, so refq must refuse it rather than run beta = 1."""
    from refq.tflite.run import run_tflite
    from tests.tflm_subprocess import TflmWorker

    s = _s()
    data = _single_op_model(s.BuiltinOperator.SOFTMAX, out_q=(1 / 256, -128))
    m = s.ModelT.InitFromPackedBuf(data, 0)
    assert m.subgraphs[0].operators[0].builtinOptions is None
    assert read(data).nodes[0].attrs == {"beta": 0.0}
    x = np.arange(-2, 2, dtype=np.int8).reshape(1, 4)
    with TflmWorker() as worker:
        assert worker.run(data, [x], 1)[0] in ("crash", "error")
    from refq.kernels.registry import registered_ops

    if "SOFTMAX" in registered_ops():
        with pytest.raises(RefqError, match="beta"):
            run_tflite(data, [x])


def test_fc_bias_scale_rule():
    """TFLite's per-tensor FULLY_CONNECTED Prepare needs |float32(s_in*s_w) - s_b| / s_out <= 0.02
    (measured on the tflite-micro wheel, 300 random configs, in tests/test_tflite_fuzz.py's
    companion check below); the reader refuses the same files."""
    g, data = fc_model(13, per_channel=False, bias=True)
    s_in, s_w = g.tensors["x"].scalar_scale(), g.tensors["fc_w"].scalar_scale()
    s_out = g.tensors["y"].scalar_scale()
    product = float(np.float32(s_in) * np.float32(s_w))
    ok = np.float32(product + 0.015 * s_out)
    bad = np.float32(product + 0.03 * s_out)
    assert read(edit(data, _tensor_edit("fc_b", q_scale=[float(ok)])))
    with pytest.raises(ModelFormatError, match=r"operator 0 \(FULLY_CONNECTED\): bias 'fc_b'"):
        read(edit(data, _tensor_edit("fc_b", q_scale=[float(bad)])))


@pytest.mark.peer("tflite-micro")
def test_fc_bias_scale_rule_matches_tflm(checked):
    """The bias-scale condition the reader applies is exactly where TFLM's Prepare fails."""
    from tests.tflm_subprocess import TflmWorker

    rng = np.random.default_rng(21)
    agree = 0
    with TflmWorker() as worker:
        for _ in range(120):
            g, data = fc_model(int(rng.integers(2**31)), per_channel=False, bias=True)
            s_out = g.tensors["y"].scalar_scale()
            product = float(
                np.float32(g.tensors["x"].scalar_scale())
                * np.float32(g.tensors["fc_w"].scalar_scale())
            )
            s_b = float(np.float32(max(product + rng.uniform(-0.04, 0.04) * s_out, 1e-30)))
            bad = edit(data, _tensor_edit("fc_b", q_scale=[s_b]))
            try:
                read(bad)
                accepted = True
            except ModelFormatError:
                accepted = False
            x = random_inputs(g, rng)
            outcome, _ = worker.run(bad, x, 1)
            assert accepted == (outcome == "ok"), (s_b, product, s_out, outcome)
            agree += 1
    checked("FC bias-scale rule == TFLM Prepare", agree)


def test_names_are_made_unique():
    """TFLite names may repeat, be empty or be invalid UTF-8; graph tensors are keyed by name."""
    from refq.tflite.run import run_tflite

    g, data = fc_model(14, bias=True)

    def rename(m):
        names = [b"dup", b"dup", b"", b"\xff\xfe"]
        for t, nm in zip(m.subgraphs[0].tensors, names, strict=False):
            t.name = nm

    got = read(edit(data, rename))
    assert len(got.tensors) == len(g.tensors)
    assert "dup" in got.tensors and "dup#1" in got.tensors and "tensor#2" in got.tensors
    assert "\\xff\\xfe" in got.tensors
    if "fc" in available_kinds():
        x = random_inputs(g, np.random.default_rng(0))
        assert np.array_equal(run_tflite(edit(data, rename), x)[0], tflm(data, x, 1)[0])


def test_declared_shape_mismatch_is_refused_at_run():
    """TFLM sizes tensors from the declared shapes; a declared output shape that the op does
    not produce is an inconsistent file, not a result."""
    from refq.tflite.run import run_tflite

    assert "fc" in available_kinds(), "FULLY_CONNECTED kernel not registered"
    g, data = fc_model(15, keep_num_dims=False)
    y = g.tensors["y"].shape
    bad = edit(data, _tensor_edit("y", shape=[y[0], y[1] + 1]))
    x = random_inputs(g, np.random.default_rng(0))
    with pytest.raises(ModelFormatError, match=r"computes tensor 'y' as int8 .* declares int8"):
        run_tflite(bad, x)


def test_fc_dtype_combinations_tflm_refuses():
    from refq.tflite.run import run_tflite
    from tests.tflm_subprocess import TflmWorker

    assert "fc" in available_kinds(), "FULLY_CONNECTED kernel not registered"
    g, data = fc_model(15, keep_num_dims=False)
    x = random_inputs(g, np.random.default_rng(0))
    bad = [
        edit(data, _tensor_edit("y", type=_s().TensorType.INT16)),
        edit(data, _tensor_edit("fc_w", type=_s().TensorType.UINT8)),  # zero points stay 0
    ]
    with TflmWorker() as worker:
        for b in bad:
            assert worker.run(b, x, 1)[0] == "error"  # TFLM refuses the file ...
    for b in bad:
        with pytest.raises(RefqError):  # ... and so should refq
            run_tflite(b, x)


def test_checked_table_reports_path_and_offset():
    _, data = fc_model(16)
    for root in (len(data) + 4, 2, 0xFFFFFFFC):
        with pytest.raises(ModelFormatError, match=rf"root table offset {root} is misaligned or"):
            read(struct.pack("<I", root) + data[4:])
    # An aligned root inside the file that is not a table: the checked table names the object
    # path and the offset it refused.
    with pytest.raises(ModelFormatError, match=r"malformed \.tflite at model: .* offset \d+"):
        read(struct.pack("<I", len(data) - 4) + data[4:])
