"""Non-uniform weight quantizers: ternary (TWN), binary, power-of-two, codebooks (k-means, NF4).

Every mean below is exact (:mod:`refq.exactsum`) and rounded once to float32 (nearest even),
and every comparison with a threshold is exact, so results do not depend on summation order.
``axis=None`` quantizes per tensor; ``axis=k`` gives one scale (or codebook) per index of
axis ``k`` (per output channel), reducing over all other axes.

- :func:`ternary` (Li & Liu 2016, "Ternary Weight Networks"): ``delta = 0.7 * mean|w|``;
  ``code = sign(w)`` where ``|w| > delta`` else 0; ``alpha = mean(|w| over kept elements)``
  (0 when nothing is kept); ``w ~ alpha * code``.
- :func:`binary` (XNOR-Net / BWN): ``code = +1 if w >= 0 else -1``; ``alpha = mean|w|``.
- :func:`power_of_two` (Miyashita et al. 2016, log quantization), code layout below.
- :func:`kmeans_codebook`: 1-D Lloyd iterations, codes index a float32 codebook.
- :func:`nf4`: QLoRA's NormalFloat4 table with per-block absmax scaling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from refq.errors import InvalidDataError, QuantSpecError
from refq.exactsum import SHIFT, exact_sums, ratio_to_float32
from refq.packing import pack_bits, unpack_bits
from refq.spec import _index_str, normalize_axis


# -- shared helpers ---------------------------------------------------------------------------
def _weights(w: object, what: str) -> np.ndarray:
    a = np.asarray(w)
    if a.dtype.kind != "f":
        raise InvalidDataError(f"{what} weights must be a float array, got dtype {a.dtype}")
    a = a.astype(np.float32)
    ok = np.isfinite(a)
    if not ok.all():
        i = int(np.flatnonzero(~ok.reshape(-1))[0])
        raise InvalidDataError(
            f"{what} weights have {float(a.reshape(-1)[i])!r} at index {_index_str(i, a.shape)}"
        )
    if a.size == 0:
        raise InvalidDataError(f"{what} weights are empty")
    return a


def _groups(a: np.ndarray, axis: int | None, what: str) -> tuple[np.ndarray, int, int | None]:
    """Group index of every element (C order), number of groups, normalized axis."""
    if axis is None:
        return np.zeros(a.size, dtype=np.int64), 1, None
    ax = normalize_axis(int(axis), a.ndim, f"{what} weights")
    idx = np.broadcast_to(
        np.arange(a.shape[ax]).reshape([-1 if i == ax else 1 for i in range(a.ndim)]), a.shape
    )
    return idx.reshape(-1).astype(np.int64), a.shape[ax], ax


def _param_shape(a: np.ndarray, ax: int | None) -> list[int]:
    return [-1 if i == ax else 1 for i in range(a.ndim)] if ax is not None else []


def _exact_means(values: np.ndarray, groups: np.ndarray, ngroups: int) -> np.ndarray:
    """float32 (nearest even) of the exact mean of each group; 0 for empty groups."""
    sums = exact_sums(values, groups, ngroups)
    counts = np.bincount(groups, minlength=ngroups)
    return np.array(
        [
            ratio_to_float32(s, int(c) << SHIFT) if c else np.float32(0)
            for s, c in zip(sums, counts, strict=True)
        ],
        dtype=np.float32,
    )


# -- ternary / binary -------------------------------------------------------------------------
@dataclass(frozen=True)
class ScaledCodes:
    """Codes with one float32 scale per tensor (``axis=None``) or per index of ``axis``."""

    codes: np.ndarray
    scale: np.ndarray
    axis: int | None

    def dequantize(self) -> np.ndarray:
        """``scale * code`` in float32 (exact: codes are -1, 0, +1)."""
        shape = _param_shape(self.codes, self.axis)
        s = self.scale.reshape(shape) if shape else self.scale
        return (self.codes.astype(np.float32) * s).astype(np.float32)


def ternary(w: object, *, axis: int | None = None, ratio: float = 0.7) -> ScaledCodes:
    """TWN ternarization: codes in {-1, 0, +1} (int8), ``alpha`` per tensor / channel.

    ``delta = ratio * mean|w|`` exactly (``ratio`` as the exact decimal fraction of its repr,
    0.7 = 7/10); an element is kept when ``|w| > delta``.
    """
    from fractions import Fraction

    a = _weights(w, "ternary")
    groups, ng, ax = _groups(a, axis, "ternary")
    mag = np.abs(a).reshape(-1)
    r = Fraction(repr(float(ratio)))
    if r < 0:
        raise QuantSpecError(f"ternary threshold ratio must be >= 0, got {ratio}")
    sums = exact_sums(mag, groups, ng)
    counts = np.bincount(groups, minlength=ng)
    # |w| > delta  <=>  |w| > (largest float32 <= delta), for float32 |w|.
    thr = np.array(
        [
            ratio_to_float32(s * r.numerator, (int(c) << SHIFT) * r.denominator, mode="floor")
            for s, c in zip(sums, counts, strict=True)
        ],
        dtype=np.float32,
    )
    keep = mag > thr[groups]
    alpha = _exact_means(mag[keep], groups[keep], ng)
    codes = np.where(keep, np.sign(a.reshape(-1)), 0).astype(np.int8).reshape(a.shape)
    return ScaledCodes(codes, alpha if ax is not None else alpha.reshape(()), ax)


def binary(w: object, *, axis: int | None = None) -> ScaledCodes:
    """Binarization: codes +1 (``w >= 0``) / -1 (int8), ``alpha = mean|w|`` (float32)."""
    a = _weights(w, "binary")
    groups, ng, ax = _groups(a, axis, "binary")
    alpha = _exact_means(np.abs(a).reshape(-1), groups, ng)
    codes = np.where(a >= 0, 1, -1).astype(np.int8)
    return ScaledCodes(codes, alpha if ax is not None else alpha.reshape(()), ax)


def pack_ternary(codes: np.ndarray) -> np.ndarray:
    """Ternary codes as ONNX-ordered int2 (2 bits per weight; -1 stored as 0b11)."""
    return pack_bits(np.asarray(codes, dtype=np.int8), 2)


def unpack_ternary(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    codes = unpack_bits(packed, shape, 2, signed=True)
    if (codes == -2).any():
        raise InvalidDataError(
            "packed ternary codes contain -2 (0b10), which is not a ternary code"
        )
    return codes


def pack_binary(codes: np.ndarray) -> np.ndarray:
    """Binary codes as bits (1 = +1, 0 = -1), element 0 in bit 0."""
    c = np.asarray(codes)
    bad = (c != 1) & (c != -1)
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(-1))[0])
        raise InvalidDataError(f"binary code {c.reshape(-1)[i]} at flat index {i} is not +-1")
    return pack_bits((c > 0).astype(np.uint8), 1)


def unpack_binary(packed: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    bits = unpack_bits(packed, shape, 1, signed=False)
    return np.where(bits == 1, 1, -1).astype(np.int8)


def code_width(bits: int) -> int:
    """Storage width of ``bits``-bit codes: the smallest of 1, 2, 4, 8, 16 that holds them."""
    for w in (1, 2, 4, 8, 16):
        if bits <= w:
            return w
    raise QuantSpecError(f"codes of {bits} bits are wider than 16")


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Unsigned codebook / NF4 / power-of-two codes as bytes: ONNX sub-byte order at
    :func:`code_width` bits (3-bit codes take 4), little-endian bytes for 8 / 16 bits."""
    w = code_width(bits)
    c = np.asarray(codes)
    if c.size and (c.min() < 0 or c.max() >= (1 << bits)):
        bad = (c < 0) | (c >= (1 << bits))
        i = int(np.flatnonzero(bad.reshape(-1))[0])
        raise InvalidDataError(
            f"code {c.reshape(-1)[i]} at flat index {i} does not fit {bits} bits"
        )
    if w <= 4:
        return pack_bits(c.astype(np.uint8), w)
    return np.ascontiguousarray(c.reshape(-1), dtype="<u1" if w == 8 else "<u2").view(np.uint8)


