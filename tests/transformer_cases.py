"""Seeded random graphs of the transformer ops the C generator lowers (for the codegen tests).

:class:`CaseBuilder` adds independent nodes of SOFTMAX (int8 -> int8 / int16, int16, the long-row
"safe" variant), RMS_NORM / LAYER_NORM (int8 / int16 in and out), ROPE (both conventions, 2-D and
3-D), the per-code activations (SILU, GELU, TANH, LOGISTIC, HARD_SWISH, RSQRT), SWIGLU and
ATTENTION (GQA, several tokens per call, int8 / int16 scores, caches requantized or copied) to
one graph with random shapes, scales and zero points, and records how each graph input is drawn
per input set (codes, crafted rows, positions that advance with the KV cache).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from refq.graph import Graph
from tests.codegen_cases import GraphBuilder, f32

Draw = Callable[[np.random.Generator, int], np.ndarray]
RANGES = {"int8": (-128, 127), "int16": (-32768, 32767)}


class CaseBuilder(GraphBuilder):
    """A :class:`GraphBuilder` that also knows how to draw every graph input."""

    def __init__(self, rng: np.random.Generator) -> None:
        super().__init__(rng)
        self.draws: dict[str, Draw] = {}

    def scale(self, lo: float = 1e-3, hi: float = 0.2) -> float:
        return f32(np.exp(self.rng.uniform(np.log(lo), np.log(hi))))

    def zp(self, dtype: str = "int8", spread: int = 8) -> int:
        lo, hi = RANGES[dtype]
        return int(self.rng.integers(lo // spread, hi // spread + 1))

    def codes_input(self, stem: str, dtype: str, shape, scale=None, zp=None, lo=None) -> str:
        name = self.tensor(
            stem,
            dtype,
            shape,
            scale=self.scale() if scale is None else scale,
            zp=self.zp(dtype) if zp is None else zp,
        )
        qlo, qhi = RANGES[dtype]
        low = qlo if lo is None else lo

        def draw(rng: np.random.Generator, s: int) -> np.ndarray:
            if s == 1:  # extreme codes
                return rng.choice(np.array([low, qhi, 0]), shape).astype(dtype)
            return rng.integers(low, qhi, shape, endpoint=True).astype(dtype)

        self.draws[name] = draw
        self.inputs.append(name)
        return name

    def graph_and_sets(self, name: str, sets: int) -> tuple[Graph, list[list[np.ndarray]]]:
        graph = self.graph(name)
        rng = self.rng
        data = [[self.draws[n](rng, s) for n in graph.inputs] for s in range(sets)]
        return graph, data


# ---------------------------------------------------------------------------------------------
# SOFTMAX
# ---------------------------------------------------------------------------------------------


def add_softmax(b: CaseBuilder, count: int) -> None:
    rng = b.rng
    for i in range(count):
        shape = (int(rng.integers(1, 4)), int(rng.integers(1, 300)))
        if i % 3 == 2:  # int16 in, int16 out (zero points 0), TFLM or LiteRT tables
            x = b.codes_input("sm_x", "int16", shape, scale=b.scale(1e-4, 1e-2), zp=0)
            y = b.tensor("sm_y", "int16", shape, scale=1 / 32768, zp=0)
            attrs = {
                "beta": float(rng.choice([1.0, 0.5])),
                "int16_tables": str(rng.choice(["tflm", "litert"])),
            }
        else:
            x = b.codes_input("sm_x", "int8", shape, scale=b.scale(1e-3, 0.5))
            bits = 8 if i % 3 == 0 else 16
            y = b.tensor(
                "sm_y",
                f"int{bits}",
                shape,
                scale=1 / 256 if bits == 8 else 1 / 65536,
                zp=-128 if bits == 8 else -32768,
            )
            attrs = {"beta": float(rng.choice([1.0, 0.5, 2.0]))}
        b.node("SOFTMAX", [x], [y], attrs)


def add_softmax_long_rows(b: CaseBuilder) -> None:
    """Rows with 512+ elements at the maximum (final exponent >= 32) and 9000 (the Q12.19 sum
    beyond 2^32), int8 and int16 outputs, under long_rows="safe"; the last row of each node has
    500 random codes up to the maximum."""
    for n, bits in ((700, 8), (9000, 16), (9000, 8)):
        shape = (2, n) if n < 1000 else (1, n)
        x = b.tensor("long_x", "int8", shape, scale=0.01, zp=0)

        def draw(rng: np.random.Generator, s: int, shape=shape) -> np.ndarray:
            top = int(rng.integers(-100, 100))
            rows = np.full(shape, top, np.int8)
            rows[-1, :500] = rng.integers(-128, top, 500, endpoint=True)  # some below the top
            return rows

        b.draws[x] = draw
        b.inputs.append(x)
        y = b.tensor(
            "long_y",
            f"int{bits}",
            shape,
            scale=1 / 256 if bits == 8 else 1 / 65536,
            zp=-128 if bits == 8 else -32768,
        )
        b.node("SOFTMAX", [x], [y], {"long_rows": "safe"})


# ---------------------------------------------------------------------------------------------
# Norms
# ---------------------------------------------------------------------------------------------


def add_norms(b: CaseBuilder, count: int) -> None:
    rng = b.rng
    for i in range(count):
        op = ("RMS_NORM", "LAYER_NORM")[i % 2]
        in_dt = ("int8", "int16")[(i // 2) % 2]
        out_dt = ("int8", "int16")[(i // 4) % 2]
        n = 1 if i % 7 == 6 else int(rng.integers(2, 200))  # n = 1: var is a perfect square
        shape = (int(rng.integers(1, 4)), n)
        x = b.codes_input("norm_x", in_dt, shape, scale=b.scale())
        g = b.tensor("gamma", "float32", (n,), data=rng.normal(1, 0.5, n).astype(np.float32))
        ins = [x, g]
        if op == "LAYER_NORM":
            beta = rng.normal(0, 0.3, n).astype(np.float32)
            ins.append(b.tensor("beta", "float32", (n,), data=beta))
        y = b.tensor("norm_y", out_dt, shape, scale=b.scale(), zp=b.zp(out_dt))
        eps = float(rng.choice([0.0, 1e-5, 1e-3]))
        b.node(op, ins, [y], {"epsilon": eps})


# ---------------------------------------------------------------------------------------------
# ROPE
# ---------------------------------------------------------------------------------------------


def add_rope(b: CaseBuilder, count: int) -> None:
    rng = b.rng
    for i in range(count):
        t, h, d = int(rng.integers(1, 4)), int(rng.integers(1, 4)), 2 * int(rng.integers(1, 17))
        max_pos = int(rng.integers(t, 64))
        shape = (t, h, d) if i % 3 == 0 else (t, h * d)
        s_in = b.scale()
        x = b.codes_input("rope_x", "int8", shape, scale=s_in)
        pos = b.tensor("rope_pos", "int32", ())
        b.draws[pos] = lambda rng, s, hi=max_pos - t: np.asarray(rng.integers(0, hi + 1), np.int32)
        b.inputs.append(pos)
        y = b.tensor("rope_y", "int8", shape, scale=f32(s_in * rng.uniform(0.5, 2)), zp=b.zp())
        attrs = {
            "head_dim": d,
            "max_positions": max_pos,
            "theta": float(rng.choice([10000.0, 500.0])),
            "convention": ("interleaved", "rotate_half")[i % 2],
        }
        b.node("ROPE", [x, pos], [y], attrs)


# ---------------------------------------------------------------------------------------------
# Per-code activations and SWIGLU
# ---------------------------------------------------------------------------------------------


def add_activations(b: CaseBuilder, profile: str) -> None:
    """SILU (both methods, int8 / int16 out), GELU (LiteRT table or I-BERT by profile), TANH,
    LOGISTIC, HARD_SWISH, RSQRT (inputs from its zero point up)."""
    rng = b.rng
    shape = (3, 37)

    def unary(op: str, s_out: float, zp_out: int, out: str = "int8", attrs=None, **kw) -> None:
        x = b.codes_input(f"{op.lower()}_x", "int8", shape, **kw)
        y = b.tensor(f"{op.lower()}_y", out, shape, scale=s_out, zp=zp_out)
        b.node(op, [x], [y], attrs or {})

    ibert = profile == "ibert"
    for method in ("fixedpoint", "table"):
        for out in ("int8", "int16"):
            unary(
                "SILU",
                b.scale() / (1 if out == "int8" else 200),
                b.zp(out),
                out,
                {"method": method},
            )
    if ibert:
        for out in ("int8", "int16"):
            unary("GELU", b.scale() / (1 if out == "int8" else 200), b.zp(out), out)
        return
    for approximate in (False, True):
        unary("GELU", b.scale(), b.zp(), attrs={"approximate": approximate})
    litert = profile == "litert-ref"
    unary(
        "TANH",
        1 / 128 if not litert else b.scale(),
        0 if not litert else b.zp(),
        scale=b.scale(0.01, 0.5),
    )
    unary("LOGISTIC", 1 / 256, -128, scale=b.scale(0.01, 0.5))
    unary("HARD_SWISH", f32(0.03), b.zp(), scale=f32(0.05))
    zi = int(rng.integers(-40, 0))
    unary("RSQRT", f32(0.05), -100, scale=f32(0.05), zp=zi, lo=zi)


def add_swiglu(b: CaseBuilder) -> None:
    shape = (2, 29)
    for out in ("int8", "int16"):
        for method in ("fixedpoint", "table"):
            g = b.codes_input("gate", "int8", shape, scale=b.scale())
            u = b.codes_input("up", "int8", shape, scale=b.scale())
            y = b.tensor(
                "swiglu_y",
                out,
                shape,
                scale=b.scale() / (4 if out == "int8" else 500),
                zp=b.zp(out),
            )
            b.node("SWIGLU", [g, u], [y], {"method": method})


# ---------------------------------------------------------------------------------------------
# ATTENTION
# ---------------------------------------------------------------------------------------------


def add_attention(b: CaseBuilder, count: int, sets: int) -> None:
    """``count`` ATTENTION nodes, each with its own position input advancing by its token count
    per input set, so that the caches fill over ``sets`` invocations."""
    rng = b.rng
    for i in range(count):
        t = 1 if i % 3 == 1 else int(rng.integers(2, 9))
        hkv = int(rng.integers(1, 3))
        hq = hkv * int(rng.integers(1, 3))
        d = int(rng.choice([4, 6, 8, 13, 16, 32]))
        max_seq = t * sets + int(rng.integers(0, 5))
        score_dtype = ("int8", "int16")[i % 2]
        same_cache = i % 3 == 0
        sq, sk, sv = b.scale(0.01, 0.1), b.scale(0.01, 0.1), b.scale(0.01, 0.1)
        zq, zk, zv = (int(rng.integers(-10, 10)) for _ in range(3))
        q = b.codes_input("q", "int8", (t, hq * d), scale=sq, zp=zq)
        k = b.codes_input("k", "int8", (t, hkv * d), scale=sk, zp=zk)
        v = b.codes_input("v", "int8", (t, hkv * d), scale=sv, zp=zv)
        pos = b.tensor("att_pos", "int32", ())
        b.draws[pos] = lambda rng, s, t=t: np.asarray(s * t, np.int32)
        b.inputs.append(pos)
        kc_q = (sk, zk) if same_cache else (b.scale(0.01, 0.1), int(rng.integers(-10, 10)))
        vc_q = (sv, zv) if same_cache else (b.scale(0.01, 0.1), int(rng.integers(-10, 10)))
        kc = b.tensor(
            "k_cache", "int8", (hkv, max_seq, d), scale=kc_q[0], zp=kc_q[1], is_state=True
        )
        vc = b.tensor(
            "v_cache", "int8", (hkv, max_seq, d), scale=vc_q[0], zp=vc_q[1], is_state=True
        )
        y = b.tensor("att_out", "int8", (t, hq * d), scale=b.scale(0.01, 0.1), zp=b.zp())
        qmax = 127 if score_dtype == "int8" else 32767
        score_scale = f32(sq * kc_q[0] * 60 * np.sqrt(d) / qmax * rng.uniform(0.3, 3))
        attrs = {
            "num_heads": hq,
            "num_kv_heads": hkv,
            "score_scale": score_scale,
            "score_dtype": score_dtype,
        }
        b.node("ATTENTION", [q, k, v, pos, kc, vc], [y], attrs)


def add_attention_long_rows(b: CaseBuilder) -> None:
    """600 tokens at once with equal keys: causal rows of 512+ equal scores (long_rows="safe")."""
    t, d = 600, 8
    q = b.codes_input("q", "int8", (t, 2 * d), scale=f32(0.05), zp=0, lo=-5)
    k = b.tensor("k", "int8", (t, d), scale=f32(0.05), zp=0)
    b.draws[k] = lambda rng, s: np.full((t, d), int(rng.integers(-20, 20)), np.int8)
    b.inputs.append(k)
    v = b.codes_input("v", "int8", (t, d), scale=f32(0.05), zp=3)
    pos = b.tensor("att_pos", "int32", ())
    b.draws[pos] = lambda rng, s: np.asarray(0, np.int32)
    b.inputs.append(pos)
    kc = b.tensor("k_cache", "int8", (1, t, d), scale=f32(0.05), zp=0, is_state=True)
    vc = b.tensor("v_cache", "int8", (1, t, d), scale=f32(0.05), zp=3, is_state=True)
    y = b.tensor("att_out", "int8", (t, 2 * d), scale=f32(0.02), zp=1)
    attrs = {"num_heads": 2, "num_kv_heads": 1, "score_scale": f32(0.01), "long_rows": "safe"}
    b.node("ATTENTION", [q, k, v, pos, kc, vc], [y], attrs)


def transformer_graph(seed: int, profile: str) -> tuple[Graph, list[list[np.ndarray]]]:
    """The stateless ops under ``profile`` (the I-BERT / I-ViT profiles: norms and GELU only)."""
    b = CaseBuilder(np.random.default_rng(seed))
    if profile in ("ivit", "ivit-exact"):
        add_norms(b, 8)
    elif profile == "ibert":
        add_norms(b, 8)
        add_activations(b, profile)
    else:
        add_softmax(b, 9)
        add_norms(b, 8)
        add_rope(b, 6)
        add_activations(b, profile)
        add_swiglu(b)
    return b.graph_and_sets(f"transformer ops {profile}", sets=3)


def attention_graph(seed: int, profile: str, sets: int = 3) -> tuple[Graph, list]:
    b = CaseBuilder(np.random.default_rng(seed))
    add_attention(b, 6, sets)
    return b.graph_and_sets(f"attention {profile}", sets=sets)


def long_rows_graph(seed: int) -> tuple[Graph, list]:
    b = CaseBuilder(np.random.default_rng(seed))
    add_softmax_long_rows(b)
    add_attention_long_rows(b)
    return b.graph_and_sets("long rows", sets=1)
