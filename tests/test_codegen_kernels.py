"""The generated C kernels, byte for byte against refq's NumPy reference.

One firmware image holds three generated models (profiles tflm, cmsis-nn-single, litert-ref),
each a seeded random graph with nodes of every lowered op (tests/codegen_cases.py): FULLY_CONNECTED
(int8 / int4 weights, per tensor / per channel, bias, zero points, fused activations, double /
single / LiteRT float64 rounding; int8 -> int16; 16x8 with int64 accumulators), ADD / SUB / MUL
(int8 with broadcasting, tables on and off; int16), QUANTIZE / REQUANTIZE between integer types,
BATCH_MATMUL (adj_x / adj_y, batch broadcast), int16 TANH / LOGISTIC, GATHER, EMBEDDING_LOOKUP,
CONCATENATION, TRANSPOSE, RESHAPE. A second image holds only 16x8 FULLY_CONNECTED nodes under
tflm, cmsis-nn and litert-ref (host, Cortex-M7, Cortex-M4). The image is built once per
configuration: host gcc with UBSan + ASan (and -std=c99 -Wall -Wextra -Wpedantic -Werror, as
every build), Cortex-M7 and Cortex-M4 under QEMU with hard and soft float ABIs, DSP and plain-C
paths. Every output byte must equal ``Program(graph, profile).run``.

The arithmetic identities the fast paths rely on (the FULLY_CONNECTED weight layout, the fused
roundings, the SMMULR forms of ADD, broadcasting strides) are property-tested against Python
integers and fractions.
"""

from __future__ import annotations

import contextlib
import subprocess
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codegen.layouts import (
    arrange_fc_s4,
    arrange_fc_s8,
    arrange_fc_s16,
    fc_s8_padded_k,
    fc_s16_padded_k,
    unarrange_fc_s4,
    unarrange_fc_s8,
    unarrange_fc_s16,
)
from codegen.lower import KERNELS, lower_graph
from codegen.ops.elementwise import broadcast_strides
from codegen.run import EXIT_STATUS_NEGATIVE_BASE, run
from refq.errors import ExactnessError, UnsupportedError
from refq.graph import Graph, Node, Program, TensorInfo
from refq.kernels.registry import register
from tests.codegen_cases import (
    GraphBuilder,
    add_fully_connected_16x8,
    add_large_fully_connected,
    kernel_graph,
    random_inputs,
)
from tests.codegen_image import Case, Image, require_config
from tests.conftest import require_tool

PROFILES = ("tflm", "cmsis-nn-single", "litert-ref")
SEED = 20261201
CONFIGS = ("host-ubsan-asan", "m7", "m7-soft", "m7-plain-c", "m4", "m4-soft", "m4-plain-c")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Image:
    cases = []
    for i, profile in enumerate(PROFILES):
        graph = kernel_graph(SEED + i, f"kernels {profile}")
        inputs = random_inputs(graph, np.random.default_rng(SEED + 100 + i))
        cases.append(Case(graph, profile, inputs, what=f"kernels under {profile}"))
    return Image(tmp_path_factory.mktemp("codegen_kernels"), cases)


@pytest.mark.parametrize("config", CONFIGS)
def test_kernels_match_reference(config, image, checked):
    """Every output byte equals the reference; on Cortex-M the build also uses (DSP) or avoids
    (plain C) the SIMD instructions, and each kernel object fits its flash estimate."""
    require_config(config)
    result = image.run(config)
    assert not image.mismatches(result), "\n".join(image.mismatches(result))
    nodes = sum(len(c.graph.nodes) for c in image.cases)
    checked(f"generated C kernels on {config} vs refq Program.run", nodes, image.elements())
    if CONFIGS_ARM.get(config) is not None:
        program = image.build(config).program
        simd = {"smlad", "smlald", "uxtb16", "sxtb16", "smmulr", "sxtab16"}
        used = _mnemonics(program) & simd
        assert used == (simd if CONFIGS_ARM[config] else set()), (config, used)
        _check_kernel_sizes(image.build(config).build_dir / "gen")


