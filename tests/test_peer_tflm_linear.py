"""FULLY_CONNECTED, BATCH_MATMUL, QUANTIZE and DEQUANTIZE against the tflite-micro interpreter
(reference kernels), bit for bit on every element, under refq's ``tflm`` profile.

Also pins down which per-tensor FULLY_CONNECTED multiplier the installed wheel uses (double
product, not the float32 product of the TFLM source: the ``tflm-f32`` profile), on
accumulators chosen where the two disagree.
"""

from __future__ import annotations

import platform

import numpy as np
import pytest

import refq.fixedpoint as fp
from refq.errors import InvalidDataError
from refq.graph import Program
from refq.tflite.writer import write_tflite
from tests.linear_cases import (
    FC_KINDS,
    QUANTIZE_KINDS,
    bmm_case,
    bmm_multiplier_probe,
    fc_case,
    fc_probe,
    quantize_case,
    same,
)
from tests.peers import run_tflm

FC_CONFIGS = 200
BMM_CONFIGS = 250
QUANTIZE_CONFIGS = 40


@pytest.mark.parametrize("kind", FC_KINDS)
def test_tflm_fully_connected(kind: str, checked) -> None:
    rng = np.random.default_rng(100 + FC_KINDS.index(kind))
    elements = 0
    for _ in range(FC_CONFIGS):
        g, x = fc_case(rng, kind)
        want = run_tflm(write_tflite(g), [x])[0]
        got = Program(g, "tflm").run([x])[0]
        assert same(got, want.reshape(got.shape)), g.nodes[0].attrs
        elements += got.size
    checked(f"TFLM FULLY_CONNECTED {kind} (tflm)", FC_CONFIGS, elements)


def _differing_accumulators(real_a: float, real_b: float, rounding: str, bits: int = 8):
    """Accumulators whose outputs differ between the multipliers of ``real_a`` and ``real_b``:
    candidates next to every half-integer of the output range, filtered exactly."""
    ma, sa = fp.quantize_multiplier(real_a, rounding)
    mb, sb = fp.quantize_multiplier(real_b, rounding)
    lim = (1 << (bits - 1)) - 1
    ties = (np.arange(-lim, lim) + 0.5) / real_a
    acc = (np.floor(ties)[:, None] + np.arange(-2, 3)).astype(np.int64).ravel()
    acc = acc[np.abs(acc) < 2**31 - 1]
    ya = fp.multiply_by_quantized_multiplier(acc, ma, sa, rounding)
    yb = fp.multiply_by_quantized_multiplier(acc, mb, sb, rounding)
    return acc[(ya != yb) & (np.abs(ya) < lim)]


def test_tflm_per_tensor_multiplier_is_the_double_product(checked) -> None:
    """Per-tensor FC: the wheel forms double(s_in) * double(s_w) / double(s_out) (``tflm``), not
    double(float32(s_in * s_w)) / double(s_out) (``tflm-f32``): asserted on accumulators where
    the two multipliers give different outputs."""
    rng = np.random.default_rng(7)
    configs = elements = 0
    while configs < 60:
        s_in, s_w = np.float32(2.0 ** rng.uniform(-8, 0)), np.float32(2.0 ** rng.uniform(-8, -1))
        s_out = np.float32(s_in * s_w * 2.0 ** rng.uniform(0, 8))
        dd = float(s_in) * float(s_w) / float(s_out)
        f32 = float(np.float32(s_in * s_w)) / float(s_out)
        acc = _differing_accumulators(dd, f32, "double")[:64]
        if not acc.size:
            continue
        g, x = fc_probe(acc, s_in, np.array([s_w]), s_out)
        want = run_tflm(write_tflite(g), [x])[0]
        assert same(Program(g, "tflm").run([x])[0], want)
        assert not np.any(Program(g, "tflm-f32").run([x])[0] == want)
        configs += 1
        elements += acc.size
    checked(
        "TFLM per-tensor FC multiplier: double product (tflm), never tflm-f32", configs, elements
    )


