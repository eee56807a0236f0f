"""Element-wise, reduction, activation, gather and shape kernels against the real peers.

Every case is a one-node graph whose shapes, scales, zero points, attributes and input codes come
from seeded generators (the peers choose nothing). refq's Program must equal the tflite-micro
interpreter under ``tflm`` and LiteRT 2.3's reference resolver under ``litert-ref`` on every
element; configurations a peer refuses are checked to be refused by refq too. Targeted tests
pin the places where the peers differ from each other or from their C++ sources: the multiplier
arithmetic of SUB / ADD (int16) and RSQRT, LiteRT's float tables for int8 TANH / LOGISTIC,
TFLite's measured sigmoid table, LiteRT's SUM.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import pytest

from refq import fixedpoint as fp
from refq.errors import InvalidDataError, QuantSpecError, RefqError, UnsupportedError
from refq.graph import Graph, Node, Program, TensorInfo
from refq.kernels.activations import SIGMOID_TABLE_Q16, rsqrt_multiplier
from refq.tflite.writer import write_tflite
from tests.peers import run_litert, run_tflm

RANGES = {"int8": (-128, 127), "int16": (-32768, 32767)}


# ---------------------------------------------------------------------------------------------
# Running the peers
# ---------------------------------------------------------------------------------------------


PEERS: dict[str, tuple[str, Callable[[bytes, Sequence[np.ndarray]], list[np.ndarray]]]] = {
    "tflm": ("tflm", run_tflm),
    "litert": ("litert-ref", run_litert),
}


def tensor(name, dtype, shape, scale=None, zp=0, data=None) -> TensorInfo:
    q = scale is not None
    return TensorInfo(
        name, dtype, tuple(shape), np.float32(scale) if q else None, zp if q else None, data=data
    )


def one_node(op: str, ins: Sequence[TensorInfo], outs: Sequence[TensorInfo], attrs=None) -> Graph:
    tensors = {t.name: t for t in (*ins, *outs)}
    return Graph(
        tensors,
        [Node(op, [t.name for t in ins], [t.name for t in outs], dict(attrs or {}))],
        [t.name for t in ins if t.data is None],
        [t.name for t in outs],
    )


class Tally:
    """Compare refq with one peer on many graphs; counts go to the ``checked`` fixture."""

    def __init__(self, peer: str) -> None:
        self.profile, self.run = PEERS[peer]
        self.peer = "TFLM" if peer == "tflm" else "LiteRT ref"
        self.cases = 0
        self.elements = 0

    def check(self, graph: Graph, inputs: Sequence[np.ndarray], label: str = "") -> np.ndarray:
        (ours,) = Program(graph, self.profile).run(list(inputs))
        (theirs,) = self.run(write_tflite(graph), list(inputs))
        assert theirs.dtype == ours.dtype, label
        assert theirs.size == ours.size, label
        if not np.array_equal(ours.reshape(-1), theirs.reshape(-1)):
            bad = np.flatnonzero(ours.reshape(-1) != theirs.reshape(-1))
            pytest.fail(
                f"{label} ({self.profile}): {bad.size} of {ours.size} elements differ, first at "
                f"flat {bad[0]}: refq {ours.reshape(-1)[bad[0]]}, {self.peer} "
                f"{theirs.reshape(-1)[bad[0]]}"
            )
        self.cases += 1
        self.elements += ours.size
        return ours

    def refused(self, graph: Graph, inputs: Sequence[np.ndarray], error: type[Exception]) -> None:
        """Both the peer and refq refuse the configuration."""
        with pytest.raises(RuntimeError):
            self.run(write_tflite(graph), list(inputs))
        with pytest.raises(error):
            Program(graph, self.profile).run(list(inputs))
        self.cases += 1

    def record(self, checked, what: str) -> None:
        assert self.cases > 0
        checked(f"{self.peer} {what} vs refq ({self.profile})", self.cases, self.elements)


def logu(rng: np.random.Generator, lo: float, hi: float) -> float:
    """A float32 scale, log-uniform in [lo, hi]."""
    return float(np.float32(np.exp(rng.uniform(np.log(lo), np.log(hi)))))


def codes(rng: np.random.Generator, dtype: str, shape) -> np.ndarray:
    lo, hi = RANGES[dtype]
    return rng.integers(lo, hi + 1, shape).astype(dtype)


def rand_shape(rng: np.random.Generator, max_rank: int, max_dim: int, min_rank: int = 1):
    rank = int(rng.integers(min_rank, max_rank + 1))
    return tuple(int(d) for d in rng.integers(1, max_dim + 1, rank))


def partner_shape(rng: np.random.Generator, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape that broadcasts against ``shape``: some leading dims dropped, some set to 1."""
    if rng.random() < 0.35:
        return shape
    drop = int(rng.integers(0, len(shape) + 1))
    return tuple(1 if rng.random() < 0.4 else d for d in shape[drop:])


