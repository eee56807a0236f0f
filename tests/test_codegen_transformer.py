"""The transformer kernels of the C generator, byte for byte against refq's NumPy reference.

One firmware image holds seeded random graphs (tests/transformer_cases.py) of SOFTMAX (int8 ->
int8 / int16, int16, rows of 512+ elements at the maximum under the "safe" variant),
RMS_NORM / LAYER_NORM (int8 / int16, exact and I-ViT square roots, I-BERT / I-ViT numerators),
ROPE, SILU / GELU / TANH / LOGISTIC / HARD_SWISH / RSQRT tables, SWIGLU and ATTENTION (GQA,
several tokens per call, int8 and int16 scores, caches filled over several invocations), under
double and single rounding. It is built once per configuration: host gcc with UBSan + ASan (and
-std=c99 -Wall -Wextra -Wpedantic -Werror, as every build), Cortex-M7 and Cortex-M4 under QEMU
with hard and soft float ABIs, DSP and plain-C paths. Every output byte must equal
``Program(graph, profile).run`` (state carried from one input set to the next).

The arithmetic the C relies on beyond the reference's own formulas (the softmax's folded
rounding, the long-row normalization and its defined zero, the norm's floor division and
square root, the attention's SXTB16 pairing) is property-tested against Python integers and
fractions.
"""

from __future__ import annotations

import math
import subprocess
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codegen.lower import KERNELS, lower_graph
from codegen.run import EXIT_STATUS_NEGATIVE_BASE, run
from refq.errors import ShapeError, UnsupportedError
from refq.graph import Graph, Node, Program, TensorInfo
from tests.codegen_image import Case, Image, require_config
from tests.conftest import require_tool
from tests.transformer_cases import attention_graph, long_rows_graph, transformer_graph

SEED = 20261127
CONFIGS = ("host-ubsan-asan", "m7", "m7-soft", "m7-plain-c", "m4", "m4-soft", "m4-plain-c")
OPS = ("tflm", "cmsis-nn-single", "litert-ref", "ibert", "ivit", "ivit-exact")
MY_KERNELS = ("softmax", "norm", "rope", "lut", "swiglu", "attention")


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Image:
    cases = []
    for i, profile in enumerate(OPS):
        graph, sets = transformer_graph(SEED + i, profile)
        cases.append(Case(graph, profile, sets, what=f"transformer ops under {profile}"))
    for i, profile in enumerate(("tflm", "cmsis-nn-single")):
        graph, sets = attention_graph(SEED + 10 + i, profile)
        cases.append(Case(graph, profile, sets, what=f"attention under {profile}"))
    graph, sets = long_rows_graph(SEED + 20)
    cases.append(Case(graph, "tflm", sets, what="long softmax rows (safe variant)"))
    return Image(tmp_path_factory.mktemp("codegen_transformer"), cases)


@pytest.mark.parametrize("config", CONFIGS)
def test_transformer_kernels_match_reference(config, image, checked):
    require_config(config)
    result = image.run(config)
    assert not image.mismatches(result), "\n".join(image.mismatches(result))
    nodes = sum(len(c.graph.nodes) * len(c.sets) for c in image.cases)
    checked(
        f"generated C transformer kernels on {config} vs refq Program.run", nodes, image.elements()
    )


def test_long_rows_cover_the_hazard(image):
    """The long-row case really reaches the reference's undefined region: the final exponent
    exceeds 31 (int8 rows output the zero point) and the Q12.19 sum exceeds 2^32 (int16 rows
    keep non-zero probabilities), and the default long_rows="raise" refuses those rows."""
    case = image.cases[-1]
    outs = case.reference()[0]
    assert (outs[0][0] == -128).all()  # 700 equal int8 codes: every probability rounds to 0
    x = case.sets[0][1]  # 9000 codes, 8500 at the maximum: S > 2^32, int16 output defined
    assert (x == x.max()).sum() >= 8192
    assert (outs[1] > -32768).any()
    node = case.graph.nodes[0]
    strict = Graph(
        case.graph.tensors,
        [Node(node.op, node.inputs, node.outputs, {})],
        [node.inputs[0]],
        [node.outputs[0]],
    )
    with pytest.raises(Exception, match="undefined"):
        Program(strict, "tflm").run([case.sets[0][0]])


