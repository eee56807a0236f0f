"""SOFTMAX and LOG_SOFTMAX against the tflite-micro interpreter (TFLM reference kernels), bit-exact.

Models are single-op graphs written by refq.tflite.writer; shapes, row lengths, scales, betas,
zero points and data come from seeded generators, including long rows up to the s8 hazard
(511 elements at the row maximum) and past it, where TFLM aborts and refq raises.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from refq.errors import ExactnessError
from refq.graph import Graph, Node, Program, TensorInfo
from refq.kernels import softmax as sm
from refq.tflite.writer import write_tflite
from tests.conftest import require_module
from tests.peers import run_litert, run_tflm

OUT_Q = {
    ("int8", "int8"): (1 / 256, -128),
    ("int8", "int16"): (1 / 65536, -32768),
    ("int16", "int16"): (1 / 32768, 0),
}
RUNTIME = "tflite_micro.python.tflite_micro.runtime"


def _graph(op: str, shape, dt_in: str, dt_out: str, s_in: float, zp_in: int, attrs=None) -> Graph:
    if op == "LOG_SOFTMAX":
        s_out, zp_out = sm.LOG_SOFTMAX_OUTPUT_SCALE, sm.LOG_SOFTMAX_OUTPUT_ZERO_POINT
    else:
        s_out, zp_out = OUT_Q[(dt_in, dt_out)]
    tensors = {
        "x": TensorInfo("x", dt_in, shape, np.float32(s_in), zp_in),
        "y": TensorInfo("y", dt_out, shape, np.float32(s_out), zp_out),
    }
    return Graph(tensors, [Node(op, ("x",), ("y",), dict(attrs or {}))], ["x"], ["y"])


def _tflm(graph: Graph, x: np.ndarray) -> np.ndarray:
    return run_tflm(write_tflite(graph), [x])[0]


def _s8_sum(x: np.ndarray, params: sm.SoftmaxS8Params) -> np.ndarray:
    """Exact Q12.19 sums of exponentials per row (to steer cases around the hazard)."""
    rows = x.reshape(-1, x.shape[-1]).astype(np.int64)
    return params.exp_q12.astype(np.int64)[rows.max(axis=1, keepdims=True) - rows].sum(axis=1)


def _int8_rows(rng, rows: int, n: int) -> np.ndarray:
    """Random rows; some get a block of elements at the row maximum (long, near-hazard rows)."""
    x = rng.integers(-128, 128, (rows, n))
    if n > 64 and rng.random() < 0.5:
        for r in range(rows):
            k = int(rng.integers(1, min(n, 511) + 1))
            top = int(rng.integers(-60, 128))
            x[r] = np.minimum(x[r], top - 1)
            x[r, rng.choice(n, k, replace=False)] = top
    return x.astype(np.int8)


def _beta(rng) -> float:
    return float(rng.choice([1.0, 0.5, 2.0, float(rng.uniform(0.05, 4.0))]))


def test_tflm_softmax_int8_bit_exact(checked) -> None:
    require_module(RUNTIME)
    rng = np.random.default_rng(31)
    cases = elements = near_hazard = 0
    while cases < 500:
        out_dt = "int16" if cases % 4 == 3 else "int8"
        rows = int(rng.integers(1, 4))
        n = int(rng.integers(1, 65)) if rng.random() < 0.5 else int(rng.integers(65, 1500))
        s_in, beta = float(2.0 ** rng.uniform(-10, 2)), _beta(rng)
        graph = _graph(
            "SOFTMAX", (rows, n), "int8", out_dt, s_in, int(rng.integers(-128, 128)), {"beta": beta}
        )
        x = _int8_rows(rng, rows, n)
        params = Program(graph, "tflm").steps[0][2]
        s = _s8_sum(x, params)
        limit = (1 << 28) if out_dt == "int8" else (1 << 31)
        if (s >= limit).any():
            # Past the hazard TFLM aborts the process; test_tflm_aborts_on_hazard_rows covers it.
            with pytest.raises(ExactnessError, match="row"):
                Program(graph, "tflm").run([x])
            continue
        near_hazard += int((s >= 1 << 27).any())
        got = Program(graph, "tflm").run([x])[0]
        assert got.dtype == np.dtype(out_dt)
        assert np.array_equal(got, _tflm(graph, x)), (s_in, beta, rows, n, out_dt)
        cases += 1
        elements += x.size
    assert near_hazard >= 10  # rows whose final shift is exactly 31 were exercised
    checked("TFLM SOFTMAX int8 -> int8/int16 (beta, scale, long rows)", cases, elements)


def test_tflm_softmax_int16_bit_exact(checked) -> None:
    require_module(RUNTIME)
    rng = np.random.default_rng(32)
    cases = elements = 0
    for _ in range(300):
        rows, n = int(rng.integers(1, 4)), int(rng.integers(1, 700))
        s_in, beta = float(2.0 ** rng.uniform(-16, -4)), _beta(rng)
        graph = _graph("SOFTMAX", (rows, n), "int16", "int16", s_in, 0, {"beta": beta})
        hi = int(rng.choice([32767, 3000, 300]))
        x = rng.integers(-hi - 1, hi + 1, (rows, n)).astype(np.int16)
        got = Program(graph, "tflm").run([x])[0]
        assert np.array_equal(got, _tflm(graph, x)), (s_in, beta, rows, n)
        cases += 1
        elements += x.size
    checked("TFLM SOFTMAX int16 (shipped exp and 1/(1+x) tables)", cases, elements)


def test_tflm_log_softmax_int8_bit_exact(checked) -> None:
    require_module(RUNTIME)
    rng = np.random.default_rng(33)
    cases = elements = 0
    for _ in range(300):
        rows = int(rng.integers(1, 4))
        n = int(rng.integers(1, 64)) if rng.random() < 0.6 else int(rng.integers(64, 2000))
        s_in = float(2.0 ** rng.uniform(-10, 2))
        graph = _graph("LOG_SOFTMAX", (rows, n), "int8", "int8", s_in, int(rng.integers(-128, 128)))
        x = _int8_rows(rng, rows, n)
        got = Program(graph, "tflm").run([x])[0]
        assert np.array_equal(got, _tflm(graph, x)), (s_in, rows, n)
        cases += 1
        elements += x.size
    checked("TFLM LOG_SOFTMAX int8", cases, elements)


def test_litert_reference_softmax_and_log_softmax(checked) -> None:
    """LiteRT 2.3's reference kernels: int8 SOFTMAX / LOG_SOFTMAX and int16 SOFTMAX with the
    double-precision tables (int16_tables='litert') under litert-ref and tflm alike (both
    round twice)."""
    require_module("ai_edge_litert.interpreter")
    rng = np.random.default_rng(35)
    cases = elements = 0
    for i in range(150):
        rows, n = int(rng.integers(1, 4)), int(rng.integers(1, 400))
        kind = i % 3
        if kind == 2:
            attrs = {"beta": _beta(rng), "int16_tables": "litert"}
            s_in = float(2.0 ** rng.uniform(-16, -4))
            graph = _graph("SOFTMAX", (rows, n), "int16", "int16", s_in, 0, attrs)
            x = rng.integers(-32768, 32768, (rows, n)).astype(np.int16)
            profiles = ("tflm", "litert-ref")
        else:
            op = "SOFTMAX" if kind == 0 else "LOG_SOFTMAX"
            attrs = {"beta": _beta(rng)} if kind == 0 else {}
            s_in = float(2.0 ** rng.uniform(-10, 2))
            zp = int(rng.integers(-128, 128))
            graph = _graph(op, (rows, n), "int8", "int8", s_in, zp, attrs)
            x = _int8_rows(rng, rows, n)
            if kind == 0 and (_s8_sum(x, Program(graph).steps[0][2]) >= 1 << 28).any():
                continue
            profiles = ("litert-ref", "tflm")
        peer = run_litert(write_tflite(graph), [x])[0]
        for profile in profiles:
            assert np.array_equal(Program(graph, profile).run([x])[0], peer), (kind, s_in, n)
        cases += 1
        elements += x.size
    checked("LiteRT reference SOFTMAX int8/int16 and LOG_SOFTMAX int8", cases, elements)


_ABORT_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    from tflite_micro.python.tflite_micro import runtime
    model = open(sys.argv[1], "rb").read()
    x = np.load(sys.argv[2])
    interp = runtime.Interpreter.from_bytes(model, arena_size=1 << 20)
    interp.set_input(x, 0)
    interp.invoke()
    print("returned", np.array(interp.get_output(0)).ravel()[:4].tolist())
    """
)


