"""Seeded random graphs that exercise every C kernel of codegen (for the codegen tests).

Each builder adds nodes with independent inputs and outputs to one graph, with random shapes,
scales, zero points, biases and fused activations, plus the edge cases the kernels have
separate code paths for (power-of-two multipliers, equal input scales, multipliers above one,
broadcasting, tables on and off, accumulators that wrap).
"""

from __future__ import annotations

import numpy as np

from refq.graph import Graph, Node, TensorInfo


def f32(x: float) -> float:
    return float(np.float32(x))


class GraphBuilder:
    """Collects tensors, nodes, graph inputs and outputs."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.tensors: dict[str, TensorInfo] = {}
        self.nodes: list[Node] = []
        self.inputs: list[str] = []
        self.outputs: list[str] = []
        self._count = 0

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}{self._count}"

    def tensor(self, stem: str, dtype: str, shape, *, scale=None, zp=None, data=None, **kw) -> str:
        name = self.name(stem)
        self.tensors[name] = TensorInfo(
            name, dtype, tuple(shape), scale=scale, zero_point=zp, data=data, **kw
        )
        return name

    def q8(self, stem: str, shape, scale=None, zp=None) -> str:
        rng = self.rng
        scale = f32(np.exp(rng.uniform(-6, 0))) if scale is None else scale
        zp = int(rng.integers(-128, 128)) if zp is None else zp
        return self.tensor(stem, "int8", shape, scale=scale, zp=zp)

    def node(self, op: str, inputs, outputs, attrs=None, *, graph_inputs=(), outs=None) -> None:
        self.nodes.append(Node(op, tuple(inputs), tuple(outputs), dict(attrs or {})))
        self.inputs.extend(graph_inputs)
        self.outputs.extend(outputs if outs is None else outs)

    def graph(self, name: str) -> Graph:
        return Graph(self.tensors, self.nodes, self.inputs, self.outputs, name=name)

    def activation(self) -> str:
        return str(self.rng.choice(["NONE", "NONE", "RELU", "RELU6", "RELU_N1_TO_1"]))


def add_fully_connected(b: GraphBuilder, count: int) -> None:
    """FULLY_CONNECTED nodes: int8 / int4 weights, per tensor / per channel, with and without
    bias and weight zero points, multipliers from 2^-18 to 3, one exact power of two."""
    rng = b.rng
    for j in range(count):
        k = int(rng.choice([rng.integers(1, 40), rng.integers(40, 300)]))
        n, rows = int(rng.integers(1, 24)), int(rng.integers(1, 4))
        wdt = "int4" if rng.random() < 0.35 else "int8"
        lo, hi = (-8, 7) if wdt == "int4" else (-128, 127)
        per_channel = rng.random() < 0.5
        s_in = f32(np.exp(rng.uniform(np.log(1e-3), 0)))
        s_w = np.exp(rng.uniform(np.log(1e-3), np.log(0.1), n if per_channel else 1))
        s_w = s_w.astype(np.float32)
        m = np.exp(rng.uniform(np.log(2.0**-18), np.log(3.0)))
        s_out = f32(s_in * float(s_w.max()) / m)
        if j == 0:  # multiplier exactly 2^-9: M = 2^30, the generic requantize path
            s_in, s_w, s_out, per_channel = 2.0**-4, np.float32([2.0**-6]), 2.0**-1, False
        zw = 0
        if rng.random() < 0.3:
            zw = rng.integers(lo, hi + 1, n) if per_channel else int(rng.integers(lo, hi + 1))
        w = rng.integers(lo, hi + 1, (n, k)).astype(np.int8)
        x = b.q8("fc_x", (rows, k), scale=s_in)
        wt = b.tensor(
            "fc_w",
            wdt,
            (n, k),
            scale=s_w if per_channel else s_w[0],
            zp=zw,
            axis=0 if per_channel else None,
            data=w,
        )
        inputs = [x, wt]
        if rng.random() < 0.7:
            bmax = int(rng.choice([100, 2**16, 2**24, 2**31 - 1]))
            bias = rng.integers(-bmax, bmax, n, endpoint=True).astype(np.int32)
            inputs.append(b.tensor("fc_b", "int32", (n,), data=bias))
        y = b.q8("fc_y", (rows, n), scale=s_out)
        b.node("FULLY_CONNECTED", inputs, [y], {"activation": b.activation()}, graph_inputs=[x])


def add_large_fully_connected(b: GraphBuilder) -> None:
    """Rows longer than the DSP paths' exact bounds (they fall back to plain C)."""
    rng = b.rng
    for k, n, wdt in ((65538, 1, "int8"), (131080, 1, "int4")):
        lo, hi = (-8, 7) if wdt == "int4" else (-128, 127)
        x = b.q8("big_x", (1, k), scale=0.02)
        w = b.tensor(
            "big_w",
            wdt,
            (n, k),
            scale=0.01,
            zp=0,
            data=rng.integers(lo, hi + 1, (n, k)).astype(np.int8),
        )
        y = b.q8("big_y", (1, n), scale=f32(0.02 * 0.01 * 3000))
        b.node("FULLY_CONNECTED", [x, w], [y], graph_inputs=[x])


