"""Random single-op graphs for the linear-algebra peer tests (TFLM, LiteRT).

Every case draws shapes, scales, zero points and data from a seeded generator; nothing is
chosen by the peer or copied from refq's output. Probe graphs put the accumulator in the
bias (input at its zero point, weights of one) to aim at rounding ties.
"""

from __future__ import annotations

import numpy as np

from refq.graph import Graph, Node, TensorInfo

RANGES = {"int8": (-128, 127), "int16": (-32768, 32767), "int4": (-8, 7)}
ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")
FC_KINDS = ("per-tensor", "per-channel", "int4", "16x8", "16x8-per-channel")


def f32(v: float) -> np.float32:
    return np.float32(v)


def fc_case(rng: np.random.Generator, kind: str) -> tuple[Graph, np.ndarray]:
    """A FULLY_CONNECTED graph of ``kind`` (see ``FC_KINDS``) and an input for it."""
    wide = kind.startswith("16x8")
    per_channel = kind.endswith("per-channel")
    wdt = "int4" if kind == "int4" else "int8"
    adt = "int16" if wide else "int8"
    lead = tuple(int(v) for v in rng.integers(1, 4, int(rng.integers(1, 3))))
    k, n = int(rng.integers(1, 80)), int(rng.integers(1, 24))
    s_in = f32(2.0 ** rng.uniform(-8, 0))
    s_w = f32(2.0 ** rng.uniform(-8, -1, n if per_channel else 1))
    s_out = f32(
        s_in * float(s_w.max()) * np.sqrt(k) * 2.0 ** rng.uniform(-2, 6) * (128 if wide else 1)
    )
    zp_in = 0 if wide else int(rng.integers(-128, 128))
    zp_out = 0 if wide else int(rng.integers(-128, 128))
    wlo, whi = RANGES[wdt]
    w = rng.integers(max(wlo, -127), whi + 1, (n, k)).astype(np.int8)
    keep = bool(rng.integers(2))
    zeros = np.zeros(n, np.int64) if per_channel else 0
    t = {
        "x": TensorInfo("x", adt, (*lead, k), s_in, zp_in),
        "w": TensorInfo(
            "w", wdt, (n, k), s_w if per_channel else s_w[0], zeros, 0 if per_channel else None, w
        ),
        "y": TensorInfo("y", adt, (*lead, n) if keep else (int(np.prod(lead)), n), s_out, zp_out),
    }
    ins = ["x", "w"]
    if rng.random() < 0.8:
        bdt, bnp = ("int64", np.int64) if wide else ("int32", np.int32)
        lim = 2**30 if wide else 2**20
        b = rng.integers(-lim, lim, n).astype(bnp)
        bs = (s_in * s_w).astype(np.float32)
        t["b"] = TensorInfo(
            "b", bdt, (n,), bs if per_channel else bs[0], zeros, 0 if per_channel else None, b
        )
        ins.append("b")
    act = ACTIVATIONS[int(rng.integers(len(ACTIVATIONS)))]
    node = Node("FULLY_CONNECTED", tuple(ins), ("y",), {"activation": act, "keep_num_dims": keep})
    x = rng.integers(*RANGES[adt], size=(*lead, k), endpoint=True).astype(adt)
    return Graph(t, [node], ["x"], ["y"]), x


def fc_probe(
    acc: np.ndarray,
    s_in: float,
    s_w: np.ndarray,
    s_out: float,
    zp_out: int = 0,
    wide: bool = False,
) -> tuple[Graph, np.ndarray]:
    """FULLY_CONNECTED whose output channel ``c`` is ``requant_c(acc[c]) + zp_out``: one input
    feature at zero point 0 holding 0, weights of one, ``acc`` in the bias. ``s_w`` of size 1 is
    per tensor, else one scale per channel."""
    n = len(acc)
    adt, bdt = ("int16", "int64") if wide else ("int8", "int32")
    s_w = np.asarray(s_w, np.float32).reshape(-1)
    pc = s_w.size > 1
    zeros = np.zeros(n, np.int64) if pc else 0
    bs = (np.float32(s_in) * s_w).astype(np.float32)
    t = {
        "x": TensorInfo("x", adt, (1, 1), s_in, 0),
        "w": TensorInfo(
            "w",
            "int8",
            (n, 1),
            s_w if pc else s_w[0],
            zeros,
            0 if pc else None,
            np.ones((n, 1), np.int8),
        ),
        "b": TensorInfo(
            "b",
            bdt,
            (n,),
            bs if pc else bs[0],
            zeros,
            0 if pc else None,
            np.asarray(acc).astype(bdt),
        ),
        "y": TensorInfo("y", adt, (1, n), s_out, zp_out),
    }
    g = Graph(t, [Node("FULLY_CONNECTED", ("x", "w", "b"), ("y",))], ["x"], ["y"])
    return g, np.zeros((1, 1), adt)


