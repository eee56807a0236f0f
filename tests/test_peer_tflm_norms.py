"""The TFLM-decomposed LayerNorm / RMSNorm graphs: refq's Program vs the tflite-micro interpreter.

Each case draws a random shape (rank 2 or 3, rows x n with n up to 256), input scale and zero
point, per-row centres and spreads of the int8 data, gamma / beta, epsilon and output
quantization from a seeded generator; the graph's intermediate quantization comes from a
separate calibration batch of the same distribution, and the inputs compared include rows from
outside it (uniform codes, constant rows). The whole chain (MEAN, SUB, SQUARED_DIFFERENCE, ADD,
RSQRT, MUL) must equal TFLM on every element under the ``tflm`` profile (int8 graphs, and int16
graphs with zero points 0), and LiteRT's reference kernels under ``litert-ref`` (int8: LiteRT's
int16 RSQRT interpolates a float table refq does not reproduce). refq's direct LAYER_NORM /
RMS_NORM ops have no TFLite counterpart: tests/test_kernels_norms.py checks them.
"""

from __future__ import annotations

import numpy as np
import pytest

from refq.errors import InvalidDataError, QuantSpecError, ShapeError, UnsupportedError
from refq.graph import Program
from refq.kernels.decomposed import layer_norm_graph, rms_norm_graph
from refq.tflite.writer import write_tflite
from tests.conftest import require_module
from tests.peers import run_litert, run_tflm

CASES = {"int8": 400, "int16": 150}
LITERT_CASES = 150


def logu(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.float32(np.exp(rng.uniform(np.log(lo), np.log(hi)))))


def draw_case(rng: np.random.Generator, kind: str, dtype: str = "int8"):
    """A random decomposed-norm graph and an input for it (see the module docstring)."""
    lead = (int(rng.integers(1, 7)),) if rng.random() < 0.7 else tuple(rng.integers(1, 4, 2))
    n = int(np.exp(rng.uniform(np.log(2), np.log(256))))
    shape = (*(int(d) for d in lead), n)
    rows = int(np.prod(lead))
    wide = dtype == "int16"
    lo, hi = (-32768, 32767) if wide else (-128, 127)
    unit = 256 if wide else 1  # codes per int8 code: the same real spread at 16 bits
    x_scale = logu(rng, 0.002, 0.5) / unit
    if wide:
        x_zp = 0
    else:
        x_zp = int(rng.integers(-40, 41)) if kind == "layer" else int(rng.integers(-8, 9))

    def codes(count: int) -> np.ndarray:
        centre = rng.normal(0, 30 * unit, (count, 1)) if kind == "layer" else x_zp
        spread = np.exp(rng.uniform(np.log(1), np.log(60 * unit), (count, 1)))
        return (centre + spread * rng.standard_normal((count, n))).round().clip(lo, hi)

    calibration = (codes(max(rows, 8)) - x_zp) * x_scale
    x = codes(rows)
    # Rows the calibration did not see: uniform codes, a constant row.
    if rows > 1 and rng.random() < 0.5:
        x[0] = rng.integers(lo, hi + 1, n)
    if rows > 2 and rng.random() < 0.3:
        x[-1] = int(rng.integers(lo, hi + 1))
    gamma = rng.normal(1, 0.5, n).astype(np.float32) if rng.random() < 0.9 else None
    beta = rng.normal(0, 0.5, n).astype(np.float32) if rng.random() < 0.8 else None
    eps = float(rng.choice([1e-6, 1e-5, 1e-3, 0.1]))
    g = np.ones(n) if gamma is None else gamma
    b = np.zeros(n) if beta is None else beta
    peak = 4 * float(np.abs(g).max()) + float(np.abs(b).max())
    out_scale = logu(rng, peak / 400, peak / 60) / unit
    out_zp = 0 if wide else int(rng.integers(-30, 31))
    common = dict(
        x_scale=x_scale,
        x_zero_point=x_zp,
        gamma=gamma,
        beta=beta,
        epsilon=eps,
        out_scale=out_scale,
        out_zero_point=out_zp,
        calibration=calibration,
        dtype=dtype,
    )
    build = layer_norm_graph if kind == "layer" else rms_norm_graph
    graph = build(shape, **common)
    return graph, x.reshape(shape).astype(dtype)


