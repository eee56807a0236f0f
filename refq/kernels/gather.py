"""GATHER (axis, batch_dims) and EMBEDDING_LOOKUP, as TFLM / LiteRT: codes are copied unchanged.

GATHER (TFLM ``Gather``; TFLM registers int8 and float32 data with int32 indices, LiteRT also
int16 and int64 indices; refq accepts int8, int16, int32, float32 with int32 / int64 indices)::

    a = axis (negative: + rank(params)),  b = batch_dims (negative: + rank(indices)),  b <= a
    params viewed as [B, O, A, I] (B = prod dims[:b], O = prod dims[b:a], A = dims[a], I = rest)
    indices viewed as [B, C]
    out[bb, o, c, :] = params[bb, o, indices[bb, c], :]
    out shape = params.shape[:a] + indices.shape[b:] + params.shape[a+1:]

An index outside ``[0, A)`` fails the peers' invoke; refq raises :class:`InvalidDataError`
naming it. The output quantization must equal the input's (the peers copy codes).

EMBEDDING_LOOKUP (TFLM ``EmbeddingLookUp``): ``ids`` int32 of rank 1, ``values`` of rank >= 2;
``out[i] = values[ids[i]]``, shape ``(len(ids),) + values.shape[1:]``. int8 values into an int8
output are copied; into a float32 output (TFLM's hybrid path) they are dequantized as
``float32(scale * code)`` (per-tensor scale, zero point 0 required).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from refq.errors import InvalidDataError, QuantSpecError, ShapeError, UnsupportedError
from refq.kernels.elementwise import check_output_shape
from refq.kernels.registry import register
from refq.profiles import Profile

DATA_DTYPES = ("int8", "int16", "int32", "float32")
INDEX_DTYPES = ("int32", "int64")


@dataclass(frozen=True)
class GatherParams:
    """Resolved GATHER attributes (non-negative ``axis`` and ``batch_dims``)."""

    dtype: str
    axis: int
    batch_dims: int


@dataclass(frozen=True)
class EmbeddingLookupParams:
    """``scale`` is the float32 dequantization scale of the hybrid int8 -> float32 lookup."""

    value_dtype: str
    output_dtype: str
    scale: float | None


def same_quantization(src: Any, dst: Any, node_name: str, op: str) -> None:
    """Data-movement ops copy codes: the output must be quantized exactly as the input."""
    if src.quantized != dst.quantized:
        raise QuantSpecError(
            f"node {node_name!r}: {op} copies codes, but {src.name!r} and {dst.name!r} are not "
            "both quantized"
        )
    if not src.quantized:
        return
    same = np.array_equal(src.scale.reshape(-1), dst.scale.reshape(-1)) and np.array_equal(
        src.zero_point.reshape(-1), dst.zero_point.reshape(-1)
    )
    if not same:
        raise QuantSpecError(
            f"node {node_name!r}: {op} copies codes unchanged (TFLM, LiteRT), so output "
            f"{dst.name!r} must have the scale and zero point of {src.name!r}: "
            f"{dst.scale.tolist()} / {dst.zero_point.tolist()} vs "
            f"{src.scale.tolist()} / {src.zero_point.tolist()}"
        )


def resolve_gather(
    data_shape: Sequence[int], index_rank: int, axis: int, batch_dims: int, what: str
) -> tuple[int, int]:
    """Wrap negative ``axis`` / ``batch_dims`` and check TFLite's constraints."""
    rank = len(data_shape)
    a = axis + rank if axis < 0 else axis
    b = batch_dims + index_rank if batch_dims < 0 else batch_dims
    if not 0 <= a < rank:
        raise ShapeError(f"{what}: axis {axis} is out of range for rank-{rank} params")
    if not (0 <= b <= a and b < rank and b <= index_rank):
        raise ShapeError(
            f"{what}: batch_dims {batch_dims} must satisfy 0 <= batch_dims <= axis ({a}), "
            f"< rank(params) ({rank}) and <= rank(indices) ({index_rank})"
        )
    return a, b


def gather_shape(
    data_shape: Sequence[int], index_shape: Sequence[int], axis: int, batch_dims: int
) -> tuple[int, ...]:
    """Output shape of GATHER with resolved ``axis`` / ``batch_dims``."""
    return (
        tuple(data_shape[:axis]) + tuple(index_shape[batch_dims:]) + tuple(data_shape[axis + 1 :])
    )


def _check_indices(idx: np.ndarray, bound: int, what: str) -> None:
    bad = (idx < 0) | (idx >= bound)
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(-1))[0])
        at = tuple(int(k) for k in np.unravel_index(i, idx.shape)) if idx.ndim else ()
        raise InvalidDataError(
            f"{what}: index {int(idx.reshape(-1)[i])} at {at} is outside [0, {bound}) "
            "(the peers fail the invoke)"
        )


