"""CONCATENATION, TRANSPOSE and RESHAPE, as TFLM / LiteRT: codes are moved, never requantized.

CONCATENATION (TFLM ``Concatenation``): inputs of one dtype joined along ``axis`` (negative:
+ output rank); every other dim must agree. TFLM stores the input scales but does not use them:
both the tflite-micro wheel (0.dev20261023) and LiteRT 2.3 *refuse* int8 / int16 inputs whose
scale or zero point differ from the output's at prepare time (measured), so refq does not
requantize either and raises :class:`QuantSpecError` in that case. The fused activation must be
``NONE`` (TFLM checks it). TFLM allows at most 10 inputs of rank <= 4; refq has no such limit.

TRANSPOSE: ``y = transpose(x, perm)`` with a constant ``perm`` (TFLM: rank <= 5, LiteRT <= 6).
RESHAPE: the codes in flat order under the output shape (the shape input / ``new_shape`` attr
only has to agree with the output tensor; one ``-1`` is inferred).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from refq.errors import QuantSpecError, ShapeError, UnsupportedError
from refq.kernels.elementwise import check_output_shape
from refq.kernels.gather import same_quantization
from refq.kernels.registry import register
from refq.profiles import Profile

DTYPES = ("int8", "int16", "int32", "int64", "float32", "uint8", "bool")


@dataclass(frozen=True)
class ConcatParams:
    dtype: str
    axis: int


@dataclass(frozen=True)
class TransposeParams:
    dtype: str
    perm: tuple[int, ...]


@dataclass(frozen=True)
class ReshapeParams:
    dtype: str
    shape: tuple[int, ...]


def concat_shape(shapes: Sequence[Sequence[int]], axis: int, what: str) -> tuple[int, ...]:
    """Output shape of CONCATENATION along the resolved ``axis``, checking the other dims."""
    first = tuple(shapes[0])
    for s in shapes[1:]:
        s = tuple(s)
        if len(s) != len(first) or any(
            a != b for i, (a, b) in enumerate(zip(s, first, strict=True)) if i != axis
        ):
            raise ShapeError(f"{what}: shapes {[tuple(x) for x in shapes]} differ off axis {axis}")
    return (*first[:axis], sum(int(s[axis]) for s in shapes), *first[axis + 1 :])


def concatenation(inputs: Sequence[np.ndarray], p: ConcatParams) -> np.ndarray:
    """TFLite CONCATENATION of equally quantized code arrays."""
    arrays = [np.asarray(x) for x in inputs]
    for i, a in enumerate(arrays):
        if a.dtype != np.dtype(p.dtype):
            raise QuantSpecError(f"CONCATENATION: input {i} is {a.dtype}, expected {p.dtype}")
    concat_shape([a.shape for a in arrays], p.axis, "CONCATENATION")
    return np.concatenate(arrays, axis=p.axis)


def transpose(x: np.ndarray, p: TransposeParams) -> np.ndarray:
    """TFLite TRANSPOSE: ``y[i_0..i_n] = x[i_perm^-1...]`` i.e. ``numpy.transpose(x, perm)``."""
    arr = np.asarray(x)
    if arr.ndim != len(p.perm):
        raise ShapeError(f"TRANSPOSE: input rank {arr.ndim}, permutation {p.perm}")
    return np.ascontiguousarray(np.transpose(arr, p.perm))


def reshape(x: np.ndarray, p: ReshapeParams) -> np.ndarray:
    """TFLite RESHAPE: same codes, new shape."""
    arr = np.asarray(x)
    if arr.size != int(np.prod(p.shape, dtype=np.int64)):
        raise ShapeError(f"RESHAPE: {arr.shape} ({arr.size} elements) into {p.shape}")
    return arr.reshape(p.shape)


def resolve_new_shape(new_shape: Sequence[int], size: int, what: str) -> tuple[int, ...]:
    """Infer one ``-1`` in ``new_shape`` from the element count ``size``."""
    dims = [int(d) for d in new_shape]
    unknown = [i for i, d in enumerate(dims) if d == -1]
    if len(unknown) > 1 or any(d < -1 for d in dims):
        raise ShapeError(f"{what}: new shape {dims} may hold one -1 and no other negative dim")
    known = int(np.prod([d for d in dims if d != -1], dtype=np.int64))
    if unknown:
        if known == 0 or size % known:
            raise ShapeError(f"{what}: cannot infer -1 in {dims} for {size} elements")
        dims[unknown[0]] = size // known
    if int(np.prod(dims, dtype=np.int64)) != size:
        raise ShapeError(f"{what}: new shape {dims} does not hold {size} elements")
    return tuple(dims)


# ---------------------------------------------------------------------------------------------
# Graph adapters
# ---------------------------------------------------------------------------------------------


def _prepare_concat(node: Any, tensors: Mapping[str, Any], profile: Profile) -> ConcatParams:
    what = f"node {node.name!r} (CONCATENATION)"
    if not node.inputs or len(node.outputs) != 1:
        raise ShapeError(f"{what}: needs at least one input and one output")
    ins = [tensors[n] for n in node.inputs]
    out = tensors[node.outputs[0]]
    if node.attrs.get("activation", "NONE") != "NONE":
        raise UnsupportedError(
            f"{what}: fused activation {node.attrs['activation']!r}; TFLM supports NONE only"
        )
    if out.dtype not in DTYPES or any(t.dtype != out.dtype for t in ins):
        raise UnsupportedError(f"{what}: inputs {[t.dtype for t in ins]} into {out.dtype}")
    for t in ins:
        same_quantization(t, out, node.name, "CONCATENATION")
    rank = len(out.shape)
    axis = int(node.attrs.get("axis", 0))
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < rank:
        raise ShapeError(f"{what}: axis {axis} is out of range for rank {rank}")
    if all(None not in t.shape for t in ins):
        check_output_shape(out, concat_shape([t.shape for t in ins], a, what), node.name)
    return ConcatParams(out.dtype, a)


def _run_concat(p: ConcatParams, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    return [concatenation([np.asarray(x) for x in inputs], p)]


def _prepare_transpose(node: Any, tensors: Mapping[str, Any], profile: Profile) -> TransposeParams:
    what = f"node {node.name!r} (TRANSPOSE)"
    if len(node.inputs) != 2 or len(node.outputs) != 1:
        raise ShapeError(f"{what}: takes (input, perm) and one output")
    x, perm_t = tensors[node.inputs[0]], tensors[node.inputs[1]]
    out = tensors[node.outputs[0]]
    if not perm_t.is_constant:
        raise UnsupportedError(f"{what}: the permutation {perm_t.name!r} must be constant")
    perm = tuple(int(v) for v in np.asarray(perm_t.data).reshape(-1))
    rank = len(x.shape)
    perm = tuple(v + rank if v < 0 else v for v in perm)
    if sorted(perm) != list(range(rank)):
        raise ShapeError(f"{what}: {perm} is not a permutation of the {rank} input axes")
    if out.dtype != x.dtype:
        raise UnsupportedError(f"{what}: {x.dtype} -> {out.dtype}; dtypes must match")
    same_quantization(x, out, node.name, "TRANSPOSE")
    check_output_shape(out, tuple(x.shape[i] for i in perm), node.name)
    return TransposeParams(x.dtype, perm)


def _run_transpose(p: TransposeParams, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    return [transpose(np.asarray(inputs[0]), p)]


def _prepare_reshape(node: Any, tensors: Mapping[str, Any], profile: Profile) -> ReshapeParams:
    what = f"node {node.name!r} (RESHAPE)"
    if len(node.inputs) not in (1, 2) or len(node.outputs) != 1:
        raise ShapeError(f"{what}: takes (input[, shape]) and one output")
    x, out = tensors[node.inputs[0]], tensors[node.outputs[0]]
    if out.dtype != x.dtype:
        raise UnsupportedError(f"{what}: {x.dtype} -> {out.dtype}; dtypes must match")
    same_quantization(x, out, node.name, "RESHAPE")
    if None in x.shape or None in out.shape:
        raise ShapeError(f"{what}: RESHAPE needs fixed shapes, got {x.shape} -> {out.shape}")
    size = int(np.prod(x.shape, dtype=np.int64))
    requested = None
    if len(node.inputs) == 2 and node.inputs[1] is not None:
        st = tensors[node.inputs[1]]
        if st.is_constant:
            requested = np.asarray(st.data).reshape(-1)
    elif node.attrs.get("new_shape") is not None:
        requested = node.attrs["new_shape"]
    shape = tuple(int(d) for d in out.shape)
    if requested is not None and resolve_new_shape(requested, size, what) != shape:
        raise ShapeError(f"{what}: new shape {list(requested)} disagrees with output {shape}")
    if int(np.prod(shape, dtype=np.int64)) != size:
        raise ShapeError(f"{what}: input {x.shape} and output {shape} hold different counts")
    return ReshapeParams(x.dtype, shape)


def _run_reshape(p: ReshapeParams, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    return [reshape(np.asarray(inputs[0]), p)]


register("CONCATENATION", prepare=_prepare_concat, run=_run_concat)
register("TRANSPOSE", prepare=_prepare_transpose, run=_run_transpose)
register("RESHAPE", prepare=_prepare_reshape, run=_run_reshape)
