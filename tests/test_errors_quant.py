"""Every bad-input case of issue 2's quantization core raises a RefqError naming the value."""

from __future__ import annotations

import numpy as np
import pytest

from refq.errors import (
    InvalidDataError,
    PackingError,
    QuantSpecError,
    RefqError,
    ShapeError,
)
from refq.packing import unpack_int4
from refq.quantize import choose_qparams, dequantize, quantize, quantize_dynamic_uint8
from refq.spec import PerAxis, PerBlock, QDType, QuantParams, QuantSpec

INT8_AXIS0 = QuantSpec("int8", granularity=PerAxis(0))


@pytest.mark.parametrize(
    ("scale", "shown"),
    [
        ([1.0, 0.0, 2.0], r"0\.0 at index \(1,\)"),
        ([1.0, 2.0, -0.5], r"-0\.5 at index \(2,\)"),
        ([np.nan, 1.0, 1.0], r"nan at index \(0,\)"),
        ([1.0, np.inf, 1.0], r"inf at index \(1,\)"),
        ([1.0, 1.0, -np.inf], r"-inf at index \(2,\)"),
    ],
)
def test_bad_scales(scale, shown):
    with pytest.raises(QuantSpecError, match=f"scale of tensor 'w' has {shown}; scales must be"):
        QuantParams(scale, None, INT8_AXIS0, name="w")


def test_negative_scales_only_where_a_convention_produces_them():
    p = QuantParams([-0.25, 0.5], None, INT8_AXIS0, allow_negative_scale=True)
    assert p.scale[0] < 0
    with pytest.raises(QuantSpecError, match=r"0\.0 at index \(0,\); scales must be nonzero"):
        QuantParams([0.0, 0.5], None, INT8_AXIS0, allow_negative_scale=True)


@pytest.mark.parametrize(
    ("dtype", "zp", "shown"),
    [
        ("int8", [0, 128], r"128 at index \(1,\), outside int8 \[-128, 127\]"),
        ("uint8", [-1, 0], r"-1 at index \(0,\), outside uint8 \[0, 255\]"),
        ("int4", [8, 0], r"8 at index \(0,\), outside int4 \[-8, 7\]"),
        ("uint16", [0, 65536], r"65536 at index \(1,\), outside uint16 \[0, 65535\]"),
        ("int8", [0.5, 0], r"0\.5 at index \(0,\); zero points must be integers"),
        ("float8e4m3fn", [0, 1], r"1 at index \(1,\); float8e4m3fn zero points must be 0"),
    ],
)
def test_zero_point_outside_the_dtype(dtype, zp, shown):
    with pytest.raises(QuantSpecError, match=f"zero point of tensor 'x' has {shown}"):
        QuantParams([1.0, 1.0], zp, QuantSpec(dtype, granularity=PerAxis(0)), name="x")


@pytest.mark.parametrize("bits", [0, 17, -1, 32])
def test_bits_outside_1_to_16(bits):
    with pytest.raises(QuantSpecError, match=f"bits must be in 1..16, got {bits}"):
        QDType.int(bits)
    if bits >= 0:  # "int-1" is not a dtype name at all (checked below)
        with pytest.raises(QuantSpecError, match=f"bits must be in 1..16, got {bits}"):
            QuantSpec(f"uint{bits}")
    for name in ("int8x", "int-1"):
        with pytest.raises(QuantSpecError, match=f"unknown quantized dtype '{name}'"):
            QDType.parse(name)


@pytest.mark.parametrize("axis", [2, -3, 5])
def test_axis_out_of_bounds(axis):
    params = QuantParams([1.0] * 3, None, QuantSpec("int8", granularity=PerAxis(axis)), name="w")
    with pytest.raises(
        QuantSpecError, match=f"axis {axis} is out of bounds for tensor 'w' of rank 2"
    ):
        quantize(np.zeros((3, 3), np.float32), params)
    spec = QuantSpec("int8", granularity=PerBlock(axis, 2))
    with pytest.raises(QuantSpecError, match=f"axis {axis} is out of bounds"):
        choose_qparams(np.zeros((3, 3), np.float32), spec)


def test_mismatched_scale_and_zero_point_shapes():
    with pytest.raises(ShapeError, match=r"tensor 'b' have different shapes: \(3,\) vs \(2,\)"):
        QuantParams([1.0, 1.0, 1.0], [0, 0], INT8_AXIS0, name="b")
    with pytest.raises(ShapeError, match=r"per-tensor scale of tensor 'c' must hold one value"):
        QuantParams([1.0, 2.0], None, QuantSpec("int8"), name="c")
    params = QuantParams([1.0, 1.0], None, INT8_AXIS0, name="d")
    with pytest.raises(ShapeError, match=r"2 values but data shape \(3, 4\) has 3 along axis 0"):
        quantize(np.zeros((3, 4), np.float32), params)
    with pytest.raises(ShapeError, match=r"2 values but data shape \(3,\) has 3"):
        dequantize(np.zeros(3, np.int8), params)


@pytest.mark.parametrize(("bad", "shown"), [(np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")])
@pytest.mark.parametrize("size", [7, 5000])  # NumPy and Numba paths
def test_nan_and_inf_in_data(bad, shown, size):
    x = np.ones((size // 7 + 1, 7), np.float32)
    x[-1, 4] = bad
    where = rf"\({x.shape[0] - 1}, 4\)"
    params = QuantParams(0.5, 3, QuantSpec("uint8", symmetric=False), name="act")
    with pytest.raises(
        InvalidDataError, match=f"data of tensor 'act' has {shown} at index {where}"
    ):
        quantize(x, params)
    with pytest.raises(InvalidDataError, match=f"has {shown} at index {where}"):
        choose_qparams(x, QuantSpec("int8"))
    with pytest.raises(InvalidDataError, match=f"has {shown} at index"):
        quantize_dynamic_uint8(x.reshape(-1))
    # Opt-in ORT clamping: +Inf -> qmax, -Inf and NaN -> qmin.
    q = quantize(x, params, nonfinite="clamp")
    assert int(q[-1, 4]) == (255 if bad == np.inf else 0)


def test_codes_outside_the_dtype_and_saturate_false():
    params = QuantParams(1.0, 0, QuantSpec("int4"), name="w")
    with pytest.raises(
        InvalidDataError, match=r"code 9 of tensor 'w' at index \(1,\) is outside int4"
    ):
        dequantize(np.array([1, 9], np.int8), params)
    with pytest.raises(InvalidDataError, match=r"index \(2,\) \(100\.0\) quantizes outside int4"):
        quantize(np.array([1.0, 2.0, 100.0], np.float32), params, saturate=False)


def test_wrong_packed_length():
    with pytest.raises(PackingError, match="holding 7 4-bit codes must be 4 bytes, got 3"):
        unpack_int4(np.zeros(3, np.uint8), 7)


def test_every_error_is_a_refq_error_and_a_value_error():
    for exc in (QuantSpecError, ShapeError, InvalidDataError, PackingError):
        assert issubclass(exc, RefqError) and issubclass(exc, ValueError)
