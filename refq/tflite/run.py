"""Golden outputs of .tflite models: load one into a Graph and run it under a profile.

>>> (y,) = run_tflite("model.tflite", [x], profile="tflm")        # doctest: +SKIP

Under ``tflm`` the outputs are what the TFLite Micro reference kernels compute on the same
bytes. The interpreter is :class:`refq.graph.Program`, with one addition for model files: every
operator's result must have the type and shape the model declares for that tensor (TFLM sizes
its tensors from the declared shapes and never resizes them), so an inconsistent file raises
:class:`~refq.errors.ModelFormatError` instead of yielding an answer TFLM would not give. A
kernel failing with a non-refq exception on a model's tensors is reported the same way, naming
the node, with the original exception chained (``__cause__``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from refq.errors import ModelFormatError, RefqError
from refq.graph import Graph, Node, Program
from refq.profiles import Profile

ModelSource = str | os.PathLike | bytes | bytearray | memoryview
Inputs = np.ndarray | Sequence[np.ndarray] | Mapping[str, np.ndarray]


def read_model_bytes(model: ModelSource) -> bytes:
    """The bytes of a model given as bytes or as a path (OS errors become ModelFormatError)."""
    if isinstance(model, bytes | bytearray | memoryview):
        return bytes(model)
    try:
        with open(model, "rb") as f:
            return f.read()
    except OSError as exc:
        raise ModelFormatError(
            f"cannot read model file {os.fspath(model)!r}: {exc.strerror}"
        ) from None


def load_tflite(model: ModelSource, *, name: str | None = None) -> Graph:
    """Parse a .tflite file (path or bytes) into a :class:`~refq.graph.Graph`.

    Needs the ``tflite`` extra (the TFLite schema module of the tflite-micro wheel).
    """
    from refq.tflite.reader import read_tflite

    data = read_model_bytes(model)
    if name is None and not isinstance(model, bytes | bytearray | memoryview):
        name = os.path.splitext(os.path.basename(os.fspath(model)))[0] or None
    return read_tflite(data, name=name)


def prepare_tflite(model: ModelSource | Graph, profile: str | Profile = "tflm") -> Program:
    """A :class:`~refq.graph.Program` for the model whose operators check their results against
    the declared tensor types and shapes. Reuse it to run many inputs."""
    graph = model if isinstance(model, Graph) else load_tflite(model)
    try:
        prog = Program(graph, profile)
    except RefqError:
        raise
    except Exception as exc:
        raise _kernel_failure(graph, profile, exc) from exc
    prog.steps = [(node, _checked_op(op, node, graph), params) for node, op, params in prog.steps]
    return prog


def run_tflite(
    model: ModelSource | Graph, inputs: Inputs, profile: str | Profile = "tflm"
) -> list[np.ndarray]:
    """Run a .tflite model on integer inputs; returns its outputs in order.

    ``inputs``: one array per graph input, in order (a single array for a one-input model) or a
    mapping from input tensor name to array. Dtypes and shapes must match the model exactly.
    """
    prog = prepare_tflite(model, profile)
    if isinstance(inputs, np.ndarray):
        inputs = [inputs]
    return prog.run(inputs)


def _kernel_failure(graph: Graph, profile: str | Profile, exc: Exception) -> ModelFormatError:
    """A kernel's prepare failed with a non-refq exception on this model: name the node."""
    from refq.kernels.registry import get_op
    from refq.profiles import get_profile

    prof = get_profile(profile)
    for node in graph.nodes:
        try:
            get_op(node.op, node.name).prepare(node, graph.tensors, prof)
        except Exception as err:  # the first node whose prepare fails
            return ModelFormatError(
                f"node {node.name!r}: {node.op} cannot take this model's tensors "
                f"({type(err).__name__}: {err})"
            )
    return ModelFormatError(f"model cannot be prepared ({type(exc).__name__}: {exc})")


def _checked_op(op: Any, node: Node, graph: Graph) -> Any:
    from refq.kernels.registry import OpDef

    def run(params: Any, args: Sequence[np.ndarray | None]) -> list[np.ndarray]:
        try:
            results = list(op.run(params, args))
        except RefqError:
            raise
        except Exception as exc:
            # Kernels validate their inputs at prepare time; an exception here means the file
            # describes tensors the op cannot take. Report it as such, naming the node.
            raise ModelFormatError(
                f"node {node.name!r}: {node.op} failed on this model's tensors "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        if len(results) != len(node.outputs):
            raise ModelFormatError(
                f"node {node.name!r}: the model declares {len(node.outputs)} outputs, "
                f"{node.op} produces {len(results)}"
            )
        for tname, value in zip(node.outputs, results, strict=True):
            info = graph.tensors[tname]
            if value.dtype != info.np_dtype or tuple(value.shape) != tuple(info.shape):
                raise ModelFormatError(
                    f"node {node.name!r} computes tensor {tname!r} as {value.dtype} "
                    f"{tuple(value.shape)}, but the model declares {info.dtype} {info.shape}"
                )
        return results

    return OpDef(op.name, op.prepare, run)
