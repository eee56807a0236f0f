"""Sub-byte packing: int4/uint4, int2/uint2 (and 1-bit) codes in bytes.

ONNX order (INT4/UINT4, INT2/UINT2 tensors): the tensor is flattened in C order and element
``i`` goes to byte ``i // per_byte`` at bit offset ``(i % per_byte) * bits``, so element 0
sits in the low bits; the unused high bits of the last byte are zero. A tensor of ``n``
elements takes ``ceil(n * bits / 8)`` bytes. Signed codes are stored in two's complement.

CMSIS-NN s4 order (v7 ``arm_fully_connected_s4`` / ``arm_convolve_s4`` via
``arm_nn_vec_mat_mult_t_s4``): the weight array ``[C_OUT][K]`` (or ``[C_OUT][KH][KW][C_IN]``)
is packed flattened, two per byte, element 0 in the low nibble, with *no* per-row padding:
when ``K`` is odd, the byte holding a row's last weight holds the next row's first weight in
its high nibble (the kernel carries it over as a "spillover" term). That is the ONNX int4
order applied to the flattened weights, which :func:`pack_cmsis_s4` documents by name.
"""

from __future__ import annotations

import numpy as np

from refq.errors import InvalidDataError, PackingError, QuantSpecError

_SUPPORTED_BITS = (1, 2, 4)


