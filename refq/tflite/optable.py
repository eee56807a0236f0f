"""The mapping between TFLite builtin operators / options and refq graph ops / attrs.

Graph op names are the TFLite builtin names for the ops TFLite has (``FULLY_CONNECTED``...).
Attributes use snake_case names; fused activations are the TFLite enum names
(``NONE``, ``RELU``, ``RELU_N1_TO_1``, ``RELU6``). One table serves the reader and the writer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from refq.errors import UnsupportedError
from refq.tflite.schema import schema

ACTIVATIONS = ("NONE", "RELU", "RELU_N1_TO_1", "RELU6", "TANH", "SIGN_BIT")

# TFLite TensorType name -> refq graph dtype
TENSOR_TYPES: dict[str, str] = {
    "INT8": "int8",
    "UINT8": "uint8",
    "INT16": "int16",
    "UINT16": "uint16",
    "INT32": "int32",
    "INT64": "int64",
    "FLOAT32": "float32",
    "INT4": "int4",
    "BOOL": "bool",
}


@dataclass(frozen=True)
class Field:
    attr: str  # refq attribute name
    field: str  # flatbuffer field of the options object
    kind: str  # "activation" | "bool" | "int" | "float" | "ints"
    default: Any


@dataclass(frozen=True)
class OpMapping:
    op: str
    options: str | None  # options table name in the schema, e.g. "FullyConnectedOptions"
    fields: tuple[Field, ...] = ()


_ACT = Field("activation", "fusedActivationFunction", "activation", "NONE")

OPS: dict[str, OpMapping] = {
    m.op: m
    for m in (
        OpMapping(
            "FULLY_CONNECTED",
            "FullyConnectedOptions",
            (_ACT, Field("keep_num_dims", "keepNumDims", "bool", False)),
        ),
        OpMapping(
            "BATCH_MATMUL",
            "BatchMatMulOptions",
            (Field("adj_x", "adjX", "bool", False), Field("adj_y", "adjY", "bool", False)),
        ),
        OpMapping("ADD", "AddOptions", (_ACT,)),
        OpMapping("SUB", "SubOptions", (_ACT,)),
        OpMapping("MUL", "MulOptions", (_ACT,)),
        OpMapping("SOFTMAX", "SoftmaxOptions", (Field("beta", "beta", "float", 1.0),)),
        OpMapping("LOG_SOFTMAX", "LogSoftmaxOptions"),
        OpMapping("MEAN", "ReducerOptions", (Field("keep_dims", "keepDims", "bool", False),)),
        OpMapping("SUM", "ReducerOptions", (Field("keep_dims", "keepDims", "bool", False),)),
        OpMapping("SQUARED_DIFFERENCE", "SquaredDifferenceOptions"),
        OpMapping("RSQRT", None),
        OpMapping("TANH", None),
        OpMapping("LOGISTIC", None),
        OpMapping("EXP", "ExpOptions"),
        OpMapping("HARD_SWISH", "HardSwishOptions"),
        OpMapping("GELU", "GeluOptions", (Field("approximate", "approximate", "bool", False),)),
        OpMapping("QUANTIZE", None),
        OpMapping("DEQUANTIZE", None),
        OpMapping(
            "GATHER",
            "GatherOptions",
            (Field("axis", "axis", "int", 0), Field("batch_dims", "batchDims", "int", 0)),
        ),
        OpMapping("EMBEDDING_LOOKUP", None),
        OpMapping("CONCATENATION", "ConcatenationOptions", (Field("axis", "axis", "int", 0), _ACT)),
        OpMapping("TRANSPOSE", "TransposeOptions"),
        OpMapping("RESHAPE", "ReshapeOptions", (Field("new_shape", "newShape", "ints", None),)),
    )
}


def builtin_code(op: str) -> int:
    """The BuiltinOperator enum value of a graph op."""
    if op not in OPS:
        raise UnsupportedError(f"op {op!r} has no TFLite builtin mapping in refq")
    return getattr(schema().BuiltinOperator, op)


def builtin_name(code: int) -> str:
    """The BuiltinOperator name of an enum value (e.g. 9 -> 'FULLY_CONNECTED')."""
    for name, value in vars(schema().BuiltinOperator).items():
        if not name.startswith("_") and value == code:
            return name
    raise UnsupportedError(f"unknown TFLite builtin operator code {code}")


def tensor_type_code(dtype: str) -> int:
    for name, ours in TENSOR_TYPES.items():
        if ours == dtype:
            return getattr(schema().TensorType, name)
    raise UnsupportedError(f"dtype {dtype!r} has no TFLite tensor type")


def tensor_type_name(code: int) -> str:
    """refq dtype of a TFLite TensorType value (UnsupportedError for types refq has not)."""
    for name, value in vars(schema().TensorType).items():
        if not name.startswith("_") and value == code:
            if name in TENSOR_TYPES:
                return TENSOR_TYPES[name]
            raise UnsupportedError(f"TFLite tensor type {name} is not supported by refq")
    raise UnsupportedError(f"unknown TFLite tensor type code {code}")


def options_to_attrs(op: str, options: Any) -> dict[str, Any]:
    """Decode a builtin options object (``...OptionsT`` or None) into refq attrs."""
    mapping = OPS[op]
    attrs: dict[str, Any] = {}
    for f in mapping.fields:
        raw = getattr(options, f.field, None) if options is not None else None
        if raw is None:
            attrs[f.attr] = f.default
        elif f.kind == "activation":
            if not 0 <= raw < len(ACTIVATIONS):
                raise UnsupportedError(f"{op}: unknown fused activation code {raw}")
            attrs[f.attr] = ACTIVATIONS[raw]
        elif f.kind == "bool":
            attrs[f.attr] = bool(raw)
        elif f.kind == "int":
            attrs[f.attr] = int(raw)
        elif f.kind == "float":
            attrs[f.attr] = float(raw)
        else:
            attrs[f.attr] = [int(v) for v in raw]
    return attrs


def attrs_to_options(op: str, attrs: dict[str, Any]) -> tuple[int, Any]:
    """Encode refq attrs as (BuiltinOptions type, ``...OptionsT`` object) for the writer."""
    mapping = OPS[op]
    if mapping.options is None:
        return 0, None
    s = schema()
    opts = getattr(s, mapping.options + "T")()
    for f in mapping.fields:
        value = attrs.get(f.attr, f.default)
        if value is None:
            continue
        if f.kind == "activation":
            if value not in ACTIVATIONS:
                raise UnsupportedError(f"{op}: unknown fused activation {value!r}")
            value = ACTIVATIONS.index(value)
        elif f.kind == "ints":
            value = [int(v) for v in value]
        setattr(opts, f.field, value)
    return getattr(s.BuiltinOptions, mapping.options), opts