def test_kernels_beyond_dsp_bounds(tmp_path, checked):
    """FULLY_CONNECTED rows longer than the DSP paths' exact int32 bounds (65536 features for
    int8 weights, 131064 for int4) take the plain-C path inside DSP builds."""
    for config in ("m7", "host-ubsan-asan"):
        require_config(config)
    b = GraphBuilder(np.random.default_rng(SEED + 7))
    add_large_fully_connected(b)
    graph = b.graph("beyond dsp bounds")
    case = Case(graph, "tflm", random_inputs(graph, np.random.default_rng(SEED + 8), sets=1))
    img = Image(tmp_path, [case])
    for config in ("m7", "host-ubsan-asan"):
        result = img.run(config)
        assert not img.mismatches(result), img.mismatches(result)
    checked("FULLY_CONNECTED C beyond the DSP bounds (m7, host) vs refq", 2, img.elements())


FC16_PROFILES = ("tflm", "cmsis-nn", "litert-ref")
FC16_CONFIGS = ("host-ubsan-asan", "m7", "m4")


@pytest.fixture(scope="module")
def fc16_image(tmp_path_factory) -> Image:
    cases = []
    for i, profile in enumerate(FC16_PROFILES):
        b = GraphBuilder(np.random.default_rng(SEED + 20 + i))
        add_fully_connected_16x8(b, 16)
        graph = b.graph(f"fc 16x8 {profile}")
        inputs = random_inputs(graph, np.random.default_rng(SEED + 30 + i))
        cases.append(Case(graph, profile, inputs, what=f"16x8 FULLY_CONNECTED under {profile}"))
    return Image(tmp_path_factory.mktemp("codegen_fc16"), cases)


@pytest.mark.parametrize("config", FC16_CONFIGS)
def test_fully_connected_16x8_random_cases(config, fc16_image, checked):
    """16x8 FULLY_CONNECTED (int16 in / out, int8 weights, int64 accumulator and bias): seeded
    random shapes (K not a multiple of 4 or 8 included), per-channel multipliers with s64 shifts
    of both signs, zero points, fused activations; TFLM's int64 requantization (tflm,
    cmsis-nn) and LiteRT's float64 one; every output byte equals refq's NumPy kernel."""
    require_config(config)
    img = fc16_image
    result = img.run(config)
    assert not img.mismatches(result), "\n".join(img.mismatches(result))
    functions = {
        call.function for model in img.models for call in model.lowered.calls if call.function
    }
    assert functions == {"refq_fully_connected_s16"}
    nodes = sum(len(c.graph.nodes) for c in img.cases)
    checked(f"16x8 FULLY_CONNECTED C on {config} vs refq Program.run", nodes, img.elements())


def test_fully_connected_16x8_accumulator_domain(tmp_path):
    """An int64 accumulator outside [-2^47, 2^47) (TFLM's domain of the 16x8 requantization):
    the reference raises, the C kernel returns REFQ_ARG_ERROR (harness exit status 17)."""
    require_config("host-ubsan-asan")
    k = 4
    t = {
        "x": TensorInfo("x", "int16", (1, k), scale=0.01, zero_point=0),
        "w": TensorInfo(
            "w", "int8", (2, k), scale=0.01, zero_point=0, data=np.full((2, k), 127, np.int8)
        ),
        "b": TensorInfo("b", "int64", (2,), data=np.array([2**47 - 2**20, 0], np.int64)),
        "y": TensorInfo("y", "int16", (1, 2), scale=2.0**16, zero_point=0),
    }
    graph = Graph(
        t, [Node("FULLY_CONNECTED", ("x", "w", "b"), ("y",))], ["x"], ["y"], name="fc16 domain"
    )
    good = np.full((1, k), -32768, np.int16)  # acc = 2^47 - 2^20 - 4 * 127 * 2^15 < 2^47
    bad = np.full((1, k), 32767, np.int16)  # acc > 2^47
    with pytest.raises(ExactnessError):
        Program(graph, "tflm").run([bad])
    img = Image(tmp_path, [Case(graph, "tflm", [[good]], what=graph.name)])
    prog = img.build("host-ubsan-asan")
    assert not img.mismatches(run(prog, img.input_files(), img.output_files()))
    files = img.input_files()
    files["refq_c0_in0.bin"] = bad.tobytes()
    res = run(prog, files, img.output_files(), check=False)
    assert res.returncode == EXIT_STATUS_NEGATIVE_BASE + 1, (res.status, res.stderr)


