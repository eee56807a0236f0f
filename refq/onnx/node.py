"""One ONNX node ready to run: its schema version, attributes with defaults, and type checks.

The operator schemas come from the installed ``onnx`` (``onnx.defs``): the opset a model imports
selects the schema version (the latest ``since_version`` not above it), whose attribute defaults
and type constraints apply. Types are checked against the schema at run time, so an operator
accepts exactly the element types its opset allows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx
import onnx.defs
from onnx import AttributeProto, NodeProto

from refq.errors import ModelFormatError, UnsupportedError
from refq.onnx.tensor import OnnxTensor, type_name

_OPTIONAL = onnx.defs.OpSchema.FormalParameterOption.Optional
_VARIADIC = onnx.defs.OpSchema.FormalParameterOption.Variadic


@dataclass(frozen=True)
class NodeContext:
    """What an operator implementation needs to know about its node."""

    op_type: str
    name: str
    since_version: int
    """``since_version`` of the schema in force (e.g. 21 for QuantizeLinear in opset 22)."""
    opset: int
    """The ``ai.onnx`` opset version the model imports."""
    attrs: dict[str, Any] = field(default_factory=dict)
    schema: onnx.defs.OpSchema | None = field(default=None, repr=False, compare=False)

    @property
    def where(self) -> str:
        """``"QuantizeLinear node 'q1' (opset 21)"``, for error messages."""
        return f"{self.op_type} node {self.name!r} (opset {self.opset})"

    def attr(self, key: str, default: Any = None) -> Any:
        value = self.attrs.get(key)
        return default if value is None else value

    def check_inputs(self, inputs: Sequence[OnnxTensor | None]) -> None:
        """Arity, required inputs and element types against the schema."""
        if self.schema is None:
            return
        s = self.schema
        if len(inputs) > s.max_input or len(inputs) < s.min_input:
            raise ModelFormatError(
                f"{self.where}: {len(inputs)} inputs; the schema allows {s.min_input} to "
                f"{s.max_input}"
            )
        self._check_types(s.inputs, inputs, "input")

    def check_outputs(self, outputs: Sequence[OnnxTensor | None]) -> None:
        if self.schema is not None:
            self._check_types(self.schema.outputs, outputs, "output")

    def _check_types(
        self,
        formals: Sequence[onnx.defs.OpSchema.FormalParameter],
        values: Sequence[OnnxTensor | None],
        what: str,
    ) -> None:
        constraints = {
            tc.type_param_str: set(tc.allowed_type_strs) for tc in self.schema.type_constraints
        }
        bound: dict[str, str] = {}
        for i, value in enumerate(values):
            if not formals:
                break
            formal = formals[min(i, len(formals) - 1)]
            if i >= len(formals) and formal.option != _VARIADIC:
                break
            if value is None:
                if formal.option != _OPTIONAL:
                    raise ModelFormatError(f"{self.where}: required {what} {formal.name!r} missing")
                continue
            actual = value.info.type_str
            param = formal.type_str
            allowed = constraints.get(param, {param})
            if actual not in allowed:
                names = ", ".join(sorted(a[7:-1] for a in allowed))
                raise UnsupportedError(
                    f"{self.where}: {what} {formal.name!r} has type {type_name(value.elem_type)}, "
                    f"which opset {self.opset} does not allow (allowed: {names})"
                )
            homogeneous = formal.option != _VARIADIC or formal.is_homogeneous
            if param in constraints and homogeneous:
                first = bound.setdefault(param, actual)
                if first != actual:
                    raise ModelFormatError(
                        f"{self.where}: type parameter {param} is bound to both {first[7:-1]} and "
                        f"{actual[7:-1]} ({what} {formal.name!r})"
                    )


def _attribute_value(attr: AttributeProto, where: str) -> Any:
    if attr.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS):
        raise UnsupportedError(f"{where}: graph attribute {attr.name!r} (subgraphs) not supported")
    if attr.ref_attr_name:
        raise UnsupportedError(f"{where}: attribute {attr.name!r} refers to a function attribute")
    value = onnx.helper.get_attribute_value(attr)
    return value.decode() if isinstance(value, bytes) else value


def opset_of(opset_imports: Sequence[onnx.OperatorSetIdProto], domain: str = "") -> int:
    """The opset version a model imports for ``domain`` (``""`` and ``"ai.onnx"`` are one)."""
    for o in opset_imports:
        if (o.domain or "") in (("", "ai.onnx") if domain in ("", "ai.onnx") else (domain,)):
            return int(o.version)
    raise ModelFormatError(f"the model does not import an opset for domain {domain or 'ai.onnx'!r}")


def make_context(node: NodeProto, opset: int, index: int = 0) -> NodeContext:
    """Resolve ``node``'s schema for ``opset`` and its attributes (defaults filled in)."""
    name = node.name or f"#{index}"
    where = f"{node.op_type} node {name!r} (opset {opset})"
    if node.domain not in ("", "ai.onnx"):
        raise UnsupportedError(f"{where}: domain {node.domain!r} is not supported")
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, "")
    except onnx.defs.SchemaError:
        raise UnsupportedError(f"{where}: no ONNX schema for this op in opset {opset}") from None
    attrs: dict[str, Any] = {}
    for key, spec in schema.attributes.items():
        if spec.default_value.type != AttributeProto.UNDEFINED:
            attrs[key] = _attribute_value(spec.default_value, where)
    for attr in node.attribute:
        if attr.name not in schema.attributes:
            raise ModelFormatError(
                f"{where}: attribute {attr.name!r} is not defined in schema version "
                f"{schema.since_version}"
            )
        attrs[attr.name] = _attribute_value(attr, where)
    for key, spec in schema.attributes.items():
        if spec.required and key not in attrs:
            raise ModelFormatError(f"{where}: required attribute {key!r} missing")
    return NodeContext(node.op_type, name, schema.since_version, opset, attrs, schema)
