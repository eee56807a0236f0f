"""Weight layouts of the generated kernels: int8 / int4 codes arranged at generation time.

The kernels read weights in the order their Cortex-M DSP inner loops consume them, so no
element is shuffled at run time; the plain-C path of each kernel reads the same bytes. Both
layouts keep one byte per int8 weight and half a byte per int4 weight (nothing is widened in
flash). The inverse functions exist for tests and documentation.

``refq_fully_connected_s8`` (see templates/kernels/refq_fully_connected_s8.h): rows in pairs
(A = 2i, B = 2i + 1), features padded to a multiple of 16 (the DSP loop's unrolling) and taken
in pairs (2j, 2j + 1); the word of pair i and feature pair j is the bytes
``{wB[2j] + 128, wA[2j], wB[2j+1] + 128, wA[2j+1]}``, i.e. the int16 halfwords
``(wB + 128) + 256 * wA``. Pairs go in groups of two whose words alternate (four output rows per
pass share every input load); an odd last pair is stored alone. Missing rows / features are 0.

``refq_fully_connected_s4``: each row padded to a multiple of 8 features; the word of row o and
feature group g (features 8g .. 8g+7, ``v0 .. v7``) holds the bytes
``{v0 << 4 | v4, v2 << 4 | v6, v1 << 4 | v5, v3 << 4 | v7}`` (nibbles), so that masking the high
nibbles and SXTB16 / SXTB16-ROR8 give the int16 pairs ``16 * (v0, v1)`` and ``16 * (v2, v3)``,
and the same on the word shifted left by 4 gives ``16 * (v4, v5)`` and ``16 * (v6, v7)``.

``refq_fully_connected_s16`` (16x8: int16 input, int8 weights): each row padded with zero weights
to a multiple of 4 features; the word of row o and feature group g (``w0 .. w3``) holds the
bytes ``{w0, w2, w1, w3}``, so that SXTB16 gives the int16 pair ``(w0, w1)`` and SXTB16-ROR8
``(w2, w3)``, the lanes of the input pairs ``(x0, x1)`` and ``(x2, x3)`` that SMLALD multiplies.
"""

from __future__ import annotations

import numpy as np

from refq.errors import CodegenError


def _codes(w: np.ndarray, lo: int, hi: int, what: str) -> np.ndarray:
    arr = np.asarray(w)
    if arr.ndim != 2 or arr.dtype.kind not in "iu":
        raise CodegenError(
            f"{what}: weights must be a 2-d integer array, got {arr.dtype} {arr.shape}"
        )
    if arr.size and (int(arr.min()) < lo or int(arr.max()) > hi):
        raise CodegenError(f"{what}: weights hold codes outside [{lo}, {hi}]")
    return arr.astype(np.int64)


FC_S8_K_MULTIPLE = 16


