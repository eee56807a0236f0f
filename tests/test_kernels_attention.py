"""ROPE and ATTENTION: exact Python-int restatements, decode == full sequence bit for bit, and
error bounds against float RoPE / float causal attention."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq.errors import ExactnessError, QuantSpecError, ShapeError
from refq.graph import Graph, Node, Program, TensorInfo
from refq.kernels import attention as at
from refq.kernels import rope as rp
from refq.oracle import fixedpoint as of
from tests.test_kernels_softmax import oracle_softmax_s8_row, oracle_softmax_s16_row

PROPERTY = settings(max_examples=200, deadline=None)
f32 = np.float32


# --- RoPE ----------------------------------------------------------------------------------------


def test_rope_tables_are_rounded_cos_sin() -> None:
    """Entries are round_half_even(2^15 cos / sin) of the exact angle, clamped to +-32767: equal
    to the float64 value wherever that is not within 1e-6 of a tie; near-ties use the 60-digit
    values, themselves within 1e-12 of float64 cos / sin."""
    rng = np.random.default_rng(11)
    for head_dim, positions, theta in ((16, 300, 10000.0), (64, 257, 100000.0), (8, 50, 500.0)):
        cos, sin = rp.rope_tables(head_dim, positions, theta)
        w = np.power(theta, -2.0 * np.arange(head_dim // 2) / head_dim)
        ang = np.arange(positions)[:, None] * w[None, :]
        for table, ref in ((cos, np.cos(ang)), (sin, np.sin(ang))):
            scaled = ref * 32768
            clear = np.abs(scaled - np.floor(scaled) - 0.5) > 1e-6
            expected = np.clip(np.rint(scaled), -32767, 32767)
            assert np.array_equal(table[clear], expected[clear])
            assert np.abs(table - scaled).max() <= 1.0
        for _ in range(20):
            p, i = int(rng.integers(positions)), int(rng.integers(head_dim // 2))
            c, s = rp.exact_cos_sin(p, i, head_dim, theta)
            assert abs(float(c) - math.cos(p * theta ** (-2 * i / head_dim))) < 1e-12
            assert abs(float(s) - math.sin(p * theta ** (-2 * i / head_dim))) < 1e-12


def oracle_rope(x, pos0, p: rp.RopeParams) -> list:
    """ROPE with Python ints from the tables: pairs, int32 accumulators, MBQM, clamp."""
    d = p.head_dim
    first, second = rp.pair_indices(d, p.convention)
    out = []
    for t, token in enumerate(x.reshape(x.shape[0], -1, d).tolist()):
        row = []
        for head in token:
            v = [c - p.input_zero_point for c in head]
            acc = [0] * d
            for j, (a_i, b_i) in enumerate(zip(first, second, strict=True)):
                c, s = int(p.cos_q15[pos0 + t, j]), int(p.sin_q15[pos0 + t, j])
                acc[a_i] = v[a_i] * c - v[b_i] * s
                acc[b_i] = v[b_i] * c + v[a_i] * s
            row += [
                of.clamp(
                    of.multiply_by_quantized_multiplier(a, p.output_multiplier, p.output_shift)
                    + p.output_zero_point,
                    -128,
                    127,
                )
                for a in acc
            ]
        out.append(row)
    return out


@st.composite
def rope_cases(draw):
    d = draw(st.sampled_from([2, 4, 8, 16, 64]))
    heads, t = draw(st.integers(1, 3)), draw(st.integers(1, 6))
    positions = draw(st.integers(t, 200))
    pos0 = draw(st.integers(0, positions - t))
    s_in, s_out = (draw(st.floats(-8, 0).map(lambda e: float(f32(2.0**e)))) for _ in range(2))
    zp_in, zp_out = draw(st.integers(-10, 10)), draw(st.integers(-128, 127))
    conv = draw(st.sampled_from(rp.CONVENTIONS))
    theta = draw(st.sampled_from([10000.0, 100000.0, 500000.0]))
    p = rp.prepare_rope(
        s_in,
        zp_in,
        s_out,
        zp_out,
        head_dim=d,
        max_positions=positions,
        theta=theta,
        convention=conv,
    )
    seed = draw(st.integers(0, 2**32 - 1))
    x = np.random.default_rng(seed).integers(-128, 128, (t, heads * d)).astype(np.int8)
    return x, pos0, p


@PROPERTY
@given(rope_cases())
def test_rope_equals_scalar_oracle(case) -> None:
    x, pos0, p = case
    assert rp.rope(x, pos0, p).tolist() == oracle_rope(x, pos0, p)


@PROPERTY
@given(rope_cases())
def test_rope_conventions_are_a_permutation_of_each_other(case) -> None:
    """interleaved(x) = P^-1 rotate_half(P x) with P moving element 2i to i and 2i+1 to i + D/2."""
    x, pos0, p = case
    d = p.head_dim
    perm = np.concatenate([np.arange(0, d, 2), np.arange(1, d, 2)])
    inv = np.argsort(perm)
    half, inter = (
        rp.prepare_rope(
            1.0,
            p.input_zero_point,
            1.0,
            p.output_zero_point,
            head_dim=d,
            max_positions=p.max_positions,
            theta=p.theta,
            convention=convention,
        )
        for convention in ("rotate_half", "interleaved")
    )
    x3 = x.reshape(x.shape[0], -1, d)
    via_half = rp.rope(x3[..., perm], pos0, half)[..., inv]
    assert np.array_equal(rp.rope(x3, pos0, inter), via_half)


@PROPERTY
@given(rope_cases())
def test_rope_close_to_float_rope(case) -> None:
    """|y - rope(x) / s_out - zp| <= 1/2 + 2^-(r+1) (double rounding) + (|a| + |b|) 2^-15 s_in /
    s_out (table entries within one Q15 step), clamped codes aside."""
    x, pos0, p = case
    d = p.head_dim
    x3 = x.reshape(x.shape[0], -1, d).astype(np.float64) - p.input_zero_point
    # The real ratio s_in / s_out, from the multiplier M 2^shift = s_in / (s_out 2^15).
    ratio = p.output_multiplier * 2.0 ** (p.output_shift - 31) * 32768
    y = rp.rope(x, pos0, p).reshape(x3.shape).astype(np.float64)
    ref = rp.float_rope(x3, np.arange(pos0, pos0 + x.shape[0]), d, p.theta, p.convention)
    exact = ref * ratio + p.output_zero_point
    first, second = rp.pair_indices(d, p.convention)
    pair_mag = np.zeros_like(x3)
    mag = np.abs(x3[..., first]) + np.abs(x3[..., second])
    pair_mag[..., first] = mag
    pair_mag[..., second] = mag
    double = 2.0 ** (p.output_shift - 1) if p.output_shift < 0 else 0.0
    bound = 0.5 + double + pair_mag * 2.0**-15 * ratio * 1.000001 + 1e-9
    inside = (y > -128) & (y < 127)
    assert (np.abs(y - exact)[inside] <= bound[inside]).all()
    assert (exact[y == 127] >= 126.5 - bound[y == 127]).all()
    assert (exact[y == -128] <= -127.5 + bound[y == -128]).all()


def test_rope_graph_op_and_errors() -> None:
    t = {
        "x": TensorInfo("x", "int8", (None, 32), f32(0.05), 0),
        "pos": TensorInfo("pos", "int32", ()),
        "y": TensorInfo("y", "int8", (None, 32), f32(0.04), 0),
    }
    attrs = {"head_dim": 16, "max_positions": 20, "theta": 10000.0, "convention": "interleaved"}
    g = Graph(t, [Node("ROPE", ("x", "pos"), ("y",), attrs)], ["x", "pos"], ["y"])
    prog = Program(g, "tflm")
    x = np.random.default_rng(3).integers(-128, 128, (4, 32)).astype(np.int8)
    y = prog.run([x, np.array(5, np.int32)])[0]
    assert y.tolist() == oracle_rope(x, 5, prog.steps[0][2])
    with pytest.raises(ShapeError, match="max_positions=20"):
        prog.run([x, np.array(17, np.int32)])
    with pytest.raises(ShapeError, match=r"\[T, H\*16\]"):
        rp.rope(x[:, :30], 0, prog.steps[0][2])
    with pytest.raises(QuantSpecError, match="even"):
        rp.rope_tables(15, 4)
    bad = dict(attrs)
    del bad["head_dim"]
    with pytest.raises(QuantSpecError, match="head_dim"):
        Program(Graph(t, [Node("ROPE", ("x", "pos"), ("y",), bad)], ["x", "pos"], ["y"]))


# --- ATTENTION -----------------------------------------------------------------------------------


def _attention_graph(hq, hkv, d, max_seq, qz, attrs) -> Graph:
    (sq, zq), (sk, zk), (sv, zv), (skc, zkc), (svc, zvc), (so, zo) = qz

    def ti(name, cols, s, z):
        return TensorInfo(name, "int8", (None, cols), f32(s), z)

    t = {
        "q": ti("q", hq * d, sq, zq),
        "k": ti("k", hkv * d, sk, zk),
        "v": ti("v", hkv * d, sv, zv),
        "pos": TensorInfo("pos", "int32", ()),
        "kc": TensorInfo("kc", "int8", (hkv, max_seq, d), f32(skc), zkc, is_state=True),
        "vc": TensorInfo("vc", "int8", (hkv, max_seq, d), f32(svc), zvc, is_state=True),
        "o": ti("o", hq * d, so, zo),
    }
    node = Node(
        "ATTENTION",
        ("q", "k", "v", "pos", "kc", "vc"),
        ("o",),
        {"num_heads": hq, "num_kv_heads": hkv, **attrs},
    )
    return Graph(t, [node], ["q", "k", "v", "pos"], ["o"])


@st.composite
def attention_cases(draw, max_t: int = 12):
    hkv = draw(st.integers(1, 3))
    hq = hkv * draw(st.sampled_from([1, 2, 4]))
    d = draw(st.sampled_from([4, 8, 16, 32]))
    t = draw(st.integers(1, max_t))
    max_seq = t + draw(st.integers(0, 8))

    def quant():
        return (float(f32(2.0 ** draw(st.floats(-7, -2)))), draw(st.integers(-20, 20)))

    q, k, v, out = quant(), quant(), quant(), quant()
    same = draw(st.booleans())
    kc = k if same else quant()
    vc = v if same else quant()
    score_dtype = draw(st.sampled_from(["int8", "int16"]))
    score_scale = float(f32(2.0 ** draw(st.floats(-10, -2))))
    attrs = {"score_scale": score_scale, "score_dtype": score_dtype}
    graph = _attention_graph(hq, hkv, d, max_seq, (q, k, v, kc, vc, out), attrs)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    data = [rng.integers(-128, 128, (t, h * d)).astype(np.int8) for h in (hq, hkv, hkv)]
    return graph, data


@settings(max_examples=200, deadline=None)
@given(attention_cases(), st.data())
def test_decode_step_by_step_equals_full_sequence(case, data) -> None:
    """T tokens at once, one at a time, or in random chunks: identical outputs and caches."""
    graph, (q, k, v) = case
    t = q.shape[0]
    prog = Program(graph, "tflm")
    full = prog.run([q, k, v, np.array(0, np.int32)])[0]
    caches = {n: a.copy() for n, a in prog.state.items()}
    prog.reset()
    steps = [prog.run([q[i : i + 1], k[i : i + 1], v[i : i + 1], np.int32(i)])[0] for i in range(t)]
    assert np.array_equal(np.concatenate(steps), full)
    assert all(np.array_equal(prog.state[n], caches[n]) for n in caches)
    prog.reset()
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(t - 1, 1)), max_size=3))) - {t})
    bounds = [0, *cuts, t]
    chunks = [
        prog.run([q[a:b], k[a:b], v[a:b], np.int32(a)])[0]
        for a, b in itertools.pairwise(bounds)
        if b > a
    ]
    assert np.array_equal(np.concatenate(chunks), full)


def oracle_attention(graph: Graph, q, k, v) -> list:
    """Full-sequence ATTENTION with Python ints and the scalar softmax oracles."""
    node = graph.nodes[0]
    tq, tk, tv, _, tkc, tvc = (graph.tensors[n] for n in node.inputs)
    to = graph.tensors["o"]
    hq, hkv = node.attrs["num_heads"], node.attrs["num_kv_heads"]
    d = tkc.shape[2]
    g = hq // hkv
    sq, zq = tq.scalar_scale(), tq.scalar_zero_point()
    zkc, zvc = tkc.scalar_zero_point(), tvc.scalar_zero_point()

    def store(x, t_in, t_c):
        if t_in.scalar_scale() == t_c.scalar_scale() and (
            t_in.scalar_zero_point() == t_c.scalar_zero_point()
        ):
            return x.astype(int).tolist()
        m, sh = of.quantize_multiplier(t_in.scalar_scale() / t_c.scalar_scale())
        return [
            [
                of.clamp(
                    of.multiply_by_quantized_multiplier(int(c) - t_in.scalar_zero_point(), m, sh)
                    + t_c.scalar_zero_point(),
                    -128,
                    127,
                )
                for c in row
            ]
            for row in x
        ]

    kc, vc = store(k, tk, tkc), store(v, tv, tvc)
    s_score = node.attrs["score_scale"]
    bits = 8 if node.attrs["score_dtype"] == "int8" else 16
    m_s, sh_s = of.quantize_multiplier(sq * tkc.scalar_scale() / (math.sqrt(d) * s_score))
    s_p = 1 / 256 if bits == 8 else 1 / 32768
    m_o, sh_o = of.quantize_multiplier(s_p * tvc.scalar_scale() / to.scalar_scale())
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    t_len = q.shape[0]
    out = [[0] * (hq * d) for _ in range(t_len)]
    for h in range(hq):
        kv = h // g
        for t in range(t_len):
            qv = [int(c) - zq for c in q[t, h * d : (h + 1) * d]]
            scores = []
            for j in range(t + 1):
                kr = [c - zkc for c in kc[j][kv * d : (kv + 1) * d]]
                acc = sum(a * b for a, b in zip(qv, kr, strict=True))
                scores.append(of.clamp(of.multiply_by_quantized_multiplier(acc, m_s, sh_s), lo, hi))
            if bits == 8:
                probs = [c + 128 for c in oracle_softmax_s8_row(scores, s_score, 1.0, 8)[0]]
            else:
                probs = oracle_softmax_s16_row(scores, s_score, 1.0)
            for e in range(d):
                acc = sum(probs[j] * (vc[j][kv * d + e] - zvc) for j in range(t + 1))
                y = of.multiply_by_quantized_multiplier(acc, m_o, sh_o) + to.scalar_zero_point()
                out[t][h * d + e] = of.clamp(y, -128, 127)
    return out


@settings(max_examples=200, deadline=None)
@given(attention_cases(max_t=5))
def test_attention_equals_scalar_oracle(case) -> None:
    graph, (q, k, v) = case
    prog = Program(graph, "tflm")
    assert prog.run([q, k, v, np.int32(0)])[0].tolist() == oracle_attention(graph, q, k, v)


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_attention_close_to_float_attention(data) -> None:
    """Against float64 causal attention of the dequantized inputs (scores and outputs scaled so
    that nothing clamps): |error| <= s_out + max|v| (L e_p + 2 s_score), with per-probability
    error e_p = 1/512 + 2^-13 for int8 probabilities (scale 1/256) and 4/32768 for int16 ones
    (table steps and the exp(-10) floor of the int16 LUT)."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    hkv = int(rng.integers(1, 3))
    hq = hkv * int(rng.choice([1, 2]))
    d, t = int(rng.choice([8, 16, 32])), int(rng.integers(1, 24))
    sq, sk, sv = (float(f32(2.0 ** rng.uniform(-6, -3))) for _ in range(3))
    q = rng.integers(-128, 128, (t, hq * d)).astype(np.int8)
    k = rng.integers(-128, 128, (t, hkv * d)).astype(np.int8)
    v = rng.integers(-128, 128, (t, hkv * d)).astype(np.int8)
    qr = q.reshape(t, hq, d) * sq
    kr = k.reshape(t, hkv, d) * sk
    vr = v.reshape(t, hkv, d) * sv
    ref = at.float_attention(qr, kr, vr, hq, hkv)
    max_score = np.abs(
        np.einsum("thd,shd->hts", qr, np.repeat(kr, hq // hkv, 1))
    ).max() / math.sqrt(d)
    score_dtype = data.draw(st.sampled_from(["int8", "int16"]))
    qmax = 127 if score_dtype == "int8" else 32767
    score_scale = float(f32(max(max_score, 1e-6) / qmax * 1.01))
    so = float(f32(max(np.abs(vr).max(), 1e-6) / 127 * 1.01))
    qz = ((sq, 0), (sk, 0), (sv, 0), (sk, 0), (sv, 0), (so, 0))
    graph = _attention_graph(
        hq, hkv, d, t, qz, {"score_scale": score_scale, "score_dtype": score_dtype}
    )
    y = Program(graph, "tflm").run([q, k, v, np.int32(0)])[0].reshape(t, hq, d) * so
    e_p = 1 / 512 + 2.0**-13 if score_dtype == "int8" else 4 / 32768
    lengths = np.arange(1, t + 1)[:, None, None]
    bound = so + np.abs(vr).max() * (lengths * e_p + 2 * score_scale)
    assert (np.abs(y - ref) <= bound).all()


def test_cache_is_written_in_place_and_requantized() -> None:
    qz = ((0.05, 0), (0.04, 3), (0.03, -2), (0.02, 0), (0.03, -2), (0.02, 0))
    graph = _attention_graph(2, 1, 8, 6, qz, {"score_scale": 0.01})
    prog = Program(graph, "tflm")
    rng = np.random.default_rng(2)
    q, k, v = (rng.integers(-128, 128, (3, c)).astype(np.int8) for c in (16, 8, 8))
    prog.run([q, k, v, np.int32(1)])
    kc, vc = prog.state["kc"], prog.state["vc"]
    assert (kc[:, [0, 4, 5]] == 0).all() and (vc[:, [0, 4, 5]] == -2).all()  # untouched
    assert np.array_equal(vc[0, 1:4], v)  # same quantization: copied
    m, sh = of.quantize_multiplier(float(f32(0.04)) / float(f32(0.02)))
    expected = [
        [of.clamp(of.multiply_by_quantized_multiplier(int(c) - 3, m, sh), -128, 127) for c in row]
        for row in k
    ]
    assert kc[0, 1:4].tolist() == expected


def test_attention_errors_and_long_context_hazard() -> None:
    qz = ((0.05, 0),) * 6
    graph = _attention_graph(2, 1, 8, 700, qz, {"score_scale": 0.01})
    prog = Program(graph, "tflm")
    z = np.zeros((600, 16), np.int8)
    with pytest.raises(ExactnessError, match=r"row \(0, 511\).*exceeds 31"):
        prog.run([z, z[:, :8], z[:, :8], np.int32(0)])  # 512+ equal scores: the s8 hazard
    safe = _attention_graph(2, 1, 8, 700, qz, {"score_scale": 0.01, "long_rows": "safe"})
    prog = Program(safe, "tflm")
    v = np.full((600, 8), 100, np.int8)
    y = prog.run([z, z[:, :8], v, np.int32(0)])[0]
    assert (y[511:] == 0).all()  # every probability rounds to 0 in safe mode
    assert y[0, 0] == 100 and (y[:511] > 0).all()  # one probability of 255/256 at t = 0
    with pytest.raises(ShapeError, match="max_seq=700"):
        prog.run([z[:5], z[:5, :8], z[:5, :8], np.int32(698)])
    no_scale = _attention_graph(2, 1, 8, 10, qz, {})
    with pytest.raises(QuantSpecError, match="score_scale"):
        Program(no_scale)
    with pytest.raises(ShapeError, match="multiple"):
        Program(_attention_graph(3, 2, 8, 10, qz, {"score_scale": 0.01}))
