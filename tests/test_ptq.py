"""The PTQ pipeline (refq.ptq): config validation, weight quantization against exact rational
arithmetic, bias correction, SmoothQuant, lowering to the integer graph, fake-quantized
simulation, the model file and `refq quantize`.

Models are small random Llama / BERT configs (fast); the tiny LM runs end to end in
tests/test_integer_models.py.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq.errors import IntegrityError, ModelFormatError, QuantSpecError, UnsupportedError
from refq.graph import Program
from refq.models import bert, llama
from refq.models.config import BertConfig, LlamaConfig, bert_weight_shapes, init_llama_weights
from refq.ptq import QuantConfig, WeightSpec, load_quantized, quantize_model
from refq.ptq.bias_correction import corrected_bias
from refq.ptq.config import CONFIG_DIR
from refq.ptq.lower import bias_codes
from refq.ptq.simulate import fake_quant_chain
from refq.ptq.weights import quantize_weight

PROPERTY = settings(max_examples=200, deadline=None)

SMALL = LlamaConfig(
    vocab_size=64, dim=32, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=64, max_seq_len=32
)


def small_llama(seed: int = 0) -> dict[str, np.ndarray]:
    w = init_llama_weights(SMALL, seed=seed, std=0.2)
    rng = np.random.default_rng(seed)
    for name in w:
        if w[name].ndim == 1:
            w[name] = (1 + 0.2 * rng.standard_normal(w[name].shape)).astype(np.float32)
    return w


def windows(n: int = 4, length: int = 24, vocab: int = 64, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, size=length) for _ in range(n)]


def quantize_small(config: dict | str, seed: int = 0, **kw):
    qc = QuantConfig.load(config) if isinstance(config, str) else QuantConfig.from_dict(config)
    return quantize_model(SMALL, small_llama(seed), qc, windows(), **kw)


def op_counts(graph) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in graph.nodes:
        out[n.op] = out.get(n.op, 0) + 1
    return out


# --- config --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"wieghts": []}, r"'<config>': unknown keys \['wieghts'\]"),
        ({"weights": [{"bits": 8}]}, r"'weights\[0\]': a rule needs a 'match'"),
        ({"weights": [{"match": "*", "bits": 9}]}, r"'weights\[0\].bits'"),
        ({"weights": [{"match": "*", "granularity": "per-row"}]}, r"'weights\[0\].granularity'"),
        ({"weights": [{"match": "*", "colour": 1}]}, r"'weights\[0\]': unknown keys \['colour'\]"),
        ({"activations": [{"match": "*", "bits": 12}]}, r"'activations\[0\].bits'"),
        ({"activations": [{"match": "*", "observer": "kl"}]}, r"'activations\[0\].observer'"),
        ({"activations": [{"match": []}]}, r"'activations\[0\].match'"),
        ({"profile": "tfl"}, r"'profile': unknown profile 'tfl'"),
        ({"smooth": {"alpha": 2, "match": "*"}}, r"'smooth.alpha'"),
        ({"smooth": {"alpha": 0.5}}, r"'smooth.match'"),
        ({"bias_correction": "yes"}, r"'bias_correction'"),
        ({"calibration": {"windows": 0}}, r"'calibration.windows'"),
    ],
)
def test_config_errors_name_the_key(config, message):
    with pytest.raises(QuantSpecError, match=message):
        QuantConfig.from_dict(config)


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_shipped_configs_round_trip(path):
    qc = QuantConfig.load(path.stem)
    assert qc.name == path.stem and qc.description
    again = QuantConfig.from_dict(json.loads(json.dumps(qc.to_dict())))
    assert again.to_dict() == qc.to_dict()
    # every shipped config applies to both architectures
    quantize_small(path.stem)


def test_rules_merge_in_order_over_defaults():
    qc = QuantConfig.from_dict(
        {
            "weights": [
                {"match": "layers.*", "bits": 4, "granularity": "per-block", "block": 32},
                {"match": "layers.1.*", "granularity": "per-channel"},
            ],
            "activations": [{"match": "*.hidden", "bits": 16}],
        }
    )
    assert qc.weight_spec("tok_embeddings") == WeightSpec()
    assert qc.weight_spec("layers.0.ffn.w2") == WeightSpec(4, "per-block", 32)
    assert qc.weight_spec("layers.1.ffn.w2") == WeightSpec(4, "per-channel", 32)
    assert qc.act_spec("layers.0.ffn.hidden").bits == 16
    assert qc.act_spec("layers.0.ffn.hidden").symmetric  # 16 bits: symmetric
    assert not qc.act_spec("embed").symmetric


def test_resolution_errors():
    with pytest.raises(QuantSpecError, match=r"'weights\[0\].match'.*no weight of this llama"):
        quantize_small({"weights": [{"match": "layers.*.ffn.w9", "bits": 4}]})
    with pytest.raises(QuantSpecError, match="float_ops"):
        quantize_small({"float_ops": ["layers.9.*"]})
    with pytest.raises(QuantSpecError, match="needs a 'block'"):
        QuantConfig.from_dict(
            {"weights": [{"match": "*", "granularity": "per-block"}]}
        ).weight_spec("x")
    with pytest.raises(QuantSpecError, match="leave int8"):
        QuantConfig.from_dict(
            {"weights": [{"match": "*", "granularity": "per-block", "block": 8, "bits": 8}]}
        ).weight_spec("x")
    with pytest.raises(QuantSpecError, match="symmetric"):
        QuantConfig.from_dict(
            {
                "weights": [
                    {
                        "match": "*",
                        "granularity": "per-block",
                        "block": 8,
                        "bits": 4,
                        "symmetric": False,
                    }
                ]
            }
        ).weight_spec("x")
    with pytest.raises(QuantSpecError, match="not found"):
        QuantConfig.load("no-such-config")


# --- weights against exact arithmetic --------------------------------------------------------


matrices = st.integers(1, 4).flatmap(
    lambda n: st.integers(1, 40).flatmap(
        lambda k: st.lists(
            st.floats(-8, 8, allow_nan=False, width=32), min_size=n * k, max_size=n * k
        ).map(lambda v: np.array(v, np.float32).reshape(n, k))
    )
)


@PROPERTY
@given(matrices, st.sampled_from([2, 4, 8]), st.booleans())
def test_symmetric_weights_exact(w, bits, per_channel):
    spec = WeightSpec(bits, "per-channel" if per_channel else "per-tensor")
    q = quantize_weight("w", w, spec)
    qmax = (1 << (bits - 1)) - 1
    rows = w if per_channel else w.reshape(1, -1)
    for r, row in enumerate(rows):
        absmax = float(np.abs(row).max())
        s = q.scale.reshape(-1)[r]
        if absmax == 0:
            assert s == 1.0
            continue
        assert s == np.float32(np.float32(absmax) / np.float32(qmax))
        codes = (q.codes if per_channel else q.codes.reshape(1, -1))[r]
        assert int(np.abs(codes).max()) == qmax  # the absmax element reaches the end
        step = Fraction(float(s))
        for v, c in zip(row.tolist(), codes.tolist(), strict=True):
            assert -qmax <= c <= qmax
            # half a step, plus float32 division rounding (|v / s| <= qmax)
            assert abs(Fraction(v) - c * step) <= step * (Fraction(1, 2) + Fraction(qmax, 2**23))
    assert q.graph_dtype == ("int4" if bits <= 4 else "int8")
    assert np.array_equal(q.zero_point, np.zeros_like(q.zero_point))


@settings(max_examples=200, deadline=None)
@given(matrices, st.sampled_from([4, 8, 16]), st.sampled_from([(4, 4), (3, 4), (4, 2)]))
def test_block_scales_minimize_block_error(w, block, bits_sb):
    bits, sb = bits_sb
    spec = WeightSpec(bits, "per-block", block, block_scale_bits=sb)
    q = quantize_weight("w", w, spec)
    qmax, smax = (1 << (bits - 1)) - 1, (1 << sb) - 1
    n, k = w.shape
    nb = -(-k // block)
    assert q.block_scales.shape == (n, nb)
    assert q.graph_dtype == "int8"
    prod = q.graph_codes.astype(np.int64)
    assert np.abs(prod).max() <= 127
    for r in range(n):
        blocks = [w[r, b * block : (b + 1) * block] for b in range(nb)]
        steps = [Fraction(float(np.abs(bl).max())) / qmax for bl in blocks]
        d = q.scale[r]
        want = np.float32(float(max(steps)) / smax)
        assert d == (want if want > 0 else 1.0)  # an all-zero (or underflowing) row: scale 1
        for b, bl in enumerate(blocks):
            sc = int(q.block_scales[r, b])
            assert 1 <= sc <= smax
            codes = q.codes[r, b * block : (b + 1) * block]
            assert np.array_equal(prod[r, b * block : (b + 1) * block], sc * codes.astype(np.int64))

            def err(c: int, d=d, bl=bl) -> Fraction:
                st_ = Fraction(float(d)) * c
                e = Fraction(0)
                for v in bl.tolist():
                    code = max(-qmax, min(qmax, round(Fraction(v) / st_)))
                    e += (Fraction(v) - code * st_) ** 2
                return e

            best = min(err(c) for c in range(1, smax + 1))
            assert err(sc) <= best * (1 + Fraction(1, 10**9)) + Fraction(1, 10**30)


def test_asymmetric_and_mse_weights():
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((6, 50)) + 0.5).astype(np.float32)
    q = quantize_weight("w", w, WeightSpec(8, "per-channel", symmetric=False))
    assert q.zero_point.shape == (6,) and np.any(q.zero_point != 0)
    assert np.abs(q.dequantize() - w).max() <= q.scale.max() * 0.51
    w[:, 0] = 5.0  # a moderate outlier per row: MSE clipping trades it for the rest of the row
    mm = quantize_weight("w", w, WeightSpec(4, "per-channel"))
    ms = quantize_weight("w", w, WeightSpec(4, "per-channel", observer="mse"))
    e_mm = ((mm.dequantize() - w) ** 2).sum(axis=1)
    e_ms = ((ms.dequantize() - w) ** 2).sum(axis=1)
    assert np.all(e_ms <= e_mm * (1 + 1e-6)) and e_ms.sum() < 0.9 * e_mm.sum()


@PROPERTY
@given(
    st.lists(st.floats(-100, 100, width=32), min_size=1, max_size=8),
    st.floats(0.0001220703125, 1.0, width=32),
    st.lists(st.floats(0.0001220703125, 1.0, width=32), min_size=1, max_size=1),
)
def test_bias_codes_exact(b, s_in, s_w):
    b = np.array(b, np.float32)
    sw = np.full(b.shape, s_w[0], np.float32)
    got = bias_codes(b, s_in, sw)
    for v, c, w in zip(b.tolist(), got, sw.tolist(), strict=True):
        exact = Fraction(v) / (Fraction(s_in) * Fraction(w))
        assert abs(exact - c) <= Fraction(1, 2)
        if abs(exact - c) == Fraction(1, 2):
            assert c % 2 == 0


@PROPERTY
@given(
    st.lists(st.floats(-1e4, 1e4, width=32), min_size=1, max_size=20),
    st.lists(
        st.tuples(
            st.floats(0.0009765625, 10, width=32), st.integers(-128, 127), st.sampled_from([8, 16])
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_fake_quant_chain_exact(values, chain):
    spec = []
    for s, z, bits in chain:
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        spec.append({"scale": s, "zero_point": z if bits == 8 else 0, "qmin": lo, "qmax": hi})
    got = fake_quant_chain(np.array(values, np.float32), spec)
    for v, g in zip(values, got.tolist(), strict=True):
        x = Fraction(float(np.float32(v)))
        for q in spec:
            s = Fraction(float(np.float32(q["scale"])))
            # float32 division rounding can move a value off a tie: compare the quotient first
            quot = Fraction(float(np.float32(np.float32(float(x)) / np.float32(float(s)))))
            code = max(q["qmin"], min(q["qmax"], round(quot) + q["zero_point"]))
            x = Fraction(float(np.float32((code - q["zero_point"]) * float(s))))
        assert Fraction(g) == x
    inf = fake_quant_chain(np.array([-np.inf, 1.0], np.float32), spec)
    assert inf[0] == -np.inf


# --- pipeline ------------------------------------------------------------------------------


def test_lowering_w8a8_structure_and_runs():
    qm = quantize_small("w8a8")
    g = qm.graph(32)
    L = SMALL.n_layers
    assert op_counts(g) == {
        "EMBEDDING_LOOKUP": 1,
        "RMS_NORM": 2 * L + 1,
        "FULLY_CONNECTED": 7 * L + 1,
        "ROPE": 2 * L,
        "ATTENTION": L,
        "ADD": 2 * L,
        "SWIGLU": L,
    }
    assert g.inputs == ["tokens", "position"] and g.outputs == ["logits"]
    assert g.tensors["tokens"].shape == (None,) and g.tensors["logits"].shape == (None, 64)
    assert all(g.tensors[s].dtype == "int8" for s in g.state)
    assert sorted(g.state) == sorted(
        f"layers.{i}.attn.{c}_cache" for i in range(L) for c in ("k", "v")
    )
    assert all(t.dtype != "float32" or t.is_constant for t in g.tensors.values())
    att = next(n for n in g.nodes if n.op == "ATTENTION")
    assert att.attrs["num_heads"] == 4 and att.attrs["num_kv_heads"] == 2
    assert att.attrs["score_dtype"] == "int8" and att.attrs["score_scale"] > 0
    rope = next(n for n in g.nodes if n.op == "ROPE")
    assert rope.attrs["convention"] == "interleaved" and rope.attrs["max_positions"] == 32
    (y,) = Program(g, "tflm").run([np.arange(10, dtype=np.int32), np.asarray(0, np.int32)])
    assert y.dtype == np.int8 and y.shape == (10, 64)


def test_lowering_mixed_precision_and_adaptation():
    qm = quantize_small("mixed")
    g = qm.graph(32)
    t = g.tensors
    assert t["layers.0.ffn.hidden"].dtype == "int16"  # SWIGLU -> int16
    assert t["layers.0.ffn.out"].dtype == "int16"  # 16x8 FULLY_CONNECTED
    assert t["layers.0.ffn.w2"].dtype == "int8"
    assert "layers.0.ffn.out@int8" in t  # requantized for the int8 residual ADD
    quants = [n for n in g.nodes if n.op == "QUANTIZE"]
    assert {n.inputs[0] for n in quants} == {f"layers.{i}.ffn.out" for i in range(2)}
    blocks = g.metadata["block_weights"]
    assert set(blocks) == {
        f"layers.{i}.{w}"
        for i in range(2)
        for w in ("attn.wq", "attn.wk", "attn.wv", "attn.wo", "ffn.w1", "ffn.w3")
    }
    assert t["layers.0.attn.wq.bias"].dtype == "int32"  # bias correction
    assert t["layers.0.ffn.w2.bias"].dtype == "int64"  # 16x8 bias
    pc = quantize_small({"weights": [{"match": "layers.*", "bits": 4}]})
    assert pc.graph(32).tensors["layers.0.ffn.w1"].dtype == "int4"
    nofuse = quantize_small({"fuse_swiglu": False}).graph(32)
    assert {"SILU", "MUL"} <= set(op_counts(nofuse)) and "SWIGLU" not in op_counts(nofuse)
    with pytest.raises(QuantSpecError, match="16x8 FULLY_CONNECTED needs 8-bit weights"):
        quantize_small(
            {
                "weights": [{"match": "layers.*.ffn.w2", "bits": 4}],
                "activations": [{"match": "layers.*.ffn.hidden", "bits": 16}],
            }
        ).graph(32)


def test_lowering_outlier_points():
    """int16 norm outputs: 16x8 q/k/v/gate/up, SiLU as x * LOGISTIC(x) in int16, int16
    softmax inside ATTENTION, int16 logits, int32 residual stream; q/k/v requantized to int8
    for ROPE / ATTENTION."""
    g = quantize_small("w8a8-outliers").graph(32)
    t = g.tensors
    counts = op_counts(g)
    assert "SWIGLU" not in counts and counts["LOGISTIC"] == SMALL.n_layers
    assert counts["MUL"] == 2 * SMALL.n_layers
    assert t["layers.0.ffn.gate"].dtype == "int16" and t["layers.0.ffn.act"].dtype == "int16"
    assert t["layers.0.ffn.act/sigmoid"].scale == np.float32(2.0**-15)
    assert t["layers.0.attn.q"].dtype == "int16" and "layers.0.attn.q@int8" in t
    att = next(n for n in g.nodes if n.op == "ATTENTION")
    assert att.attrs["score_dtype"] == "int16" and att.inputs[0] == "layers.0.attn.q_rot"
    assert t["logits"].dtype == "int16" and t["layers.0.ffn_resid"].dtype == "int32"
    assert counts["ADD32"] == 2 * SMALL.n_layers
    # the int8 embedding output is read as int16 by the first RMS_NORM (its rule says 16)
    norm = next(n for n in g.nodes if n.op == "RMS_NORM")
    assert norm.inputs[0] == "embed@int16" and t["embed"].dtype == "int8"
    meta = g.metadata["points"]
    assert meta["layers.0.attn.probs"][0]["qmax"] == 32767
    assert [q["dtype"] for q in meta["layers.0.attn.q"]] == ["int16", "int8"]


@PROPERTY
@given(
    st.lists(
        st.tuples(st.integers(-(2**31), 2**31 - 1), st.integers(-(2**15), 2**15 - 1)),
        min_size=1,
        max_size=6,
    ),
    st.floats(2.0**-20, 1.0, width=32),
    st.floats(2.0**-20, 1.0, width=32),
    st.floats(2.0**-24, 1.0, width=32),
    st.integers(-100, 100),
)
def test_add32_exact(pairs, s_a, s_b, s_y, z_b):
    from refq.kernels.wide import Add32Params, add32, add32_multipliers

    (ma, mb), k = add32_multipliers(s_a, s_b, s_y)
    assert max(ma, mb) < 2**31
    ra, rb = Fraction(s_a) / Fraction(s_y), Fraction(s_b) / Fraction(s_y)
    for m, r in ((ma, ra), (mb, rb)):  # each multiplier is r * 2^k rounded
        assert abs(Fraction(m) - r * Fraction(2) ** k) <= Fraction(1, 2)
    if s_a == s_y:
        assert ma == 2**k
    a = np.array([p[0] for p in pairs], np.int32)
    b = np.array([p[1] for p in pairs], np.int16)
    got = add32(a, b, Add32Params((ma, mb), (0, z_b), k, "t"))
    for x, y, g in zip(a.tolist(), b.tolist(), got.tolist(), strict=True):
        acc = ma * x + mb * (y - z_b)
        want = (acc + 2 ** (k - 1)) // 2**k if k > 0 else acc * 2 ** (-k)
        assert g == max(-(2**31), min(2**31 - 1, want))


@PROPERTY
@given(st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=8), st.integers(1, 3))
def test_row_normalize_exact(values, rows):
    from refq.kernels.wide import row_normalize

    x = np.array(values * rows, np.int32).reshape(rows, len(values))
    got = row_normalize(x)
    m = max(abs(v) for v in values)
    e = max(0, m.bit_length() - 15)
    for v, g in zip(values, got[0].tolist(), strict=True):
        q = Fraction(v, 2**e)
        r = math.floor(q + Fraction(1, 2)) if q >= 0 else -math.floor(-q + Fraction(1, 2))
        assert g == max(-32767, min(32767, r))
    assert got.dtype == np.int16


def test_lowering_int32_residual_stream():
    qm = quantize_small(
        {"activations": [{"match": ["layers.*.attn_resid", "layers.*.ffn_resid"], "bits": 32}]}
    )
    g = qm.graph(32)
    counts = op_counts(g)
    assert counts["ADD32"] == 2 * SMALL.n_layers and "ADD" not in counts
    assert counts["ROW_NORMALIZE"] == 2 * SMALL.n_layers
    norms = [n for n in g.nodes if n.op == "RMS_NORM"]
    assert norms[0].attrs["epsilon"] == SMALL.norm_eps  # reads the int8 embedding
    assert all(n.attrs["epsilon"] == 0.0 for n in norms[1:])
    assert all(n.inputs[0].endswith("@rows16") for n in norms[1:])
    assert g.tensors["layers.0.ffn_resid"].dtype == "int32"
    x = windows(1, 16, seed=5)[0]
    ref = llama.forward(small_llama(), SMALL, x)
    assert np.corrcoef(qm.runner(32).logits(x).ravel(), ref.ravel())[0, 1] > 0.98


def test_float_ops_comparison_graph():
    qm = quantize_small({"float_ops": ["layers.*.ffn.hidden", "layers.*.ffn.out"]})
    g = qm.graph(32)
    counts = op_counts(g)
    assert counts["FLOAT_OP"] == 2 * SMALL.n_layers and counts["DEQUANTIZE"] >= 2
    assert g.tensors["layers.0.ffn.hidden"].dtype == "float32"
    assert "layers.0.ffn.w2" in qm.floats and "layers.0.ffn.w2" not in qm.weights
    x = windows(1, 12)[0]
    y = qm.runner(32).logits(x)
    ref = llama.forward(small_llama(), SMALL, x)
    assert np.corrcoef(y.ravel(), ref.ravel())[0, 1] > 0.95


def test_simulation_tracks_integer_and_float():
    qm = quantize_small("w8a8")
    x = windows(1, 20, seed=7)[0]
    ref = llama.forward(small_llama(), SMALL, x)
    sim = qm.simulate(x, 32)
    ints = qm.runner(32).logits(x)
    err_sim = np.abs(sim - ref).mean()
    assert err_sim < 0.1 * np.abs(ref).mean()
    assert np.abs(ints - sim).mean() < 0.1 * np.abs(ref).mean()
    assert (sim.argmax(-1) == ints.argmax(-1)).mean() >= 0.8


def test_bias_correction_removes_mean_error():
    w = small_llama()
    calib = windows()
    qc = QuantConfig.from_dict(
        {"weights": [{"match": "layers.*", "bits": 2}], "bias_correction": True}
    )
    qm = quantize_model(SMALL, w, qc, calib)
    # E[x] of the down projection's input, collected independently through the hook
    rows = []
    for t in calib:
        llama.forward(
            w,
            SMALL,
            t,
            observe=lambda p, v: (
                rows.append(v.reshape(-1, v.shape[-1])) if p == "layers.1.ffn.hidden" else None
            ),
        )
    mean = np.concatenate(rows).astype(np.float64).mean(axis=0)
    wq = qm.weights["layers.1.ffn.w2"].dequantize()
    b = qm.floats["layers.1.ffn.w2.bias"]
    assert np.allclose(b, corrected_bias(w["layers.1.ffn.w2"], wq, mean, None), atol=1e-6)
    # the mean output error over the calibration inputs is gone
    x = np.concatenate(rows)
    err_before = ((wq - w["layers.1.ffn.w2"]) @ x.T).mean(axis=1)
    err_after = err_before + b
    assert np.abs(err_after).max() < 1e-4 < np.abs(err_before).max()


def test_smoothquant_keeps_the_float_model_and_shrinks_outliers():
    w = small_llama()
    w["layers.0.ffn.w3"][5] *= 40.0  # an outlier channel at the down projection's input
    calib = windows()
    qc = QuantConfig.from_dict(
        {
            "smooth": {
                "alpha": 0.5,
                "match": ["layers.*.ffn.w2", "layers.*.attn.wq", "layers.*.attn.wo"],
            }
        }
    )
    qm = quantize_model(SMALL, w, qc, calib)
    stats = qm.metadata["ptq"]["smooth"]
    assert set(stats) == {
        f"layers.{i}.{p}" for i in range(2) for p in ("ffn.hidden", "attn_norm.out", "attn.ctx")
    }
    h = stats["layers.0.ffn.hidden"]
    assert h["absmax_after"] < h["absmax_before"] / 3
    from refq.ptq.pipeline import float_forward
    from refq.ptq.smooth import collect_absmax, migrate, smoothing_points

    readers = smoothing_points(SMALL, qc)
    absmax = collect_absmax(SMALL, w, readers, calib, float_forward(SMALL), False)
    smoothed, _ = migrate(SMALL, w, absmax, readers, 0.5)
    x = calib[0]
    np.testing.assert_allclose(
        llama.forward(smoothed, SMALL, x), llama.forward(w, SMALL, x), rtol=2e-4, atol=2e-4
    )
    assert not np.array_equal(smoothed["layers.0.ffn.w3"], w["layers.0.ffn.w3"])


def small_bert():
    cfg = BertConfig(vocab_size=50, dim=32, n_layers=2, n_heads=4, ffn_dim=64, max_pos=32)
    rng = np.random.default_rng(0)
    w = {}
    for n, s in bert_weight_shapes(cfg).items():
        base = 1.0 if n.endswith("norm") else 0.0
        w[n] = (base + 0.2 * rng.standard_normal(s)).astype(np.float32)
    return cfg, w


def test_bert_lowering_and_smooth_limits():
    cfg, w = small_bert()
    rng = np.random.default_rng(3)
    calib = [rng.integers(0, 50, size=int(rng.integers(4, 16))) for _ in range(6)]
    qm = quantize_model(cfg, w, QuantConfig.load("w8a8"), calib)
    g = qm.graph(12)
    counts = op_counts(g)
    assert counts["BATCH_MATMUL"] == 4 and counts["SOFTMAX"] == 2 and counts["GELU"] == 2
    assert counts["LAYER_NORM"] == 5 and counts["EMBEDDING_LOOKUP"] == 3
    assert g.inputs == ["tokens", "positions", "token_types"]
    with pytest.raises(UnsupportedError, match="gelu op, which cannot absorb"):
        quantize_model(
            cfg, w, QuantConfig.from_dict({"smooth": {"alpha": 0.5, "match": "*.ffn.w2"}}), calib
        )
    ok = quantize_model(
        cfg, w, QuantConfig.from_dict({"smooth": {"alpha": 0.5, "match": "*.attn.wo"}}), calib
    )
    assert set(ok.metadata["ptq"]["smooth"]) == {"layers.0.attn.ctx", "layers.1.attn.ctx"}
    x = calib[0]
    ref = bert.forward(w, cfg, x)[0]
    sim = ok.simulate(x)
    assert np.corrcoef(sim.ravel(), ref.ravel())[0, 1] > 0.98


def test_save_load_round_trip(tmp_path):
    qm = quantize_small("mixed")
    path = qm.save(tmp_path / "m.refq", metadata={"note": "test"})
    back = load_quantized(path)
    x = windows(1, 16, seed=5)[0]
    assert np.array_equal(qm.runner(32).prefill(x), back.runner(32).prefill(x))
    from refq.models import modelfile

    manifest, _ = modelfile.read_manifest(path)
    q = manifest["quantization"]
    assert manifest["profile"] == "tflm" and manifest["refq_version"]
    assert manifest["metadata"]["note"] == "test" and "ptq" in manifest["metadata"]
    assert q["config"]["name"] == "mixed"
    assert q["weights"]["layers.0.ffn.w1"]["granularity"] == "per-block"
    assert q["weights"]["layers.0.ffn.w1"]["block"] == 32
    assert q["activations"]["layers.0.ffn.hidden"]["bits"] == 16
    assert all("sha256" in e for e in manifest["tensors"].values())
    # 4-bit codes are stored packed
    assert manifest["tensors"]["layers.0.ffn.w1"]["nbytes"] == 64 * 32 // 2
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    bad = tmp_path / "bad.refq"
    bad.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="SHA-256"):
        load_quantized(bad)
    short = tmp_path / "short.refq"
    short.write_bytes(bytes(data[:-10]))
    with pytest.raises(ModelFormatError, match="truncated"):
        load_quantized(short)


def test_quantize_command(tmp_path, capsys):
    from refq.cli import main

    out = tmp_path / "tiny.refq"
    rc = main(
        [
            "quantize",
            "tiny",
            "--config",
            "w4g32a8",
            "-o",
            str(out),
            "--windows",
            "2",
            "--window",
            "32",
            "--no-progress",
        ]
    )
    assert rc == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["config"] == "w4g32a8" and summary["file_bytes"] == out.stat().st_size
    qm = load_quantized(out)
    assert qm.metadata["ptq"]["calibration_windows"] == 2
    assert main(["quantize", str(tmp_path / "nope.npz"), "-c", "w8a8", "-o", str(out)]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["quantize", "tiny", "-c", "nope", "-o", str(out)]) == 1
    assert "shipped configs" in capsys.readouterr().err