@pytest.mark.parametrize("dtype", ["int8", "int16"])
@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_decomposed_norm_matches_tflm(kind, dtype, checked) -> None:
    require_module("tflite_micro.python.tflite_micro.runtime")
    seed = {"layer": 2026, "rms": 2027}[kind] + (100 if dtype == "int16" else 0)
    rng = np.random.default_rng(seed)
    cases = CASES[dtype]
    elements = 0
    for case in range(cases):
        graph, x = draw_case(rng, kind, dtype)
        (ours,) = Program(graph, "tflm").run([x])
        (theirs,) = run_tflm(write_tflite(graph), [x])
        assert theirs.dtype == np.dtype(dtype)
        if not np.array_equal(ours, theirs):
            bad = np.flatnonzero(ours.reshape(-1) != theirs.reshape(-1))
            pytest.fail(
                f"case {case}: {bad.size} of {ours.size} elements differ, first at flat "
                f"{bad[0]}: refq {ours.reshape(-1)[bad[0]]} TFLM {theirs.reshape(-1)[bad[0]]}"
            )
        elements += x.size
    checked(f"TFLM decomposed {kind} norm graph ({dtype}) vs refq Program", cases, elements)


@pytest.mark.parametrize("kind", ["layer", "rms"])
def test_decomposed_norm_matches_litert_reference(kind, checked) -> None:
    require_module("ai_edge_litert.interpreter")
    rng = np.random.default_rng(3030 if kind == "layer" else 3031)
    elements = 0
    for case in range(LITERT_CASES):
        graph, x = draw_case(rng, kind)
        (ours,) = Program(graph, "litert-ref").run([x])
        (theirs,) = run_litert(write_tflite(graph), [x], reference=True)
        assert np.array_equal(ours, theirs), f"case {case}"
        elements += x.size
    checked(f"LiteRT reference decomposed {kind} norm graph (int8) vs refq", LITERT_CASES, elements)


def test_decomposed_graph_ops_are_the_tflm_chain() -> None:
    rng = np.random.default_rng(1)
    graph, _ = draw_case(rng, "layer")
    ops = [node.op for node in graph.nodes]
    assert ops[:7] == ["MEAN", "SUB", "SQUARED_DIFFERENCE", "MEAN", "ADD", "RSQRT", "MUL"]
    rms = rms_norm_graph(
        (2, 4),
        x_scale=0.1,
        x_zero_point=0,
        gamma=np.ones(4),
        epsilon=1e-5,
        out_scale=0.05,
        out_zero_point=0,
        calibration=np.ones((2, 4)),
    )
    assert [node.op for node in rms.nodes] == ["MUL", "MEAN", "ADD", "RSQRT", "MUL", "MUL"]


def test_decomposed_builder_errors() -> None:
    kw = dict(
        x_scale=0.1,
        x_zero_point=0,
        gamma=None,
        beta=None,
        epsilon=1e-5,
        out_scale=0.05,
        out_zero_point=0,
    )
    with pytest.raises(ShapeError, match="calibration"):
        layer_norm_graph((2, 4), calibration=np.ones((2, 5)), **kw)
    with pytest.raises(ShapeError, match="rank >= 2"):
        layer_norm_graph((4,), calibration=np.ones((2, 4)), **kw)
    with pytest.raises(InvalidDataError, match="NaN"):
        layer_norm_graph((2, 4), calibration=np.full((2, 4), np.nan), **kw)
    with pytest.raises(QuantSpecError, match="epsilon"):
        layer_norm_graph((2, 4), calibration=np.ones((2, 4)), **{**kw, "epsilon": 0.0})
    with pytest.raises(QuantSpecError, match="int16 input needs zero point 0, got 3"):
        rms_norm_graph(
            (2, 4), calibration=np.ones((2, 4)), **{**kw, "x_zero_point": 3, "dtype": "int16"}
        )
    with pytest.raises(UnsupportedError, match="'uint8'"):
        rms_norm_graph((2, 4), calibration=np.ones((2, 4)), **{**kw, "dtype": "uint8"})
    with pytest.raises(ShapeError, match="gamma needs 4"):
        rms_norm_graph((2, 4), calibration=np.ones((2, 4)), **{**kw, "gamma": np.ones(3)})