CONFIGS_ARM = {
    "m7": True,
    "m7-soft": True,
    "m7-plain-c": False,
    "m4": True,
    "m4-soft": True,
    "m4-plain-c": False,
}
"""Cortex-M configurations: whether they build the DSP path."""


def _mnemonics(program) -> set[str]:
    objdump = require_tool("arm-none-eabi-objdump")
    text = subprocess.run(
        [objdump, "-d", str(program)], capture_output=True, text=True, check=True
    ).stdout
    return {line.split("\t")[2].split()[0] for line in text.splitlines() if line.count("\t") >= 2}


def _check_kernel_sizes(gen) -> None:
    """codegen's flash estimate per kernel (KernelSpec.code_bytes) covers the object."""
    size = require_tool("arm-none-eabi-size")
    objects = sorted(gen.glob("refq_*.o"))
    assert len(objects) >= 15
    out = subprocess.run([size, *map(str, objects)], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines()[1:]:
        text, data = (int(v) for v in line.split()[:2])
        name = line.split()[-1].rsplit("/", 1)[-1][:-2]
        assert text + data <= KERNELS[name].code_bytes, (name, text + data)


# ---------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------


def _fc_graph(dtype: str = "int8") -> Graph:
    rng = np.random.default_rng(1)
    t = {
        "x": TensorInfo("x", dtype, (1, 8), scale=0.1, zero_point=0),
        "w": TensorInfo(
            "w", "int8", (4, 8), scale=0.1, zero_point=0, data=rng.integers(-9, 9, (4, 8))
        ),
        "y": TensorInfo("y", dtype, (1, 4), scale=0.3, zero_point=0),
    }
    return Graph(t, [Node("FULLY_CONNECTED", ("x", "w"), ("y",))], ["x"], ["y"], name="fc")


def test_unsupported_profile_op_and_dtype_are_refused():
    with pytest.raises(UnsupportedError, match="profile 'onnx'"):
        lower_graph(_fc_graph(), "onnx")
    # 16x8 lowers under the TFLM / CMSIS-NN / LiteRT profiles; ONNX has no int16 x int8 matmul.
    assert [c.function for c in lower_graph(_fc_graph("int16"), "tflm").calls] == [
        "refq_fully_connected_s16"
    ]
    with pytest.raises(UnsupportedError, match="onnx"):
        lower_graph(_fc_graph("int16"), "onnx")
    t16 = {
        "x": TensorInfo("x", "int16", (4,), 0.1, 0),
        "y": TensorInfo("y", "int16", (4,), 0.1, 0),
    }
    sq = Graph(t16, [Node("SQUARED_DIFFERENCE", ("x", "x"), ("y",))], ["x"], ["y"])
    with pytest.raises(UnsupportedError, match="SQUARED_DIFFERENCE"):
        lower_graph(sq, "tflm")
    # An op the NumPy interpreter runs but codegen has no lowering for (registered here).
    with contextlib.suppress(RuntimeError):  # registered by an earlier run in this process
        register(
            "TEST_CODEGEN_UNLOWERED",
            prepare=lambda node, tensors, profile: None,
            run=lambda p, xs: [xs[0]],
        )
    t = {"x": TensorInfo("x", "int8", (4,)), "y": TensorInfo("y", "int8", (4,))}
    graph = Graph(t, [Node("TEST_CODEGEN_UNLOWERED", ("x",), ("y",))], ["x"], ["y"])
    with pytest.raises(UnsupportedError, match="TEST_CODEGEN_UNLOWERED has no C lowering"):
        lower_graph(graph, "tflm")


# ---------------------------------------------------------------------------------------------
# The arithmetic behind the fast paths, against Python integers
# ---------------------------------------------------------------------------------------------


def _s16(v: int) -> int:
    v &= 0xFFFF
    return v - 0x10000 if v & 0x8000 else v


def _word(b: list[int]) -> int:
    return (b[0] & 0xFF) | (b[1] & 0xFF) << 8 | (b[2] & 0xFF) << 16 | (b[3] & 0xFF) << 24


@settings(max_examples=250, deadline=None)
@given(
    n=st.integers(1, 9),
    k=st.integers(1, 24),
    seed=st.integers(0, 2**32 - 1),
    extreme=st.booleans(),
)
def test_fc_s8_layout_and_smlald_identity(n, k, seed, extreme):
    """Per row pair: SMLAD(UXTB16(word), x) sums to lo = sum x*(wB + 128), SMLALD(word, x) to
    lo + 256 * sum x*wA, over the arranged words (Python-int model of the instructions)."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (n, k))
    x = rng.integers(-128, 128, k)
    if extreme:
        w[:] = rng.choice([-128, 127], (n, k))
        x[:] = rng.choice([-128, 127], k)
    data = [int(v) for v in arrange_fc_s8(w)]
    assert np.array_equal(unarrange_fc_s8(np.array(data), n, k), w)
    k2, pairs = fc_s8_padded_k(k) // 2, (n + 1) // 2
    xp = [int(v) for v in x] + [0] * (2 * k2 - k)
    sum_x = sum(xp)
    for i in range(pairs):
        group, member = divmod(i, 2)
        alone = i == pairs - 1 and pairs % 2 == 1
        base = group * 2 * k2 * 4 + (0 if alone else member * 4)
        stride = 4 if alone else 8
        lo = hi = 0
        for j in range(k2):
            word = data[base + j * stride : base + j * stride + 4]
            u = _word(word)
            lanes_u = (u & 0xFF, (u >> 16) & 0xFF)  # UXTB16
            lanes_s = (_s16(u), _s16(u >> 16))  # the word's signed halfwords
            x0, x1 = xp[2 * j], xp[2 * j + 1]
            lo += lanes_u[0] * x0 + lanes_u[1] * x1
            hi += lanes_s[0] * x0 + lanes_s[1] * x1
        assert (hi - lo) % 256 == 0
        row_a = 2 * i
        assert (hi - lo) // 256 == sum(int(a) * int(b) for a, b in zip(x, w[row_a], strict=True))
        if row_a + 1 < n:
            assert lo - 128 * sum_x == sum(
                int(a) * int(b) for a, b in zip(x, w[row_a + 1], strict=True)
            )
    # The DSP path's bound: |lo| <= K * 128 * 255 < 2^31 for K <= 65536.
    assert 65536 * 128 * 255 < 2**31


@settings(max_examples=250, deadline=None)
@given(n=st.integers(1, 5), k=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_fc_s16_layout_and_smlald_lanes(n, k, seed):
    """16x8: SXTB16 / SXTB16-ROR8 of each arranged word give the weight pairs (w0, w1), (w2, w3)
    of the input pairs (x0, x1), (x2, x3), so two SMLALD per word sum x*w exactly (Python-int
    model); the plain-C tail reads feature j of a group at byte {0, 2, 1, 3}[j]."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, (n, k))
    x = rng.integers(-32768, 32768, k)
    data = arrange_fc_s16(w)
    assert np.array_equal(unarrange_fc_s16(data, n, k), w)
    k4 = fc_s16_padded_k(k)
    xp = [int(v) for v in x] + [0] * (k4 - k)

    def sxtb16(v: int, ror: int) -> tuple[int, int]:
        v = ((v >> ror) | (v << (32 - ror))) & 0xFFFFFFFF if ror else v
        b0, b2 = v & 0xFF, (v >> 16) & 0xFF
        return (b0 - 256 if b0 & 0x80 else b0, b2 - 256 if b2 & 0x80 else b2)

    for o in range(n):
        acc = tail = 0
        for g in range(k4 // 4):
            word = [int(v) for v in data[o * k4 + 4 * g : o * k4 + 4 * g + 4]]
            u = _word(word)
            lo, hi = sxtb16(u, 0), sxtb16(u, 8)
            acc += lo[0] * xp[4 * g] + lo[1] * xp[4 * g + 1]
            acc += hi[0] * xp[4 * g + 2] + hi[1] * xp[4 * g + 3]
            tail += sum(word[(0, 2, 1, 3)[j]] * xp[4 * g + j] for j in range(4))
        want = sum(int(a) * int(b) for a, b in zip(x, w[o], strict=True))
        assert acc == tail == want
    # The plain-C path sums four products in int32: |x * w| <= 2^22.
    assert 4 * 32768 * 128 < 2**31


@settings(max_examples=250, deadline=None)
@given(n=st.integers(1, 5), k=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_fc_s4_layout_and_nibble_lanes(n, k, seed):
    """Masked nibbles through SXTB16 / SXTB16-ROR8 give 16 * (v0, v1), (v2, v3), (v4, v5), (v6, v7)
    of each group, so the SMLAD sum is 16 * sum x*w (Python-int model)."""
    rng = np.random.default_rng(seed)
    w = rng.integers(-8, 8, (n, k))
    x = rng.integers(-128, 128, k)
    data = arrange_fc_s4(w)
    assert np.array_equal(unarrange_fc_s4(data, n, k), w)
    groups = (k + 7) // 8
    xp = [int(v) for v in x] + [0] * (8 * groups - k)

    def sxtb16(v: int, ror: int) -> tuple[int, int]:
        v = ((v >> ror) | (v << (32 - ror))) & 0xFFFFFFFF if ror else v
        b0, b2 = v & 0xFF, (v >> 16) & 0xFF
        return (b0 - 256 if b0 & 0x80 else b0, b2 - 256 if b2 & 0x80 else b2)

    for o in range(n):
        acc = 0
        for g in range(groups):
            u = _word([int(v) for v in data[4 * (o * groups + g) : 4 * (o * groups + g) + 4]])
            hi = u & 0xF0F0F0F0
            lo = (u << 4) & 0xF0F0F0F0
            xs = xp[8 * g : 8 * g + 8]
            for lanes, (a, b) in zip(
                (sxtb16(hi, 0), sxtb16(hi, 8), sxtb16(lo, 0), sxtb16(lo, 8)),
                ((0, 1), (2, 3), (4, 5), (6, 7)),
                strict=True,
            ):
                acc += lanes[0] * xs[a] + lanes[1] * xs[b]
        assert acc == 16 * sum(int(a) * int(b) for a, b in zip(x, w[o], strict=True))


def _floor_div(a: int, b: int) -> int:
    return a // b  # Python's // is floor division for ints


def _srdhm(a: int, b: int) -> int:
    """gemmlowp SRDHM from its definition (peer-facts 1): nudge, truncate toward zero."""
    if a == b == -(2**31):
        return 2**31 - 1
    p = a * b
    nudge = 2**30 if p >= 0 else 1 - 2**30
    q = p + nudge
    return q // 2**31 if q >= 0 else -((-q) // 2**31)


def _rdbpot(x: int, e: int) -> int:
    mask = (1 << e) - 1
    rem = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> e) + (1 if rem > threshold else 0)


def _wrap(v: int) -> int:
    return (v + 2**31) % 2**32 - 2**31


int32s = st.integers(-(2**31), 2**31 - 1)


@settings(max_examples=400, deadline=None)
@given(x=int32s, m=st.integers(0, 2**31 - 1), shift=st.integers(-31, 30))
def test_fused_double_rounding(x, m, shift):
    """refq_requant_double: floor((x*M + 2^30 + 2^(30+r) - [x*M + 2^30 < 0] 2^31) / 2^(31+r))
    equals RDBPOT(SRDHM(x << left, M), r) (peer-facts 1 definitions)."""
    left, r = max(shift, 0), max(-shift, 0)
    xs = _wrap(x << left)
    want = _rdbpot(_srdhm(xs, m), r)
    q = xs * m + 2**30
    if r == 0:
        got = _floor_div(q, 2**31)
    else:
        got = _floor_div(q + 2 ** (30 + r) - (2**31 if q < 0 else 0), 2 ** (31 + r))
        assert got == _floor_div(
            _floor_div(q + 2 ** (30 + r) - (2**31 if q < 0 else 0), 2**32), 2 ** (r - 1)
        )
    assert got == want
    if shift < 0 and m > 2**30:
        # The hoisted loop's sign test: x*M + 2^30 < 0 exactly when x < 0.
        assert (q < 0) == (x < 0)


@settings(max_examples=300, deadline=None)
@given(x=int32s, m=st.integers(0, 2**31 - 1), shift=st.integers(-31, -1))
def test_single_rounding_high_word(x, m, shift):
    """(x*M + 2^(30-s)) >> (31-s) wrapped equals the high word shifted by -1 - s for s < 0 (the
    hoisted loop of refq_requantize_row_s8)."""
    total = 31 - shift
    t = x * m + 2 ** (total - 1)
    assert _wrap(_floor_div(t, 2**total)) == _floor_div(_floor_div(t, 2**32), 2 ** (-1 - shift))


@settings(max_examples=300, deadline=None)
@given(
    d=st.integers(-255, 255),
    m=st.integers(2**30, 2**31 - 1),
    r=st.integers(0, 31),
    t=st.integers(-(2**29), 2**29),
    mo=st.integers(0, 2**31 - 1),
    ro=st.integers(0, 31),
)
def test_add_stage_identities(d, m, r, t, mo, ro):
    """ADD / SUB: SRDHM(x, M) = SMMULR(2x, M) = floor((2xM + 2^31) / 2^32) for |2x| < 2^31;
    single rounding (X*M + 2^(30+r)) >> (31+r) = (floor(2XM / 2^32) + 2^(r-1)) >> r (r >= 1);
    double RDBPOT(h, r) = (h + 2^(r-1) - [h < 0]) >> r (r >= 1)."""
    x = d * 2**20
    assert _srdhm(x, m) == _floor_div(2 * x * m + 2**31, 2**32)
    assert _srdhm(t, mo) == _floor_div(2 * t * mo + 2**31, 2**32)
    h = _srdhm(t, mo)
    if ro >= 1:
        assert _rdbpot(h, ro) == _floor_div(h + 2 ** (ro - 1) - (1 if h < 0 else 0), 2**ro)
        single = _floor_div(t * mo + 2 ** (30 + ro), 2 ** (31 + ro))
        assert single == _floor_div(_floor_div(2 * t * mo, 2**32) + 2 ** (ro - 1), 2**ro)
    if r >= 1:
        hx = _srdhm(x, m)
        assert (hx < 0) == (d < 0)


@settings(max_examples=300, deadline=None)
@given(x=int32s, exponent=st.integers(-60, 10), mantissa=st.integers(2**52, 2**53 - 1))
def test_float64_requant_rounds_half_away(x, exponent, mantissa):
    """refq_requant_float64: truncation, then +1 when the exact remainder is >= 1/2, is
    round_half_away of the double product (checked with Fractions)."""
    real = float(Fraction(mantissa, 2**52) * Fraction(2) ** exponent)
    v = float(x) * real
    a = min(abs(v), 4.0e18)
    r = int(a)
    if a - float(r) >= 0.5:
        r += 1
    got = -r if v < 0 else r
    exact = Fraction(v)
    want = int(abs(exact) + Fraction(1, 2)) if abs(v) <= 4.0e18 else int(4.0e18)
    assert got == (-want if v < 0 else want)


@settings(max_examples=300, deadline=None)
@given(
    out=st.lists(st.integers(1, 4), min_size=0, max_size=5),
    keep1=st.integers(0, 5),
    keep2=st.integers(0, 5),
    seed=st.integers(0, 2**32 - 1),
)
def test_broadcast_strides_walk_like_numpy(out, keep1, keep2, seed):
    """Walking the merged refq_broadcast descriptor (rows, then the inner dimension) visits the
    same input elements as NumPy broadcasting."""
    rng = np.random.default_rng(seed)
    shapes = []
    for keep in (keep1, keep2):
        dims = out[len(out) - min(keep, len(out)) :]
        shapes.append([d if rng.random() < 0.6 else 1 for d in dims])
    full = tuple(np.broadcast_shapes(tuple(shapes[0]), tuple(shapes[1]), tuple(out)))
    shape, s1, s2 = broadcast_strides(shapes[0], shapes[1], full)
    idx1 = np.broadcast_to(np.arange(int(np.prod(shapes[0]))).reshape(shapes[0]), full).ravel()
    idx2 = np.broadcast_to(np.arange(int(np.prod(shapes[1]))).reshape(shapes[1]), full).ravel()
    got1, got2 = [], []
    for index in np.ndindex(*shape):
        got1.append(sum(i * s for i, s in zip(index, s1, strict=True)))
        got2.append(sum(i * s for i, s in zip(index, s2, strict=True)))
    assert got1 == idx1.tolist() and got2 == idx2.tolist()