def bmm_case(rng: np.random.Generator, dtype: str) -> tuple[Graph, list[np.ndarray]]:
    """A BATCH_MATMUL graph with broadcast batch dims, random adj_x / adj_y and zero points."""
    wide = dtype == "int16"
    batch = [int(rng.integers(1, 4)) for _ in range(int(rng.integers(0, 3)))]
    ab = [d if rng.random() < 0.7 else 1 for d in batch]
    bb = [d if rng.random() < 0.7 else 1 for d in batch]
    if rng.random() < 0.3:
        ab = ab[int(rng.integers(0, len(ab) + 1)) :]
    m, k, n = (int(rng.integers(1, 16)) for _ in range(3))
    adj_x, adj_y = bool(rng.integers(2)), bool(rng.integers(2))
    ash = (*ab, k, m) if adj_x else (*ab, m, k)
    bsh = (*bb, n, k) if adj_y else (*bb, k, n)
    out = (*np.broadcast_shapes(tuple(ab), tuple(bb)), m, n)
    sa, sb = f32(2.0 ** rng.uniform(-8, 0)), f32(2.0 ** rng.uniform(-8, 0))
    so = f32(sa * sb * np.sqrt(k) * 2.0 ** rng.uniform(-1, 7) * (256 if wide else 1))
    za, zb, zo = (0, 0, 0) if wide else (int(v) for v in rng.integers(-128, 128, 3))
    t = {
        "a": TensorInfo("a", dtype, ash, sa, za),
        "b": TensorInfo("b", dtype, bsh, sb, zb),
        "y": TensorInfo("y", dtype, out, so, zo),
    }
    attrs = {"adj_x": adj_x, "adj_y": adj_y}
    g = Graph(t, [Node("BATCH_MATMUL", ("a", "b"), ("y",), attrs)], ["a", "b"], ["y"])
    lo, hi = RANGES[dtype]
    a = rng.integers(lo, hi + 1, ash).astype(dtype)
    b = rng.integers(lo, hi + 1, bsh).astype(dtype)
    return g, [a, b]


def bmm_all_products(dtype: str, sa, sb, so, za: int, zb: int, zo: int) -> tuple[Graph, list]:
    """BATCH_MATMUL of a (256, 1) column and a (1, 256) row holding every int8 code: the output
    holds every accumulator ``(a - za) * (b - zb)``, a dense probe of the requantization."""
    codes = np.arange(-128, 128, dtype=np.int8)
    t = {
        "a": TensorInfo("a", dtype, (256, 1), sa, za),
        "b": TensorInfo("b", dtype, (1, 256), sb, zb),
        "y": TensorInfo("y", dtype, (256, 256), so, zo),
    }
    g = Graph(t, [Node("BATCH_MATMUL", ("a", "b"), ("y",))], ["a", "b"], ["y"])
    return g, [codes.reshape(256, 1).astype(dtype), codes.reshape(1, 256).astype(dtype)]