def add_fully_connected_16x8(b: GraphBuilder, count: int) -> None:
    """16x8 FULLY_CONNECTED (int16 input and output, int8 weights, int64 accumulator): K from 1 to
    300 (many not multiples of 4 or 8), per tensor / per channel, int64 bias or none, some
    asymmetric weights and nonzero zero points, fused activations. Real multipliers around the
    one that keeps uniform int16 inputs in range (1 / (140 sqrt K)), times 0.1 .. 10; the first
    node's channels have small weights and reals from 0.05 to 5 (s64 shifts of both signs in one
    node), the second a real multiplier of 1.7 (shift +1) on weights in [-1, 1]."""
    rng = b.rng
    for j in range(count):
        k = int(rng.choice([rng.integers(1, 12), rng.integers(12, 300)]))
        n, rows = int(rng.integers(1, 24)), int(rng.integers(1, 4))
        per_channel = rng.random() < 0.6
        m = float(np.exp(rng.uniform(np.log(0.1), np.log(10.0)))) / (140 * np.sqrt(k))
        w_max = 127
        if j == 0:
            k, n, rows, per_channel, m, w_max = 3, 13, 3, True, 5.0, 1
        elif j == 1:
            k, n, rows, per_channel, m, w_max = 2, 6, 3, False, 1.7, 1
        s_in = f32(np.exp(rng.uniform(np.log(1e-4), np.log(1e-1))))
        s_w = np.exp(rng.uniform(np.log(1e-3), np.log(0.1), n if per_channel else 1))
        s_w = s_w.astype(np.float32)
        s_out = f32(s_in * float(s_w.max()) / m)
        zw = 0
        if j > 1 and rng.random() < 0.2:
            zw = rng.integers(-128, 128, n) if per_channel else int(rng.integers(-128, 128))
        w = rng.integers(-w_max - 1 if w_max == 127 else -w_max, w_max + 1, (n, k)).astype(np.int8)
        z_in = int(rng.integers(-300, 300)) if rng.random() < 0.2 else 0
        z_out = int(rng.integers(-300, 300)) if rng.random() < 0.2 else 0
        x = b.tensor("fc16_x", "int16", (rows, k), scale=s_in, zp=z_in)
        wt = b.tensor(
            "fc16_w",
            "int8",
            (n, k),
            scale=s_w if per_channel else s_w[0],
            zp=zw,
            axis=0 if per_channel else None,
            data=w,
        )
        inputs = [x, wt]
        if j > 1 and rng.random() < 0.7:
            bmax = int(rng.choice([100, 2**16, 2**22, 2**40], p=[0.3, 0.3, 0.3, 0.1]))
            bias = rng.integers(-bmax, bmax, n, endpoint=True).astype(np.int64)
            inputs.append(b.tensor("fc16_b", "int64", (n,), data=bias))
        y = b.tensor("fc16_y", "int16", (rows, n), scale=s_out, zp=z_out)
        act = str(rng.choice(["NONE", "RELU", "RELU6"], p=[0.6, 0.25, 0.15]))
        if j < 2 or 6.0 / s_out >= 2.0**30:
            act = "NONE"
        b.node("FULLY_CONNECTED", inputs, [y], {"activation": act}, graph_inputs=[x])


