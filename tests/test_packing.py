"""Sub-byte packing: ONNX order against the bit-field oracle, round trips for every length,
CMSIS-NN s4 layout, and bad packed lengths."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq.errors import InvalidDataError, PackingError
from refq.oracle.quantize import pack_codes
from refq.packing import (
    pack_bits,
    pack_cmsis_s4,
    pack_int2,
    pack_int4,
    packed_size,
    unpack_bits,
    unpack_cmsis_s4,
    unpack_int2,
    unpack_int4,
)

MAX_LEN = 67  # covers every tail length for 1-, 2- and 4-bit codes several times over


@pytest.mark.parametrize("bits", [1, 2, 4])
@pytest.mark.parametrize("signed", [True, False])
def test_round_trip_every_length(bits, signed, checked):
    rng = np.random.default_rng(bits * 2 + signed)
    lo, hi = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
    dtype = np.int8 if signed else np.uint8
    for n in range(MAX_LEN + 1):
        codes = rng.integers(lo, hi, n).astype(dtype)
        packed = pack_bits(codes, bits)
        assert packed.dtype == np.uint8 and packed.size == packed_size(n, bits) == -(-n * bits // 8)
        assert packed.tolist() == pack_codes(codes.tolist(), bits)
        back = unpack_bits(packed, n, bits, signed=signed, strict_padding=True)
        assert back.dtype == dtype and np.array_equal(back, codes)
    checked(f"pack/unpack {bits}-bit signed={signed}, lengths 0..{MAX_LEN}", MAX_LEN + 1)


@settings(max_examples=200, deadline=None)
@given(
    data=st.data(),
    bits=st.sampled_from([1, 2, 4]),
    shape=st.lists(st.integers(0, 7), min_size=0, max_size=3).map(tuple),
)
def test_pack_equals_bit_field_definition(data, bits, shape):
    n = int(np.prod(shape, dtype=np.int64))
    signed = data.draw(st.booleans())
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    codes = np.array(
        data.draw(st.lists(st.integers(lo, hi), min_size=n, max_size=n)),
        dtype=np.int8 if signed else np.uint8,
    ).reshape(shape)
    packed = pack_bits(codes, bits)
    assert packed.tolist() == pack_codes(codes.reshape(-1).tolist(), bits)
    assert np.array_equal(unpack_bits(packed, shape, bits, signed=signed), codes)


def test_int4_and_int2_element_zero_is_in_the_low_bits():
    # From the ONNX definition: element 0 in bits 0-3 (int4) / 0-1 (int2), two's complement.
    assert pack_int4(np.array([1, -2, 3], np.int8)).tolist() == [0xE1, 0x03]
    assert pack_int2(np.array([1, -1, 0, -2, 1], np.int8)).tolist() == [0b10001101, 0b01]
    assert unpack_int4(np.array([0xE1, 0x03], np.uint8), 3).tolist() == [1, -2, 3]
    assert unpack_int2(np.array([0b10001101, 1], np.uint8), 5).tolist() == [1, -1, 0, -2, 1]
    assert unpack_int4(np.array([0xE1], np.uint8), 2, signed=False).tolist() == [1, 14]


def test_cmsis_s4_packs_rows_back_to_back():
    """CMSIS-NN v7 s4 weights [C_OUT][K] with odd K: no per-row padding, the byte holding a
    row's last weight holds the next row's first in its high nibble."""
    w = np.array([[1, 2, 3], [4, 5, 6], [-1, -8, 7]], dtype=np.int8)
    packed = pack_cmsis_s4(w)
    assert packed.size == 5  # ceil(9 / 2), not 3 rows * 2 bytes
    assert packed.tolist() == [0x21, 0x43, 0x65, 0x8F, 0x07]
    assert packed.tolist() == pack_int4(w.reshape(-1)).tolist()
    assert np.array_equal(unpack_cmsis_s4(packed, (3, 3)), w)
    with pytest.raises(InvalidDataError, match="signed"):
        pack_cmsis_s4(w.astype(np.uint8))


def test_wrong_packed_length_names_expected_and_got():
    with pytest.raises(PackingError, match=r"5 4-bit codes must be 3 bytes, got 2"):
        unpack_bits(np.zeros(2, np.uint8), 5, 4, signed=True)
    with pytest.raises(
        PackingError, match=r"tensor 'w' holding 9 2-bit codes must be 3 bytes, got 4"
    ):
        unpack_bits(np.zeros(4, np.uint8), (3, 3), 2, signed=False, name="w")
    with pytest.raises(PackingError, match="must be 2 bytes, got 3"):
        unpack_cmsis_s4(np.zeros(3, np.uint8), (1, 3))


def test_nonzero_padding_is_rejected_when_strict():
    buf = np.array([0x21, 0xF3], np.uint8)  # 3 int4 codes; the high nibble of byte 1 is padding
    assert unpack_int4(buf, 3).tolist() == [1, 2, 3]
    with pytest.raises(PackingError, match=r"padding bits.*0xf3"):
        unpack_bits(buf, 3, 4, signed=True, strict_padding=True)


def test_codes_that_do_not_fit_are_rejected():
    with pytest.raises(InvalidDataError, match="code 8 of the tensor at flat index 2"):
        pack_int4(np.array([0, 1, 8], np.int8))
    with pytest.raises(InvalidDataError, match="code 16"):
        pack_int4(np.array([16], np.uint8))
    with pytest.raises(InvalidDataError, match="code -3"):
        pack_int2(np.array([1, -3], np.int8))
