"""Ops that move codes: RESHAPE (an alias, no code), GATHER, EMBEDDING_LOOKUP, CONCATENATION,
TRANSPOSE (refq_<op>_s8 kernels that move elements of any size in bytes).

Their params (:mod:`refq.kernels.gather`, :mod:`refq.kernels.shape_ops`) hold only axes and
dtypes; the sizes the kernels need come from the tensors' fixed shapes here.
"""

from __future__ import annotations

import numpy as np

from codegen.lower import KernelSpec, LowerContext, lowering, register_kernel
from refq.graph import Node
from refq.kernels.gather import EmbeddingLookupParams, GatherParams
from refq.kernels.shape_ops import ConcatParams, ReshapeParams, TransposeParams

for _name, _bytes in (
    ("refq_gather_s8", 300),
    ("refq_embedding_lookup_s8", 300),
    ("refq_concatenation_s8", 200),
    ("refq_transpose_s8", 300),
):
    register_kernel(KernelSpec(_name, code_bytes=_bytes))

MAX_RANK = 6


def _prod(dims: tuple[int, ...] | list[int]) -> int:
    return int(np.prod(dims, dtype=np.int64))


@lowering("RESHAPE")
def lower_reshape(ctx: LowerContext, node: Node, p: ReshapeParams) -> None:
    ctx.alias(node.outputs[0], node.inputs[0])


@lowering("GATHER")
def lower_gather(ctx: LowerContext, node: Node, p: GatherParams) -> None:
    data, indices = node.inputs
    (y,) = node.outputs
    shape = ctx.shape(data)
    ishape = ctx.shape(indices)
    a, b = p.axis, p.batch_dims
    batch = _prod(shape[:b])
    ctx.call(
        "refq_gather_s8",
        [
            ("batch", batch),
            ("outer", _prod(shape[b:a])),
            ("axis_size", shape[a]),
            ("inner", _prod(shape[a + 1 :])),
            ("coords", _prod(ishape) // max(batch, 1) if batch else 0),
            ("element_size", ctx.info(data).np_dtype.itemsize),
            ("index_size", ctx.info(indices).np_dtype.itemsize),
        ],
        [ctx.ptr(data), ctx.ptr(indices), ctx.ptr(y)],
    )


@lowering("EMBEDDING_LOOKUP")
def lower_embedding_lookup(ctx: LowerContext, node: Node, p: EmbeddingLookupParams) -> None:
    ids, values = node.inputs
    (y,) = node.outputs
    vshape = ctx.shape(values)
    dequantize = p.output_dtype == "float32" and p.value_dtype == "int8"
    scale = float(np.float32(p.scale)) if dequantize else 0.0
    ctx.call(
        "refq_embedding_lookup_s8",
        [
            ("rows", vshape[0]),
            ("row_elements", _prod(vshape[1:])),
            ("element_size", ctx.info(values).np_dtype.itemsize),
            ("dequantize", int(dequantize)),
            ("scale", f"{scale.hex()}f"),
        ],
        [ctx.count(ids), ctx.ptr(ids), ctx.ptr(values), ctx.ptr(y)],
    )


@lowering("CONCATENATION")
def lower_concatenation(ctx: LowerContext, node: Node, p: ConcatParams) -> None:
    (y,) = node.outputs
    out = ctx.shape(y)
    size = ctx.info(y).np_dtype.itemsize
    inner = [_prod(ctx.shape(x)[p.axis :]) * size for x in node.inputs]
    pointers = ctx.static_ident("inputs")
    ctx.call(
        "refq_concatenation_s8",
        [
            ("outer", _prod(out[: p.axis])),
            ("count", len(node.inputs)),
            ("inner_bytes", ctx.const(f"{node.name}:inner_bytes", "int32_t", inner, "bytes")),
            ("inputs", pointers),
        ],
        [ctx.ptr(y)],
        statics=[
            f"static const void *const {pointers}[{len(node.inputs)}] = {{"
            + ", ".join(ctx.ptr(x) for x in node.inputs)
            + "};"
        ],
    )


@lowering("TRANSPOSE")
def lower_transpose(ctx: LowerContext, node: Node, p: TransposeParams) -> None:
    x = node.inputs[0]
    (y,) = node.outputs
    shape = ctx.shape(x)
    strides = [_prod(shape[d + 1 :]) for d in range(len(shape))]
    dims = [(shape[a], strides[a]) for a in p.perm if shape[a] != 1]
    merged: list[tuple[int, int]] = []
    for n, s in dims:  # output dims contiguous in the input merge into one
        if merged and merged[-1][1] == s * n:
            merged[-1] = (merged[-1][0] * n, s)
        else:
            merged.append((n, s))
    if not merged:
        merged = [(1, 0)]
    if len(merged) > MAX_RANK:
        raise ctx.unsupported(f"TRANSPOSE of {len(merged)} non-trivial dimensions (at most 6)")

    def arr(values: list[int]) -> str:
        return "{" + ", ".join(str(v) for v in values + [0] * (MAX_RANK - len(values))) + "}"

    ctx.call(
        "refq_transpose_s8",
        [
            ("rank", len(merged)),
            ("shape", arr([m[0] for m in merged])),
            ("in_stride", arr([m[1] for m in merged])),
            ("element_size", ctx.info(x).np_dtype.itemsize),
        ],
        [ctx.ptr(x), ctx.ptr(y)],
    )