def add_int16_ops(b: GraphBuilder) -> None:
    """int8 -> int16 FULLY_CONNECTED, int16 ADD / SUB / MUL (broadcasting, zero points 0), int16
    TANH / LOGISTIC (general and power-of-two input scales)."""
    rng = b.rng
    for _ in range(3):
        k, n = int(rng.integers(1, 70)), int(rng.integers(1, 20))
        s_in = f32(np.exp(rng.uniform(np.log(1e-3), 0)))
        s_w = f32(np.exp(rng.uniform(np.log(1e-3), np.log(0.1))))
        x = b.q8("fc816_x", (2, k), scale=s_in)
        wt = b.tensor(
            "fc816_w",
            "int8",
            (n, k),
            scale=s_w,
            zp=0,
            data=rng.integers(-128, 128, (n, k)).astype(np.int8),
        )
        s_out = f32(s_in * s_w / np.exp(rng.uniform(np.log(2.0**-12), np.log(2.0))))
        y = b.tensor("fc816_y", "int16", (2, n), scale=s_out, zp=int(rng.integers(-50, 50)))
        b.node("FULLY_CONNECTED", [x, wt], [y], graph_inputs=[x])
    for j in range(6):
        op = ["ADD", "SUB", "MUL"][j % 3]
        s1, s2 = _broadcast_shapes(rng)
        if j < 3:
            s1 = s2 = [int(rng.integers(60, 200))]
        out = list(np.broadcast_shapes(tuple(s1), tuple(s2)))
        sc1 = f32(np.exp(rng.uniform(-12, -3)))
        sc2 = sc1 if j == 1 else f32(np.exp(rng.uniform(-12, -3)))
        if op == "MUL":
            so = f32(sc1 * sc2 * 2.0**15 * np.exp(rng.uniform(-1, 2)))
        else:
            so = f32(max(sc1, sc2) * np.exp(rng.uniform(-1, 3)))
        a = b.tensor("ew16_a", "int16", s1, scale=sc1, zp=0)
        c = b.tensor("ew16_b", "int16", s2, scale=sc2, zp=0)
        y = b.tensor("ew16_y", "int16", out, scale=so, zp=0)
        b.node(op, [a, c], [y], {"activation": "NONE"}, graph_inputs=[a, c])
    for op, s_in in (
        ("TANH", 2.0**-12),
        ("TANH", 2.0**-11),
        ("LOGISTIC", 2.0**-12),
        ("TANH", f32(np.exp(rng.uniform(-12, -6)))),
        ("LOGISTIC", f32(np.exp(rng.uniform(-12, -6)))),
        ("LOGISTIC", f32(np.exp(rng.uniform(-6, -2)))),
    ):
        x = b.tensor("sg16_x", "int16", (3, 67), scale=s_in, zp=0)
        y = b.tensor("sg16_y", "int16", (3, 67), scale=2.0**-15, zp=0)
        b.node(op, [x], [y], graph_inputs=[x])


def _broadcast_shapes(rng: np.random.Generator) -> tuple[list[int], list[int]]:
    rank = int(rng.integers(1, 5))
    out = [int(rng.integers(1, 6)) for _ in range(rank)]

    def operand() -> list[int]:
        r = int(rng.integers(0, rank + 1))
        return [d if rng.random() < 0.6 else 1 for d in out[rank - r :]]

    if rng.random() < 0.4:
        return out, out
    return operand(), operand()


def add_elementwise(b: GraphBuilder, count: int) -> None:
    """ADD / SUB / MUL with broadcasting; long vectors use the input tables, short ones not."""
    rng = b.rng
    for j in range(count):
        op = ["ADD", "SUB", "MUL"][j % 3]
        s1, s2 = _broadcast_shapes(rng)
        if j % 4 == 0:
            s1 = s2 = [int(rng.integers(64, 300))]
        if j % 7 == 1:
            s1, s2 = [3, int(rng.integers(64, 100))], [int(rng.integers(64, 100))]
            s2 = [s1[1]]
        out = list(np.broadcast_shapes(tuple(s1), tuple(s2)))
        sc1 = f32(np.exp(rng.uniform(-6, 0)))
        sc2 = sc1 if rng.random() < 0.3 else f32(np.exp(rng.uniform(-6, 0)))
        if op == "MUL":
            so = f32(sc1 * sc2 * np.exp(rng.uniform(-3, 6)))
        else:
            so = f32(max(sc1, sc2) * np.exp(rng.uniform(-1, 3)))
        if j == 4:  # output multiplier exactly 1/2 (output shift 0)
            sc1 = sc2 = 2.0**-3
            so = 2.0**-21
            op = "ADD"
        a = b.q8("ew_a", s1, scale=sc1)
        c = b.q8("ew_b", s2, scale=sc2)
        y = b.q8("ew_y", out, scale=so)
        b.node(op, [a, c], [y], {"activation": b.activation()}, graph_inputs=[a, c])