def quantize_case(rng: np.random.Generator, kind: str) -> tuple[Graph, np.ndarray]:
    """QUANTIZE float->int (values at and next to rounding ties), int->int, or DEQUANTIZE.

    ``kind``: ``f32->int8``, ``f32->int16``, ``int8->int8``, ``int16->int8``, ``int8->int16``,
    ``int16->int16``, ``deq-int8``, ``deq-int16``.
    """
    n = 256
    src, dst = kind.replace("deq-", "").split("->") if "->" in kind else (kind[4:], "float32")

    def qparams(dt: str, base: float | None = None):
        s = f32((2.0 ** rng.uniform(-10, 0)) if base is None else base * 2.0 ** rng.uniform(-4, 4))
        return s, 0 if dt == "int16" else int(rng.integers(-128, 128))

    if src == "f32":
        so, zo = qparams(dst)
        q = rng.integers(-300, 300, n) + 0.5
        x = (q * so).astype(np.float32)
        x = np.where(rng.random(n) < 0.4, np.nextafter(x, np.float32(np.inf)), x)
        x = np.where(rng.random(n) < 0.3, np.nextafter(x, np.float32(-np.inf)), x).astype(
            np.float32
        )
        t = {"x": TensorInfo("x", "float32", (n,)), "y": TensorInfo("y", dst, (n,), so, zo)}
        op = "QUANTIZE"
    else:
        si, zi = qparams(src)
        x = rng.integers(*RANGES[src], size=n, endpoint=True).astype(src)
        if dst == "float32":
            t = {"x": TensorInfo("x", src, (n,), si, zi), "y": TensorInfo("y", "float32", (n,))}
            op = "DEQUANTIZE"
        else:
            so, zo = qparams(dst, float(si))
            t = {"x": TensorInfo("x", src, (n,), si, zi), "y": TensorInfo("y", dst, (n,), so, zo)}
            op = "QUANTIZE"
    return Graph(t, [Node(op, ("x",), ("y",))], ["x"], ["y"]), x


QUANTIZE_KINDS = (
    "f32->int8",
    "f32->int16",
    "int8->int8",
    "int16->int8",
    "int8->int16",
    "int16->int16",
    "deq-int8",
    "deq-int16",
)


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shapes and values (float outputs compared by bit pattern)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype == np.float32 and b.dtype == np.float32:
        return a.shape == b.shape and np.array_equal(a.view(np.int32), b.view(np.int32))
    return a.dtype == b.dtype and np.array_equal(a, b)


def bmm_multiplier_probe(rng: np.random.Generator, dtype: str) -> tuple[Graph, list]:
    """A BATCH_MATMUL whose double-product and float32-product multipliers (``tflm`` vs
    ``tflm-f32``) give different outputs: scales drawn until they do, operands a (256, 1)
    column and a (1, 256) row (every int8 code; random int16 codes)."""
    import refq.fixedpoint as fp
    from refq.graph import Program

    lo, hi = RANGES[dtype]
    while True:
        sa, sb = f32(2.0 ** rng.uniform(-8, 0)), f32(2.0 ** rng.uniform(-8, 0))
        # Large accumulators (small multipliers) make one multiplier unit visible.
        so = f32(sa * sb * 2.0 ** (rng.uniform(14, 20) if dtype == "int16" else rng.uniform(6, 9)))
        # Cheap filter first: the two multipliers (reduced to 16 bits for int16) must differ.
        dd = fp.quantize_multiplier(float(sa) * float(sb) / float(so))[0]
        fl = fp.quantize_multiplier(float(f32(sa * sb)) / float(so))[0]
        if dtype == "int16":
            dd, fl = fp.reduce_multiplier(dd), fp.reduce_multiplier(fl)
        if dd == fl:
            continue
        if dtype == "int8":
            g, xs = bmm_all_products(dtype, sa, sb, so, 0, 0, 0)
        else:
            t = {
                "a": TensorInfo("a", dtype, (256, 1), sa, 0),
                "b": TensorInfo("b", dtype, (1, 256), sb, 0),
                "y": TensorInfo("y", dtype, (256, 256), so, 0),
            }
            g = Graph(t, [Node("BATCH_MATMUL", ("a", "b"), ("y",))], ["a", "b"], ["y"])
            xs = [
                rng.integers(lo, hi + 1, (256, 1)).astype(dtype),
                rng.integers(lo, hi + 1, (1, 256)).astype(dtype),
            ]
        if not np.array_equal(Program(g, "tflm").run(xs)[0], Program(g, "tflm-f32").run(xs)[0]):
            return g, xs
