"""ONNX element types and the boundary between ONNX arrays and refq's plain-NumPy values.

``onnx.numpy_helper`` hands out (and expects) ``ml_dtypes`` arrays for bfloat16, the float8 /
float6 / float4 types and int4 / uint4 / int2 / uint2. Inside refq every value is a plain NumPy
array tagged with its ONNX element type (:class:`OnnxTensor`):

* integer types (int2 ... uint64): the values, in the smallest NumPy dtype that holds them
  (int4 / int2 in int8, uint4 / uint2 in uint8);
* float16 / float32 / float64: themselves;
* bfloat16: float32 arrays whose values are all bfloat16 numbers (arithmetic in float32, then
  :func:`round_to_bfloat16`, round-to-nearest-even);
* float8 / float6 / float4 / float8e8m0: their bit codes in uint8 (low bits).

:func:`from_numpy` and :func:`to_numpy` convert at the boundary; :func:`bit_mismatches` compares
two values bit for bit (float bit patterns, integer values, minifloat codes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from onnx import TensorProto, helper

from refq.errors import ModelFormatError, UnsupportedError

Kind = Literal["int", "float", "code"]


@dataclass(frozen=True)
class ElemType:
    """One ONNX tensor element type as refq stores it."""

    code: int
    name: str
    """Lower-case ONNX name, as in schema type strings ``tensor(<name>)``."""
    kind: Kind
    storage: np.dtype
    bits: int
    signed: bool = True
    exponent_bits: int = 0
    """Minifloats only: exponent field width."""

    @property
    def type_str(self) -> str:
        return f"tensor({self.name})"

    @property
    def lo(self) -> int:
        """Smallest integer of an integer type."""
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def hi(self) -> int:
        """Largest integer of an integer type."""
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1


def _table() -> dict[int, ElemType]:
    T = TensorProto
    i8, u8 = np.dtype(np.int8), np.dtype(np.uint8)
    rows = [
        ElemType(T.INT2, "int2", "int", i8, 2),
        ElemType(T.UINT2, "uint2", "int", u8, 2, signed=False),
        ElemType(T.INT4, "int4", "int", i8, 4),
        ElemType(T.UINT4, "uint4", "int", u8, 4, signed=False),
        ElemType(T.INT8, "int8", "int", i8, 8),
        ElemType(T.UINT8, "uint8", "int", u8, 8, signed=False),
        ElemType(T.INT16, "int16", "int", np.dtype(np.int16), 16),
        ElemType(T.UINT16, "uint16", "int", np.dtype(np.uint16), 16, signed=False),
        ElemType(T.INT32, "int32", "int", np.dtype(np.int32), 32),
        ElemType(T.UINT32, "uint32", "int", np.dtype(np.uint32), 32, signed=False),
        ElemType(T.INT64, "int64", "int", np.dtype(np.int64), 64),
        ElemType(T.UINT64, "uint64", "int", np.dtype(np.uint64), 64, signed=False),
        ElemType(T.FLOAT16, "float16", "float", np.dtype(np.float16), 16),
        ElemType(T.BFLOAT16, "bfloat16", "float", np.dtype(np.float32), 16),
        ElemType(T.FLOAT, "float", "float", np.dtype(np.float32), 32),
        ElemType(T.DOUBLE, "double", "float", np.dtype(np.float64), 64),
        ElemType(T.FLOAT8E4M3FN, "float8e4m3fn", "code", u8, 8, exponent_bits=4),
        ElemType(T.FLOAT8E4M3FNUZ, "float8e4m3fnuz", "code", u8, 8, exponent_bits=4),
        ElemType(T.FLOAT8E5M2, "float8e5m2", "code", u8, 8, exponent_bits=5),
        ElemType(T.FLOAT8E5M2FNUZ, "float8e5m2fnuz", "code", u8, 8, exponent_bits=5),
        ElemType(T.FLOAT8E8M0, "float8e8m0", "code", u8, 8, signed=False, exponent_bits=8),
        ElemType(T.FLOAT6E2M3, "float6e2m3", "code", u8, 6, exponent_bits=2),
        ElemType(T.FLOAT6E3M2, "float6e3m2", "code", u8, 6, exponent_bits=3),
        ElemType(T.FLOAT4E2M1, "float4e2m1", "code", u8, 4, exponent_bits=2),
    ]
    return {r.code: r for r in rows}


ELEM_TYPES: dict[int, ElemType] = _table()
BY_NAME: dict[str, ElemType] = {e.name: e for e in ELEM_TYPES.values()}


def elem_type(code: int, *, where: str = "") -> ElemType:
    """The :class:`ElemType` of an ONNX ``TensorProto.DataType`` code."""
    try:
        return ELEM_TYPES[code]
    except KeyError:
        try:
            name = TensorProto.DataType.Name(code).lower()
        except ValueError:
            name = f"unknown type code {code}"
        raise UnsupportedError(
            f"{where + ': ' if where else ''}element type {name} is not supported by refq's "
            f"ONNX backend"
        ) from None


def type_name(code: int) -> str:
    """Lower-case ONNX name of a type code (also for types refq does not support)."""
    try:
        return TensorProto.DataType.Name(code).lower()
    except ValueError:
        return f"type{code}"


@dataclass(frozen=True, eq=False)
class OnnxTensor:
    """A value inside refq's ONNX executor: an ONNX element type and a plain NumPy array."""

    elem_type: int
    data: np.ndarray

    @property
    def info(self) -> ElemType:
        return ELEM_TYPES[self.elem_type]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def type_name(self) -> str:
        return self.info.name

    def __repr__(self) -> str:
        return f"OnnxTensor({self.type_name}, shape={self.shape})"