def add_requantize(b: GraphBuilder) -> None:
    """QUANTIZE between every supported pair of integer types, REQUANTIZE from int32 and per
    channel."""
    rng = b.rng
    pairs = [
        ("int8", "int8"),
        ("int8", "int16"),
        ("int16", "int8"),
        ("int16", "int16"),
        ("uint8", "int8"),
        ("int8", "uint8"),
        ("int32", "int8"),
    ]

    def zp_of(dtype: str) -> int:
        return {"int8": int(rng.integers(-128, 128)), "uint8": int(rng.integers(0, 256))}.get(
            dtype, 0
        )

    for src, dst in pairs:
        shape = (int(rng.integers(1, 5)), int(rng.integers(1, 40)))
        zin = int(rng.integers(-1000, 1000)) if src == "int32" else zp_of(src)
        x = b.tensor("rq_x", src, shape, scale=f32(np.exp(rng.uniform(-5, 0))), zp=zin)
        y = b.tensor("rq_y", dst, shape, scale=f32(np.exp(rng.uniform(-5, 0))), zp=zp_of(dst))
        b.node("REQUANTIZE" if src == "int32" else "QUANTIZE", [x], [y], graph_inputs=[x])
    c = 7
    x = b.tensor(
        "rq_pc_x",
        "int8",
        (3, c),
        scale=np.exp(rng.uniform(-4, 0, c)).astype(np.float32),
        zp=rng.integers(-20, 20, c),
        axis=-1,
    )
    y = b.q8("rq_pc_y", (3, c))
    b.node("REQUANTIZE", [x], [y], graph_inputs=[x])


def add_batch_matmul(b: GraphBuilder, count: int) -> None:
    rng = b.rng
    for j in range(count):
        adj_x, adj_y = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
        m, k, n = (int(v) for v in rng.integers(1, 20, 3))
        if j == 0:
            adj_x, adj_y, k = False, True, 67  # the DSP path with a tail
        b1 = [int(rng.integers(1, 3))] if rng.random() < 0.6 else []
        b2 = b1 if rng.random() < 0.5 else ([1] if b1 else [])
        if j == 1:
            b1, b2 = [2, 1], [3]
        lhs_shape = b1 + ([k, m] if adj_x else [m, k])
        rhs_shape = b2 + ([n, k] if adj_y else [k, n])
        batch = list(np.broadcast_shapes(tuple(b1), tuple(b2)))
        a = b.q8("mm_a", lhs_shape)
        c = b.q8("mm_b", rhs_shape)
        scale = f32(
            b.tensors[a].scalar_scale() * b.tensors[c].scalar_scale() * np.exp(rng.uniform(0, 5))
        )
        y = b.q8("mm_y", [*batch, m, n], scale=scale)
        attrs = {"adj_x": adj_x, "adj_y": adj_y}
        b.node("BATCH_MATMUL", [a, c], [y], attrs, graph_inputs=[a, c])