def test_dsp_path_uses_simd(image):
    """The DSP build's attention uses SXTB16 / SMLAD / SMLABB / SMLATB; plain C no SIMD."""
    objdump = require_tool("arm-none-eabi-objdump")
    for config in ("m7", "m7-plain-c"):
        require_config(config)

    def mnemonics(config: str) -> set[str]:
        obj = image.build(config).build_dir / "gen" / "refq_attention_s8.o"
        text = subprocess.run(
            [objdump, "-d", str(obj)], capture_output=True, text=True, check=True
        ).stdout
        return {ln.split("\t")[2].split()[0] for ln in text.splitlines() if ln.count("\t") >= 2}

    simd = {"sxtb16", "smlad"}
    top_half = {"smlabt", "smlatb"}  # the compiler may commute SMLABT's operands
    dsp, plain = mnemonics("m7"), mnemonics("m7-plain-c")
    assert simd | {"smlabb"} <= dsp and top_half & dsp
    # gcc itself picks SMLABB for plain C's 16 x 8 products; the SIMD forms come from the DSP path
    assert not simd & plain


def test_kernel_code_estimates_cover_the_objects(image):
    """codegen's flash estimate of each transformer kernel is at least the compiled object."""
    size = require_tool("arm-none-eabi-size")
    for config in ("m7", "m4-plain-c"):
        require_config(config)
        gen = image.build(config).build_dir / "gen"
        objects = sorted(p for p in gen.glob("refq_*.o") if any(k in p.name for k in MY_KERNELS))
        assert len(objects) >= 12
        out = subprocess.run([size, *map(str, objects)], capture_output=True, text=True, check=True)
        for line in out.stdout.splitlines()[1:]:
            text, data = (int(v) for v in line.split()[:2])
            name = line.split()[-1].rsplit("/", 1)[-1][:-2]
            assert text + data <= KERNELS[name].code_bytes, (config, name, text + data)


# ---------------------------------------------------------------------------------------------
# Run-time refusals: where the reference raises, the C returns REFQ_ARG_ERROR
# ---------------------------------------------------------------------------------------------


def _one(op: str, inputs: dict[str, TensorInfo], out: TensorInfo, attrs: dict, name: str):
    tensors = {**inputs, out.name: out}
    graph_inputs = [n for n, t in inputs.items() if not t.is_state]
    return Graph(
        tensors, [Node(op, tuple(inputs), (out.name,), attrs)], graph_inputs, [out.name], name=name
    )


def test_out_of_range_inputs_are_refused(tmp_path):
    """ATTENTION past its cache, ROPE past its tables and RSQRT of a negative value: the
    reference raises, the C kernel returns REFQ_ARG_ERROR (exit status 17 of the harness)."""
    require_config("host-ubsan-asan")
    attention = _one(
        "ATTENTION",
        {
            "q": TensorInfo("q", "int8", (1, 8), 0.05, 0),
            "k": TensorInfo("k", "int8", (1, 8), 0.05, 0),
            "v": TensorInfo("v", "int8", (1, 8), 0.05, 0),
            "position": TensorInfo("position", "int32", ()),
            "kc": TensorInfo("kc", "int8", (1, 4, 8), 0.05, 0, is_state=True),
            "vc": TensorInfo("vc", "int8", (1, 4, 8), 0.05, 0, is_state=True),
        },
        TensorInfo("o", "int8", (1, 8), 0.05, 0),
        {"score_scale": 0.01},
        "attention",
    )
    rope = _one(
        "ROPE",
        {
            "x": TensorInfo("x", "int8", (1, 8), 0.05, 0),
            "position": TensorInfo("position", "int32", ()),
        },
        TensorInfo("y", "int8", (1, 8), 0.05, 0),
        {"head_dim": 8, "max_positions": 4},
        "rope",
    )
    rsqrt = _one(
        "RSQRT",
        {"x": TensorInfo("x", "int8", (4,), 0.05, -10)},
        TensorInfo("y", "int8", (4,), 0.05, 0),
        {},
        "rsqrt",
    )
    x8 = np.zeros((1, 8), np.int8)
    good = [
        [x8, x8, x8, np.asarray(3, np.int32)],
        [x8, np.asarray(3, np.int32)],
        [np.array([-10, 0, 5, 127], np.int8)],
    ]
    bad = [
        [x8, x8, x8, np.asarray(4, np.int32)],
        [x8, np.asarray(4, np.int32)],
        [np.array([0, -11, 5, 127], np.int8)],
    ]
    graphs = [attention, rope, rsqrt]
    for g, args in zip(graphs, bad, strict=True):
        with pytest.raises(Exception):  # noqa: B017 - ShapeError / InvalidDataError
            Program(g, "tflm").run(args)
    img = Image(
        tmp_path, [Case(g, "tflm", [s], what=g.name) for g, s in zip(graphs, good, strict=True)]
    )
    prog = img.build("host-ubsan-asan")
    assert not img.mismatches(run(prog, img.input_files(), img.output_files()))
    for which in range(3):
        files = img.input_files()
        for i, value in enumerate(bad[which]):
            files[f"refq_c{which}_in{i}.bin"] = np.ascontiguousarray(value).tobytes()
        res = run(prog, files, img.output_files(), check=False)
        assert res.returncode == EXIT_STATUS_NEGATIVE_BASE + 1, (which, res.status, res.stderr)


