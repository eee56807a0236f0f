"""Weight quantization for PTQ: per-tensor, per-channel and per-block codes of a float matrix.

Matrices are ``(out, in)``; channels are rows (axis 0).

- **per-tensor / per-channel**, ``b`` bits. Symmetric: ``s = absmax / (2^(b-1) - 1)``, zero
  point 0, codes ``clamp(round(w / s), -(2^(b-1) - 1), 2^(b-1) - 1)`` (TFLite's narrow range).
  Asymmetric: TFLite's nudged zero point over ``[min, max]``
  (:func:`refq.qparams.choose_qparams` ``"tflite"``), codes in ``[-2^(b-1), 2^(b-1) - 1]``.
  ``round`` is half to even (:func:`refq.quantize.quantize`).
- **per-block** (``g`` inputs per block), symmetric, with *integer block scales* so the
  integer FULLY_CONNECTED stays exact::

      w[n, k] ~ d[n] * sc[n, b] * q[n, k]        b = k // g
      q  in [-(2^(bits-1) - 1), 2^(bits-1) - 1],   sc in [1, 2^sb - 1]  (sb = block_scale_bits)
      d[n] = max_b (absmax[n, b] / (2^(bits-1) - 1)) / (2^sb - 1)    float32, per channel

  and ``sc[n, b]`` is the value in ``[1, 2^sb - 1]`` that minimizes the block's squared error
  (all candidates tried). The accumulator ``sum_k x[k] sc[n, b] q[n, k]`` is an exact integer
  dot product with the products ``sc * q`` (``|sc * q| <= 7 * 15 = 105`` for 4-bit codes and
  4-bit block scales: int8): the graph holds those products as int8 weights of per-channel
  scale ``d``, the model file stores ``q`` packed two per byte plus ``sc``, so a W4 g32 model
  takes ``4 + 4/32`` bits per weight plus 4 bytes per row. Block scales are quantized to
  ``sb`` bits, which costs accuracy against float block scales; the run-time arithmetic is
  integer-only (no per-block float rescaling).
- ``observer = "mse"`` (per-tensor / per-channel): the clip ratio ``r`` in
  ``{0.50, 0.51, ..., 1.00}`` of least squared error per channel replaces ``absmax`` by
  ``r * absmax`` (``r * min``, ``r * max`` when asymmetric).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from refq.errors import QuantSpecError, ShapeError
from refq.ptq.config import WeightSpec
from refq.qparams import choose_qparams
from refq.quantize import dequantize, quantize
from refq.spec import PerAxis, PerTensor, QDType, QuantSpec

MSE_RATIOS = np.round(np.arange(50, 101) / 100.0, 2)


@dataclass(frozen=True, eq=False)
class QuantizedWeight:
    """One quantized weight matrix (or table).

    ``codes`` int8 ``(N, K)`` (sub-byte codes unpacked); ``scale`` float32 ``()`` or ``(N,)``;
    ``zero_point`` int32 of the same shape; ``block_scales`` uint8 ``(N, ceil(K / block))`` for
    per-block weights (``None`` otherwise).
    """

    name: str
    spec: WeightSpec
    codes: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray
    block_scales: np.ndarray | None = None

    @property
    def per_block(self) -> bool:
        return self.block_scales is not None

    @property
    def graph_codes(self) -> np.ndarray:
        """The integer weights FULLY_CONNECTED multiplies: ``codes`` or ``sc * q`` (per-block)."""
        if self.block_scales is None:
            return self.codes
        g = int(self.spec.block or 1)
        sc = np.repeat(self.block_scales.astype(np.int16), g, axis=1)[:, : self.codes.shape[1]]
        return (sc * self.codes).astype(np.int8)

    @property
    def graph_dtype(self) -> str:
        """``int4`` for per-tensor / per-channel codes of <= 4 bits, else ``int8``."""
        return "int4" if self.spec.bits <= 4 and not self.per_block else "int8"

    @property
    def axis(self) -> int | None:
        return 0 if self.scale.ndim == 1 else None

    def dequantize(self) -> np.ndarray:
        """float32 ``(codes' - zero_point) * scale`` (codes' = :attr:`graph_codes`)."""
        c = self.graph_codes.astype(np.float32)
        z = self.zero_point.astype(np.float32)
        s = self.scale.astype(np.float32)
        if s.ndim == 1:
            return ((c - z[:, None]) * s[:, None]).astype(np.float32)
        return ((c - z) * s).astype(np.float32)

    def storage_bytes(self) -> int:
        """Bytes the weight takes stored as the model file stores it."""
        n = self.codes.size
        code_bytes = -(-n * self.spec.bits // 8) if self.spec.bits <= 4 else n
        extra = 4 * self.scale.size + (0 if self.spec.symmetric else 4 * self.zero_point.size)
        if self.block_scales is not None:
            extra += -(-self.block_scales.size * self.spec.block_scale_bits // 8)
        return int(code_bytes + extra)

    def describe(self) -> dict[str, Any]:
        """Manifest entry: the spec and the stored arrays' meaning."""
        d = self.spec.to_json()
        d["shape"] = list(self.codes.shape)
        d["graph_dtype"] = self.graph_dtype
        d["axis"] = self.axis
        return d


