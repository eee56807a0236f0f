"""refq as an ONNX backend (``onnx.backend.base.Backend``), so ONNX's own test runner can run it.

Usage::

    from refq.onnx.backend import RefqBackend
    outputs = RefqBackend.run_model(model, [x])          # or RefqBackend.prepare(model).run(...)

    import onnx.backend.test
    tests = onnx.backend.test.BackendTest(RefqBackend, __name__)

Graphs are executed node by node in their (topological) order with the operators of
:mod:`refq.onnx.ops`; any other op raises :class:`UnsupportedError` naming the op and the node.
Inputs and outputs are the arrays ``onnx.numpy_helper`` uses (ml_dtypes for bfloat16, float8,
float4, float6, int4, int2); :meth:`RefqBackendRep.run_tensors` returns refq's exact values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
import onnx.defs
from onnx import ModelProto, NodeProto, numpy_helper
from onnx.backend.base import Backend, BackendRep, namedtupledict

from refq.errors import ModelFormatError, UnsupportedError
from refq.onnx.node import NodeContext, make_context, opset_of
from refq.onnx.ops import get_op
from refq.onnx.tensor import OnnxTensor, from_numpy, to_numpy, type_name


def _tensor_elem_type(vi: onnx.ValueInfoProto) -> int:
    if not vi.type.HasField("tensor_type"):
        raise UnsupportedError(f"graph value {vi.name!r}: only tensor types are supported")
    return int(vi.type.tensor_type.elem_type)


def _bind(
    names: Sequence[str], inputs: Any, declared: Mapping[str, int], what: str
) -> dict[str, OnnxTensor]:
    """Map positional / named input arrays onto ``names`` and convert them."""
    if isinstance(inputs, Mapping):
        missing = [n for n in names if n not in inputs]
        if missing:
            raise ModelFormatError(f"{what}: no value given for input(s) {missing}")
        arrays = [inputs[n] for n in names]
    else:
        if isinstance(inputs, np.ndarray):
            inputs = [inputs]
        arrays = list(inputs)
        if len(arrays) != len(names):
            raise ModelFormatError(
                f"{what}: {len(arrays)} input arrays given for {len(names)} inputs {list(names)}"
            )
    return {
        n: from_numpy(a, declared.get(n) or None, name=n)
        for n, a in zip(names, arrays, strict=True)
    }


def run_node_values(
    ctx: NodeContext, node: NodeProto, values: Mapping[str, OnnxTensor]
) -> list[OnnxTensor]:
    """Run one node on refq values, checking its input and output types against the schema."""
    op = get_op(ctx)
    ins: list[OnnxTensor | None] = []
    for name in node.input:
        if not name:
            ins.append(None)
        elif name in values:
            ins.append(values[name])
        else:
            raise ModelFormatError(f"{ctx.where}: input {name!r} is not produced before the node")
    while ins and ins[-1] is None:
        ins.pop()  # trailing optional inputs left out
    ctx.check_inputs(ins)
    outs = op(ctx, ins)
    ctx.check_outputs(outs)
    if len(outs) < len([o for o in node.output if o]):
        raise ModelFormatError(f"{ctx.where}: {len(node.output)} outputs asked, {len(outs)} made")
    return outs


class RefqBackendRep(BackendRep):
    """A prepared model: schemas resolved, initializers converted, ops looked up."""

    def __init__(self, model: ModelProto) -> None:
        graph = model.graph
        self.model = model
        self.opset = opset_of(model.opset_import)
        self.initializers = {
            t.name: from_numpy(numpy_helper.to_array(t), t.data_type, name=t.name)
            for t in graph.initializer
        }
        self.input_names = [vi.name for vi in graph.input if vi.name not in self.initializers]
        self.input_types = {vi.name: _tensor_elem_type(vi) for vi in graph.input}
        self.output_names = [vi.name for vi in graph.output]
        self.output_types = {vi.name: _tensor_elem_type(vi) for vi in graph.output}
        self.nodes = [(n, make_context(n, self.opset, i)) for i, n in enumerate(graph.node)]
        for _, ctx in self.nodes:
            get_op(ctx)  # fail at prepare time on unsupported ops

    def run_tensors(self, inputs: Any) -> list[OnnxTensor]:
        """Execute the graph; outputs as refq values (exact bits, no ml_dtypes conversion)."""
        values: dict[str, OnnxTensor] = dict(self.initializers)
        values.update(_bind(self.input_names, inputs, self.input_types, "model"))
        for node, ctx in self.nodes:
            outs = run_node_values(ctx, node, values)
            for name, value in zip(node.output, outs, strict=False):
                if name:
                    values[name] = value
        results = []
        for name in self.output_names:
            if name not in values:
                raise ModelFormatError(f"graph output {name!r} is never produced")
            value = values[name]
            declared = self.output_types.get(name)
            if declared and declared != value.elem_type:
                raise ModelFormatError(
                    f"graph output {name!r} is declared {type_name(declared)} but refq computed "
                    f"{value.type_name}"
                )
            results.append(value)
        return results

    def run(self, inputs: Any, **kwargs: Any) -> tuple[Any, ...]:
        """Execute the graph; outputs as ``onnx.numpy_helper`` arrays, by position or name."""
        outs = [to_numpy(t) for t in self.run_tensors(inputs)]
        return namedtupledict("Outputs", self.output_names)(*outs)


class RefqBackend(Backend):
    """refq's exact ONNX quantization operators behind ONNX's backend API (CPU only)."""

    @classmethod
    def is_compatible(cls, model: ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        try:
            RefqBackendRep(model)
        except (UnsupportedError, ModelFormatError):
            return False
        return cls.supports_device(device)

    @classmethod
    def prepare(cls, model: ModelProto, device: str = "CPU", **kwargs: Any) -> RefqBackendRep:
        if not cls.supports_device(device):
            raise UnsupportedError(f"refq runs on CPU only; device {device!r} requested")
        super().prepare(model, device, **kwargs)  # onnx.checker
        return RefqBackendRep(model)

    @classmethod
    def run_model(
        cls, model: ModelProto, inputs: Any, device: str = "CPU", **kwargs: Any
    ) -> tuple[Any, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(
        cls,
        node: NodeProto,
        inputs: Any,
        device: str = "CPU",
        outputs_info: Sequence[tuple[np.dtype, tuple[int, ...]]] | None = None,
        **kwargs: Any,
    ) -> tuple[Any, ...]:
        """Run one node; ``opset_version`` (keyword) defaults to the installed onnx's latest."""
        if not cls.supports_device(device):
            raise UnsupportedError(f"refq runs on CPU only; device {device!r} requested")
        super().run_node(node, inputs, device, outputs_info, **kwargs)  # onnx.checker
        opset = int(kwargs.get("opset_version", onnx.defs.onnx_opset_version()))
        ctx = make_context(node, opset)
        names = [n for n in node.input if n]
        values = _bind(names, inputs, {}, ctx.where)
        outs = run_node_values(ctx, node, values)
        out_names = [n for n in node.output if n]
        return namedtupledict("Outputs", out_names)(*(to_numpy(t) for t in outs[: len(out_names)]))

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.split(":")[0].upper() == "CPU"


prepare = RefqBackend.prepare
run_model = RefqBackend.run_model
run_node = RefqBackend.run_node
supports_device = RefqBackend.supports_device
