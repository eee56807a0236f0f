"""Per-channel int8 quantize / dequantize: refq vs onnxruntime, and int4 pack / unpack throughput.

Run:  .venv/bin/python bench/bench_quantize.py [--rows 4096] [--cols 4096] [--repeat 7]

Both sides run in this process on the same data; each timing is the best of ``--repeat``
runs (after one warm-up run, which also loads refq's cached Numba kernels). The script asserts
that refq's codes and floats equal onnxruntime's bit for bit before printing any ratio.
onnxruntime reuses output memory from its arena; refq is timed both allocating a fresh output
and writing into a reused one (``out=``), since a fresh 64 MB array costs page faults.
Target (issue 2): refq within 2x of onnxruntime.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from bench.timing import best_of
from refq.packing import pack_bits, unpack_bits
from refq.quantize import dequantize, quantize
from refq.spec import PerAxis, QuantParams, QuantSpec


def best_of_interleaved(fns: list[Callable[[], object]], repeat: int) -> list[float]:
    """Best time of each function, running them in turn each round so that all of them see
    the same machine load (the bench machine is shared)."""
    for fn in fns:
        fn()  # warm-up
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def ort_sessions(rows: int, cols: int, scale: np.ndarray, zp: np.ndarray, threads: int = 0):
    """QuantizeLinear / DequantizeLinear sessions; ``threads=0`` is ORT's default pool."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    def session(op: str, in_type: int, out_type: int):
        node = helper.make_node(op, ["x", "s", "z"], ["y"], axis=0)
        graph = helper.make_graph(
            [node],
            op,
            [helper.make_tensor_value_info("x", in_type, [rows, cols])],
            [helper.make_tensor_value_info("y", out_type, [rows, cols])],
            initializer=[numpy_helper.from_array(scale, "s"), numpy_helper.from_array(zp, "z")],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
        model.ir_version = 10
        onnx.checker.check_model(model)
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        opts.intra_op_num_threads = threads
        return ort.InferenceSession(
            model.SerializeToString(), opts, providers=["CPUExecutionProvider"]
        )

    q = session("QuantizeLinear", TensorProto.FLOAT, TensorProto.INT8)
    dq = session("DequantizeLinear", TensorProto.INT8, TensorProto.FLOAT)
    return q, dq


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4096)
    ap.add_argument("--cols", type=int, default=4096)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    rows, cols, repeat = args.rows, args.cols, args.repeat
    n = rows * cols

    import onnxruntime as ort

    rng = np.random.default_rng(2024)
    x = (rng.standard_normal((rows, cols)) * 3.0).astype(np.float32)
    scale = (rng.random(rows) * 0.05 + 0.01).astype(np.float32)
    zp = rng.integers(-20, 21, rows).astype(np.int8)
    params = QuantParams(scale, zp, QuantSpec("int8", granularity=PerAxis(0)), name="x")
    q_sess, dq_sess = ort_sessions(rows, cols, scale, zp)
    q_sess1, dq_sess1 = ort_sessions(rows, cols, scale, zp, threads=1)

    q_refq = quantize(x, params)
    q_ort = q_sess.run(None, {"x": x})[0]
    assert np.array_equal(q_refq, q_ort), "quantize: refq != onnxruntime"
    d_refq = dequantize(q_refq, params)
    d_ort = dq_sess.run(None, {"x": q_ort})[0]
    assert np.array_equal(d_refq.view(np.uint32), d_ort.view(np.uint32)), "dequantize differs"

    q_buf = np.empty_like(q_refq)
    d_buf = np.empty_like(d_refq)
    assert np.array_equal(quantize(x, params, out=q_buf), q_ort)
    assert np.array_equal(
        dequantize(q_refq, params, out=d_buf).view(np.uint32), d_ort.view(np.uint32)
    )

    t_q_refq, t_q_refq_out, t_q_ort, t_q_ort1 = best_of_interleaved(
        [
            lambda: quantize(x, params),
            lambda: quantize(x, params, out=q_buf),
            lambda: q_sess.run(None, {"x": x}),
            lambda: q_sess1.run(None, {"x": x}),
        ],
        repeat,
    )
    t_dq_refq, t_dq_refq_out, t_dq_ort, t_dq_ort1 = best_of_interleaved(
        [
            lambda: dequantize(q_refq, params),
            lambda: dequantize(q_refq, params, out=d_buf),
            lambda: dq_sess.run(None, {"x": q_ort}),
            lambda: dq_sess1.run(None, {"x": q_ort}),
        ],
        repeat,
    )

    codes4 = rng.integers(-8, 8, n).astype(np.int8)
    packed = pack_bits(codes4, 4)
    assert np.array_equal(unpack_bits(packed, n, 4, signed=True), codes4)
    t_pack = best_of(lambda: pack_bits(codes4, 4), repeat)
    t_unpack = best_of(lambda: unpack_bits(packed, n, 4, signed=True), repeat)

    print(f"refq quantize benchmark: {rows} x {cols} float32 = {n / 1e6:.1f} M values")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"onnxruntime {ort.__version__}, {os.cpu_count()} CPUs ({platform.machine()})"
    )
    print("bit-exact: quantize codes and dequantized floats equal onnxruntime's (asserted)")
    print()
    print("ORT: default thread pool (one thread per core); ORT 1t: intra_op_num_threads=1.")
    print("refq runs single-threaded. Timings: best of --repeat, all variants interleaved.")
    print()
    head = f"{'operation':48s} {'refq ms':>8s} {'ORT ms':>8s} {'refq/ORT':>8s}"
    print(f"{head} {'ORT 1t ms':>9s} {'refq/ORT 1t':>11s}")
    for what, tr, to, to1 in (
        ("QuantizeLinear int8 per-channel (axis 0)", t_q_refq, t_q_ort, t_q_ort1),
        ("  same, refq writing into out= (reused buffer)", t_q_refq_out, t_q_ort, t_q_ort1),
        ("DequantizeLinear int8 per-channel (axis 0)", t_dq_refq, t_dq_ort, t_dq_ort1),
        ("  same, refq writing into out= (reused buffer)", t_dq_refq_out, t_dq_ort, t_dq_ort1),
    ):
        print(
            f"{what:48s} {tr * 1e3:8.2f} {to * 1e3:8.2f} {tr / to:7.2f}x "
            f"{to1 * 1e3:9.2f} {tr / to1:10.2f}x"
        )
    print()
    print(f"{'int4 packing (ONNX order)':48s} {'ms':>9s} {'M elem/s':>9s}")
    for what, t in (
        ("pack_bits(int8 codes, 4)", t_pack),
        ("unpack_bits(packed, 4, signed)", t_unpack),
    ):
        print(f"{what:48s} {t * 1e3:9.2f} {n / t / 1e6:9.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