# ---------------------------------------------------------------------------------------------
# ADD, SUB, MUL, SQUARED_DIFFERENCE
# ---------------------------------------------------------------------------------------------

BINARY_CASES = 400


def draw_binary(rng: np.random.Generator, op: str, dtype: str):
    shape = rand_shape(rng, 6, 5)
    other = partner_shape(rng, shape)
    s1, s2 = (shape, other) if rng.random() < 0.5 else (other, shape)
    wide = dtype == "int16"
    lo, hi = RANGES[dtype]
    sc1, sc2 = logu(rng, 1e-4, 1.0), logu(rng, 1e-4, 1.0)
    if rng.random() < 0.15:
        sc2 = sc1  # equal input scales: the multipliers are exactly 1/2
    if op in ("ADD", "SUB"):
        so = logu(rng, max(sc1, sc2) / 4, max(sc1, sc2) * 8)
    elif op == "MUL":
        so = logu(rng, sc1 * sc2 / 2, sc1 * sc2 * (2.0**9 if not wide else 4.0))
    else:
        so = logu(rng, max(sc1, sc2) ** 2 * 4, max(sc1, sc2) ** 2 * 2.0 ** (14 if wide else 12))
    zero = wide and op in ("MUL", "SQUARED_DIFFERENCE")
    zps = [
        0 if zero or (wide and rng.random() < 0.75) else int(rng.integers(lo, hi + 1)) // 2
        for _ in range(3)
    ]
    if op == "SQUARED_DIFFERENCE":
        attrs = {}
    else:
        attrs = {"activation": str(rng.choice(["NONE", "NONE", "RELU", "RELU6", "RELU_N1_TO_1"]))}
    graph = one_node(
        op,
        [tensor("x1", dtype, s1, sc1, zps[0]), tensor("x2", dtype, s2, sc2, zps[1])],
        [tensor("y", dtype, np.broadcast_shapes(s1, s2), so, zps[2])],
        attrs,
    )
    return graph, [codes(rng, dtype, s1), codes(rng, dtype, s2)], zps


@pytest.mark.parametrize("dtype", ["int8", "int16"])
@pytest.mark.parametrize("op", ["ADD", "SUB", "MUL", "SQUARED_DIFFERENCE"])
def test_binary_ops_match_tflm_and_litert(op, dtype, checked) -> None:
    """Random shapes up to rank 6 with broadcasting either way, scales, zero points (int16:
    zero or not, where TFLM allows it) and fused activations."""
    rng = np.random.default_rng(
        ["ADD", "SUB", "MUL", "SQUARED_DIFFERENCE"].index(op) * 10 + len(dtype)
    )
    tflm, lite = Tally("tflm"), Tally("litert")
    for case in range(BINARY_CASES):
        graph, inputs, zps = draw_binary(rng, op, dtype)
        tflm.check(graph, inputs, f"{op} {dtype} case {case}")
        if dtype == "int16" and op == "SQUARED_DIFFERENCE":
            lite.refused(graph, inputs, UnsupportedError)  # LiteRT has no int16 kernel
        elif dtype == "int16" and any(zps):
            lite.refused(graph, inputs, QuantSpecError)  # LiteRT: int16 zero points must be 0
        else:
            lite.check(graph, inputs, f"{op} {dtype} case {case}")
    tflm.record(checked, f"{op} {dtype}")
    lite.record(checked, f"{op} {dtype}")


