"""Random integer graphs for the .tflite reader / runner tests, drawn from a seeded generator.

Every builder takes a ``numpy.random.Generator`` and returns a :class:`refq.graph.Graph` whose
shapes, scales, zero points, weights and options are random (the peers did not choose them).
Builders for ops whose kernels are not registered yet are skipped by :func:`available_kinds`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from refq.graph import Graph, Node, TensorInfo

ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")


def _logu(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.float32(np.exp(rng.uniform(np.log(lo), np.log(hi)))))


def _zp(rng: np.random.Generator) -> int:
    return int(rng.integers(-128, 128))


def _act(name: str, shape: tuple[int, ...], rng: np.random.Generator, scale: float) -> TensorInfo:
    return TensorInfo(name, "int8", shape, scale=scale, zero_point=_zp(rng))


def _fc_node(
    g: Graph, rng: np.random.Generator, x: str, out: str, n: int, *, tag: str, **kw: object
) -> None:
    """Append a random FULLY_CONNECTED ``x -> out`` with ``n`` units (weights, bias random)."""
    xi = g.tensors[x]
    k = xi.shape[-1]
    s_in = xi.scalar_scale()
    per_channel = kw.get("per_channel", bool(rng.integers(2)))
    int4 = kw.get("int4", rng.random() < 0.25)
    wdt, wlim = ("int4", 8) if int4 else ("int8", 128)
    if per_channel:
        s_w = np.array([_logu(rng, 1e-3, 0.1) for _ in range(n)], dtype=np.float32)
        w = TensorInfo(f"{tag}_w", wdt, (n, k), scale=s_w, zero_point=np.zeros(n), axis=0)
    else:
        s_w = np.float32(_logu(rng, 1e-3, 0.1))
        w = TensorInfo(f"{tag}_w", wdt, (n, k), scale=s_w, zero_point=0)
    w.data = rng.integers(-wlim + 1, wlim, (n, k)).astype(np.int8)
    g.add_tensor(w)
    inputs: list[str | None] = [x, w.name]
    if kw.get("bias", rng.random() < 0.7):
        bs = np.float32(s_in) * np.asarray(s_w, dtype=np.float32)
        b = TensorInfo(
            f"{tag}_b",
            "int32",
            (n,),
            scale=bs if per_channel else bs.reshape(()),
            zero_point=np.zeros(n) if per_channel else 0,
            axis=0 if per_channel else None,
            data=rng.integers(-(2**15), 2**15, n).astype(np.int32),
        )
        g.add_tensor(b)
        inputs.append(b.name)
    elif rng.random() < 0.5:
        inputs.append(None)  # absent optional bias (-1 in the file)
    keep = bool(kw.get("keep_num_dims", len(xi.shape) > 2 and rng.random() < 0.5))
    rows = int(np.prod(xi.shape[:-1]))
    shape = (*xi.shape[:-1], n) if keep else (rows, n)
    # Output scale spreads the accumulator over the int8 range (or saturates it sometimes).
    s_out = _logu(rng, 1.0, 4096.0) * s_in * float(np.max(s_w))
    g.add_tensor(_act(out, shape, rng, s_out))
    act = kw.get("activation", ACTIVATIONS[int(rng.integers(len(ACTIVATIONS)))])
    g.nodes.append(
        Node("FULLY_CONNECTED", tuple(inputs), (out,), {"activation": act, "keep_num_dims": keep})
    )


def fc_graph(rng: np.random.Generator, **kw: object) -> Graph:
    """x -> FULLY_CONNECTED -> y, random rank-2 or rank-3 input."""
    g = Graph(tensors={}, nodes=[], inputs=["x"], outputs=["y"], name="fc")
    lead = tuple(int(d) for d in rng.integers(1, 5, size=int(rng.integers(1, 3))))
    g.add_tensor(_act("x", (*lead, int(rng.integers(1, 40))), rng, _logu(rng, 1e-3, 1.0)))
    _fc_node(g, rng, "x", "y", int(rng.integers(1, 24)), tag="fc", **kw)
    return g


def bmm_graph(rng: np.random.Generator) -> Graph:
    """a, b -> BATCH_MATMUL -> y with random broadcast batch dims and adjoints."""
    g = Graph(tensors={}, nodes=[], inputs=["a", "b"], outputs=["y"], name="bmm")
    m, k, n = (int(v) for v in rng.integers(1, 12, 3))
    batch = int(rng.integers(1, 4))
    adj_x, adj_y = bool(rng.integers(2)), bool(rng.integers(2))
    bx = (batch,) if rng.random() < 0.8 else (1,)
    by = (batch,) if rng.random() < 0.8 else (1,)
    s_a, s_b = _logu(rng, 1e-3, 1.0), _logu(rng, 1e-3, 1.0)
    g.add_tensor(_act("a", (*bx, *((k, m) if adj_x else (m, k))), rng, s_a))
    g.add_tensor(_act("b", (*by, *((n, k) if adj_y else (k, n))), rng, s_b))
    g.add_tensor(_act("y", (max(bx[0], by[0]), m, n), rng, _logu(rng, 1.0, 4096.0) * s_a * s_b))
    g.nodes.append(Node("BATCH_MATMUL", ("a", "b"), ("y",), {"adj_x": adj_x, "adj_y": adj_y}))
    return g


def chain_graph(rng: np.random.Generator) -> Graph:
    """float x -> QUANTIZE -> FC -> FC -> QUANTIZE (requantize) -> DEQUANTIZE -> float y."""
    g = Graph(tensors={}, nodes=[], inputs=["x"], outputs=["y"], name="chain")
    rows, k = int(rng.integers(1, 5)), int(rng.integers(1, 32))
    g.add_tensor(TensorInfo("x", "float32", (rows, k)))
    g.add_tensor(_act("q", (rows, k), rng, _logu(rng, 1e-3, 0.1)))
    g.nodes.append(Node("QUANTIZE", ("x",), ("q",)))
    _fc_node(g, rng, "q", "h1", int(rng.integers(1, 24)), tag="fc1")
    _fc_node(g, rng, "h1", "h2", int(rng.integers(1, 24)), tag="fc2")
    h2 = g.tensors["h2"]
    g.add_tensor(_act("r", h2.shape, rng, h2.scalar_scale() * _logu(rng, 0.25, 4.0)))
    g.nodes.append(Node("QUANTIZE", ("h2",), ("r",)))
    g.add_tensor(TensorInfo("y", "float32", h2.shape))
    g.nodes.append(Node("DEQUANTIZE", ("r",), ("y",)))
    return g


def two_branch_graph(rng: np.random.Generator) -> Graph:
    """Two inputs, each through a FULLY_CONNECTED, joined by BATCH_MATMUL; two outputs."""
    g = Graph(tensors={}, nodes=[], inputs=["u", "v"], outputs=["y", "hu"], name="branches")
    m, n, k, j = (int(v) for v in rng.integers(1, 12, 4))
    g.add_tensor(_act("u", (m, k), rng, _logu(rng, 1e-3, 1.0)))
    g.add_tensor(_act("v", (n, k), rng, _logu(rng, 1e-3, 1.0)))
    _fc_node(g, rng, "u", "hu", j, tag="fu")
    _fc_node(g, rng, "v", "hv", j, tag="fv")
    s = g.tensors["hu"].scalar_scale() * g.tensors["hv"].scalar_scale()
    g.add_tensor(_act("y", (m, n), rng, _logu(rng, 1.0, 512.0) * s))
    g.nodes.append(Node("BATCH_MATMUL", ("hu", "hv"), ("y",), {"adj_x": False, "adj_y": True}))
    return g


def attention_graph(rng: np.random.Generator) -> Graph:
    """One attention head with a residual: FC q/k/v, BATCH_MATMUL q k^T, SOFTMAX, BATCH_MATMUL
    with v, FC out, ADD x."""
    g = Graph(tensors={}, nodes=[], inputs=["x"], outputs=["y"], name="attention")
    t, d, dh = int(rng.integers(1, 10)), int(rng.integers(2, 24)), int(rng.integers(1, 12))
    g.add_tensor(_act("x", (t, d), rng, _logu(rng, 1e-2, 0.2)))
    for name in ("q", "k", "v"):
        _fc_node(g, rng, "x", name, dh, tag=f"w{name}", int4=False)
    s_qk = g.tensors["q"].scalar_scale() * g.tensors["k"].scalar_scale()
    g.add_tensor(_act("scores", (t, t), rng, _logu(rng, 1.0, 64.0) * s_qk))
    g.nodes.append(Node("BATCH_MATMUL", ("q", "k"), ("scores",), {"adj_x": False, "adj_y": True}))
    g.add_tensor(TensorInfo("probs", "int8", (t, t), scale=1.0 / 256, zero_point=-128))
    beta = float(np.float32(rng.uniform(0.05, 2.0)))
    g.nodes.append(Node("SOFTMAX", ("scores",), ("probs",), {"beta": beta}))
    s_ctx = g.tensors["v"].scalar_scale() / 256
    g.add_tensor(_act("ctx", (t, dh), rng, _logu(rng, 1.0, 64.0) * s_ctx))
    g.nodes.append(Node("BATCH_MATMUL", ("probs", "v"), ("ctx",), {"adj_x": False, "adj_y": False}))
    _fc_node(g, rng, "ctx", "o", d, tag="wo", int4=False)
    g.add_tensor(_act("y", (t, d), rng, g.tensors["x"].scalar_scale() * _logu(rng, 0.5, 4.0)))
    g.nodes.append(Node("ADD", ("x", "o"), ("y",), {"activation": "NONE"}))
    return g


def elementwise_graph(rng: np.random.Generator) -> Graph:
    """a, b (broadcast) -> ADD / MUL / SUB / SQUARED_DIFFERENCE -> TANH, LOGISTIC, HARD_SWISH,
    LOG_SOFTMAX: four outputs."""
    g = Graph(tensors={}, nodes=[], inputs=["a", "b"], outputs=["t", "l", "h", "ls"], name="ew")
    shape = tuple(int(v) for v in rng.integers(1, 6, size=int(rng.integers(1, 4))))
    bshape = tuple(1 if rng.random() < 0.3 else v for v in shape)
    g.add_tensor(_act("a", shape, rng, _logu(rng, 1e-3, 0.5)))
    g.add_tensor(_act("b", bshape, rng, _logu(rng, 1e-3, 0.5)))
    sa, sb = g.tensors["a"].scalar_scale(), g.tensors["b"].scalar_scale()

    def binary(op: str, x: str, y: str, out: str, scale: float) -> None:
        g.add_tensor(_act(out, shape, rng, scale))
        attrs = (
            {}
            if op == "SQUARED_DIFFERENCE"
            else {"activation": ACTIVATIONS[int(rng.integers(len(ACTIVATIONS)))]}
        )
        g.nodes.append(Node(op, (x, y), (out,), attrs))

    binary("ADD", "a", "b", "sum", max(sa, sb) * _logu(rng, 0.5, 4.0))
    # (the LOGISTIC that reads "prod" needs an input scale below ~8 in TFLM's fixed point)
    binary(
        "MUL",
        "sum",
        "b",
        "prod",
        min(g.tensors["sum"].scalar_scale() * sb * _logu(rng, 8, 512), 4.0),
    )
    binary("SUB", "prod", "a", "diff", max(sa, g.tensors["prod"].scalar_scale()) * 2)
    binary("SQUARED_DIFFERENCE", "a", "b", "sqd", max(sa, sb) ** 2 * _logu(rng, 16, 4096))
    g.add_tensor(TensorInfo("t", "int8", shape, scale=1.0 / 128, zero_point=0))
    g.nodes.append(Node("TANH", ("sum",), ("t",)))
    g.add_tensor(TensorInfo("l", "int8", shape, scale=1.0 / 256, zero_point=-128))
    g.nodes.append(Node("LOGISTIC", ("prod",), ("l",)))
    g.add_tensor(_act("h", shape, rng, g.tensors["diff"].scalar_scale() * _logu(rng, 0.25, 2)))
    g.nodes.append(Node("HARD_SWISH", ("diff",), ("h",)))
    g.add_tensor(TensorInfo("ls", "int8", shape, scale=16.0 / 256, zero_point=127))
    g.nodes.append(Node("LOG_SOFTMAX", ("sqd",), ("ls",)))
    return g


def layer_norm_model(rng: np.random.Generator) -> Graph:
    """TFLM-decomposed LayerNorm or RMSNorm (refq.kernels.decomposed) on random data, then a
    FULLY_CONNECTED: MEAN, SUB, SQUARED_DIFFERENCE, ADD, RSQRT, MUL in one model."""
    from refq.kernels.decomposed import layer_norm_graph, rms_norm_graph

    rows, n = int(rng.integers(1, 6)), int(rng.integers(2, 40))
    cal = rng.normal(rng.uniform(-1, 1), rng.uniform(0.2, 3), (16, n))
    x_scale = float(np.float32((cal.max() - cal.min()) / 255))
    kw = {
        "x_scale": x_scale,
        "x_zero_point": int(np.clip(np.round(-128 - cal.min() / x_scale), -128, 127)),
        "gamma": rng.normal(1, 0.2, n).astype(np.float32),
        "epsilon": float(10.0 ** rng.uniform(-6, -2)),
        "out_scale": float(np.float32(_logu(rng, 0.01, 0.05))),
        "out_zero_point": _zp(rng),
        "calibration": cal,
    }
    if rng.random() < 0.5:
        g = layer_norm_graph((rows, n), beta=rng.normal(0, 0.2, n).astype(np.float32), **kw)
    else:
        g = rms_norm_graph((rows, n), **kw)
    (y,) = g.outputs
    _fc_node(g, rng, y, "fc_out", int(rng.integers(1, 16)), tag="head", int4=False)
    g.outputs = [y, "fc_out"]
    return g


def shapes_graph(rng: np.random.Generator) -> Graph:
    """TRANSPOSE, RESHAPE, CONCATENATION, GATHER, EMBEDDING_LOOKUP and MEAN / SUM (codes moved,
    statistics requantized)."""
    g = Graph(tensors={}, nodes=[], inputs=["x", "ids"], outputs=["y", "emb"], name="shapes")
    a, b, c = (int(v) for v in rng.integers(1, 6, 3))
    s, z = _logu(rng, 1e-3, 0.5), _zp(rng)

    def same(name: str, shape: tuple[int, ...]) -> None:
        g.add_tensor(TensorInfo(name, "int8", shape, scale=s, zero_point=z))

    def const(name: str, values: list[int]) -> str:
        g.add_tensor(TensorInfo(name, "int32", (len(values),), data=np.array(values, np.int32)))
        return name

    same("x", (a, b, c))
    perm = [int(p) for p in rng.permutation(3)]
    same("xt", tuple((a, b, c)[p] for p in perm))
    g.nodes.append(Node("TRANSPOSE", ("x", const("perm", perm)), ("xt",)))
    flat = (
        (a * b, c)
        if perm == [0, 1, 2]
        else (int(np.prod(g.tensors["xt"].shape[:2])), g.tensors["xt"].shape[2])
    )
    same("xr", flat)
    g.nodes.append(
        Node("RESHAPE", ("xt", const("shape", list(flat))), ("xr",), {"new_shape": list(flat)})
    )
    same("xc", (flat[0], 2 * flat[1]))
    g.nodes.append(Node("CONCATENATION", ("xr", "xr"), ("xc",), {"axis": 1, "activation": "NONE"}))
    idx = rng.integers(0, flat[0], int(rng.integers(1, 5))).astype(np.int32)
    g.add_tensor(TensorInfo("gidx", "int32", idx.shape, data=idx))
    same("xg", (idx.size, 2 * flat[1]))
    g.nodes.append(Node("GATHER", ("xc", "gidx"), ("xg",), {"axis": 0, "batch_dims": 0}))
    op = "MEAN" if rng.random() < 0.6 else "SUM"
    keep = bool(rng.integers(2))
    g.add_tensor(_act("y", (idx.size, 1) if keep else (idx.size,), rng, s * _logu(rng, 0.5, 8)))
    g.nodes.append(Node(op, ("xg", const("axes", [1])), ("y",), {"keep_dims": keep}))
    vocab, dim = int(rng.integers(2, 20)), int(rng.integers(1, 8))
    table = rng.integers(-128, 128, (vocab, dim)).astype(np.int8)
    g.add_tensor(TensorInfo("table", "int8", (vocab, dim), scale=s, zero_point=z, data=table))
    n_ids = int(rng.integers(1, 6))
    g.add_tensor(TensorInfo("ids", "int32", (n_ids,)))
    same("emb", (n_ids, dim))
    g.nodes.append(Node("EMBEDDING_LOOKUP", ("ids", "table"), ("emb",)))
    g.metadata["input_ranges"] = {"ids": (0, vocab)}
    return g


KINDS: dict[str, tuple[Callable[[np.random.Generator], Graph], tuple[str, ...]]] = {
    "fc": (fc_graph, ("FULLY_CONNECTED",)),
    "bmm": (bmm_graph, ("BATCH_MATMUL",)),
    "chain": (chain_graph, ("FULLY_CONNECTED", "QUANTIZE", "DEQUANTIZE")),
    "branches": (two_branch_graph, ("FULLY_CONNECTED", "BATCH_MATMUL")),
    "attention": (attention_graph, ("FULLY_CONNECTED", "BATCH_MATMUL", "SOFTMAX", "ADD")),
    "elementwise": (
        elementwise_graph,
        (
            "ADD",
            "MUL",
            "SUB",
            "SQUARED_DIFFERENCE",
            "TANH",
            "LOGISTIC",
            "HARD_SWISH",
            "LOG_SOFTMAX",
        ),
    ),
    "norm": (
        layer_norm_model,
        ("MEAN", "SUB", "SQUARED_DIFFERENCE", "ADD", "RSQRT", "MUL", "FULLY_CONNECTED"),
    ),
    "shapes": (
        shapes_graph,
        ("TRANSPOSE", "RESHAPE", "CONCATENATION", "GATHER", "MEAN", "SUM", "EMBEDDING_LOOKUP"),
    ),
}


def available_kinds() -> list[str]:
    """The graph kinds whose ops all have registered kernels."""
    from refq.kernels.registry import registered_ops

    have = set(registered_ops())
    return [k for k, (_, ops) in KINDS.items() if set(ops) <= have]


def random_inputs(graph: Graph, rng: np.random.Generator) -> list[np.ndarray]:
    """Full-range integer codes (or floats around the quantized range) for each graph input."""
    out = []
    ranges = graph.metadata.get("input_ranges", {})
    for name in graph.inputs:
        t = graph.tensors[name]
        if name in ranges:
            lo, hi = ranges[name]
            out.append(rng.integers(lo, hi, t.shape).astype(t.np_dtype))
        elif t.dtype == "float32":
            spread = 10.0 ** rng.uniform(-2, 1)
            out.append((rng.normal(0.0, spread, t.shape)).astype(np.float32))
        else:
            info = np.iinfo(t.np_dtype)
            out.append(rng.integers(info.min, info.max + 1, t.shape).astype(t.np_dtype))
    return out