def fc_s8_padded_k(k: int) -> int:
    """Features per row of the s8 layout: k rounded up to a multiple of 16."""
    return -(-k // FC_S8_K_MULTIPLE) * FC_S8_K_MULTIPLE


def fc_s8_size(n: int, k: int) -> int:
    """Bytes of the arranged int8 weights of an (n, k) matrix."""
    return 2 * ((n + 1) // 2) * fc_s8_padded_k(k)


def arrange_fc_s8(w: np.ndarray) -> np.ndarray:
    """The int8 weights ``w`` (N, K) in the layout of ``refq_fully_connected_s8`` (int8, flat)."""
    codes = _codes(w, -128, 127, "refq_fully_connected_s8")
    n, k = codes.shape
    n2, k2 = (n + 1) // 2, fc_s8_padded_k(k) // 2
    padded = np.zeros((2 * n2, 2 * k2), dtype=np.int64)
    padded[:n, :k] = codes
    a = padded[0::2].reshape(n2, k2, 2)  # rows A of each pair: (pair, feature pair, 2)
    b = padded[1::2].reshape(n2, k2, 2)
    words = np.empty((n2, k2, 4), dtype=np.int64)
    words[:, :, 0] = b[:, :, 0] + 128
    words[:, :, 1] = a[:, :, 0]
    words[:, :, 2] = b[:, :, 1] + 128
    words[:, :, 3] = a[:, :, 1]
    full = n2 // 2 * 2
    # Groups of two pairs: (group, pair in group, feature pair, byte) -> (group, fp, pair, byte).
    grouped = words[:full].reshape(full // 2, 2, k2, 4).transpose(0, 2, 1, 3)
    parts = [grouped.reshape(-1)]
    if n2 > full:
        parts.append(words[full:].reshape(-1))
    flat = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    return ((flat + 128) % 256 - 128).astype(np.int8)  # bytes as int8 values


def unarrange_fc_s8(data: np.ndarray, n: int, k: int) -> np.ndarray:
    """Inverse of :func:`arrange_fc_s8` (for tests)."""
    n2, k2 = (n + 1) // 2, fc_s8_padded_k(k) // 2
    raw = np.asarray(data, dtype=np.int64).reshape(-1) % 256
    if raw.size != fc_s8_size(n, k):
        raise CodegenError(f"arranged weights hold {raw.size} bytes, expected {fc_s8_size(n, k)}")
    full = n2 // 2 * 2
    head = raw[: full * k2 * 4].reshape(full // 2, k2, 2, 4).transpose(0, 2, 1, 3)
    words = np.concatenate([head.reshape(full, k2, 4), raw[full * k2 * 4 :].reshape(-1, k2, 4)])
    signed = (words + 128) % 256 - 128
    out = np.zeros((2 * n2, 2 * k2), dtype=np.int64)
    out[0::2, 0::2] = signed[:, :, 1]
    out[0::2, 1::2] = signed[:, :, 3]
    out[1::2, 0::2] = words[:, :, 0] - 128
    out[1::2, 1::2] = words[:, :, 2] - 128
    return out[:n, :k]


def fc_s4_size(n: int, k: int) -> int:
    """Bytes of the arranged int4 weights of an (n, k) matrix."""
    return n * 4 * ((k + 7) // 8)


def arrange_fc_s4(w: np.ndarray) -> np.ndarray:
    """The int4 weights ``w`` (N, K) in the layout of ``refq_fully_connected_s4`` (int8, flat)."""
    codes = _codes(w, -8, 7, "refq_fully_connected_s4")
    n, k = codes.shape
    groups = (k + 7) // 8
    padded = np.zeros((n, groups * 8), dtype=np.int64)
    padded[:, :k] = codes
    v = padded.reshape(n, groups, 8) & 0xF
    out = np.empty((n, groups, 4), dtype=np.int64)
    for byte, (hi, lo) in enumerate(((0, 4), (2, 6), (1, 5), (3, 7))):
        out[:, :, byte] = (v[:, :, hi] << 4) | v[:, :, lo]
    return ((out.reshape(-1) + 128) % 256 - 128).astype(np.int8)


def unarrange_fc_s4(data: np.ndarray, n: int, k: int) -> np.ndarray:
    """Inverse of :func:`arrange_fc_s4` (for tests)."""
    groups = (k + 7) // 8
    raw = np.asarray(data, dtype=np.int64).reshape(-1) % 256
    if raw.size != fc_s4_size(n, k):
        raise CodegenError(f"arranged weights hold {raw.size} bytes, expected {fc_s4_size(n, k)}")
    b = raw.reshape(n, groups, 4)
    v = np.empty((n, groups, 8), dtype=np.int64)
    for byte, (hi, lo) in enumerate(((0, 4), (2, 6), (1, 5), (3, 7))):
        v[:, :, hi] = b[:, :, byte] >> 4
        v[:, :, lo] = b[:, :, byte] & 0xF
    v = np.where(v >= 8, v - 16, v)
    return v.reshape(n, groups * 8)[:, :k]


FC_S16_ORDER = (0, 2, 1, 3)
"""Byte b of a word of the s16 layout holds feature ``FC_S16_ORDER[b]`` of its group of four
(the permutation is its own inverse)."""


def fc_s16_padded_k(k: int) -> int:
    """Features per row of the s16 layout: k rounded up to a multiple of 4."""
    return -(-k // 4) * 4


def arrange_fc_s16(w: np.ndarray) -> np.ndarray:
    """The int8 weights ``w`` (N, K) in the layout of ``refq_fully_connected_s16`` (int8, flat)."""
    codes = _codes(w, -128, 127, "refq_fully_connected_s16")
    n, k = codes.shape
    padded = np.zeros((n, fc_s16_padded_k(k)), dtype=np.int64)
    padded[:, :k] = codes
    groups = padded.reshape(n, -1, 4)[:, :, list(FC_S16_ORDER)]
    return groups.reshape(-1).astype(np.int8)


def unarrange_fc_s16(data: np.ndarray, n: int, k: int) -> np.ndarray:
    """Inverse of :func:`arrange_fc_s16` (for tests)."""
    k4 = fc_s16_padded_k(k)
    raw = np.asarray(data, dtype=np.int64).reshape(-1)
    if raw.size != n * k4:
        raise CodegenError(f"arranged weights hold {raw.size} bytes, expected {n * k4}")
    return raw.reshape(n, -1, 4)[:, :, list(FC_S16_ORDER)].reshape(n, k4)[:, :k]