def test_add_sub_multipliers_are_double_in_the_wheel(checked) -> None:
    """The TFLM C++ source forms SUB's multipliers in float32 (profile ``tflm-f32``), the wheel
    in double: on int16 configs where the two differ, TFLM and LiteRT equal the double form."""
    rng = np.random.default_rng(77)
    tflm, lite = Tally("tflm"), Tally("litert")
    differ = 0
    for _case in range(150):
        shape = (512,)
        sc1, sc2 = logu(rng, 1e-5, 1e-2), logu(rng, 1e-5, 1e-2)
        so = logu(rng, max(sc1, sc2) / 2, max(sc1, sc2) * 4)
        for op in ("SUB", "ADD"):
            graph = one_node(
                op,
                [tensor("x1", "int16", shape, sc1), tensor("x2", "int16", shape, sc2)],
                [tensor("y", "int16", shape, so)],
                {"activation": "NONE"},
            )
            x = [codes(rng, "int16", shape), codes(rng, "int16", shape)]
            ours = tflm.check(graph, x, f"{op} double multipliers")
            lite.check(graph, x, f"{op} double multipliers")
            if op == "SUB":
                (f32,) = Program(graph, "tflm-f32").run(x)
                differ += not np.array_equal(f32, ours)
    assert differ >= 10, "the float32 and double multipliers never disagreed: test is vacuous"
    tflm.record(checked, f"int16 ADD/SUB (SUB float32-form disagrees on {differ} configs)")
    lite.record(checked, "int16 ADD/SUB double multipliers")


# ---------------------------------------------------------------------------------------------
# MEAN, SUM
# ---------------------------------------------------------------------------------------------

REDUCE_CASES = 300


def draw_reduce(rng: np.random.Generator, op: str, dtype: str):
    shape = rand_shape(rng, 5, 6)
    rank = len(shape)
    axes = [int(a) for a in rng.integers(-rank, rank, int(rng.integers(1, rank + 2)))]
    keep = bool(rng.integers(0, 2))
    lo, hi = RANGES[dtype]
    s_in = logu(rng, 1e-4, 1.0)
    wide = dtype == "int16"
    zi = 0 if wide else int(rng.integers(lo, hi + 1))
    if op == "MEAN" and rng.random() < 0.3:
        s_out, zo = s_in, zi  # the equal-quantization case older TFLM sources special-cased
    else:
        s_out = s_in * float(2.0 ** rng.uniform(-3, 3 if op == "MEAN" else 9))
        zo = 0 if wide else int(rng.integers(lo, hi + 1))
    reduced = {a % rank for a in axes}
    out_shape = tuple(
        1 if i in reduced else d for i, d in enumerate(shape) if keep or i not in reduced
    )
    graph = one_node(
        op,
        [
            tensor("x", dtype, shape, s_in, zi),
            tensor("axes", "int32", (len(axes),), data=np.array(axes, np.int32)),
        ],
        [tensor("y", dtype, out_shape, s_out, zo)],
        {"keep_dims": keep},
    )
    return graph, [codes(rng, dtype, shape)]


@pytest.mark.parametrize("dtype", ["int8", "int16"])
def test_mean_matches_tflm_and_litert(dtype, checked) -> None:
    """Ranks 1-5, 1 to rank+1 axes (negative, duplicated), keep_dims, equal and unequal
    quantization: always QuantizedMeanOrSum in the wheel and in LiteRT."""
    rng = np.random.default_rng(300 + len(dtype))
    tflm, lite = Tally("tflm"), Tally("litert")
    for case in range(REDUCE_CASES):
        graph, x = draw_reduce(rng, "MEAN", dtype)
        tflm.check(graph, x, f"MEAN {dtype} case {case}")
        lite.check(graph, x, f"MEAN {dtype} case {case}")
    tflm.record(checked, f"MEAN {dtype}")
    lite.record(checked, f"MEAN {dtype}")


