"""The ``observe(point, value)`` callback the float forward passes call at activation points.

Calibration returns ``None`` (the value is kept) after recording ``value``; fake-quantization
simulation returns a replacement array of the same shape. Point names and call order are those
of :mod:`refq.models.layout`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from refq.errors import ShapeError

Observe = Callable[[str, np.ndarray], "np.ndarray | None"]


def emit(observe: Observe | None, name: str, value: np.ndarray) -> np.ndarray:
    """Pass ``value`` through ``observe`` (if any), checking a replacement's shape."""
    if observe is None:
        return value
    out = observe(name, value)
    if out is None:
        return value
    out = np.asarray(out)
    if out.shape != value.shape:
        raise ShapeError(f"observe({name!r}) returned shape {out.shape}, expected {value.shape}")
    return out.astype(np.float32, copy=False)