def add_data_movement(b: GraphBuilder) -> None:
    """EMBEDDING_LOOKUP (copy and float32 dequantize), GATHER (int8 / int16, int32 / int64
    indices, batch_dims), CONCATENATION, TRANSPOSE, RESHAPE, and an FC + ADD on the reshape."""
    rng = b.rng
    v, d = 11, 6
    table = b.tensor(
        "emb_table",
        "int8",
        (v, d),
        scale=0.1,
        zp=0,
        data=rng.integers(-128, 128, (v, d)).astype(np.int8),
    )
    ids = b.tensor("ids", "int32", (5,))
    emb = b.tensor("emb", "int8", (5, d), scale=0.1, zp=0)
    b.node("EMBEDDING_LOOKUP", [ids, table], [emb], graph_inputs=[ids])
    embf = b.tensor("embf", "float32", (5, d))
    b.node("EMBEDDING_LOOKUP", [ids, table], [embf])
    gx = b.q8("gx", (3, 4, 5), scale=0.3, zp=1)
    gi = b.tensor("gidx", "int32", (3, 2))
    gy = b.q8("gy", (3, 4, 2), scale=0.3, zp=1)
    b.node("GATHER", [gx, gi], [gy], {"axis": 2, "batch_dims": 1}, graph_inputs=[gx, gi])
    gx2 = b.tensor("gx16_", "int16", (3, 4, 5))
    gi2 = b.tensor("gidx64_", "int64", (2, 2))
    gy2 = b.tensor("gy16_", "int16", (2, 2, 4, 5))
    b.node("GATHER", [gx2, gi2], [gy2], {"axis": 0}, graph_inputs=[gx2, gi2])
    c1 = b.q8("cat_a", (2, 3, 4), scale=0.5, zp=2)
    c2 = b.q8("cat_b", (2, 5, 4), scale=0.5, zp=2)
    cc = b.q8("cat", (2, 8, 4), scale=0.5, zp=2)
    b.node("CONCATENATION", [c1, c2], [cc], {"axis": 1}, graph_inputs=[c1, c2], outs=[])
    perm = b.tensor("perm", "int32", (3,), data=np.array([2, 0, 1], np.int32))
    tp = b.q8("tp", (4, 2, 8), scale=0.5, zp=2)
    b.node("TRANSPOSE", [cc, perm], [tp])
    rs = b.q8("rs", (8, 8), scale=0.5, zp=2)
    b.node("RESHAPE", [tp], [rs], {"new_shape": [8, 8]})
    w = b.tensor(
        "fcw",
        "int8",
        (8, 8),
        scale=0.02,
        zp=0,
        data=rng.integers(-128, 128, (8, 8)).astype(np.int8),
    )
    fy = b.q8("fcy", (8, 8), scale=0.3, zp=-3)
    b.node("FULLY_CONNECTED", [rs, w], [fy], outs=[])
    ad = b.q8("res", (8, 8), scale=0.6, zp=0)
    b.node("ADD", [fy, rs], [ad])
    b.outputs.append(cc)
    ti = b.tensor("tin16_", "int16", (2, 3, 4, 5))
    to = b.tensor("tout16_", "int16", (5, 2, 4, 3))
    perm2 = b.tensor("perm2_", "int32", (4,), data=np.array([3, 0, 2, 1], np.int32))
    b.node("TRANSPOSE", [ti, perm2], [to], graph_inputs=[ti])


def random_inputs(graph: Graph, rng: np.random.Generator, sets: int = 3) -> list[list[np.ndarray]]:
    """Input sets: uniform codes, the extreme codes only, uniform codes; indices in range."""
    out = []
    for s in range(sets):
        arrays = []
        for name in graph.inputs:
            info = graph.tensors[name]
            if info.dtype in ("int32", "int64") and not info.quantized:
                bound = _index_bound(graph, name)
                arrays.append(rng.integers(0, bound, info.shape).astype(info.np_dtype))
                continue
            ii = np.iinfo(info.np_dtype)
            if s == 1:
                codes = rng.choice(np.array([ii.min, ii.max, 0], dtype=np.int64), info.shape)
            else:
                codes = rng.integers(ii.min, ii.max, info.shape, endpoint=True)
            arrays.append(codes.astype(info.np_dtype))
        out.append(arrays)
    return out


def _index_bound(graph: Graph, name: str) -> int:
    """The axis size an index input addresses (from the node that reads it)."""
    for node in graph.nodes:
        if node.op == "EMBEDDING_LOOKUP" and node.inputs[0] == name:
            return int(graph.tensors[node.inputs[1]].shape[0])
        if node.op == "GATHER" and node.inputs[1] == name:
            axis = int(node.attrs.get("axis", 0))
            return int(graph.tensors[node.inputs[0]].shape[axis])
    raise KeyError(name)


def kernel_graph(seed: int, name: str, *, large: bool = False) -> Graph:
    """One graph with nodes of every lowered op (module docstring)."""
    b = GraphBuilder(np.random.default_rng(seed))
    add_fully_connected(b, 12)
    add_elementwise(b, 14)
    add_requantize(b)
    add_batch_matmul(b, 5)
    add_data_movement(b)
    add_fully_connected_16x8(b, 8)
    add_int16_ops(b)
    if large:
        add_large_fully_connected(b)
    return b.graph(name)
