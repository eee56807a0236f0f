"""Run .tflite bytes on the real peers (TFLite Micro, LiteRT) for bit-exactness tests."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from tests.conftest import require_module


def _c_array(x: np.ndarray) -> np.ndarray:
    """``x`` as a C-contiguous array of its own shape (np.ascontiguousarray turns 0-d into 1-d,
    which the interpreters refuse for scalar inputs)."""
    return np.require(x, requirements="C")


def run_tflm(
    model: bytes, inputs: Sequence[np.ndarray], n_outputs: int = 1, arena_size: int | None = None
) -> list[np.ndarray]:
    """Invoke the tflite-micro Python interpreter (TFLM reference kernels).

    ``arena_size`` defaults to room for the model and the inputs, at least the wheel's own
    heuristic (10x the model size, too small for models whose tensors are all run-time inputs).
    """
    runtime = require_module("tflite_micro.python.tflite_micro.runtime")
    if arena_size is None:
        data = len(model) + sum(int(np.asarray(x).nbytes) for x in inputs)
        arena_size = max(10 * len(model), 8 * data + (64 << 10))
    interp = runtime.Interpreter.from_bytes(model, arena_size=arena_size)
    for i, x in enumerate(inputs):
        interp.set_input(_c_array(x), i)
    interp.invoke()
    return [np.array(interp.get_output(i)) for i in range(n_outputs)]


def run_litert(
    model: bytes, inputs: Sequence[np.ndarray], *, reference: bool = True
) -> list[np.ndarray]:
    """Invoke ai-edge-litert; ``reference=True`` selects the reference-kernel op resolver."""
    lite = require_module("ai_edge_litert.interpreter")
    kind = lite.OpResolverType.BUILTIN_REF if reference else lite.OpResolverType.BUILTIN
    interp = lite.Interpreter(model_content=model, experimental_op_resolver_type=kind)
    interp.allocate_tensors()
    for detail, x in zip(interp.get_input_details(), inputs, strict=True):
        interp.set_tensor(detail["index"], _c_array(x))
    interp.invoke()
    return [np.array(interp.get_tensor(d["index"])) for d in interp.get_output_details()]