def unpack_codes(packed: np.ndarray, shape: tuple[int, ...], bits: int) -> np.ndarray:
    """Inverse of :func:`pack_codes` (uint8 codes, uint16 above 8 bits)."""
    w = code_width(bits)
    if w <= 4:
        return unpack_bits(packed, shape, w, signed=False)
    buf = np.asarray(packed, dtype=np.uint8).reshape(-1)
    n = int(np.prod(shape, dtype=np.int64))
    if buf.size != n * w // 8:
        from refq.errors import PackingError

        raise PackingError(
            f"packed {bits}-bit codes: {n} codes need {n * w // 8} bytes, got {buf.size}"
        )
    return (
        buf.view("<u1" if w == 8 else "<u2")
        .astype(np.uint8 if w == 8 else np.uint16)
        .reshape(shape)
    )


# -- power of two -----------------------------------------------------------------------------
@dataclass(frozen=True)
class PowerOfTwoCodes:
    """Log-quantized weights. Code layout (``bits`` = b >= 2, stored in uint8):

    bit ``b-1`` is the sign (1 = negative); the low ``b-1`` bits ``c`` encode the magnitude:
    ``c = 0`` is zero, ``c >= 1`` is ``2^(emax - (c - 1))``. So the magnitudes are
    ``2^emax, 2^(emax-1), .., 2^(emax - 2^(b-1) + 2)`` and 0; ``emax`` is per tensor/channel.
    """

    codes: np.ndarray
    emax: np.ndarray
    bits: int
    axis: int | None

    def dequantize(self) -> np.ndarray:
        """``sign * 2^(emax - c + 1)`` (0 for c = 0) in float32."""
        b = self.bits
        c = (self.codes & ((1 << (b - 1)) - 1)).astype(np.int64)
        neg = (self.codes >> (b - 1)) & 1
        shape = _param_shape(self.codes, self.axis)
        emax = self.emax.reshape(shape) if shape else self.emax
        mag = np.where(c == 0, 0.0, np.ldexp(1.0, (emax - c + 1).astype(np.int32)))
        return np.where(neg == 1, -mag, mag).astype(np.float32)


