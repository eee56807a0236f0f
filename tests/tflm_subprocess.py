"""Run untrusted .tflite bytes on the TFLite Micro interpreter in a child process.

TFLM does not verify model files: corrupt bytes can crash it (SIGSEGV) or make it loop. The
fuzz tests therefore invoke it in a forked worker that survives only as long as TFLM does; a
crash or a time-out is reported as an outcome instead of taking pytest down. The worker builds
the C++ ``InterpreterWrapper`` directly (no resource-variable count), because the Python
wrapper's own flatbuffer walk fails on bytes the C++ interpreter never reads.
"""

from __future__ import annotations

import contextlib
import faulthandler
import multiprocessing as mp
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from tests.conftest import require_module


def _serve(conn: Any) -> None:  # pragma: no cover - runs in the child
    faulthandler.disable()  # an expected TFLM crash must not dump tracebacks into the report
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # TFLM logs every failure to stdout / stderr
    os.dup2(devnull, 2)
    from tflite_micro.python.tflite_micro import _runtime

    config = _runtime.PythonInterpreterConfig.kAllocationRecording
    while True:
        msg = conn.recv()
        if msg is None:
            return
        model, inputs, n_outputs = msg
        try:
            interp = _runtime.InterpreterWrapper(
                model, [], max(16 * len(model), 1 << 20), 0, config, 0
            )
            for i, x in enumerate(inputs):
                interp.SetInputTensor(np.ascontiguousarray(x), i)
            interp.Invoke()
            conn.send(("ok", [np.array(interp.GetOutputTensor(i)) for i in range(n_outputs)]))
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"[:300]))


class TflmWorker:
    """``run(model, inputs, n_outputs) -> (outcome, payload)`` with outcome ``ok`` (payload: the
    outputs), ``error`` (TFLM refused: message), ``crash`` (exit code) or ``hang``."""

    def __init__(self, timeout: float = 10.0) -> None:
        require_module("tflite_micro.python.tflite_micro.runtime")
        self.ctx = mp.get_context("fork")
        self.timeout = timeout
        self.crashes = 0
        self._start()

    def _start(self) -> None:
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_serve, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    def run(self, model: bytes, inputs: Sequence[np.ndarray], n_outputs: int = 1):
        self.conn.send((bytes(model), [np.asarray(x) for x in inputs], n_outputs))
        if self.conn.poll(self.timeout):
            try:
                return self.conn.recv()
            except EOFError:
                pass
            self.proc.join()
            code = self.proc.exitcode
            self.crashes += 1
            self._start()
            return "crash", code
        self.proc.kill()
        self.proc.join()
        self._start()
        return "hang", None

    def close(self) -> None:
        with contextlib.suppress(OSError):  # the worker may already be gone
            self.conn.send(None)
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()

    def __enter__(self) -> TflmWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