def packed_size(count: int, bits: int) -> int:
    """Bytes holding ``count`` codes of ``bits`` bits: ``ceil(count * bits / 8)``."""
    _check_bits(bits)
    return -(-int(count) * bits // 8)


def _check_bits(bits: int) -> None:
    if bits not in _SUPPORTED_BITS:
        raise QuantSpecError(f"packing supports {_SUPPORTED_BITS} bits per code, got {bits!r}")


def pack_bits(codes: object, bits: int, *, name: str | None = None) -> np.ndarray:
    """Pack integer codes (any shape) into uint8, ONNX order.

    Codes in a signed integer array must be in ``-2^(bits-1)..2^(bits-1)-1``, in an unsigned
    one in ``0..2^bits-1`` (quantize returns int8 for int4 and uint8 for uint4); the low
    ``bits`` bits of each are stored.
    """
    _check_bits(bits)
    c = np.asarray(codes)
    who = f"tensor {name!r}" if name else "the tensor"
    if c.dtype.kind not in "iu":
        raise InvalidDataError(f"codes of {who} must be integers, got dtype {c.dtype}")
    flat = c.reshape(-1)
    signed = c.dtype.kind == "i"
    lo = -(1 << (bits - 1)) if signed else 0
    hi = (1 << (bits - 1)) - 1 if signed else (1 << bits) - 1
    info = np.iinfo(c.dtype)
    # Two reductions first; the index of the first bad code only on failure.
    if flat.size and (info.min < lo or info.max > hi) and (flat.min() < lo or flat.max() > hi):
        i = int(np.flatnonzero((flat < lo) | (flat > hi))[0])
        raise InvalidDataError(
            f"code {flat[i].item()} of {who} at flat index {i} does not fit {bits} bits "
            f"(allowed {lo}..{hi})"
        )
    per = 8 // bits
    n = flat.size
    nbytes = packed_size(n, bits)
    mask = np.uint8((1 << bits) - 1)
    u = flat.view(np.uint8) if flat.dtype.itemsize == 1 else flat.astype(np.uint8)
    full = n // per
    out = np.empty(nbytes, dtype=np.uint8)
    lanes = u[: full * per].reshape(full, per)
    body = out[:full]
    np.bitwise_and(lanes[:, 0], mask, out=body)
    for j in range(1, per):
        body |= (lanes[:, j] & mask) << np.uint8(j * bits)
    if n % per:  # the last byte: remaining codes, zero padding bits
        tail = 0
        for j, v in enumerate(u[full * per :]):
            tail |= (int(v) & int(mask)) << (j * bits)
        out[full] = tail
    return out


def unpack_bits(
    packed: object,
    count_or_shape: int | tuple[int, ...],
    bits: int,
    *,
    signed: bool,
    strict_padding: bool = False,
    name: str | None = None,
) -> np.ndarray:
    """Unpack ONNX-ordered codes: int8 (sign-extended) if ``signed`` else uint8.

    ``count_or_shape`` is the element count or the tensor shape. A buffer whose length is not
    ``ceil(count * bits / 8)`` raises :class:`~refq.errors.PackingError` naming both;
    ``strict_padding=True`` also rejects nonzero padding bits in the last byte.
    """
    _check_bits(bits)
    shape = (int(count_or_shape),) if np.ndim(count_or_shape) == 0 else tuple(count_or_shape)
    count = int(np.prod(shape, dtype=np.int64))
    who = f"tensor {name!r}" if name else "the tensor"
    buf = np.asarray(packed)
    if buf.dtype not in (np.uint8, np.int8):
        raise PackingError(f"packed buffer of {who} must be uint8 bytes, got dtype {buf.dtype}")
    buf = buf.reshape(-1).view(np.uint8)
    expected = packed_size(count, bits)
    if buf.size != expected:
        raise PackingError(
            f"packed buffer of {who} holding {count} {bits}-bit codes must be {expected} bytes, "
            f"got {buf.size}"
        )
    per = 8 // bits
    mask = np.uint8((1 << bits) - 1)
    lanes = np.empty((expected, per), dtype=np.int8 if signed else np.uint8)
    for j in range(per):
        if signed:
            # Move the field to the top of the byte, then shift it back arithmetically:
            # one pass that also sign-extends.
            top = (buf << np.uint8(8 - (j + 1) * bits)).view(np.int8)
            np.right_shift(top, np.int8(8 - bits), out=lanes[:, j])
        else:
            np.bitwise_and(buf >> np.uint8(j * bits), mask, out=lanes[:, j])
    flat = lanes.reshape(-1)
    if strict_padding and flat.size > count and flat[count:].any():
        raise PackingError(
            f"packed buffer of {who}: padding bits after element {count - 1} in byte "
            f"{expected - 1} are not zero (0x{int(buf[-1]):02x})"
        )
    return flat[:count].reshape(shape)


def pack_int4(codes: object, *, name: str | None = None) -> np.ndarray:
    """ONNX INT4 / UINT4 packing (two per byte, element 0 in the low nibble)."""
    return pack_bits(codes, 4, name=name)


def unpack_int4(
    packed: object, count_or_shape: int | tuple[int, ...], *, signed: bool = True
) -> np.ndarray:
    """Inverse of :func:`pack_int4`."""
    return unpack_bits(packed, count_or_shape, 4, signed=signed)


def pack_int2(codes: object, *, name: str | None = None) -> np.ndarray:
    """ONNX INT2 / UINT2 packing (four per byte from bits 0-1 up)."""
    return pack_bits(codes, 2, name=name)


def unpack_int2(
    packed: object, count_or_shape: int | tuple[int, ...], *, signed: bool = True
) -> np.ndarray:
    """Inverse of :func:`pack_int2`."""
    return unpack_bits(packed, count_or_shape, 2, signed=signed)


def pack_cmsis_s4(weights: object, *, name: str | None = None) -> np.ndarray:
    """CMSIS-NN s4 weights: the flattened ``[C_OUT][...]`` array, two per byte, low nibble
    first, no per-row padding (see the module docstring). Codes must be in -8..7."""
    w = np.asarray(weights)
    if w.dtype.kind != "i":
        raise InvalidDataError(f"s4 weights must be a signed integer array, got dtype {w.dtype}")
    return pack_bits(w, 4, name=name)


def unpack_cmsis_s4(packed: object, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`pack_cmsis_s4`: int8 weights of ``shape``."""
    return unpack_bits(packed, tuple(shape), 4, signed=True)


__all__ = [
    "pack_bits",
    "pack_cmsis_s4",
    "pack_int2",
    "pack_int4",
    "packed_size",
    "unpack_bits",
    "unpack_cmsis_s4",
    "unpack_int2",
    "unpack_int4",
]