def test_tflm_rejects_per_channel_int4(checked) -> None:
    """TFLM (this wheel) supports int4 weights per tensor only; refq also runs them per channel
    (checked against LiteRT and exact arithmetic)."""
    rng = np.random.default_rng(3)
    g, x = fc_case(rng, "per-channel")
    g.tensors["w"].dtype = "int4"
    g.tensors["w"].data = np.clip(g.tensors["w"].data, -8, 7)
    with pytest.raises(RuntimeError):
        run_tflm(write_tflite(g), [x])
    Program(g, "tflm").run([x])
    checked("TFLM refuses per-channel int4 FULLY_CONNECTED (documented)", 1)


@pytest.mark.parametrize("dtype", ["int8", "int16"])
def test_tflm_batch_matmul(dtype: str, checked) -> None:
    rng = np.random.default_rng(200 + (dtype == "int16"))
    elements = 0
    for _ in range(BMM_CONFIGS):
        g, xs = bmm_case(rng, dtype)
        want = run_tflm(write_tflite(g), xs, arena_size=1 << 20)[0]
        got = Program(g, "tflm").run(xs)[0]
        assert same(got, want.reshape(got.shape)), g.nodes[0].attrs
        elements += got.size
    checked(f"TFLM BATCH_MATMUL {dtype} (broadcast, adj_x/adj_y)", BMM_CONFIGS, elements)


@pytest.mark.parametrize("dtype", ["int8", "int16"])
def test_tflm_batch_matmul_multiplier_is_the_double_product(dtype: str, checked) -> None:
    """On multipliers whose double- and float32-product forms give different outputs, the wheel's
    BATCH_MATMUL follows the double product (``tflm``), never ``tflm-f32``."""
    rng = np.random.default_rng(21 + (dtype == "int16"))
    configs = 8 if dtype == "int16" else 3  # int8 probes are rarer to find
    for _ in range(configs):
        g, xs = bmm_multiplier_probe(rng, dtype)
        want = run_tflm(write_tflite(g), xs, arena_size=1 << 21)[0]
        assert same(Program(g, "tflm").run(xs)[0], want)
        assert not same(Program(g, "tflm-f32").run(xs)[0], want)
    checked(f"TFLM BATCH_MATMUL {dtype} multiplier: double product", configs, configs * 65536)


@pytest.mark.parametrize("kind", QUANTIZE_KINDS)
def test_tflm_quantize_dequantize(kind: str, checked) -> None:
    rng = np.random.default_rng(300 + QUANTIZE_KINDS.index(kind))
    elements = 0
    for _ in range(QUANTIZE_CONFIGS):
        g, x = quantize_case(rng, kind)
        want = run_tflm(write_tflite(g), [x])[0]
        got = Program(g, "tflm").run([x])[0]
        assert same(got, want), kind
        elements += got.size
    checked(f"TFLM {g.nodes[0].op} {kind}", QUANTIZE_CONFIGS, elements)


def test_tflm_quantize_outside_int32_is_refused(checked) -> None:
    """Where x / s leaves int32 (or is NaN), TFLM's static_cast<int32_t> is undefined; on x86
    it yields INT32_MIN, then INT32_MIN + zp wraps: qmin for zp >= 0, qmax for zp < 0, whatever
    the sign of x. refq raises InvalidDataError instead of returning a platform's accident."""
    from tests.linear_cases import Graph, Node, TensorInfo

    x = np.array([3e9, -3e9, np.inf, -np.inf, np.nan, 2.2e9], np.float32)
    for zp in (5, -5):
        t = {"x": TensorInfo("x", "float32", (6,)), "y": TensorInfo("y", "int8", (6,), 1.0, zp)}
        g = Graph(t, [Node("QUANTIZE", ("x",), ("y",))], ["x"], ["y"])
        got = run_tflm(write_tflite(g), [x])[0]
        if platform.machine() in ("x86_64", "AMD64"):
            assert np.all(got == (-128 if zp >= 0 else 127))
        for i in range(len(x)):
            with pytest.raises(InvalidDataError):
                Program(g, "tflm").run([x[i : i + 1].repeat(6)])
    checked("TFLM QUANTIZE outside int32 / NaN: peer UB documented, refq raises", 2, 12)