def test_unsupported_forms_are_refused():
    """Row-dependent I-ViT ShiftGELU, I-BERT softmax and 65536-entry int16 tables (RSQRT) have
    no C; int16 TANH lowers (the sigmoid-table interpolation, tests/test_codegen_kernels.py)."""
    x = TensorInfo("x", "int8", (2, 8), 0.05, 0)
    gelu = _one("GELU", {"x": x}, TensorInfo("y", "int8", (2, 8), 0.05, 0), {}, "gelu")
    with pytest.raises(UnsupportedError, match="GELU"):
        lower_graph(gelu, "ivit")
    sm = _one("SOFTMAX", {"x": x}, TensorInfo("y", "int8", (2, 8), 1 / 256, -128), {}, "sm")
    with pytest.raises(UnsupportedError, match="SOFTMAX"):
        lower_graph(sm, "ibert")
    x16 = TensorInfo("x", "int16", (2, 8), 0.05, 0)
    tanh = _one("TANH", {"x": x16}, TensorInfo("y", "int16", (2, 8), 2**-15, 0), {}, "tanh")
    assert [c.function for c in lower_graph(tanh, "tflm").calls] == ["refq_tanh_s16"]
    rsqrt = _one("RSQRT", {"x": x16}, TensorInfo("y", "int16", (2, 8), 2**-10, 0), {}, "rsqrt")
    with pytest.raises(UnsupportedError, match="int16"):
        lower_graph(rsqrt, "tflm")
    rope = _one(
        "ROPE",
        {"x": TensorInfo("x", "int8", (2, 8), 0.05, 0)},
        TensorInfo("y", "int8", (2, 8), 0.05, 0),
        {"head_dim": 8},
        "rope",
    )
    with pytest.raises(Exception, match="max_positions"):
        lower_graph(rope, "tflm")
    bad_shape = _one(
        "ATTENTION",
        {
            "q": TensorInfo("q", "int8", (1, 8), 0.05, 0),
            "k": TensorInfo("k", "int8", (1, 8), 0.05, 0),
            "v": TensorInfo("v", "int8", (1, 8), 0.05, 0),
            "position": TensorInfo("position", "int32", ()),
            "kc": TensorInfo("kc", "int8", (4, 8), 0.05, 0, is_state=True),
            "vc": TensorInfo("vc", "int8", (4, 8), 0.05, 0, is_state=True),
        },
        TensorInfo("o", "int8", (1, 8), 0.05, 0),
        {"score_scale": 0.01},
        "att",
    )
    with pytest.raises(ShapeError, match="state tensor"):
        lower_graph(bad_shape, "tflm")


# ---------------------------------------------------------------------------------------------
# The arithmetic behind the C, against Python integers
# ---------------------------------------------------------------------------------------------


def _srdhm(a: int, b: int) -> int:
    """gemmlowp SRDHM from its definition (peer-facts 1)."""
    if a == b == -(2**31):
        return 2**31 - 1
    p = a * b
    q = p + (2**30 if p >= 0 else 1 - 2**30)
    return q // 2**31 if q >= 0 else -((-q) // 2**31)


def _rdbpot(x: int, e: int) -> int:
    """RoundingDivideByPOT: x / 2^e rounded half away from zero (peer-facts 1)."""
    mask = (1 << e) - 1
    return (x >> e) + (1 if (x & mask) > (mask >> 1) + (1 if x < 0 else 0) else 0)


@settings(max_examples=500, deadline=None)
@given(r=st.integers(0, 2**31 - 1), e=st.integers(0, 2**31 - 1), s=st.integers(1, 31))
def test_softmax_folded_rounding(r, e, s):
    """refq_softmax_s8_q: RDBPOT(SRDHM(r, e), s) = ((r e + 2^30 + 2^(30+s)) >> 32) >> (s - 1) for
    the non-negative reciprocal and exponential, without overflowing a uint64."""
    nudge = 2**30 + 2 ** (30 + s)
    assert r * e + nudge < 2**64
    assert _rdbpot(_srdhm(r, e), s) == ((r * e + nudge) >> 32) >> (s - 1)