def make(elem: int | str, data: np.ndarray) -> OnnxTensor:
    """Tag an internal-form array (see the module docstring) with an element type."""
    e = BY_NAME[elem] if isinstance(elem, str) else elem_type(elem)
    return OnnxTensor(e.code, np.asarray(data).astype(e.storage, copy=False))


def onnx_numpy_dtype(code: int) -> np.dtype:
    """The NumPy / ml_dtypes dtype ``onnx.numpy_helper`` uses for a type code."""
    return np.dtype(helper.tensor_dtype_to_np_dtype(code))


def from_numpy(x: np.ndarray, elem: int | None = None, *, name: str = "") -> OnnxTensor:
    """Convert an array as ``onnx.numpy_helper`` produces it into an :class:`OnnxTensor`.

    ``elem`` (a declared ``TensorProto`` type) must agree with the array's dtype when given.
    """
    x = np.asarray(x)
    try:
        actual = helper.np_dtype_to_tensor_dtype(x.dtype)
    except (KeyError, ValueError, TypeError):
        raise UnsupportedError(
            f"tensor {name!r}: NumPy dtype {x.dtype} has no ONNX element type"
        ) from None
    if elem is not None and elem != actual:
        raise ModelFormatError(
            f"tensor {name!r} is declared {type_name(elem)} but the array has dtype {x.dtype} "
            f"({type_name(actual)})"
        )
    e = elem_type(actual, where=f"tensor {name!r}")
    if e.kind == "int":
        data = x.astype(e.storage)
    elif e.code == TensorProto.BFLOAT16:
        data = x.astype(np.float32)
    elif e.kind == "float":
        data = x.copy()
    else:
        # ml_dtypes keeps sub-byte float codes in the low bits of one byte.
        data = x.view(np.uint8) & np.uint8((1 << e.bits) - 1)
    return OnnxTensor(e.code, data)


def to_numpy(t: OnnxTensor) -> np.ndarray:
    """Convert an :class:`OnnxTensor` into the array ``onnx.numpy_helper`` would produce."""
    e = t.info
    target = onnx_numpy_dtype(e.code)
    if e.kind == "code":
        return np.ascontiguousarray(t.data, dtype=np.uint8).view(target)
    return t.data.astype(target)


def round_to_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 -> nearest bfloat16 (ties to even), returned as float32. NaN stays NaN."""
    x = np.asarray(x, dtype=np.float32)
    bits = x.view(np.uint32).astype(np.uint64)
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    # A NaN keeps its sign and top payload bits, quieted so it cannot turn into an infinity.
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    rounded = np.where(nan, (bits & 0xFFFF0000) | 0x00400000, rounded)
    return rounded.astype(np.uint32).view(np.float32).reshape(x.shape)


def float_bits(data: np.ndarray) -> np.ndarray:
    """Bit patterns of a float array as unsigned integers of the same width."""
    return data.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[data.dtype.itemsize])


def bit_mismatches(got: OnnxTensor, want: OnnxTensor) -> int:
    """Number of elements whose bits differ (all of them if type or shape differ)."""
    if got.elem_type != want.elem_type or got.shape != want.shape:
        return max(got.data.size, want.data.size, 1)
    if got.info.kind == "float":
        return int(np.count_nonzero(float_bits(got.data) != float_bits(want.data)))
    return int(np.count_nonzero(got.data != want.data))