def test_tflm_aborts_on_hazard_rows(tmp_path, checked) -> None:
    """Where the reference is undefined (final shift > 31) TFLM aborts; refq raises by default
    and gives the output zero point (the correctly rounded value) with long_rows='safe'."""
    require_module(RUNTIME)
    rng = np.random.default_rng(34)
    script = tmp_path / "run.py"
    script.write_text(_ABORT_SCRIPT)
    configs = [(512, 512, 0.05, 1.0), (900, int(rng.integers(520, 900)), 0.02, 1.7)]
    for n, at_max, s_in, beta in configs:
        graph = _graph("SOFTMAX", (1, n), "int8", "int8", s_in, 0, {"beta": beta})
        x = np.full((1, n), -128, np.int8)
        x[0, :at_max] = 90
        x[0, at_max:] = rng.integers(-128, 80, n - at_max)
        with pytest.raises(ExactnessError, match=r"row \(0,\).*exceeds 31"):
            Program(graph, "tflm").run([x])
        safe = _graph(
            "SOFTMAX", (1, n), "int8", "int8", s_in, 0, {"beta": beta, "long_rows": "safe"}
        )
        assert np.array_equal(Program(safe, "tflm").run([x])[0], np.full((1, n), -128, np.int8))
        (tmp_path / "m.tflite").write_bytes(write_tflite(graph))
        np.save(tmp_path / "x.npy", x)
        proc = subprocess.run(
            [sys.executable, str(script), str(tmp_path / "m.tflite"), str(tmp_path / "x.npy")],
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
        assert proc.returncode == -signal.SIGABRT, (proc.returncode, proc.stdout, proc.stderr)
    # One element fewer at the maximum is defined, and TFLM and refq agree on it.
    graph = _graph("SOFTMAX", (1, 511), "int8", "int8", 0.05, 0, {"beta": 1.0})
    x = np.full((1, 511), 90, np.int8)
    assert np.array_equal(Program(graph, "tflm").run([x])[0], _tflm(graph, x))
    checked("TFLM SOFTMAX hazard rows: TFLM aborts, refq raises / safe mode", len(configs) + 1)


def test_tflm_log_softmax_sum_overflow_is_garbage_refq_raises(checked) -> None:
    """4096+ elements at the maximum overflow LOG_SOFTMAX's int32 Q12.19 sum in the peer."""
    require_module(RUNTIME)
    n = 4100
    graph = _graph("LOG_SOFTMAX", (1, n), "int8", "int8", 0.1, 0)
    x = np.full((1, n), 7, np.int8)
    with pytest.raises(ExactnessError, match="overflows int32"):
        Program(graph, "tflm").run([x])
    peer = _tflm(graph, x)
    # The right answer is log(1/4100) / (1/16) + 127 = -6 for every element; the peer's wrapped
    # sum gives something else.
    assert not np.array_equal(peer, np.full((1, n), -6, np.int8))
    checked("TFLM LOG_SOFTMAX sum overflow (peer output wrong, refq raises)", 1, n)
