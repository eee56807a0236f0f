"""The integer-model IR and its interpreter.

A :class:`Graph` is what every front end produces (the .tflite reader, the PTQ pipeline, tests
building a single kernel) and what every back end consumes (the NumPy interpreter below, the C code
generator). It records *real-valued* quantization (scales, zero points) the way model files do;
the integer constants a kernel needs (multipliers, shifts, tables) are derived from it by the op's
``prepare`` under an arithmetic :class:`~refq.profiles.Profile`, exactly as TFLite Micro derives
them at Prepare time. One graph can therefore be run under several profiles.

State tensors (KV caches) persist across invocations; they start at zero and are mutated in place
by the stateful ops that take them as inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from refq.errors import ShapeError, UnsupportedError
from refq.profiles import Profile, get_profile

DTYPES: dict[str, np.dtype] = {
    "int8": np.dtype(np.int8),
    "uint8": np.dtype(np.uint8),
    "int16": np.dtype(np.int16),
    "uint16": np.dtype(np.uint16),
    "int32": np.dtype(np.int32),
    "int64": np.dtype(np.int64),
    "float32": np.dtype(np.float32),
    # Sub-byte weights are stored unpacked (one int8 per element) in the IR; packing is a
    # storage detail of model files and generated C.
    "int4": np.dtype(np.int8),
    "bool": np.dtype(np.bool_),
}


@dataclass
class TensorInfo:
    """A tensor of the graph: type, shape, real-valued quantization, optional constant data.

    ``shape`` may contain ``None`` for a dimension fixed only at run time (tokens per call).
    ``scale`` / ``zero_point`` are 0-d for per-tensor quantization, 1-d along ``axis`` for
    per-channel. ``data`` holds the value of a constant (weights, biases, tables).
    """

    name: str
    dtype: str
    shape: tuple[int | None, ...]
    scale: np.ndarray | None = None
    zero_point: np.ndarray | None = None
    axis: int | None = None
    data: np.ndarray | None = None
    is_state: bool = False

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise UnsupportedError(
                f"tensor {self.name!r}: dtype {self.dtype!r} is not one of {sorted(DTYPES)}"
            )
        self.shape = tuple(self.shape)
        if self.scale is not None:
            self.scale = np.asarray(self.scale, dtype=np.float32)
            zp = 0 if self.zero_point is None else self.zero_point
            self.zero_point = np.broadcast_to(np.asarray(zp, dtype=np.int64), self.scale.shape)

    @property
    def np_dtype(self) -> np.dtype:
        return DTYPES[self.dtype]

    @property
    def quantized(self) -> bool:
        return self.scale is not None

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def per_channel(self) -> bool:
        return self.scale is not None and self.scale.ndim == 1 and self.scale.size > 1

    def scalar_scale(self) -> float:
        """The per-tensor scale as a Python float (error if the tensor is per-channel)."""
        if self.scale is None or self.scale.size != 1:
            raise UnsupportedError(f"tensor {self.name!r} needs one per-tensor scale")
        return float(self.scale.reshape(-1)[0])

    def scalar_zero_point(self) -> int:
        if self.zero_point is None:
            return 0
        if self.zero_point.size != 1 and np.any(self.zero_point != self.zero_point.flat[0]):
            raise UnsupportedError(f"tensor {self.name!r} needs one per-tensor zero point")
        return int(self.zero_point.reshape(-1)[0])

    def nbytes(self, shape: Sequence[int] | None = None) -> int:
        dims = self.shape if shape is None else shape
        if any(d is None for d in dims):
            raise ShapeError(f"tensor {self.name!r} has a run-time dimension: {dims}")
        return int(np.prod(dims, dtype=np.int64)) * self.np_dtype.itemsize


@dataclass
class Node:
    """One op application. ``attrs`` hold the op's options as the model states them
    (fused activation, axis, beta, ...); integer constants are derived at prepare time."""

    op: str
    inputs: tuple[str | None, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any] = field(default_factory=dict)
    name: str = ""

    def __post_init__(self) -> None:
        self.inputs = tuple(self.inputs)
        self.outputs = tuple(self.outputs)
        if not self.name:
            self.name = f"{self.op.lower()}:{','.join(self.outputs)}"


@dataclass
class Graph:
    """Tensors, nodes in execution order, graph inputs and outputs."""

    tensors: dict[str, TensorInfo]
    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]
    name: str = "model"
    metadata: dict[str, Any] = field(default_factory=dict)

    def add_tensor(self, info: TensorInfo) -> TensorInfo:
        if info.name in self.tensors:
            raise ShapeError(f"graph {self.name!r} already has a tensor named {info.name!r}")
        self.tensors[info.name] = info
        return info

    @property
    def state(self) -> list[str]:
        return [n for n, t in self.tensors.items() if t.is_state]

    def validate(self) -> None:
        """Every node input is a constant, a graph input, a state tensor or an earlier output."""
        known = {n for n, t in self.tensors.items() if t.is_constant or t.is_state}
        known.update(self.inputs)
        for name in (*self.inputs, *self.outputs):
            if name not in self.tensors:
                raise ShapeError(f"graph {self.name!r}: input/output {name!r} is not a tensor")
        for node in self.nodes:
            for name in (*node.inputs, *node.outputs):
                if name is not None and name not in self.tensors:
                    raise ShapeError(f"node {node.name!r} uses unknown tensor {name!r}")
            for name in node.inputs:
                if name is not None and name not in known:
                    raise ShapeError(
                        f"node {node.name!r} reads {name!r} before anything produces it"
                    )
            known.update(node.outputs)
        for name in self.outputs:
            if name not in known:
                raise ShapeError(f"graph output {name!r} is never produced")


class Program:
    """A graph prepared under a profile: run it with :meth:`run`.

    >>> prog = Program(graph, "tflm")            # doctest: +SKIP
    >>> (y,) = prog.run([x])                     # doctest: +SKIP
    """

    def __init__(self, graph: Graph, profile: str | Profile = "tflm") -> None:
        from refq.kernels.registry import get_op

        graph.validate()
        self.graph = graph
        self.profile = get_profile(profile)
        self.steps = []
        for node in graph.nodes:
            op = get_op(node.op, node.name)
            self.steps.append((node, op, op.prepare(node, graph.tensors, self.profile)))
        # Constants are fixed once prepared; collected once, not on every run (decode speed).
        self._constants = {n: t.data for n, t in graph.tensors.items() if t.is_constant}
        self.state = self.new_state()

    def new_state(self) -> dict[str, np.ndarray]:
        out = {}
        for name in self.graph.state:
            info = self.graph.tensors[name]
            zp = info.scalar_zero_point() if info.quantized else 0
            out[name] = np.full(info.shape, zp, dtype=info.np_dtype)
        return out

    def reset(self) -> None:
        """Clear the state tensors (KV caches) back to their initial value."""
        self.state = self.new_state()

    def run(self, inputs: Sequence[np.ndarray] | Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """Run all nodes; returns the graph outputs in order. State persists between calls."""
        g = self.graph
        if isinstance(inputs, Mapping):
            missing = [n for n in g.inputs if n not in inputs]
            if missing:
                raise ShapeError(f"graph {g.name!r}: missing inputs {missing}")
            values = [inputs[n] for n in g.inputs]
        else:
            values = list(inputs)
            if len(values) != len(g.inputs):
                raise ShapeError(
                    f"graph {g.name!r} takes {len(g.inputs)} inputs, got {len(values)}"
                )
        env: dict[str, np.ndarray] = {}
        for name, value in zip(g.inputs, values, strict=True):
            env[name] = _check_input(g.tensors[name], value)
        env.update(self._constants)
        env.update(self.state)
        for node, op, params in self.steps:
            args = [None if n is None else env[n] for n in node.inputs]
            results = op.run(params, args)
            for name, value in zip(node.outputs, results, strict=True):
                env[name] = value
        return [env[n] for n in g.outputs]


def _check_input(info: TensorInfo, value: np.ndarray) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype != info.np_dtype:
        raise ShapeError(
            f"input {info.name!r} must be {info.dtype}, got {arr.dtype} "
            "(quantize float data first, e.g. with refq.quantize)"
        )
    if len(arr.shape) != len(info.shape) or any(
        d is not None and d != a for d, a in zip(info.shape, arr.shape, strict=True)
    ):
        raise ShapeError(f"input {info.name!r} must have shape {info.shape}, got {arr.shape}")
    return arr
