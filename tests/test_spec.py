"""QDType / QuantSpec / QuantParams: ranges, parsing, parameter shapes and broadcasting."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq import strategies as rst
from refq.errors import QuantSpecError
from refq.spec import PerAxis, PerBlock, PerTensor, QDType, QuantParams, QuantSpec


@pytest.mark.parametrize("bits", range(1, 17))
@pytest.mark.parametrize("signed", [True, False])
def test_integer_ranges_are_twos_complement(bits, signed):
    dt = QDType.int(bits, signed)
    assert dt.name == f"{'' if signed else 'u'}int{bits}"
    assert QDType.parse(dt.name) == dt
    codes = range(-(2 ** (bits - 1)), 2 ** (bits - 1)) if signed else range(2**bits)
    assert (dt.qmin, dt.qmax) == (codes[0], codes[-1])
    info = np.iinfo(dt.storage)
    assert info.min <= dt.qmin and dt.qmax <= info.max  # the storage holds every code
    assert dt.storage.itemsize == (1 if bits <= 8 else 2)  # and is the smallest such type


def test_float_formats_and_aliases():
    e4 = QDType.parse("float8_e4m3fn")
    assert e4 == QDType.parse("float8e4m3fn") and (e4.qmin, e4.qmax) == (-448.0, 448.0)
    assert QDType.parse("float8e5m2").qmax == 57344.0
    assert QDType.parse("float4_e2m1fn").qmax == 6.0
    assert e4.storage == np.uint8 and e4.is_float and e4.bits == 8
    assert QDType.parse(np.int16) == QDType.int(16) and QDType.parse(np.dtype("uint8")).bits == 8


def test_narrow_range_and_spec_ranges():
    assert (QuantSpec("int8", narrow_range=True).qmin, QuantSpec("int8").qmin) == (-127, -128)
    assert QuantSpec("int4", narrow_range=True).qmin == -7
    for bad in ("uint8", "int1", "float8e4m3fn"):
        with pytest.raises(QuantSpecError, match="narrow_range"):
            QuantSpec(bad, narrow_range=True)
    with pytest.raises(QuantSpecError, match="explicit seed"):
        QuantSpec("int8", rounding="stochastic")
    with pytest.raises(QuantSpecError, match="'nearest'"):
        QuantSpec("int8", rounding="nearest")
    with pytest.raises(QuantSpecError, match="round to nearest even"):
        QuantSpec("float8e5m2", rounding="floor")


def test_parameter_shapes_are_normalized_and_checked():
    p = QuantParams([0.5], [3], QuantSpec("uint8"))
    assert p.scale.shape == () and p.zero_point.shape == () and p.scale.dtype == np.float32
    assert QuantParams(np.float16(0.5), None, QuantSpec("int8")).scale.dtype == np.float16
    blocked = QuantParams(np.ones((2, 3)), None, QuantSpec("int4", granularity=PerBlock(1, 4)))
    blocked.check_shape((2, 9))  # ceil(9 / 4) = 3 blocks, the last one of 1 element
    blocked.check_shape((2, 12))
    with pytest.raises(ValueError, match=r"needs \(2, 4\)"):
        blocked.check_shape((2, 13))
    assert not p.scale.flags.writeable  # parameters are values


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_broadcast_equals_a_loop_over_slices(data):
    """broadcast() gives every element the parameters of its channel / block, remainder
    blocks included: checked element by element against the index arithmetic."""
    shape = data.draw(rst.array_shapes(1, 4, 7))
    spec = data.draw(rst.quant_specs(shape))
    params = data.draw(rst.quant_params(spec, shape))
    s_b, z_b = (np.broadcast_to(a, shape) for a in params.broadcast(shape))
    gran = spec.granularity
    axis = params.axis_for(shape)
    for idx in np.ndindex(*shape):
        if isinstance(gran, PerTensor):
            pidx: tuple[int, ...] = ()
        elif isinstance(gran, PerAxis):
            pidx = (idx[axis],)
        else:
            pidx = tuple(i // gran.block_size if d == axis else i for d, i in enumerate(idx))
        assert s_b[idx] == params.scale[pidx] and z_b[idx] == params.zero_point[pidx]