def gather(params: np.ndarray, indices: np.ndarray, p: GatherParams) -> np.ndarray:
    """TFLite GATHER with ``p.axis`` / ``p.batch_dims`` (module docstring)."""
    what = "GATHER"
    x = np.asarray(params)
    idx = np.asarray(indices)
    if x.dtype != np.dtype(p.dtype):
        raise QuantSpecError(f"{what}: params must be {p.dtype}, got {x.dtype}")
    if idx.dtype.kind not in "iu":
        raise UnsupportedError(f"{what}: indices must be integers, got {idx.dtype}")
    a, b = p.axis, p.batch_dims
    if a >= x.ndim or b > idx.ndim:
        raise ShapeError(
            f"{what}: axis {a} / batch_dims {b} do not fit shapes {x.shape}, {idx.shape}"
        )
    if x.shape[:b] != idx.shape[:b]:
        raise ShapeError(
            f"{what}: the first {b} (batch) dims of params {x.shape} and indices {idx.shape} differ"
        )
    _check_indices(idx, x.shape[a], what)
    batch = int(np.prod(x.shape[:b], dtype=np.int64))
    outer = int(np.prod(x.shape[b:a], dtype=np.int64))
    inner = int(np.prod(x.shape[a + 1 :], dtype=np.int64))
    coords = idx.reshape(batch, -1).astype(np.int64)
    x4 = x.reshape(batch, outer, x.shape[a], inner)
    out = x4[np.arange(batch)[:, None, None], np.arange(outer)[None, :, None], coords[:, None, :]]
    return out.reshape(gather_shape(x.shape, idx.shape, a, b))


def embedding_lookup(ids: np.ndarray, values: np.ndarray, p: EmbeddingLookupParams) -> np.ndarray:
    """TFLM EMBEDDING_LOOKUP: rows of ``values`` (copied, or dequantized for float32 output)."""
    what = "EMBEDDING_LOOKUP"
    i = np.asarray(ids)
    v = np.asarray(values)
    if i.ndim != 1 or i.dtype.kind not in "iu":
        raise ShapeError(f"{what}: ids must be a rank-1 integer tensor, got {i.dtype} {i.shape}")
    if v.ndim < 2 or v.dtype != np.dtype(p.value_dtype):
        raise ShapeError(f"{what}: values must be {p.value_dtype} of rank >= 2, got {v.shape}")
    _check_indices(i, v.shape[0], what)
    rows = v[i.astype(np.int64)]
    if p.output_dtype == "float32" and p.value_dtype == "int8":
        return (np.float32(p.scale) * rows.astype(np.float32)).astype(np.float32)
    return rows


# ---------------------------------------------------------------------------------------------
# Graph adapters
# ---------------------------------------------------------------------------------------------


def _prepare_gather(node: Any, tensors: Mapping[str, Any], profile: Profile) -> GatherParams:
    if len(node.inputs) != 2 or len(node.outputs) != 1:
        raise ShapeError(f"node {node.name!r}: GATHER takes (params, indices) and one output")
    x, idx = tensors[node.inputs[0]], tensors[node.inputs[1]]
    out = tensors[node.outputs[0]]
    what = f"node {node.name!r} (GATHER)"
    if x.dtype not in DATA_DTYPES or out.dtype != x.dtype:
        raise UnsupportedError(f"{what}: {x.dtype} -> {out.dtype}; supported {DATA_DTYPES}")
    if idx.dtype not in INDEX_DTYPES:
        raise UnsupportedError(f"{what}: indices {idx.name!r} are {idx.dtype}; use int32")
    same_quantization(x, out, node.name, "GATHER")
    a, b = resolve_gather(
        x.shape,
        len(idx.shape),
        int(node.attrs.get("axis", 0)),
        int(node.attrs.get("batch_dims", 0)),
        what,
    )
    check_output_shape(out, gather_shape(x.shape, idx.shape, a, b), node.name)
    return GatherParams(x.dtype, a, b)


def _run_gather(p: GatherParams, inputs: Sequence[np.ndarray | None]) -> list[np.ndarray]:
    return [gather(np.asarray(inputs[0]), np.asarray(inputs[1]), p)]


def _prepare_embedding(
    node: Any, tensors: Mapping[str, Any], profile: Profile
) -> EmbeddingLookupParams:
    if len(node.inputs) != 2 or len(node.outputs) != 1:
        raise ShapeError(f"node {node.name!r}: EMBEDDING_LOOKUP takes (ids, values), one output")
    ids, v = tensors[node.inputs[0]], tensors[node.inputs[1]]
    out = tensors[node.outputs[0]]
    what = f"node {node.name!r} (EMBEDDING_LOOKUP)"
    if ids.dtype != "int32" or len(ids.shape) != 1:
        raise UnsupportedError(f"{what}: ids {ids.name!r} must be a rank-1 int32 tensor")
    if v.dtype not in ("int8", "float32") or len(v.shape) < 2:
        raise UnsupportedError(f"{what}: values {v.name!r} must be int8 or float32, rank >= 2")
    check_output_shape(out, (ids.shape[0], *v.shape[1:]), node.name)
    if v.dtype == "float32" or out.dtype == v.dtype:
        if out.dtype != v.dtype:
            raise UnsupportedError(f"{what}: float32 values need a float32 output")
        same_quantization(v, out, node.name, "EMBEDDING_LOOKUP")
        return EmbeddingLookupParams(v.dtype, out.dtype, None)
    if out.dtype != "float32":
        raise UnsupportedError(f"{what}: int8 values into {out.dtype}; use int8 or float32")
    if not v.quantized or v.per_channel:
        raise UnsupportedError(f"{what}: hybrid lookup needs per-tensor quantized values")
    if v.scalar_zero_point() != 0:
        raise QuantSpecError(
            f"{what}: values {v.name!r} have zero point {v.scalar_zero_point()}; TFLM's hybrid "
            "lookup requires 0"
        )
    return EmbeddingLookupParams("int8", "float32", v.scalar_scale())


def _run_embedding(
    p: EmbeddingLookupParams, inputs: Sequence[np.ndarray | None]
) -> list[np.ndarray]:
    return [embedding_lookup(np.asarray(inputs[0]), np.asarray(inputs[1]), p)]


register("GATHER", prepare=_prepare_gather, run=_run_gather)
register("EMBEDDING_LOOKUP", prepare=_prepare_embedding, run=_run_embedding)