def test_mean_int32_wrap_and_shift_clamp(checked) -> None:
    """Long int16 rows whose code sum leaves int32 (the peer wraps), and a tiny s_in / s_out
    where the 1/n folding is clamped by ``31 + shift``."""
    rng = np.random.default_rng(31)
    tflm, lite = Tally("tflm"), Tally("litert")
    n = 70_000
    x = np.full((2, n), 32767, np.int16)
    x[1] = -32768
    x[:, :50] = rng.integers(-32768, 32768, (2, 50))
    for s_ratio in (2.0**-4, 2.0**-12):
        graph = one_node(
            "MEAN",
            [
                tensor("x", "int16", x.shape, 0.01),
                tensor("axes", "int32", (1,), data=np.array([1], np.int32)),
            ],
            [tensor("y", "int16", (2,), 0.01 / s_ratio)],
        )
        tflm.check(graph, [x], "MEAN int16 wrap")
        lite.check(graph, [x], "MEAN int16 wrap")
    for case in range(20):
        shape = (3, int(rng.integers(2**12, 2**14)))
        s_in = logu(rng, 1e-3, 1e-2)
        graph = one_node(
            "MEAN",
            [
                tensor("x", "int8", shape, s_in, 5),
                tensor("axes", "int32", (1,), data=np.array([-1], np.int32)),
            ],
            [tensor("y", "int8", (3,), s_in * float(2.0 ** rng.uniform(18, 24)), -3)],
        )
        xx = codes(rng, "int8", shape)
        tflm.check(graph, [xx], f"MEAN clamp case {case}")
        lite.check(graph, [xx], f"MEAN clamp case {case}")
    for case in range(20):  # the 4-D axes {1, 2} keep_dims case older TFLM special-cased
        shape = tuple(int(d) for d in rng.integers(1, 7, 4))
        s, z = logu(rng, 1e-3, 1.0), int(rng.integers(-128, 128))
        axes = np.array([1, 2] if case % 2 else [2, 1], np.int32)
        graph = one_node(
            "MEAN",
            [tensor("x", "int8", shape, s, z), tensor("axes", "int32", (2,), data=axes)],
            [tensor("y", "int8", (shape[0], 1, 1, shape[3]), s, z)],
            {"keep_dims": True},
        )
        xx = codes(rng, "int8", shape)
        tflm.check(graph, [xx], f"MEAN 4-D axes 1, 2 case {case}")
        lite.check(graph, [xx], f"MEAN 4-D axes 1, 2 case {case}")
    tflm.record(checked, "MEAN int32 wrap / shift clamp / 4-D axes {1, 2}")
    lite.record(checked, "MEAN int32 wrap / shift clamp / 4-D axes {1, 2}")


