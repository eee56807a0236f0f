"""Quantization value objects: QDType, granularities, QuantSpec and QuantParams.

Conventions (ONNX QuantizeLinear / DequantizeLinear, opsets 10-25):

- real value ``r`` and code ``q`` are related by ``r = (q - zero_point) * scale``;
- per-tensor parameters have shape ``()``; per-axis parameters have shape ``(C,)`` with
  ``C = data.shape[axis]``; per-block parameters have the data's rank, with the blocked axis
  reduced to ``ceil(D / B)`` (the last block may be shorter: the "remainder block");
- codes of integer dtypes are held unpacked in the smallest of int8 / uint8 / int16 / uint16
  (sub-byte packing lives in :mod:`refq.packing`); float8 / float4 codes are raw bit patterns
  in uint8 (:mod:`refq.floatfmt`).

Every invalid value raises :class:`~refq.errors.QuantSpecError` (or
:class:`~refq.errors.ShapeError` for shapes) naming the tensor, value and index at fault.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from refq.errors import QuantSpecError, ShapeError

RoundingMode = Literal["half_even", "half_away", "half_up", "floor", "stochastic"]
ROUNDING_MODES: tuple[str, ...] = ("half_even", "half_away", "half_up", "floor", "stochastic")

# (exponent bits, mantissa bits, exponent bias, max finite, has inf, has nan) of each float format.
FLOAT_FORMATS: dict[str, tuple[int, int, int, float, bool, bool]] = {
    "float8e4m3fn": (4, 3, 7, 448.0, False, True),
    "float8e5m2": (5, 2, 15, 57344.0, True, True),
    "float4e2m1": (2, 1, 1, 6.0, False, False),
}

_INT_NAME = re.compile(r"^(u?)int(\d+)$")
# Names users (and ONNX / numpy) commonly write for the same formats.
_ALIASES = {
    "float8_e4m3fn": "float8e4m3fn",
    "float8_e5m2": "float8e5m2",
    "float4_e2m1fn": "float4e2m1",
    "float4_e2m1": "float4e2m1",
    "float4e2m1fn": "float4e2m1",
}


@dataclass(frozen=True)
class QDType:
    """A quantized element type: ``int1``..``int16``, ``uint1``..``uint16`` or a float8/float4.

    ``qmin`` / ``qmax`` are the integer code range (two's complement for signed types) or, for
    float formats, ``-max_finite`` / ``+max_finite`` as Python floats.
    """

    name: str
    bits: int
    signed: bool
    is_float: bool = False

    def __post_init__(self) -> None:
        if self.is_float:
            if self.name not in FLOAT_FORMATS:
                raise QuantSpecError(
                    f"unknown float format {self.name!r}; known: {', '.join(FLOAT_FORMATS)}"
                )
            e, m, *_ = FLOAT_FORMATS[self.name]
            if self.bits != 1 + e + m or not self.signed:
                raise QuantSpecError(f"{self.name} is a signed {1 + e + m}-bit format")
            return
        if isinstance(self.bits, bool) or not isinstance(self.bits, (int, np.integer)):
            raise QuantSpecError(f"bits must be an integer, got {self.bits!r}")
        if not 1 <= self.bits <= 16:
            raise QuantSpecError(f"bits must be in 1..16, got {self.bits}")
        expected = f"{'' if self.signed else 'u'}int{self.bits}"
        if self.name != expected:
            raise QuantSpecError(f"dtype name {self.name!r} does not match {expected!r}")

    # -- constructors -------------------------------------------------------------------------
    @classmethod
    def int(cls, bits: int, signed: bool = True) -> QDType:
        """The integer type of ``bits`` bits (1..16), signed (two's complement) or unsigned."""
        if isinstance(bits, bool) or not isinstance(bits, (int, np.integer)):
            raise QuantSpecError(f"bits must be an integer, got {bits!r}")
        bits = int(bits)
        if not 1 <= bits <= 16:
            raise QuantSpecError(f"bits must be in 1..16, got {bits}")
        return cls(f"{'' if signed else 'u'}int{bits}", bits, bool(signed))

    @classmethod
    def parse(cls, name: str | QDType | np.dtype | type) -> QDType:
        """Parse ``"int4"``, ``"uint8"``, ``"float8e4m3fn"`` (or ``float8_e4m3fn``), a numpy
        integer dtype, or pass a :class:`QDType` through."""
        if isinstance(name, QDType):
            return name
        if not isinstance(name, str):
            try:
                dt = np.dtype(name)
            except TypeError:
                raise QuantSpecError(f"cannot interpret {name!r} as a quantized dtype") from None
            if dt.kind not in "iu" or dt.itemsize > 2:
                raise QuantSpecError(
                    f"numpy dtype {dt} is not a quantized dtype (int8/uint8/int16/uint16)"
                )
            return cls.int(dt.itemsize * 8, signed=dt.kind == "i")
        key = _ALIASES.get(name.strip().lower(), name.strip().lower())
        if key in FLOAT_FORMATS:
            e, m, *_ = FLOAT_FORMATS[key]
            return cls(key, 1 + e + m, True, True)
        match = _INT_NAME.match(key)
        if match is None:
            raise QuantSpecError(
                f"unknown quantized dtype {name!r}; expected int1..int16, uint1..uint16, "
                f"{', '.join(FLOAT_FORMATS)}"
            )
        return cls.int(int(match.group(2)), signed=match.group(1) == "")

    # -- ranges and storage -------------------------------------------------------------------
    @property
    def qmin(self) -> int | float:
        if self.is_float:
            return -FLOAT_FORMATS[self.name][3]
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int | float:
        if self.is_float:
            return FLOAT_FORMATS[self.name][3]
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def storage(self) -> np.dtype:
        """The numpy dtype holding one unpacked code."""
        if self.is_float:
            return np.dtype(np.uint8)
        if self.bits <= 8:
            return np.dtype(np.int8 if self.signed else np.uint8)
        return np.dtype(np.int16 if self.signed else np.uint16)

    @property
    def is_integer(self) -> bool:
        return not self.is_float

    def __str__(self) -> str:
        return self.name


# -- granularity ------------------------------------------------------------------------------
@dataclass(frozen=True)
class PerTensor:
    """One scale / zero point for the whole tensor (parameter shape ``()``)."""


@dataclass(frozen=True)
class PerAxis:
    """One scale / zero point per index of ``axis`` (parameter shape ``(data.shape[axis],)``).

    Any axis works (negative axes count from the end, as ONNX), e.g. per output channel of a
    weight or per attention head after reshaping the head dimension out.
    """

    axis: int = 1

    def __post_init__(self) -> None:
        _check_axis_type(self.axis)


@dataclass(frozen=True)
class PerBlock:
    """One scale / zero point per ``block_size`` consecutive elements along ``axis``.

    Parameter shape is the data shape with ``axis`` reduced to ``ceil(D / block_size)``; the
    last block may be shorter (ONNX opset 21 blocked quantization).
    """

    axis: int
    block_size: int

    def __post_init__(self) -> None:
        _check_axis_type(self.axis)
        if (
            isinstance(self.block_size, bool)
            or not isinstance(self.block_size, (int, np.integer))
            or self.block_size < 1
        ):
            raise QuantSpecError(f"block_size must be an integer >= 1, got {self.block_size!r}")


Granularity = PerTensor | PerAxis | PerBlock


def _check_axis_type(axis: object) -> None:
    if isinstance(axis, bool) or not isinstance(axis, (int, np.integer)):
        raise QuantSpecError(f"axis must be an integer, got {axis!r}")


def normalize_axis(axis: int, ndim: int, what: str = "tensor") -> int:
    """``axis`` in ``[-ndim, ndim)`` mapped to ``[0, ndim)``; else a :class:`QuantSpecError`."""
    if not -ndim <= axis < ndim:
        raise QuantSpecError(
            f"axis {axis} is out of bounds for {what} of rank {ndim} (valid: {-ndim}..{ndim - 1})"
        )
    return axis % ndim


# -- spec -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class QuantSpec:
    """How to quantize: element type, symmetry, narrow range, granularity and rounding.

    ``narrow_range`` (signed integer types of 2+ bits) drops the most negative code, e.g. int8
    codes in [-127, 127] (TFLite weights, ORT symmetric int8). ``symmetric`` fixes the zero
    point (0 for signed types, the mid code for unsigned ones) when parameters are chosen by
    :func:`refq.quantize.choose_qparams`. ``rounding="stochastic"`` needs an explicit ``seed``.
    Float formats are symmetric, round to nearest even and have a zero point of 0.
    """

    dtype: QDType
    symmetric: bool = True
    narrow_range: bool = False
    granularity: Granularity = field(default_factory=PerTensor)
    rounding: RoundingMode = "half_even"
    seed: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "dtype", QDType.parse(self.dtype))
        if not isinstance(self.granularity, (PerTensor, PerAxis, PerBlock)):
            raise QuantSpecError(
                f"granularity must be PerTensor(), PerAxis(axis) or PerBlock(axis, block_size), "
                f"got {self.granularity!r}"
            )
        if self.rounding not in ROUNDING_MODES:
            raise QuantSpecError(
                f"unknown rounding mode {self.rounding!r}; known: {', '.join(ROUNDING_MODES)}"
            )
        if self.rounding == "stochastic" and self.seed is None:
            raise QuantSpecError("rounding='stochastic' needs an explicit seed (seed=None given)")
        if self.seed is not None and (
            isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer))
        ):
            raise QuantSpecError(f"seed must be an integer, got {self.seed!r}")
        dt = self.dtype
        if self.narrow_range and (dt.is_float or not dt.signed or dt.bits < 2):
            raise QuantSpecError(
                f"narrow_range applies to signed integer types of 2+ bits, not {dt.name}"
            )
        if dt.is_float:
            if not self.symmetric:
                raise QuantSpecError(f"{dt.name} quantization is symmetric (zero point 0)")
            if self.rounding != "half_even":
                raise QuantSpecError(
                    f"{dt.name} codes round to nearest even; rounding={self.rounding!r} given"
                )

    @property
    def qmin(self) -> int | float:
        """Smallest code quantize may produce (narrow range respected)."""
        return self.dtype.qmin + (1 if self.narrow_range else 0)

    @property
    def qmax(self) -> int | float:
        return self.dtype.qmax


