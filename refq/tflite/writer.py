"""Write a refq :class:`~refq.graph.Graph` as a .tflite flatbuffer (through tflite-micro's model
editor, no TensorFlow), so the same model can run on TFLite Micro or LiteRT and be compared with
refq's golden outputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from refq.errors import ShapeError, UnsupportedError
from refq.graph import Graph, TensorInfo
from refq.tflite.optable import attrs_to_options, builtin_code, tensor_type_code
from refq.tflite.schema import model_editor


def _tensor_bytes(info: TensorInfo) -> bytes:
    data = np.ascontiguousarray(info.data, dtype=info.np_dtype)
    if info.dtype == "int4":
        from refq.packing import pack_int4

        # TFLite stores INT4 constants packed two per byte, element 0 in the low nibble.
        return pack_int4(data.reshape(-1), name=info.name).tobytes()
    return data.tobytes()


def write_tflite(
    graph: Graph, shapes: Mapping[str, Sequence[int]] | None = None, description: str = "refq"
) -> bytes:
    """Serialize ``graph``. ``shapes`` fixes run-time (``None``) dimensions by tensor name."""
    me = model_editor()
    graph.validate()
    shapes = dict(shapes or {})
    sg = me.Subgraph()
    made: dict[str, object] = {}

    def tensor(name: str):
        if name in made:
            return made[name]
        info = graph.tensors[name]
        shape = tuple(shapes.get(name, info.shape))
        if any(d is None for d in shape):
            raise ShapeError(f"tensor {name!r} has run-time dims {shape}; pass shapes={{...}}")
        quant = None
        if info.quantized:
            scales = [float(s) for s in np.atleast_1d(info.scale)]
            zps = [int(z) for z in np.atleast_1d(info.zero_point)]
            quant = me.Quantization(scales, zps, info.axis if info.per_channel else None)
        kwargs = {}
        if info.is_constant:
            kwargs["data"] = _tensor_bytes(info)
        t = sg.add_tensor(
            shape=shape,
            dtype=tensor_type_code(info.dtype),
            quantization=quant,
            name=name,
            **kwargs,
        )
        if info.is_state:
            t.is_variable = True
        made[name] = t
        return t

    for name in graph.inputs:
        tensor(name)
    for node in graph.nodes:
        ins = [None if n is None else tensor(n) for n in node.inputs]
        outs = [tensor(n) for n in node.outputs]
        try:
            code = builtin_code(node.op)
        except UnsupportedError as exc:
            raise UnsupportedError(f"node {node.name!r}: {exc}") from None
        op = sg.add_operator(opcode=code, inputs=ins, outputs=outs)
        options_type, options = attrs_to_options(node.op, node.attrs)
        if options is not None:
            op._fb.builtinOptionsType = options_type
            op._fb.builtinOptions = options
    sg.inputs = [made[n] for n in graph.inputs]
    sg.outputs = [made[n] for n in graph.outputs]
    model = me.Model(subgraphs=[sg], description=description)
    return bytes(model.build())
