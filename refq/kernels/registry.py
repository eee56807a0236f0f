"""Graph op registry: op name -> (prepare, run).

A kernel module defines its math as plain functions (``fully_connected(x, w, b, params)``) with an
explicit parameter dataclass, and registers a graph adapter here:

- ``prepare(node, tensors, profile) -> params``: derive every integer constant (multipliers,
  shifts, offsets, activation range, tables) from the tensors' real-valued quantization, as the
  peer does at Prepare time. Validation errors name the node and tensor.
- ``run(params, inputs) -> list of outputs``: integer arithmetic only. State tensors (KV caches)
  arrive as inputs and are mutated in place.

The same ``params`` are what the C code generator emits as constants, so C and NumPy share them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from refq.errors import UnsupportedError

PrepareFn = Callable[[Any, Mapping[str, Any], Any], Any]
RunFn = Callable[[Any, Sequence[np.ndarray | None]], Sequence[np.ndarray]]


@dataclass(frozen=True)
class OpDef:
    name: str
    prepare: PrepareFn
    run: RunFn


_OPS: dict[str, OpDef] = {}


def register(name: str, *, prepare: PrepareFn, run: RunFn) -> None:
    """Register a graph op (called at import time by each kernel module)."""
    if name in _OPS:
        raise RuntimeError(f"op {name!r} registered twice")
    _OPS[name] = OpDef(name, prepare, run)


def get_op(name: str, node_name: str = "") -> OpDef:
    import refq.kernels  # noqa: F401  (importing the package registers every kernel)

    try:
        return _OPS[name]
    except KeyError:
        where = f" (node {node_name!r})" if node_name else ""
        raise UnsupportedError(
            f"op {name!r}{where} is not implemented; implemented ops: {', '.join(sorted(_OPS))}"
        ) from None


def registered_ops(package: str | None = None) -> list[str]:
    """Names of the registered ops; with ``package``, only those whose ``prepare`` is defined
    in that package (``"refq.kernels"``: the kernel library, without ops that higher layers or
    tests register)."""
    import refq.kernels  # noqa: F401

    return sorted(
        name
        for name, op in _OPS.items()
        if package is None or op.prepare.__module__.startswith(package + ".")
    )