def _qspec(bits: int, symmetric: bool, per_channel: bool) -> QuantSpec:
    return QuantSpec(
        QDType.int(bits),
        symmetric=symmetric,
        narrow_range=symmetric,
        granularity=PerAxis(0) if per_channel else PerTensor(),
    )


def _ranges(w: np.ndarray, per_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    if per_channel:
        return w.min(axis=1), w.max(axis=1)
    return np.asarray(w.min()), np.asarray(w.max())


def _mse_ratio(w: np.ndarray, spec: WeightSpec, per_channel: bool) -> np.ndarray:
    """Per-channel (or one) clip ratio of least squared error (module docstring)."""
    lo, hi = _ranges(w, per_channel)
    best_err = np.full(lo.shape, np.inf)
    best = np.ones(lo.shape)
    qs = _qspec(spec.bits, spec.symmetric, per_channel)
    for r in MSE_RATIOS:
        p = choose_qparams(
            (np.float32(r) * lo.astype(np.float32), np.float32(r) * hi.astype(np.float32)),
            qs,
            "tflite",
        )
        err = (dequantize(quantize(w, p), p) - w) ** 2
        e = err.sum(axis=1) if per_channel else np.asarray(err.sum())
        better = e < best_err
        best_err = np.where(better, e, best_err)
        best = np.where(better, r, best)
    return best


def quantize_weight(name: str, w: np.ndarray, spec: WeightSpec) -> QuantizedWeight:
    """Quantize a float matrix ``(N, K)`` per ``spec`` (module docstring)."""
    w = np.asarray(w, dtype=np.float32)
    if w.ndim != 2:
        raise ShapeError(f"weight {name!r}: expected a matrix (out, in), got shape {w.shape}")
    if not np.isfinite(w).all():
        raise QuantSpecError(f"weight {name!r} holds NaN or Inf")
    if spec.granularity == "per-block":
        return _quantize_blocks(name, w, spec)
    per_channel = spec.granularity == "per-channel"
    lo, hi = _ranges(w, per_channel)
    if spec.observer == "mse":
        r = _mse_ratio(w, spec, per_channel).astype(np.float32)
        lo, hi = r * lo.astype(np.float32), r * hi.astype(np.float32)
    qs = _qspec(spec.bits, spec.symmetric, per_channel)
    p = choose_qparams(
        (np.asarray(lo, np.float32), np.asarray(hi, np.float32)), qs, "tflite", name=name
    )
    codes = quantize(w, p).astype(np.int8)
    return QuantizedWeight(
        name, spec, codes, np.asarray(p.scale, np.float32), np.asarray(p.zero_point, np.int32)
    )


def _quantize_blocks(name: str, w: np.ndarray, spec: WeightSpec) -> QuantizedWeight:
    n, k = w.shape
    g = int(spec.block or 0)
    nb = -(-k // g)
    qmax = (1 << (spec.bits - 1)) - 1
    smax = (1 << spec.block_scale_bits) - 1
    pad = nb * g - k
    wp = np.pad(w, ((0, 0), (0, pad))).reshape(n, nb, g).astype(np.float64)
    step = np.abs(wp).max(axis=2) / qmax  # ideal float step per block
    d = (step.max(axis=1) / smax).astype(np.float32)
    d = np.where(d > 0, d, np.float32(1.0)).astype(np.float32)
    d64 = d.astype(np.float64)[:, None, None]
    best_err = np.full((n, nb), np.inf)
    best_sc = np.ones((n, nb), np.int64)
    for sc in range(1, smax + 1):
        s = d64 * sc
        q = np.clip(np.rint(wp / s), -qmax, qmax)
        err = ((q * s - wp) ** 2).sum(axis=2)
        better = err < best_err
        best_err = np.where(better, err, best_err)
        best_sc = np.where(better, sc, best_sc)
    s = d64 * best_sc[:, :, None]
    q = np.clip(np.rint(wp / s), -qmax, qmax).reshape(n, nb * g)[:, :k].astype(np.int8)
    return QuantizedWeight(name, spec, q, d, np.zeros(n, np.int32), best_sc.astype(np.uint8))


def quantize_table(name: str, w: np.ndarray, bits: int = 8) -> QuantizedWeight:
    """A lookup table (embeddings): per-tensor symmetric ``bits``-bit codes (EMBEDDING_LOOKUP
    copies codes, so its output has the table's one scale)."""
    return quantize_weight(name, w, WeightSpec(bits=bits, granularity="per-tensor"))
