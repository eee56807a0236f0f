"""Integer LayerNorm / RMSNorm (refq.kernels.norms) against exact arithmetic and float norms.

* Bit-exact against :mod:`refq.oracle.norms`, a scalar Python-int / Fraction restatement of the
  I-BERT / I-ViT algorithms and of the integer affine (constants characterized by what they are,
  not by how the kernel computes them), on hypothesis-drawn shapes, types, scales, zero points,
  gamma / beta, epsilon and profiles.
* Within a stated bound of the real LayerNorm / RMSNorm of the dequantized input (below).
* The graph ops LAYER_NORM / RMS_NORM: profile selection, quantized gamma / beta, errors.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from refq.errors import InvalidDataError, QuantSpecError, RefqError, ShapeError, UnsupportedError
from refq.graph import Graph, Node, Program, TensorInfo
from refq.kernels import norms
from refq.oracle import norms as oracle

PROPERTY = settings(max_examples=220, deadline=None)
PROFILES = ("tflm", "ibert", "ivit", "ivit-exact")
NEWTON10_CLOSE = (34596, 69_000_000_000_000)
"""newton10(v) - isqrt(v) is 0 or 1 on this range (measured exhaustively up to 2^23, sampled
above); below it, ten steps from 2^16 have not come down to the root yet."""


def f32(v: float) -> float:
    return float(np.float32(v))


@st.composite
def configs(draw, *, bounded_output: bool = False):
    kind = draw(st.sampled_from(["layer", "rms"]))
    in_dtype = draw(st.sampled_from(["int8", "uint8", "int16"]))
    out_dtype = draw(st.sampled_from(["int8", "uint8", "int16"]))
    lo, hi = norms.IO_RANGES[in_dtype]
    olo, ohi = norms.IO_RANGES[out_dtype]
    n = draw(st.integers(1, 48))
    rows = draw(st.integers(1, 3))
    s_in = f32(10 ** draw(st.floats(-5, 0)))
    zp_in = draw(st.integers(lo, hi)) if draw(st.booleans()) else (0 if lo < 0 else 128)
    gamma = np.array(
        draw(st.lists(st.floats(-4, 4, width=32), min_size=n, max_size=n)), dtype=np.float32
    )
    if draw(st.booleans()):
        gamma = np.abs(gamma)
    beta = np.array(
        draw(st.lists(st.floats(-4, 4, width=32), min_size=n, max_size=n)), dtype=np.float32
    )
    if bounded_output:
        # Output range a few standard deviations wide, so few outputs saturate.
        span = float(np.abs(gamma).max() * 3 + np.abs(beta).max()) or 1.0
        s_out = f32(span / ((ohi - olo) / 2) * draw(st.floats(0.5, 2)))
        zp_out = (olo + ohi + 1) // 2
    else:
        s_out = f32(10 ** draw(st.floats(-4, 1)))
        zp_out = draw(st.integers(olo, ohi))
    eps = draw(st.sampled_from([0.0, 1e-12, 1e-5, 1e-3]))
    profile = draw(st.sampled_from(PROFILES))
    # Rows around a random center with a random spread, including constant rows.
    spread = draw(st.sampled_from([0, 1, 2, 8, 40, hi - lo]))
    x = []
    for _ in range(rows):
        center = draw(st.integers(lo, hi))
        seed = draw(st.integers(0, 2**32 - 1))
        r = np.random.default_rng(seed).integers(center - spread, center + spread, n, endpoint=True)
        x.append(np.clip(r, lo, hi))
    return dict(
        kind=kind,
        in_dtype=in_dtype,
        out_dtype=out_dtype,
        n=n,
        s_in=s_in,
        zp_in=zp_in,
        gamma=gamma,
        beta=beta,
        s_out=s_out,
        zp_out=zp_out,
        eps=eps,
        profile=profile,
        x=np.array(x).astype(in_dtype),
    )


def prepare(c) -> norms.NormParams:
    from refq.profiles import get_profile

    prof = get_profile(c["profile"])
    return norms.prepare_norm(
        c["kind"],
        n=c["n"],
        input_scale=c["s_in"],
        input_zero_point=c["zp_in"],
        input_dtype=c["in_dtype"],
        gamma=c["gamma"],
        beta=c["beta"],
        epsilon=c["eps"],
        output_scale=c["s_out"],
        output_zero_point=c["zp_out"],
        output_dtype=c["out_dtype"],
        sqrt=prof.sqrt,
        numerator="ivit" if prof.nonlinear == "ivit" else "ibert",
    )


def expected(c) -> list[list[int]]:
    from refq.profiles import get_profile

    prof = get_profile(c["profile"])
    return oracle.norm_rows(
        [[int(v) for v in row] for row in c["x"]],
        layer=c["kind"] == "layer",
        zero_point_in=c["zp_in"],
        in_scale=Fraction(c["s_in"]),
        in_bits=16 if c["in_dtype"] == "int16" else 8,
        gamma=[Fraction(float(v)) for v in c["gamma"]],
        beta=[Fraction(float(v)) for v in c["beta"]],
        epsilon=Fraction(c["eps"]),
        out_scale=Fraction(c["s_out"]),
        zero_point_out=c["zp_out"],
        out_range=norms.IO_RANGES[c["out_dtype"]],
        sqrt=prof.sqrt,
        ivit=prof.nonlinear == "ivit",
    )


# --- bit-exact against the exact restatement -----------------------------------------------------


@PROPERTY
@given(configs())
def test_norm_equals_exact_restatement(c) -> None:
    p = prepare(c)
    got = norms.integer_norm(c["x"], p)
    assert got.dtype == np.dtype(c["out_dtype"])
    assert got.tolist() == expected(c)


@PROPERTY
@given(configs())
def test_prepared_constants_are_the_correctly_rounded_reals(c) -> None:
    p = prepare(c)
    out_bits = 16 if c["out_dtype"] == "int16" else 8
    gamma = [Fraction(float(v)) for v in c["gamma"]]
    beta = [Fraction(float(v)) for v in c["beta"]]
    k, a, b = oracle.affine_constants(gamma, beta, c["n"], Fraction(c["s_out"]), out_bits)
    assert (p.out_shift, p.multiplier.tolist(), p.bias.tolist()) == (k, a, b)
    # K is the largest shift that fits: at K + 1 some |A| would exceed 2^30 (or K is the cap).
    assert k == 58 - out_bits or any(
        abs(
            oracle.nearest_to_sqrt_times(
                g, g * g * c["n"] * Fraction(4) ** (k + 1 - 30) / Fraction(c["s_out"]) ** 2
            )
        )
        > 1 << 30
        for g in gamma
    )
    s_in = Fraction(c["s_in"])
    assert p.var_offset == oracle.round_half_away(Fraction(c["eps"]) * c["n"] / (s_in * s_in))
    assert p.recip_shift == (9 if c["in_dtype"] == "int16" else 1)


def test_oracle_nearest_root_on_perfect_squares_and_ties() -> None:
    # sqrt(q) exactly j - 1/2 rounds away from zero; perfect squares give their root.
    for j in range(0, 50):
        assert oracle.nearest_to_sqrt_times(Fraction(1), Fraction(j * j)) == j
        assert oracle.nearest_to_sqrt_times(Fraction(-1), Fraction((2 * j + 1) ** 2, 4)) == -(j + 1)
        assert norms._round_sqrt(Fraction((2 * j + 1) ** 2, 4)) == j + 1
        assert norms._round_sqrt(Fraction(j * j)) == j


# --- sqrt and mean helpers -----------------------------------------------------------------------


@PROPERTY
@given(st.lists(st.integers(0, (1 << 62) - 1) | st.integers(0, 1 << 20), min_size=1, max_size=20))
def test_newton10_is_the_ten_step_iteration(values) -> None:
    v = np.array(values, dtype=np.int64)
    got = norms.row_std(v, "newton10").tolist()
    assert got == [oracle.newton10(int(x)) for x in values]
    for x, k in zip(values, got, strict=True):
        root = math.isqrt(x)
        assert k >= root and k > 0  # never below the root, never 0 (no division by zero)
        if NEWTON10_CLOSE[0] <= x <= NEWTON10_CLOSE[1]:
            assert k - root in (0, 1)


def test_newton10_near_root_range_boundary() -> None:
    # Below the range some inputs are far off (peer-facts 7: small variances); at its start not.
    v = np.arange(0, NEWTON10_CLOSE[0] + 5000, dtype=np.int64)
    diff = norms.row_std(v, "newton10") - norms.row_std(v, "exact")
    assert diff.min() >= 0
    assert int(np.flatnonzero(diff > 1).max()) == NEWTON10_CLOSE[0] - 1
    assert diff[0] == 64 and diff[NEWTON10_CLOSE[0] :].max() == 1


@PROPERTY
@given(st.lists(st.integers(-(1 << 40), 1 << 40), min_size=1, max_size=20), st.integers(1, 5000))
def test_round_half_even_div(totals, n) -> None:
    got = norms.round_half_even_div(np.array(totals, dtype=np.int64), n).tolist()
    assert got == [oracle.round_half_even(Fraction(t, n)) for t in totals]


# --- against float LayerNorm / RMSNorm ---------------------------------------------------------


def error_bound(row: np.ndarray, c, gamma_c: np.ndarray, k: int):
    """Real output in output steps (clamped) and the bound on |integer - real| per element.

    With ``sigma_e = sqrt(var_pop + eps / s_in^2)`` (input steps), ``delta = 1/2`` for LayerNorm
    (the rounded mean) and 0 for RMSNorm, the integer std deviates from ``sqrt(n) sigma_e`` by a
    relative ``kappa <= delta^2 / (2 sigma_e^2) + 1 / (2 n sigma_e^2) + 1 / (sqrt(n) sigma_e)``
    (variance offset rounding, floor / Newton of the root within 1), so the normalized value ``z``
    is off by at most ``E = delta / (sigma_e (1 - kappa)) + |z| kappa / (1 - kappa) +
    sqrt(n) (2 |d| / 2^P + 2^-30)`` (reciprocal and y floors). In output steps:
    ``|q - clamp(real)| <= 1/2 + |gamma| E / s_out + 2^(29 - K) + 2^-(K + 1)``.
    """
    n = c["n"]
    x = row.astype(np.float64)
    layer = c["kind"] == "layer"
    centre = x.mean() if layer else float(c["zp_in"])
    dev = x - centre
    sigma_e = math.sqrt(float(np.mean(dev * dev)) + c["eps"] / c["s_in"] ** 2)
    delta = 0.5 if layer else 0.0
    if sigma_e == 0:
        return None, None, math.inf
    kappa = delta**2 / (2 * sigma_e**2) + 1 / (2 * n * sigma_e**2) + 1 / (math.sqrt(n) * sigma_e)
    z = dev / sigma_e
    p_bits = 39 if c["in_dtype"] == "int16" else 31
    err_z = (
        delta / (sigma_e * (1 - kappa))
        + np.abs(z) * kappa / (1 - kappa)
        + math.sqrt(n) * (2 * (np.abs(dev) + 1) / 2.0**p_bits + 2.0**-30)
    )
    real = c["zp_out"] + (c["gamma"].astype(np.float64) * z + c["beta"]) / c["s_out"]
    lo, hi = norms.IO_RANGES[c["out_dtype"]]
    bound = 0.5 + np.abs(gamma_c) * err_z / c["s_out"] + 2.0 ** (29 - k) + 2.0 ** -(k + 1) + 1e-6
    return np.clip(real, lo, hi), bound, kappa


@settings(max_examples=300, deadline=None)
@given(configs(bounded_output=True))
def test_within_stated_bound_of_float_norm(c) -> None:
    p = prepare(c)
    got = norms.integer_norm(c["x"], p).astype(np.float64)
    rows = 0
    for i, row in enumerate(c["x"]):
        real, bound, kappa = error_bound(row, c, c["gamma"].astype(np.float64), p.out_shift)
        if kappa >= 0.5:
            continue  # rows of (almost) constant input: the bound says nothing there
        if c["profile"] == "ivit":
            dev = row.astype(np.int64) - (
                oracle.round_half_even(Fraction(int(row.astype(np.int64).sum()), c["n"]))
                if c["kind"] == "layer"
                else c["zp_in"]
            )
            var = int((dev * dev).sum()) + p.var_offset
            if not NEWTON10_CLOSE[0] <= var <= NEWTON10_CLOSE[1]:
                continue  # I-ViT's ten Newton steps have not reached the root: see below
        rows += 1
        err = np.abs(got[i] - real)
        assert (err <= bound).all(), (err - bound).max()
    assume(rows > 0)  # examples whose rows all fall outside the bound's domain do not count


def test_ivit_newton10_small_variance_is_far_off() -> None:
    # peer-facts 7: the published ten steps from 2^16 leave small variances badly off; the
    # ivit profile reproduces that, ivit-exact does not.
    rng = np.random.default_rng(3)
    n = 64
    x = rng.integers(-3, 4, (4, n)).astype(np.int8)  # std ~2 codes: var ~ 256 << 34596
    gamma, beta = np.ones(n, np.float32), np.zeros(n, np.float32)
    params = {}
    for prof in ("ivit", "ivit-exact"):
        c = dict(
            kind="layer",
            in_dtype="int8",
            out_dtype="int8",
            n=n,
            s_in=0.05,
            zp_in=0,
            gamma=gamma,
            beta=beta,
            s_out=4 / 127,
            zp_out=0,
            eps=0.0,
            profile=prof,
            x=x,
        )
        params[prof] = norms.integer_norm(x, prepare(c)).astype(np.int64)
    exact_peak = np.abs(params["ivit-exact"]).max()
    newton_peak = np.abs(params["ivit"]).max()
    assert exact_peak >= 40 and newton_peak * 3 < exact_peak


# --- graph ops ------------------------------------------------------------------------------------


def norm_graph(op: str, n: int, *, gamma: TensorInfo, beta: TensorInfo | None, **attrs) -> Graph:
    tensors = {
        "x": TensorInfo("x", "int8", (None, n), scale=np.float32(0.04), zero_point=np.int64(3)),
        "y": TensorInfo("y", "int8", (None, n), scale=np.float32(0.03), zero_point=np.int64(-5)),
        gamma.name: gamma,
    }
    inputs = ["x", gamma.name]
    if beta is not None:
        tensors[beta.name] = beta
        inputs.append(beta.name)
    return Graph(tensors, [Node(op, inputs, ["y"], attrs)], ["x"], ["y"])


@pytest.mark.parametrize("op", ["LAYER_NORM", "RMS_NORM"])
@pytest.mark.parametrize("profile", PROFILES)
def test_graph_op_matches_function_under_profile(op, profile) -> None:
    rng = np.random.default_rng(11)
    n = 24
    g = rng.normal(1, 0.3, n).astype(np.float32)
    b = rng.normal(0, 0.3, n).astype(np.float32)
    graph = norm_graph(
        op,
        n,
        gamma=TensorInfo("g", "float32", (n,), data=g),
        beta=TensorInfo("b", "float32", (n,), data=b),
        epsilon=1e-3,
    )
    x = rng.integers(-128, 128, (5, n)).astype(np.int8)
    (y,) = Program(graph, profile).run([x])
    c = dict(
        kind="layer" if op == "LAYER_NORM" else "rms",
        in_dtype="int8",
        out_dtype="int8",
        n=n,
        s_in=f32(0.04),
        zp_in=3,
        gamma=g,
        beta=b,
        s_out=f32(0.03),
        zp_out=-5,
        eps=1e-3,
        profile=profile,
        x=x,
    )
    assert y.tolist() == expected(c)
    p = Program(graph, profile).steps[0][2]
    assert p.sqrt == ("newton10" if profile == "ivit" else "exact")
    assert p.recip_numerator == (1 << 31) - (profile.startswith("ivit"))


def test_graph_op_quantized_gamma_beta_are_dequantized_exactly() -> None:
    rng = np.random.default_rng(5)
    n = 16
    gq = rng.integers(-127, 128, n).astype(np.int8)
    bq = rng.integers(-127, 128, n).astype(np.int8)
    gs, bs = np.float32(0.013), np.float32(0.007)
    graph = norm_graph(
        "RMS_NORM",
        n,
        gamma=TensorInfo("g", "int8", (n,), scale=gs, zero_point=np.int64(2), data=gq),
        beta=TensorInfo("b", "int8", (n,), scale=bs, zero_point=np.int64(0), data=bq),
    )
    x = rng.integers(-128, 128, (3, n)).astype(np.int8)
    (y,) = Program(graph, "tflm").run([x])
    want = oracle.norm_rows(
        x.tolist(),
        layer=False,
        zero_point_in=3,
        in_scale=Fraction(f32(0.04)),
        in_bits=8,
        gamma=[(int(q) - 2) * Fraction(float(gs)) for q in gq],
        beta=[int(q) * Fraction(float(bs)) for q in bq],
        epsilon=Fraction(1e-5),
        out_scale=Fraction(f32(0.03)),
        zero_point_out=-5,
        out_range=(-128, 127),
        sqrt="exact",
        ivit=False,
    )
    assert y.tolist() == want


def test_beta_input_is_optional() -> None:
    n = 8
    graph = norm_graph(
        "RMS_NORM",
        n,
        gamma=TensorInfo("g", "float32", (n,), data=np.ones(n, np.float32)),
        beta=None,
    )
    x = np.arange(-40, 40, 10, dtype=np.int8).reshape(1, n)
    (y,) = Program(graph, "tflm").run([x])
    assert y.tolist() == oracle.norm_rows(
        x.tolist(),
        layer=False,
        zero_point_in=3,
        in_scale=Fraction(f32(0.04)),
        in_bits=8,
        gamma=[Fraction(1)] * n,
        beta=[Fraction(0)] * n,
        epsilon=Fraction(1e-5),
        out_scale=Fraction(f32(0.03)),
        zero_point_out=-5,
        out_range=(-128, 127),
        sqrt="exact",
        ivit=False,
    )


def test_constant_row_gives_beta() -> None:
    n = 10
    beta = np.linspace(-1, 1, n).astype(np.float32)
    p = norms.prepare_norm(
        "layer",
        n=n,
        input_scale=0.1,
        input_zero_point=0,
        input_dtype="int8",
        gamma=np.ones(n),
        beta=beta,
        epsilon=0.0,
        output_scale=1 / 64,
        output_zero_point=0,
        output_dtype="int8",
    )
    y = norms.layer_norm(np.full((2, n), 17, np.int8), p)
    want = [oracle.round_half_away(Fraction(float(v)) * 64) for v in beta]
    assert y.tolist() == [want, want]


# --- errors -------------------------------------------------------------------------------------


def test_errors_name_the_fault() -> None:
    n = 4
    g = TensorInfo("gam", "float32", (n,), data=np.ones(n, np.float32))
    with pytest.raises(UnsupportedError, match="last axis"):
        Program(norm_graph("LAYER_NORM", n, gamma=g, beta=None, axis=0))
    with pytest.raises(ShapeError, match=r"gam.*4 values, the normalized axis has 3"):
        Program(norm_graph("LAYER_NORM", 3, gamma=g, beta=None))
    bad = TensorInfo("gam", "float32", (n,), data=np.array([1, np.nan, 1, 1], np.float32))
    with pytest.raises(InvalidDataError, match=r"gam.*nan at index 1"):
        Program(norm_graph("LAYER_NORM", n, gamma=bad, beta=None))
    gi = TensorInfo("gam", "int8", (n,), data=np.ones(n, np.int8))
    with pytest.raises(UnsupportedError, match=r"gam.*needs a scale"):
        Program(norm_graph("RMS_NORM", n, gamma=gi, beta=None))
    rms = dict(
        n=n,
        input_scale=0.1,
        input_zero_point=0,
        input_dtype="int8",
        gamma=[1] * n,
        beta=None,
        epsilon=0,
        output_scale=1.0,
        output_zero_point=0,
        output_dtype="int8",
    )
    with pytest.raises(QuantSpecError, match="output scale"):
        norms.prepare_norm("rms", **{**rms, "output_scale": 0.0})
    with pytest.raises(QuantSpecError, match="epsilon"):
        norms.prepare_norm("rms", **{**rms, "epsilon": -1})
    with pytest.raises(UnsupportedError, match="int32"):
        norms.prepare_norm("rms", **{**rms, "input_dtype": "int32"})
    with pytest.raises(QuantSpecError, match="too large"):
        norms.prepare_norm("rms", **{**rms, "gamma": [1e30] * n, "output_scale": 1e-30})
    p = norms.prepare_norm("rms", **rms)
    with pytest.raises(ShapeError, match="last axis must have 4"):
        norms.rms_norm(np.zeros((2, 5), np.int8), p)
    with pytest.raises(ShapeError, match="must be int8"):
        norms.rms_norm(np.zeros((2, 4), np.int16), p)
    with pytest.raises(UnsupportedError, match="kind='layer'"):
        norms.layer_norm(np.zeros((2, 4), np.int8), p)
    assert issubclass(ShapeError, RefqError)