@settings(max_examples=300, deadline=None)
@given(r=st.integers(0, 2**31 - 1), e=st.integers(0, 2**31 - 1), s=st.integers(32, 60))
def test_softmax_safe_zero_is_the_rounded_value(r, e, s):
    """Where the reference's exponent exceeds 31, the exact quotient SRDHM(r, e) / 2^s is below
    1/2: rounding it (half away from zero, as RDBPOT does) gives the 0 the safe variant writes."""
    v = _srdhm(r, e)
    assert 0 <= v < 2**31
    assert Fraction(v, 2**s) < Fraction(1, 2)


@settings(max_examples=300, deadline=None)
@given(total=st.integers(2**19, 2**45))
def test_softmax_sum_normalization(total):
    """The C's h (clz of the low word, or clz of the high word - 32) is 32 - bitlength(S), and
    the normalized sum lies in [2^31, 2^32), exact when S < 2^32, truncated above."""
    hi = total >> 32
    h = (32 - total.bit_length()) if hi == 0 else (32 - hi.bit_length()) - 32
    assert h == 32 - total.bit_length()
    normalized = (total << h) & 0xFFFFFFFF if h >= 0 else total >> -h
    assert 2**31 <= normalized < 2**32
    assert normalized == math.floor(Fraction(total) * Fraction(2) ** h)


@settings(max_examples=300, deadline=None)
@given(total=st.integers(-(2**40), 2**40), n=st.integers(1, 2**20))
def test_norm_mean_floor_division(total, n):
    """refq_norm: C's truncating quotient, lowered by one when q n > total, is floor(total / n),
    and the half-even step gives round_half_even(total / n) (Fraction)."""
    q = abs(total) // n * (1 if total >= 0 else -1)  # C99 '/' truncates toward zero
    if q * n > total:
        q -= 1
    assert q == math.floor(Fraction(total, n))
    twice_r = 2 * (total - q * n)
    if twice_r > n or (twice_r == n and q % 2 != 0):
        q += 1
    assert q == round(Fraction(total, n))  # Python rounds Fractions half to even


def _isqrt_bitwise(v: int) -> int:
    """The restoring square root of refq_norm.c.j2, step by step."""
    root, bit = 0, 1 << 62
    while bit > v:
        bit >>= 2
    while bit:
        if v >= root + bit:
            v -= root + bit
            root = (root >> 1) + bit
        else:
            root >>= 1
        bit >>= 2
    return root


@settings(max_examples=500, deadline=None)
@given(v=st.one_of(st.integers(0, 2**63 - 1), st.integers(0, 2**31).map(lambda k: k * k - 1)))
def test_norm_isqrt(v):
    """The C's bit-by-bit root is floor(sqrt(v)) for every int64 v >= 0 (and around squares)."""
    v = max(v, 0)
    assert _isqrt_bitwise(v) == math.isqrt(v)


@settings(max_examples=300, deadline=None)
@given(d=st.integers(4, 64), seed=st.integers(0, 2**32 - 1))
def test_attention_query_pairing(d, seed):
    """The DSP path stores q as (q0, q2), (q1, q3) per group of four (index
    (i & ~3) + ((i & 1) << 1) + ((i >> 1) & 1)); SMLAD with SXTB16 / SXTB16-ROR8 of each key word
    then sums q . k exactly (Python-int model of the instructions)."""
    rng = np.random.default_rng(seed)
    q = [int(v) for v in rng.integers(-255, 256, d)]
    k = [int(v) for v in rng.integers(-128, 128, d)]
    full = d & ~3
    qz = [0] * d
    for i in range(d):
        qz[(i & ~3) + ((i & 1) << 1) + ((i >> 1) & 1) if i < full else i] = q[i]
    acc = 0
    for i in range(0, full, 4):
        even, odd = (k[i], k[i + 2]), (k[i + 1], k[i + 3])  # SXTB16, SXTB16 ROR 8
        acc += even[0] * qz[i] + even[1] * qz[i + 1] + odd[0] * qz[i + 2] + odd[1] * qz[i + 3]
    acc += sum(qz[i] * k[i] for i in range(full, d))
    assert acc == sum(a * b for a, b in zip(q, k, strict=True))
