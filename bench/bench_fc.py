"""int8 FULLY_CONNECTED with requantization: refq vs onnxruntime QLinearMatMul (u8u8).

Run:  .venv/bin/python bench/bench_fc.py [--repeat 9] [--threads 0]

Both sides run in this process on the same data: int8 activations / weights for refq, the same
values shifted by 128 (uint8, zero points + 128) for onnxruntime's u8u8 kernel. Before timing,
the script checks that refq's ``onnx`` profile on the u8u8 operands equals onnxruntime's output
bit for bit. Timings are the best of ``--repeat`` runs after a warm-up (which also loads
refq's cached Numba kernels and converts the weights to float32 once); the three contenders
take turns within each repetition.

Shapes: 256x1024 @ 1024x1024 (target, issue 3: refq within 3x of onnxruntime), and the batch-1
GEMVs of an LLM decode step: 1x576 @ 576x1536 and 1x576 @ 576x49152.
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

from refq.kernels.fully_connected import fully_connected, prepare_fully_connected
from refq.profiles import PROFILES


def best_of(fns: dict[str, Callable[[], object]], repeat: int) -> dict[str, float]:
    """Best time of each function; the functions take turns within every repetition, so a
    shared, loaded machine slows them alike."""
    for fn in fns.values():
        fn()  # warm-up
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def ort_session(w_u8: np.ndarray, q: dict, m: int, threads: int):
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    k, n = w_u8.shape
    inits = [
        numpy_helper.from_array(np.asarray(v), name)
        for name, v in (
            ("sa", np.float32(q["sa"])),
            ("za", np.uint8(q["za"] + 128)),
            ("b", w_u8),
            ("sb", np.float32(q["sb"])),
            ("zb", np.uint8(128)),
            ("so", np.float32(q["so"])),
            ("zo", np.uint8(q["zo"] + 128)),
        )
    ]
    node = helper.make_node("QLinearMatMul", ["a", "sa", "za", "b", "sb", "zb", "so", "zo"], ["y"])
    graph = helper.make_graph(
        [node],
        "fc",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [m, n])],
        initializer=inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    # Spinning worker threads would keep both CPUs busy after each call and starve refq's BLAS
    # threads in the interleaved timing.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def case(m: int, k: int, n: int, repeat: int, threads: int, rng: np.random.Generator) -> dict:
    x = rng.integers(-128, 128, (m, k)).astype(np.int8)
    w = rng.integers(-127, 128, (n, k)).astype(np.int8)  # symmetric int8 weights, as TFLite
    q = {"sa": 0.02, "za": -3, "sb": 0.004, "so": 0.02 * 0.004 * 24 * np.sqrt(k), "zo": 5}
    common = dict(
        input_scale=q["sa"],
        input_zero_point=q["za"],
        weights_scale=q["sb"],
        output_scale=q["so"],
    )
    p_tflm = prepare_fully_connected(
        w,
        None,
        input_dtype="int8",
        weights_zero_point=0,
        output_dtype="int8",
        output_zero_point=q["zo"],
        profile=PROFILES["tflm"],
        **common,
    )
    # The same reals as uint8 codes: onnxruntime's u8u8 kernel, and refq's onnx profile on them.
    x_u8 = (x.astype(np.int16) + 128).astype(np.uint8)
    w_u8 = (w.astype(np.int16) + 128).astype(np.uint8)
    p_onnx = prepare_fully_connected(
        w_u8,
        None,
        input_dtype="uint8",
        weights_zero_point=128,
        output_dtype="uint8",
        output_zero_point=q["zo"] + 128,
        profile=PROFILES["onnx"],
        **{**common, "input_zero_point": q["za"] + 128},
    )
    sess = ort_session(np.ascontiguousarray(w_u8.T), q, m, threads)
    ort_y = sess.run(None, {"a": x_u8})[0]
    if not np.array_equal(fully_connected(x_u8, p_onnx), ort_y):
        raise SystemExit(f"{m}x{k}x{n}: refq (onnx profile) differs from onnxruntime")
    times = best_of(
        {
            "refq_tflm": lambda: fully_connected(x, p_tflm),
            "refq_onnx": lambda: fully_connected(x_u8, p_onnx),
            "ort": lambda: sess.run(None, {"a": x_u8}),
        },
        repeat,
    )
    return {"shape": f"{m}x{k} @ {k}x{n}", **times}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: all)")
    args = ap.parse_args()
    import onnxruntime

    rng = np.random.default_rng(0)
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"numpy {np.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    print(f"{'shape':<24} {'refq tflm':>10} {'refq onnx':>10} {'ORT u8u8':>10} {'ratio':>7}")
    for m, k, n in ((256, 1024, 1024), (1, 576, 1536), (1, 576, 49152)):
        r = case(m, k, n, args.repeat, args.threads, rng)
        ratio = r["refq_tflm"] / r["ort"]
        print(
            f"{r['shape']:<24} {r['refq_tflm'] * 1e3:>8.2f}ms {r['refq_onnx'] * 1e3:>8.2f}ms "
            f"{r['ort'] * 1e3:>8.2f}ms {ratio:>6.2f}x"
        )
    print("ratio = refq (tflm profile, int8) / onnxruntime (QLinearMatMul u8u8); target <= 3x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