@pytest.mark.parametrize("dtype", ["int8", "int16"])
def test_sum_matches_tflm_and_litert_disagrees(dtype, checked) -> None:
    """SUM equals TFLM; LiteRT's reference SUM gives other values (refq refuses litert-ref)."""
    rng = np.random.default_rng(400 + len(dtype))
    tflm = Tally("tflm")
    litert_differs = 0
    for case in range(REDUCE_CASES // 2):
        graph, x = draw_reduce(rng, "SUM", dtype)
        ours = tflm.check(graph, x, f"SUM {dtype} case {case}")
        (lite,) = run_litert(write_tflite(graph), x)
        litert_differs += not np.array_equal(lite.reshape(-1), ours.reshape(-1))
        with pytest.raises(UnsupportedError, match="SUM"):
            Program(graph, "litert-ref")
    assert litert_differs > REDUCE_CASES // 4, "LiteRT's SUM now agrees: revisit litert-ref SUM"
    tflm.record(checked, f"SUM {dtype} (LiteRT differs on {litert_differs} configs)")


# ---------------------------------------------------------------------------------------------
# RSQRT, TANH, LOGISTIC, HARD_SWISH
# ---------------------------------------------------------------------------------------------

ACT_CASES = 250
ALL_INT8 = np.arange(-128, 128, dtype=np.int8)


def int16_inputs(rng: np.random.Generator, count: int = 2048) -> np.ndarray:
    x = rng.integers(-32768, 32768, count)
    x[:8] = [-32768, -32767, -1, 0, 1, 2, 32766, 32767]
    x[8:400] = rng.integers(-600, 600, 392)  # the steep part of tanh / logistic at fine scales
    return x.astype(np.int16)


@pytest.mark.parametrize("dtype", ["int8", "int16"])
def test_rsqrt_matches_tflm(dtype, checked) -> None:
    """Every valid code (int8) or 2048 random non-negative codes (int16); int8 also LiteRT."""
    rng = np.random.default_rng(500 + len(dtype))
    tflm, lite = Tally("tflm"), Tally("litert")
    for case in range(ACT_CASES):
        if dtype == "int8":
            zi, zo = int(rng.integers(-128, 120)), int(rng.integers(-128, 128))
            x = ALL_INT8[zi <= ALL_INT8]
        else:
            zi = zo = 0
            x = np.minimum(np.abs(int16_inputs(rng).astype(np.int64)), 32767).astype(np.int16)
        s_in = logu(rng, 1e-4, 4.0)
        s_out = logu(rng, 1e-3, 1.0) / (math.sqrt(s_in) * (1 if dtype == "int8" else 64))
        graph = one_node(
            "RSQRT",
            [tensor("x", dtype, x.shape, s_in, zi)],
            [tensor("y", dtype, x.shape, s_out, zo)],
        )
        tflm.check(graph, [x], f"RSQRT {dtype} case {case}")
        if dtype == "int8":
            lite.check(graph, [x], f"RSQRT {dtype} case {case}")
        else:
            with pytest.raises(UnsupportedError):  # LiteRT interpolates a float table
                Program(graph, "litert-ref")
    tflm.record(checked, f"RSQRT {dtype}")
    if dtype == "int8":
        lite.record(checked, "RSQRT int8")


def test_rsqrt_multiplier_double_in_tflm_float32_in_litert(checked) -> None:
    """``1 / (sqrt(s_in) * s_out)``: the tflite-micro wheel forms the product in double, LiteRT
    (and the TFLM source) as ``sqrtf(s_in) * s_out`` in float32. A vectorized seeded search finds
    configs where the two multipliers give different outputs; each peer equals its own form."""
    rng = np.random.default_rng(8)
    k = 40_000
    s_in = np.exp(rng.uniform(np.log(1e-3), np.log(4.0), k)).astype(np.float32)
    s_out = np.exp(rng.uniform(np.log(1e-3), np.log(0.2), k)).astype(np.float32)
    m64, e64 = fp.quantize_multipliers(
        1.0 / (np.sqrt(s_in.astype(np.float64)) * s_out.astype(np.float64))
    )
    m32, e32 = fp.quantize_multipliers(1.0 / (np.sqrt(s_in) * s_out).astype(np.float64))
    cand = np.flatnonzero((m64 != m32) | (e64 != e32))
    values = np.arange(1, 256, dtype=np.int64)
    found = []
    for chunk in np.array_split(cand, max(1, cand.size // 2000)):
        ok = (e64[chunk] >= -11) & (e32[chunk] >= -11)
        chunk = chunk[ok]
        a = fp.rsqrt_fixed_point(values[None, :], m64[chunk, None], e64[chunk, None])
        b = fp.rsqrt_fixed_point(values[None, :], m32[chunk, None], e32[chunk, None])
        a = np.clip(a.astype(np.int64) - 128, -128, 127)
        b = np.clip(b.astype(np.int64) - 128, -128, 127)
        found.extend(int(i) for i in chunk[(a != b).any(axis=1)])
        if len(found) >= 12:
            break
    assert len(found) >= 3, "no discriminating RSQRT config found: test is vacuous"
    tflm, lite = Tally("tflm"), Tally("litert")
    x = np.arange(-128, 128, dtype=np.int8)
    for i in found[:12]:
        graph = one_node(
            "RSQRT",
            [tensor("x", "int8", x.shape, float(s_in[i]), -128)],
            [tensor("y", "int8", x.shape, float(s_out[i]), -128)],
        )
        ours_tflm = tflm.check(graph, [x], f"RSQRT search {i}")
        ours_lite = lite.check(graph, [x], f"RSQRT search {i}")
        assert not np.array_equal(ours_tflm, ours_lite)
        assert rsqrt_multiplier(float(s_in[i]), float(s_out[i]), float32_product=True) == (
            int(m32[i]),
            int(e32[i]),
        )
    tflm.record(checked, "RSQRT multiplier-form configs")
    lite.record(checked, "RSQRT multiplier-form configs")


@pytest.mark.parametrize("op", ["TANH", "LOGISTIC"])
def test_tanh_logistic_int8(op, checked) -> None:
    """All 256 codes: TFLM's gemmlowp fixed point (standard output quantization) and LiteRT's
    float32 table (TANH: random output quantization too), input scales 2^-8 .. 2."""
    rng = np.random.default_rng(600 + len(op))
    std = (1 / 128, 0) if op == "TANH" else (1 / 256, -128)
    tflm, lite = Tally("tflm"), Tally("litert")
    for case in range(ACT_CASES):
        s_in, zi = logu(rng, 2.0**-8, 2.0), int(rng.integers(-128, 128))
        graph = one_node(
            op, [tensor("x", "int8", (256,), s_in, zi)], [tensor("y", "int8", (256,), *std)]
        )
        tflm.check(graph, [ALL_INT8], f"{op} case {case}")
        lite.check(graph, [ALL_INT8], f"{op} case {case}")
        if op == "TANH":
            so, zo = logu(rng, 1 / 512, 1 / 16), int(rng.integers(-40, 41))
            free = one_node(
                op, [tensor("x", "int8", (256,), s_in, zi)], [tensor("y", "int8", (256,), so, zo)]
            )
            lite.check(free, [ALL_INT8], f"{op} free output case {case}")
            with pytest.raises(QuantSpecError, match="scale"):  # TFLM would ignore it
                Program(free, "tflm")
    tflm.record(checked, f"{op} int8")
    lite.record(checked, f"{op} int8")


@pytest.mark.parametrize("op", ["TANH", "LOGISTIC"])
def test_tanh_logistic_int16(op, checked) -> None:
    """2048 codes per case; input scales around 2^-12 (one in five an exact power of two, the
    multiplier-free path), output 2^-15; TFLM and LiteRT compute the same."""
    rng = np.random.default_rng(700 + len(op))
    tflm, lite = Tally("tflm"), Tally("litert")
    for case in range(ACT_CASES):
        if case % 5 == 0:
            s_in = 2.0 ** int(rng.integers(-15, -9))
        else:
            s_in = logu(rng, 2.0**-17, 2.0**-8)
        x = int16_inputs(rng)
        graph = one_node(
            op, [tensor("x", "int16", x.shape, s_in)], [tensor("y", "int16", x.shape, 2.0**-15)]
        )
        tflm.check(graph, [x], f"{op} int16 case {case}")
        lite.check(graph, [x], f"{op} int16 case {case}")
    tflm.record(checked, f"{op} int16")
    lite.record(checked, f"{op} int16")


def test_sigmoid_table_is_the_peers(checked) -> None:
    """Measure TFLite's sigmoid table through int16 TANH: with s_in = 1/6144 the input is
    rescaled to v = 2x, and x = 128 i gives T[i] - 2^15; x = 128 * 254 + 127 gives T[254] +
    (T[255] - T[254]) for the small last step."""
    s_in = float(np.float32(1 / 6144))
    x = np.array([*range(0, 128 * 256, 128), 128 * 254 + 127], dtype=np.int16)
    graph = one_node(
        "TANH", [tensor("x", "int16", x.shape, s_in)], [tensor("y", "int16", x.shape, 2.0**-15)]
    )
    for runner in (run_tflm, run_litert):
        (y,) = runner(write_tflite(graph), [x])
        y = y.astype(np.int64) + 32768
        measured = [*y[:255].tolist(), int(y[256])]
        assert measured == list(SIGMOID_TABLE_Q16)
    rounded = np.round(65536 / (1 + np.exp(-np.arange(256) / 24.0)))
    assert int((np.array(SIGMOID_TABLE_Q16) != rounded).sum()) == 44
    checked("TFLM / LiteRT sigmoid table entries vs refq's table", 2, 512)


def test_hard_swish_int8(checked) -> None:
    rng = np.random.default_rng(800)
    tflm, lite = Tally("tflm"), Tally("litert")
    for case in range(ACT_CASES):
        s_in, zi = logu(rng, 1e-3, 0.5), int(rng.integers(-128, 128))
        s_out, zo = s_in * float(2.0 ** rng.uniform(-1.5, 1.5)), int(rng.integers(-128, 128))
        graph = one_node(
            "HARD_SWISH",
            [tensor("x", "int8", (256,), s_in, zi)],
            [tensor("y", "int8", (256,), s_out, zo)],
        )
        tflm.check(graph, [ALL_INT8], f"HARD_SWISH case {case}")
        lite.check(graph, [ALL_INT8], f"HARD_SWISH case {case}")
    tflm.record(checked, "HARD_SWISH int8")
    lite.record(checked, "HARD_SWISH int8")


# ---------------------------------------------------------------------------------------------
# GATHER, EMBEDDING_LOOKUP, CONCATENATION, TRANSPOSE, RESHAPE
# ---------------------------------------------------------------------------------------------

MOVE_CASES = 200


def test_gather(checked) -> None:
    """Random rank, axis (negative too), batch_dims and index shape; int8 on both peers, int16
    on LiteRT (TFLM has no int16 GATHER)."""
    rng = np.random.default_rng(900)
    tflm, lite = Tally("tflm"), Tally("litert")
    for case in range(MOVE_CASES):
        dtype = "int8" if case % 3 else "int16"
        shape = rand_shape(rng, 4, 5)
        rank = len(shape)
        axis = int(rng.integers(-rank, rank))
        bd = int(rng.integers(0, axis % rank + 1))
        ishape = (*shape[:bd], *rand_shape(rng, 2, 4, min_rank=0 if bd else 1))
        idx = rng.integers(0, shape[axis], ishape).astype(np.int32)
        a = axis % rank
        out = (*shape[:a], *ishape[bd:], *shape[a + 1 :])
        graph = one_node(
            "GATHER",
            [tensor("x", dtype, shape, 0.02, 3), tensor("i", "int32", ishape)],
            [tensor("y", dtype, out, 0.02, 3)],
            {"axis": axis, "batch_dims": bd},
        )
        x = [codes(rng, dtype, shape), idx]
        if dtype == "int8":
            tflm.check(graph, x, f"GATHER case {case}")
        lite.check(graph, x, f"GATHER case {case}")
    bad = one_node(
        "GATHER",
        [tensor("x", "int8", (4, 3), 0.1), tensor("i", "int32", (2,))],
        [tensor("y", "int8", (2, 3), 0.1)],
    )
    for index in (-1, 4):
        x = [codes(rng, "int8", (4, 3)), np.array([0, index], np.int32)]
        for t in (tflm, lite):
            t.refused(bad, x, InvalidDataError)
    tflm.record(checked, "GATHER int8")
    lite.record(checked, "GATHER int8/int16")


@pytest.mark.parametrize("out_dtype", ["int8", "float32"])
def test_embedding_lookup(out_dtype, checked) -> None:
    """int8 rows copied, or dequantized to float32 (TFLM's hybrid path) bit for bit."""
    rng = np.random.default_rng(950 + len(out_dtype))
    tflm, lite = Tally("tflm"), Tally("litert")
    for case in range(MOVE_CASES):
        rows = int(rng.integers(1, 40))
        vshape = (rows, *rand_shape(rng, 2, 6))
        n = int(rng.integers(1, 12))
        s = logu(rng, 1e-3, 1.0)
        values = codes(rng, "int8", vshape)
        ids = rng.integers(0, rows, n).astype(np.int32)
        out_q = (s, 0) if out_dtype == "int8" else (None, 0)
        graph = one_node(
            "EMBEDDING_LOOKUP",
            [tensor("ids", "int32", (n,)), tensor("v", "int8", vshape, s, 0, data=values)],
            [tensor("y", out_dtype, (n, *vshape[1:]), *out_q)],
        )
        tflm.check(graph, [ids], f"EMBEDDING_LOOKUP case {case}")
        lite.check(graph, [ids], f"EMBEDDING_LOOKUP case {case}")
    tflm.record(checked, f"EMBEDDING_LOOKUP int8 -> {out_dtype}")
    lite.record(checked, f"EMBEDDING_LOOKUP int8 -> {out_dtype}")


def test_concatenation_transpose_reshape(checked) -> None:
    rng = np.random.default_rng(990)
    tallies = {op: (Tally("tflm"), Tally("litert")) for op in ("CONCAT", "TRANSPOSE", "RESHAPE")}
    for case in range(MOVE_CASES):
        dtype = "int8" if case % 2 else "int16"
        s, zp = logu(rng, 1e-3, 1.0), (int(rng.integers(-100, 100)) if dtype == "int8" else 0)
        # CONCATENATION: up to 10 inputs of rank <= 4 (TFLM's limits), negative axes.
        base = list(rand_shape(rng, 4, 4))
        axis = int(rng.integers(-len(base), len(base)))
        shapes = []
        for _ in range(int(rng.integers(1, 11))):
            sh = list(base)
            sh[axis] = int(rng.integers(1, 4))
            shapes.append(tuple(sh))
        xs = [codes(rng, dtype, sh) for sh in shapes]
        out = np.concatenate(xs, axis=axis).shape
        graph = one_node(
            "CONCATENATION",
            [tensor(f"x{i}", dtype, sh, s, zp) for i, sh in enumerate(shapes)],
            [tensor("y", dtype, out, s, zp)],
            {"axis": axis, "activation": "NONE"},
        )
        for t in tallies["CONCAT"]:
            t.check(graph, xs, f"CONCATENATION case {case}")
        # TRANSPOSE: rank <= 5 (TFLM's limit).
        shape = rand_shape(rng, 5, 4)
        perm = rng.permutation(len(shape)).astype(np.int32)
        graph = one_node(
            "TRANSPOSE",
            [tensor("x", dtype, shape, s, zp), tensor("perm", "int32", perm.shape, data=perm)],
            [tensor("y", dtype, tuple(shape[i] for i in perm), s, zp)],
        )
        x = codes(rng, dtype, shape)
        for t in tallies["TRANSPOSE"]:
            t.check(graph, [x], f"TRANSPOSE case {case}")
        # RESHAPE to a random factorization, with one -1 in the shape input.
        new = list(rand_shape(rng, 4, 4))
        size = int(np.prod(new))
        old = (size,) if rng.random() < 0.5 else tuple(reversed(new))
        spec = list(new)
        spec[int(rng.integers(0, len(spec)))] = -1
        graph = one_node(
            "RESHAPE",
            [
                tensor("x", dtype, old, s, zp),
                tensor("shape", "int32", (len(spec),), data=np.array(spec, np.int32)),
            ],
            [tensor("y", dtype, tuple(new), s, zp)],
        )
        x = codes(rng, dtype, old)
        for t in tallies["RESHAPE"]:
            t.check(graph, [x], f"RESHAPE case {case}")
    # Both peers refuse to concatenate differently quantized int8 inputs (no requantization).
    mixed = one_node(
        "CONCATENATION",
        [tensor("a", "int8", (2, 3), 0.1, 3), tensor("b", "int8", (2, 4), 0.2, -5)],
        [tensor("y", "int8", (2, 7), 0.1, 3)],
        {"axis": 1, "activation": "NONE"},
    )
    xs = [codes(rng, "int8", (2, 3)), codes(rng, "int8", (2, 4))]
    for t in tallies["CONCAT"]:
        t.refused(mixed, xs, QuantSpecError)
    for op, (t, lt) in tallies.items():
        t.record(checked, f"{op} int8/int16")
        lt.record(checked, f"{op} int8/int16")


def test_rsqrt_negative_input_fails_like_tflm() -> None:
    graph = one_node(
        "RSQRT", [tensor("x", "int8", (3,), 0.1, 5)], [tensor("y", "int8", (3,), 0.1, 0)]
    )
    x = np.array([10, 4, 6], np.int8)
    with pytest.raises(RuntimeError):
        run_tflm(write_tflite(graph), [x])
    with pytest.raises(InvalidDataError, match="code 4 at flat index 1"):
        Program(graph, "tflm").run([x])
    assert issubclass(InvalidDataError, RefqError)