# -- parameters -------------------------------------------------------------------------------
def _index_str(flat_index: int, shape: tuple[int, ...]) -> str:
    if not shape:
        return "()"
    return str(tuple(int(i) for i in np.unravel_index(flat_index, shape)))


@dataclass(frozen=True, eq=False)
class QuantParams:
    """Scale and zero point of one tensor, validated against its :class:`QuantSpec`.

    ``scale`` is stored as float32 (float16 is kept as given, to reproduce float16 graphs; any
    other input is rounded to float32, which is what ONNX stores). ``zero_point`` is an int32
    array of the same shape (``None`` means zeros). ``name`` is used in error messages.
    ``allow_negative_scale`` admits negative (never zero) scales, produced by ORT's MLAS
    blockwise int4 convention (``choose_qparams(..., convention="ort-mlas-int4")``).
    """

    scale: np.ndarray
    zero_point: np.ndarray | None
    spec: QuantSpec
    name: str | None = None
    allow_negative_scale: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.spec, QuantSpec):
            raise QuantSpecError(f"spec must be a QuantSpec, got {type(self.spec).__name__}")
        who = self._who()
        scale = _as_scale_array(self.scale, who)
        if self.zero_point is None:
            zp = np.zeros(scale.shape, dtype=np.int32)
        else:
            zp = _as_zero_point_array(self.zero_point, self.spec, who)
        gran = self.spec.granularity
        if isinstance(gran, PerTensor):
            if scale.size != 1:
                raise ShapeError(
                    f"per-tensor scale of {who} must hold one value, got shape {scale.shape}"
                )
            scale = scale.reshape(())
            if zp.size != 1:
                raise ShapeError(
                    f"per-tensor zero point of {who} must hold one value, got shape {zp.shape}"
                )
            zp = zp.reshape(())
        elif isinstance(gran, PerAxis):
            if scale.ndim != 1:
                raise ShapeError(f"per-axis scale of {who} must be 1-D, got shape {scale.shape}")
        elif scale.ndim < 1:
            raise ShapeError(
                f"per-block scale of {who} must have the data's rank, got shape {scale.shape}"
            )
        if zp.shape != scale.shape:
            raise ShapeError(
                f"scale and zero point of {who} have different shapes: {scale.shape} vs {zp.shape}"
            )
        _check_scale_values(scale, who, self.allow_negative_scale)
        scale.flags.writeable = False
        zp.flags.writeable = False
        object.__setattr__(self, "scale", scale)
        object.__setattr__(self, "zero_point", zp)

    def _who(self) -> str:
        return f"tensor {self.name!r}" if self.name else "the tensor"

    @property
    def dtype(self) -> QDType:
        return self.spec.dtype

    # -- shapes -------------------------------------------------------------------------------
    def axis_for(self, shape: tuple[int, ...]) -> int | None:
        """The normalized quantization axis for data of ``shape`` (None when per-tensor)."""
        gran = self.spec.granularity
        if isinstance(gran, PerTensor):
            return None
        return normalize_axis(int(gran.axis), len(shape), self._who())

    def check_shape(self, shape: tuple[int, ...]) -> None:
        """Raise ShapeError / QuantSpecError unless the parameters fit data of ``shape``."""
        shape = tuple(int(d) for d in shape)
        gran = self.spec.granularity
        who = self._who()
        if isinstance(gran, PerTensor):
            return
        axis = self.axis_for(shape)
        assert axis is not None
        if isinstance(gran, PerAxis):
            if self.scale.shape[0] != shape[axis]:
                raise ShapeError(
                    f"per-axis scale of {who} has {self.scale.shape[0]} values but data shape "
                    f"{shape} has {shape[axis]} along axis {axis}"
                )
            return
        expected = list(shape)
        expected[axis] = -(-shape[axis] // int(gran.block_size))
        if self.scale.shape != tuple(expected):
            raise ShapeError(
                f"per-block scale of {who} has shape {self.scale.shape}; data shape {shape} "
                f"with block_size {gran.block_size} along axis {axis} needs {tuple(expected)}"
            )

    def broadcast(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """Scale and zero point shaped to broadcast against data of ``shape``.

        Per-axis parameters are reshaped to ``(1, .., C, .., 1)``; per-block parameters are
        repeated ``block_size`` times along the axis and cut to the data length (remainder
        block). Per-tensor parameters are returned as 0-d arrays.
        """
        shape = tuple(int(d) for d in shape)
        self.check_shape(shape)
        gran = self.spec.granularity
        if isinstance(gran, PerTensor):
            return self.scale, self.zero_point
        axis = self.axis_for(shape)
        assert axis is not None
        if isinstance(gran, PerAxis):
            dims = [1] * len(shape)
            dims[axis] = shape[axis]
            return self.scale.reshape(dims), self.zero_point.reshape(dims)
        idx = np.arange(shape[axis]) // int(gran.block_size)
        return np.take(self.scale, idx, axis=axis), np.take(self.zero_point, idx, axis=axis)

    def __repr__(self) -> str:
        return (
            f"QuantParams(scale={self.scale!r}, zero_point={self.zero_point!r}, "
            f"spec={self.spec!r}, name={self.name!r})"
        )


def _as_scale_array(value: object, who: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu" and arr.dtype.name != "bfloat16":
        raise QuantSpecError(f"scale of {who} must be numeric, got dtype {arr.dtype}")
    if arr.dtype == np.float16:
        return np.array(arr, dtype=np.float16, copy=True)
    return np.array(arr, dtype=np.float32, copy=True)


def _check_scale_values(scale: np.ndarray, who: str, allow_negative: bool) -> None:
    flat = scale.reshape(-1)
    bad = ~np.isfinite(flat) | (flat == 0)
    if not allow_negative:
        bad |= flat < 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        rule = "nonzero and finite" if allow_negative else "positive and finite"
        raise QuantSpecError(
            f"scale of {who} has {float(flat[i])!r} at index {_index_str(i, scale.shape)}; "
            f"scales must be {rule}"
        )


def _as_zero_point_array(value: object, spec: QuantSpec, who: str) -> np.ndarray:
    arr = np.asarray(value)
    dt = spec.dtype
    if arr.dtype.kind == "f":
        if arr.size and not np.all(np.isfinite(arr)):
            i = int(np.flatnonzero(~np.isfinite(arr.reshape(-1)))[0])
            raise QuantSpecError(
                f"zero point of {who} has {float(arr.reshape(-1)[i])!r} at index "
                f"{_index_str(i, arr.shape)}; zero points must be integers"
            )
        frac = arr != np.floor(arr)
        if frac.any():
            i = int(np.flatnonzero(frac.reshape(-1))[0])
            raise QuantSpecError(
                f"zero point of {who} has {float(arr.reshape(-1)[i])!r} at index "
                f"{_index_str(i, arr.shape)}; zero points must be integers"
            )
    elif arr.dtype.kind not in "iub":
        raise QuantSpecError(f"zero point of {who} must be integer, got dtype {arr.dtype}")
    flat = arr.reshape(-1)
    if dt.is_float:
        nz = flat != 0
        if nz.any():
            i = int(np.flatnonzero(nz)[0])
            raise QuantSpecError(
                f"zero point of {who} has {flat[i].item()!r} at index {_index_str(i, arr.shape)}; "
                f"{dt.name} zero points must be 0"
            )
        return np.zeros(arr.shape, dtype=np.int32)
    lo, hi = int(dt.qmin), int(dt.qmax)
    wide = flat.astype(np.float64) if arr.dtype.kind == "f" else flat.astype(np.int64)
    out = (wide < lo) | (wide > hi)
    if out.any():
        i = int(np.flatnonzero(out)[0])
        raise QuantSpecError(
            f"zero point of {who} has {flat[i].item()!r} at index {_index_str(i, arr.shape)}, "
            f"outside {dt.name} [{lo}, {hi}]"
        )
    return wide.astype(np.int32).reshape(arr.shape)


def ceil_div(a: int, b: int) -> int:
    """``ceil(a / b)`` for non-negative integers."""
    return -(-a // b)


__all__ = [
    "FLOAT_FORMATS",
    "ROUNDING_MODES",
    "Granularity",
    "PerAxis",
    "PerBlock",
    "PerTensor",
    "QDType",
    "QuantParams",
    "QuantSpec",
    "RoundingMode",
    "ceil_div",
    "normalize_axis",
]