def _round_log2(mag: np.ndarray, rounding: str) -> np.ndarray:
    """Exponent of the power of two nearest to ``mag > 0`` (exact).

    ``"log"``: nearest in the log domain, ``floor(log2 m) + [m >= 2^(floor + 1/2)]``, decided by
    ``f^2 >= 1/2`` with ``(f, k) = frexp(m)`` (f^2 is exact in float64). ``"linear"``: nearest
    on the real line, ties (``1.5 * 2^e``) up.
    """
    f, k = np.frexp(mag.astype(np.float64))
    base = k.astype(np.int64) - 1
    if rounding == "log":
        up = f * f >= 0.5
    elif rounding == "linear":
        up = f >= 0.75
    else:
        raise QuantSpecError(f"power-of-two rounding must be 'log' or 'linear', got {rounding!r}")
    # 2^128 overflows float32: the largest representable power is 2^127.
    return np.minimum(base + up, 127)


def power_of_two(
    w: object,
    bits: int = 4,
    *,
    axis: int | None = None,
    emax: int | np.ndarray | None = None,
    rounding: str = "log",
) -> PowerOfTwoCodes:
    """Log quantization: each weight becomes ``sign * 2^e`` with ``e`` in
    ``[emax - 2^(bits-1) + 2, emax]``, or 0 when its rounded exponent is below that range
    (or the weight is 0). Exponents above ``emax`` saturate to ``emax``. ``emax`` defaults to
    the rounded exponent of ``max|w|`` per tensor / channel.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 8:
        raise QuantSpecError(f"power-of-two bits must be in 2..8, got {bits!r}")
    a = _weights(w, "power-of-two")
    groups, ng, ax = _groups(a, axis, "power-of-two")
    flat = a.reshape(-1)
    mag = np.abs(flat)
    nz = mag > 0
    e = np.zeros(flat.size, dtype=np.int64)
    e[nz] = _round_log2(mag[nz], rounding)
    if emax is None:
        gmax = np.zeros(ng, dtype=np.float32)
        np.maximum.at(gmax, groups, mag)
        em = np.where(gmax > 0, _round_log2(np.where(gmax > 0, gmax, 1.0), rounding), 0)
    else:
        em = np.broadcast_to(np.asarray(emax, dtype=np.int64), (ng,)).copy()
    em = em.astype(np.int64)
    levels = (1 << (bits - 1)) - 1
    emin = em - (levels - 1)
    eg = np.minimum(e, em[groups])
    zero = ~nz | (eg < emin[groups])
    c = np.where(zero, 0, em[groups] - eg + 1)
    sign = np.where(np.signbit(flat) & ~zero, 1 << (bits - 1), 0)
    codes = (sign | c).astype(np.uint8).reshape(a.shape)
    return PowerOfTwoCodes(codes, em if ax is not None else em.reshape(()), bits, ax)


# -- codebooks --------------------------------------------------------------------------------
@dataclass(frozen=True)
class CodebookCodes:
    """Codes indexing float32 codebooks (``codebook`` shape ``(K,)`` or ``(C, K)``), optional
    per-block float32 ``scale`` (NF4's absmax, blocks of ``block_size`` over the flattened
    tensor)."""

    codes: np.ndarray
    codebook: np.ndarray
    bits: int
    axis: int | None = None
    scale: np.ndarray | None = None
    block_size: int | None = None

    def dequantize(self) -> np.ndarray:
        """Lookup ``codebook[code]`` (times the block's scale, in float32, for NF4)."""
        if self.codebook.ndim == 1:
            vals = self.codebook[self.codes.astype(np.intp)]
        else:
            ax = self.axis
            assert ax is not None
            moved = np.moveaxis(self.codes, ax, 0).astype(np.intp)
            rows = np.arange(moved.shape[0]).reshape([-1] + [1] * (moved.ndim - 1))
            vals = np.moveaxis(self.codebook[rows, moved], 0, ax)
        if self.scale is None:
            return vals.astype(np.float32)
        assert self.block_size is not None
        flat = vals.reshape(-1)
        s = np.repeat(self.scale, self.block_size)[: flat.size]
        return (flat * s).astype(np.float32).reshape(self.codes.shape)


def lookup_dequantize(codes: np.ndarray, codebook: np.ndarray) -> np.ndarray:
    """``codebook[codes]`` for a 1-D float32 codebook, checking every code is in range."""
    cb = np.asarray(codebook, dtype=np.float32)
    c = np.asarray(codes)
    bad = (c < 0) | (c >= cb.shape[0])
    if bad.any():
        i = int(np.flatnonzero(bad.reshape(-1))[0])
        raise InvalidDataError(
            f"code {c.reshape(-1)[i]} at flat index {i} is outside a codebook of {cb.shape[0]}"
        )
    return cb[c.astype(np.intp)]


def _assign(v: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index of the nearest sorted centroid; ties (exact midpoints) go to the lower index."""
    c64 = centroids.astype(np.float64)
    mids = (c64[:-1] + c64[1:]) / 2  # exact: float32 sums and halvings are exact in float64
    return np.searchsorted(mids, v.astype(np.float64), side="left")


def _lloyd(
    v: np.ndarray, k: int, iters: int, init: str, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    uniq = np.unique(v)
    if uniq.size <= k:
        cents = uniq.astype(np.float32)
        return cents, _assign(v, cents)
    if init == "quantile":
        s = np.sort(v)
        pos = ((2 * np.arange(k) + 1) * s.size) // (2 * k)
        cents = np.unique(s[pos])
        if cents.size < k:  # repeated values: top up with the remaining distinct values in order
            extra = np.setdiff1d(uniq, cents)[: k - cents.size]
            cents = np.sort(np.concatenate([cents, extra]))
    elif init == "random":
        rng = np.random.Generator(np.random.PCG64(int(seed)))
        cents = np.sort(rng.choice(uniq, size=k, replace=False))
    else:
        raise QuantSpecError(f"k-means init must be 'quantile' or 'random', got {init!r}")
    cents = cents.astype(np.float32)
    idx = _assign(v, cents)
    for _ in range(iters):
        means = _exact_means(v, idx, k)
        counts = np.bincount(idx, minlength=k)
        cents = np.sort(np.where(counts > 0, means, cents)).astype(np.float32)
        new = _assign(v, cents)
        if np.array_equal(new, idx):
            break
        idx = new
    return cents, idx


def kmeans_codebook(
    w: object,
    bits: int,
    *,
    k: int | None = None,
    axis: int | None = None,
    iters: int = 100,
    init: str = "quantile",
    seed: int = 0,
) -> CodebookCodes:
    """1-D k-means codebook with ``k <= 2^bits`` entries (default ``2^bits``).

    Lloyd iterations: assign each weight to the nearest centroid (exact midpoints, ties to the
    lower centroid), move each centroid to the exact mean of its weights rounded to float32
    (empty clusters keep theirs), until assignments stop changing or ``iters`` rounds.
    ``init="quantile"`` starts from the sorted data at quantiles ``(2j+1)/(2k)`` (no
    randomness); ``init="random"`` picks ``k`` distinct values with ``PCG64(seed)``. Data with at
    most ``k`` distinct values get them as the codebook (zero error). Codebooks are sorted;
    per-channel codebooks are padded with their last entry to a common ``k``.
    """
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 16:
        raise QuantSpecError(f"codebook bits must be in 1..16, got {bits!r}")
    k = (1 << bits) if k is None else int(k)
    if not 1 <= k <= (1 << bits):
        raise QuantSpecError(f"codebook size k must be in 1..{1 << bits} for {bits} bits, got {k}")
    a = _weights(w, "k-means")
    store = np.uint8 if bits <= 8 else np.uint16
    if axis is None:
        cents, idx = _lloyd(a.reshape(-1), k, iters, init, seed)
        return CodebookCodes(idx.astype(store).reshape(a.shape), cents, bits)
    ax = normalize_axis(int(axis), a.ndim, "k-means weights")
    moved = np.moveaxis(a, ax, 0)
    books = np.zeros((moved.shape[0], k), dtype=np.float32)
    codes = np.empty(moved.shape, dtype=store)
    for ch in range(moved.shape[0]):
        cents, idx = _lloyd(moved[ch].reshape(-1), k, iters, init, seed)
        books[ch, : cents.size] = cents
        books[ch, cents.size :] = cents[-1]
        codes[ch] = idx.reshape(moved.shape[1:])
    return CodebookCodes(np.moveaxis(codes, 0, ax), books, bits, axis=ax)


# QLoRA NormalFloat4 (Dettmers et al. 2023, appendix E; bitsandbytes ``create_normal_map``
# with offset 0.9677083): 8 positive quantiles norm.ppf(linspace(offset, 0.5, 9)[:-1]),
# 7 negative ones -norm.ppf(linspace(offset, 0.5, 8)[:-1]), and 0, normalized by the max, in
# float32. tests/test_nonuniform.py re-derives every entry from that definition.
NF4_TABLE = np.array(
    [
        -1.0,
        -0.6961928009986877,
        -0.5250730514526367,
        -0.39491748809814453,
        -0.28444138169288635,
        -0.18477343022823334,
        -0.09105003625154495,
        0.0,
        0.07958029955625534,
        0.16093020141124725,
        0.24611230194568634,
        0.33791524171829224,
        0.44070982933044434,
        0.5626170039176941,
        0.7229568362236023,
        1.0,
    ],
    dtype=np.float32,
)
NF4_TABLE.flags.writeable = False


def nf4(w: object, *, block_size: int = 64) -> CodebookCodes:
    """NF4: per block of ``block_size`` (flattened, remainder block allowed) ``absmax = max|w|``;
    ``x = f32(w / absmax)`` (0 for an all-zero block); code = nearest NF4 entry (exact
    midpoints, ties to the lower entry). Dequantize: ``NF4_TABLE[code] * absmax`` in float32.
    (bitsandbytes compares with float32-rounded midpoint constants; refq uses exact midpoints.)
    """
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise QuantSpecError(f"NF4 block_size must be an integer >= 1, got {block_size!r}")
    a = _weights(w, "NF4")
    flat = a.reshape(-1)
    starts = np.arange(0, flat.size, block_size)
    absmax = np.maximum.reduceat(np.abs(flat), starts).astype(np.float32)
    s = np.repeat(absmax, block_size)[: flat.size]
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.where(s > 0, flat / np.where(s > 0, s, 1), 0).astype(np.float32)
    codes = _assign(x, NF4_TABLE).astype(np.uint8).reshape(a.shape)
    return CodebookCodes(codes, NF4_TABLE.copy(), 4, scale=absmax, block_size=block_size)


def bits_per_weight(
    n_weights: int,
    code_bits: float,
    *,
    n_scales: int = 0,
    scale_bits: int = 32,
    codebook_entries: int = 0,
    entry_bits: int = 32,
) -> float:
    """Storage cost per weight: codes plus scales plus codebook entries, in bits.

    E.g. NF4 with blocks of 64 and float32 absmax: ``bits_per_weight(n, 4, n_scales=n/64)`` =
    4.5; ternary packed in int2 with one float32 scale per channel of K weights: 2 + 32/K.
    """
    if n_weights <= 0:
        raise QuantSpecError(f"n_weights must be positive, got {n_weights}")
    total = n_weights * code_bits + n_scales * scale_bits + codebook_entries * entry_bits
    return total / n_weights


__all__ = [
    "NF4_TABLE",
    "CodebookCodes",
    "PowerOfTwoCodes",
    "ScaledCodes",
    "binary",
    "bits_per_weight",
    "code_width",
    "kmeans_codebook",
    "lookup_dequantize",
    "nf4",
    "pack_binary",
    "pack_codes",
    "pack_ternary",
    "power_of_two",
    "ternary",
    "unpack_binary",
    "unpack_codes",
    "unpack_ternary",
]
