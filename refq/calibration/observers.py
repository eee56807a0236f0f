"""Calibration observers: a range ``(lo, hi)`` per tensor or per channel from streamed batches.

Every observer takes batches with :meth:`Observer.update` (non-finite values, e.g. the ``-inf``
of masked attention scores, are skipped) and returns the range with :meth:`Observer.range`.
``axis=None`` observes the whole tensor; ``axis=-1`` (or any axis) one range per index of that
axis (the channel), reducing over every other axis.

``minmax``
    ``lo = min x``, ``hi = max x`` over all batches.
``ema`` (moving-average min-max, as TensorFlow / PyTorch ``MovingAverageMinMaxObserver``)
    the first batch sets ``lo, hi``; each next batch moves them by
    ``lo += c (min(batch) - lo)`` (``hi`` alike), ``c`` = ``averaging_constant``.
``percentile``
    two-sided: ``hi`` is the upper edge of the histogram bin holding the ``ceil(p N / 100)``-th
    smallest value, ``lo`` the lower edge of the bin holding the ``ceil(p N / 100)``-th largest
    (``N`` values seen, bins of :class:`Histogram`).
``entropy`` (KL divergence, TensorRT's calibration algorithm with a configurable bin count)
    on the histogram of ``|x|`` (``bins / 2`` bins of width ``w`` from 0) and ``L`` quantized
    levels (``2^(bits-1)`` for a signed ``bits``-bit quantizer): for every candidate
    ``i = L, L + stride, ..., bins/2`` bins, ``P`` = the first ``i`` bins with the mass beyond
    folded into bin ``i - 1``; ``Q`` = the first ``i`` bins *without* that tail mass, merged
    into ``L`` groups of consecutive bins (group ``g`` holds bins ``floor(g i / L) ..
    floor((g + 1) i / L) - 1``), each group's mass spread evenly over its bins where
    ``P > 0``; bins where ``P > 0`` but ``Q = 0`` get ``1e-4 / i`` (smoothing);
    ``KL(P || Q) = sum P log(P / Q)`` with both normalized. (Building ``Q`` from ``P`` itself
    would make ``Q = P`` at ``i = L``: KL 0, the smallest threshold always wins.) The
    threshold is ``t = i* w`` for the ``i*`` of smallest KL (the first on ties), and the range
    ``(max(lo, -t), min(hi, t))``. Unlike
    onnxruntime's entropy calibrator (128 bins into 128 levels: one candidate, the min-max
    range, peer-facts 3), ``bins`` defaults to 2048, giving ``1024 - 128 + 1`` candidates.
``mse`` (MSE-optimal clipping)
    for clip ratios ``r`` in ``linspace(1/n, 1, n)`` the range ``(r lo, r hi)``; the expected
    squared error over the histogram is ``sum_in count * D^2 / 12 + sum_out count (c - e)^2``
    (``D`` = the step of a ``bits``-bit quantizer of that range, ``c`` a bin's centre, ``e``
    the range end it clips to, uniform rounding noise inside the range); the ratio of least
    error wins (the largest on ties).

Histograms (:class:`Histogram`) cover ``[-R, R]`` per channel with ``bins`` (a multiple of 4)
equal bins; when a batch exceeds ``R`` the range doubles (as often as needed) and adjacent bin
pairs merge, which keeps every count exact: bin ``j`` of ``[-R, R]`` is
``[-R + j w, -R + (j + 1) w)`` with ``w = 2R / bins`` (the last bin also holds ``R``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from refq.errors import InvalidDataError, QuantSpecError, ShapeError

OBSERVERS: tuple[str, ...] = ("minmax", "ema", "percentile", "entropy", "mse")


def _channels_last(x: np.ndarray, axis: int | None, what: str) -> np.ndarray:
    """``x`` as a 2-D (values, channels) float64 array (one column for ``axis=None``)."""
    a = np.asarray(x)
    if a.dtype.kind not in "fiu":
        raise InvalidDataError(f"{what}: observed data must be numeric, got {a.dtype}")
    if axis is None:
        return a.reshape(-1, 1).astype(np.float64, copy=False)
    if a.ndim == 0:
        raise ShapeError(f"{what}: per-channel observer (axis {axis}) got a scalar")
    ax = axis % a.ndim
    return np.moveaxis(a, ax, -1).reshape(-1, a.shape[ax]).astype(np.float64, copy=False)


def _masked_minmax(x2: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-column min / max over finite values and the count of finite values."""
    finite = np.isfinite(x2)
    if finite.all():
        if x2.shape[0] == 0:
            inf = np.full(x2.shape[1], np.inf)
            return inf, -inf, np.zeros(x2.shape[1], np.int64)
        return x2.min(axis=0), x2.max(axis=0), np.full(x2.shape[1], x2.shape[0], np.int64)
    lo = np.where(finite, x2, np.inf).min(axis=0, initial=np.inf)
    hi = np.where(finite, x2, -np.inf).max(axis=0, initial=-np.inf)
    return lo, hi, finite.sum(axis=0)


class Observer:
    """Base class: tracks the running min / max (every observer needs them) per channel."""

    kind = "observer"

    def __init__(self, axis: int | None = None, name: str = "tensor") -> None:
        self.axis = axis
        self.name = name
        self.channels: int | None = None
        self.min: np.ndarray | None = None
        self.max: np.ndarray | None = None
        self.count: np.ndarray | None = None

    def _prepare(self, x: np.ndarray) -> np.ndarray:
        x2 = _channels_last(x, self.axis, f"observer of {self.name!r}")
        if self.channels is None:
            self.channels = x2.shape[1]
            self.min = np.full(self.channels, np.inf)
            self.max = np.full(self.channels, -np.inf)
            self.count = np.zeros(self.channels, np.int64)
        elif x2.shape[1] != self.channels:
            raise ShapeError(
                f"observer of {self.name!r}: batch has {x2.shape[1]} channels, earlier batches "
                f"had {self.channels}"
            )
        return x2

    def update(self, x: np.ndarray) -> None:
        """Record one batch (non-finite values are skipped)."""
        x2 = self._prepare(x)
        lo, hi, n = _masked_minmax(x2)
        self._update_minmax(lo, hi, n)
        self._observe(x2, lo, hi, n)

    def _update_minmax(self, lo: np.ndarray, hi: np.ndarray, n: np.ndarray) -> None:
        assert self.min is not None and self.max is not None and self.count is not None
        np.minimum(self.min, lo, out=self.min)
        np.maximum(self.max, hi, out=self.max)
        self.count += n

    def _observe(self, x2: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: np.ndarray) -> None:
        """Subclass hook after the min / max update."""

    def _check_seen(self) -> None:
        if self.count is None or not (self.count > 0).all():
            raise InvalidDataError(
                f"observer of {self.name!r} has seen no finite value"
                + ("" if self.count is None else f" in channel {int(np.argmin(self.count))}")
                + "; calibrate with data first"
            )

    def range(self) -> tuple[np.ndarray, np.ndarray]:
        """``(lo, hi)`` float64 arrays of shape ``(channels,)`` (``(1,)`` per tensor)."""
        self._check_seen()
        assert self.min is not None and self.max is not None
        return self.min.copy(), self.max.copy()

    def describe(self) -> dict[str, Any]:
        """The observer's settings (JSON-serialisable), for manifests."""
        return {"kind": self.kind}


class MinMaxObserver(Observer):
    """Running min / max."""

    kind = "minmax"


class EmaMinMaxObserver(Observer):
    """Moving-average min / max (see the module docstring)."""

    kind = "ema"

    def __init__(
        self, axis: int | None = None, name: str = "tensor", averaging_constant: float = 0.01
    ) -> None:
        super().__init__(axis, name)
        c = float(averaging_constant)
        if not 0.0 < c <= 1.0:
            raise QuantSpecError(
                f"observer of {name!r}: averaging_constant must be in (0, 1], got {c!r}"
            )
        self.c = c
        self.avg_min: np.ndarray | None = None
        self.avg_max: np.ndarray | None = None

    def _observe(self, x2: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: np.ndarray) -> None:
        seen = n > 0
        if self.avg_min is None:
            self.avg_min = np.where(seen, lo, np.inf)
            self.avg_max = np.where(seen, hi, -np.inf)
            return
        assert self.avg_max is not None
        first = seen & ~np.isfinite(self.avg_min)
        move = seen & ~first
        self.avg_min = np.where(first, lo, self.avg_min)
        self.avg_max = np.where(first, hi, self.avg_max)
        self.avg_min = np.where(move, self.avg_min + self.c * (lo - self.avg_min), self.avg_min)
        self.avg_max = np.where(move, self.avg_max + self.c * (hi - self.avg_max), self.avg_max)

    def range(self) -> tuple[np.ndarray, np.ndarray]:
        self._check_seen()
        assert self.avg_min is not None and self.avg_max is not None
        return self.avg_min.copy(), self.avg_max.copy()

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "averaging_constant": self.c}


class Histogram:
    """Per-channel histograms over ``[-R_c, R_c]`` with exact range doubling (module docstring).

    :meth:`counts` has shape ``(channels, bins)``; ``radius`` shape ``(channels,)`` (0 until a
    channel sees a nonzero value; zeros seen before are kept in ``zeros`` and land in bin
    ``bins / 2``, the bin starting at 0, once the radius is set). Values equal to ``+R`` are
    kept apart in ``top`` (reported in the last bin): when ``R`` doubles they belong to the bin
    starting at the old ``R``, which no merge of two old bins gives.
    """

    def __init__(self, channels: int, bins: int) -> None:
        if bins < 8 or bins % 4:
            raise QuantSpecError(f"histogram bins must be a multiple of 4 and >= 8, got {bins}")
        self.bins = int(bins)
        self.inner = np.zeros((channels, self.bins), np.int64)
        self.radius = np.zeros(channels, np.float64)
        self.zeros = np.zeros(channels, np.int64)
        self.top = np.zeros(channels, np.int64)

    @property
    def counts(self) -> np.ndarray:
        """``(channels, bins)`` counts, the last bin closed at ``R``."""
        out = self.inner.copy()
        out[:, -1] += self.top
        return out

    @property
    def width(self) -> np.ndarray:
        return 2.0 * self.radius / self.bins

    def edges(self, c: int) -> np.ndarray:
        """The ``bins + 1`` bin edges of channel ``c``."""
        r = self.radius[c]
        return -r + np.arange(self.bins + 1, dtype=np.float64) * (2.0 * r / self.bins)

    def _grow(self, c: int, absmax: float) -> None:
        if self.radius[c] == 0.0:
            self.radius[c] = absmax
            self.inner[c, self.bins // 2] += self.zeros[c]
            self.zeros[c] = 0
            return
        q = self.bins // 4
        while self.radius[c] < absmax:
            merged = self.inner[c, 0::2] + self.inner[c, 1::2]
            self.inner[c] = 0
            self.inner[c, q : q + self.bins // 2] = merged
            self.inner[c, 3 * q] += self.top[c]  # old +R starts the bin [R, R + 2w)
            self.top[c] = 0
            self.radius[c] *= 2.0

    def update(self, x2: np.ndarray) -> None:
        """Add the finite values of a (values, channels) float64 array."""
        finite = np.isfinite(x2)
        absmax = np.where(finite, np.abs(x2), 0.0).max(axis=0, initial=0.0)
        for c in np.flatnonzero(absmax > self.radius):
            self._grow(int(c), float(absmax[c]))
        zero_r = self.radius == 0.0
        if zero_r.any():  # all values of these channels so far are 0
            self.zeros += np.where(zero_r, finite.sum(axis=0), 0)
        live = ~zero_r
        if not live.any():
            return
        w = np.where(live, self.width, 1.0)
        vals = np.where(finite, x2, 0.0)
        at_top = finite & live[None, :] & (vals == self.radius[None, :])
        self.top += at_top.sum(axis=0)
        idx = np.floor((vals + self.radius) / w)
        idx = np.clip(idx, 0, self.bins - 1).astype(np.int64)
        flat = idx + (np.arange(x2.shape[1], dtype=np.int64) * self.bins)[None, :]
        keep = finite & live[None, :] & ~at_top
        counts = np.bincount(flat[keep], minlength=self.inner.size)
        self.inner += counts.reshape(self.inner.shape)

    def row(self, c: int) -> np.ndarray:
        """The counts of channel ``c`` (last bin closed at ``R``)."""
        out = self.inner[c].copy()
        out[-1] += self.top[c]
        return out

    def abs_counts(self, c: int) -> np.ndarray:
        """Histogram of ``|x|`` for channel ``c``: ``bins / 2`` bins of width ``w`` from 0."""
        h = self.bins // 2
        row = self.row(c)
        return row[h:] + row[:h][::-1]


class _HistogramObserver(Observer):
    def __init__(self, axis: int | None = None, name: str = "tensor", bins: int = 2048) -> None:
        super().__init__(axis, name)
        if not isinstance(bins, int | np.integer) or bins < 8 or bins % 4:
            raise QuantSpecError(
                f"observer of {name!r}: bins must be an integer multiple of 4, >= 8; got {bins!r}"
            )
        self.bins = int(bins)
        self.hist: Histogram | None = None

    def _observe(self, x2: np.ndarray, lo: np.ndarray, hi: np.ndarray, n: np.ndarray) -> None:
        if self.hist is None:
            self.hist = Histogram(x2.shape[1], self.bins)
        self.hist.update(x2)

    def _channel_range(self, c: int) -> tuple[float, float]:
        """Channel ``c``'s clipping range from its histogram: each subclass's own rule
        (percentile, KL entropy, MSE); the base class has none."""
        raise NotImplementedError(f"{type(self).__name__} defines no clipping rule")

    def range(self) -> tuple[np.ndarray, np.ndarray]:
        self._check_seen()
        assert self.hist is not None and self.min is not None and self.max is not None
        lo, hi = self.min.copy(), self.max.copy()
        for c in range(lo.size):
            if self.hist.radius[c] > 0:
                lo[c], hi[c] = self._channel_range(c)
        return lo, hi


class PercentileObserver(_HistogramObserver):
    """Two-sided percentile of the histogram (module docstring)."""

    kind = "percentile"

    def __init__(
        self,
        axis: int | None = None,
        name: str = "tensor",
        percentile: float = 99.99,
        bins: int = 2048,
    ) -> None:
        super().__init__(axis, name, bins)
        p = float(percentile)
        if not 50.0 < p <= 100.0:
            raise QuantSpecError(f"observer of {name!r}: percentile must be in (50, 100], got {p}")
        self.percentile = p

    def _channel_range(self, c: int) -> tuple[float, float]:
        assert self.hist is not None and self.min is not None and self.max is not None
        counts = self.hist.row(c)
        total = int(counts.sum())
        k = max(1, math.ceil(self.percentile * total / 100.0))
        edges = self.hist.edges(c)
        cdf = np.cumsum(counts)
        hi_bin = int(np.searchsorted(cdf, k, side="left"))  # first bin with cdf >= k
        rcdf = np.cumsum(counts[::-1])
        lo_bin = self.hist.bins - 1 - int(np.searchsorted(rcdf, k, side="left"))
        hi = min(float(edges[hi_bin + 1]), float(self.max[c]))
        lo = max(float(edges[lo_bin]), float(self.min[c]))
        return lo, hi

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "percentile": self.percentile, "bins": self.bins}


def kl_thresholds(abs_counts: np.ndarray, levels: int, stride: int = 1) -> tuple[int, np.ndarray]:
    """(best bin count ``i*``, KL per candidate) of the entropy search (module docstring).

    Candidates are ``i = levels, levels + stride, ...`` up to ``len(abs_counts)`` (always
    included). Returns ``len(abs_counts)`` when it holds no more bins than ``levels``.
    """
    n = abs_counts.size
    if n <= levels:
        return n, np.zeros(1)
    cands = list(range(levels, n + 1, stride))
    if cands[-1] != n:
        cands.append(n)
    h = abs_counts.astype(np.float64)
    tail = np.concatenate([np.cumsum(h[::-1])[::-1], [0.0]])  # tail[i] = sum h[i:]
    kls = np.empty(len(cands))
    for j, i in enumerate(cands):
        sliced = h[:i]
        p = sliced.copy()
        p[i - 1] += tail[i]
        if p.sum() == 0:
            kls[j] = np.inf
            continue
        support = p > 0
        starts = (np.arange(levels) * i) // levels
        sums = np.add.reduceat(sliced, starts)
        nz = np.add.reduceat(support.astype(np.float64), starts)
        per = np.divide(sums, nz, out=np.zeros_like(sums), where=nz > 0)
        group = np.repeat(np.arange(levels), np.diff(np.append(starts, i)))
        q = per[group] * support
        if q.sum() == 0:
            kls[j] = np.inf
            continue
        pn = p[support] / p.sum()
        qn = q[support] / q.sum()
        qn = np.where(qn == 0, 1e-4 / i, qn)
        qn = qn / qn.sum()
        kls[j] = float(np.sum(pn * np.log(pn / qn)))
    best = int(np.argmin(kls))
    return cands[best], kls


class EntropyObserver(_HistogramObserver):
    """KL-divergence threshold search on the ``|x|`` histogram (module docstring)."""

    kind = "entropy"

    def __init__(
        self,
        axis: int | None = None,
        name: str = "tensor",
        bits: int = 8,
        bins: int = 2048,
        stride: int = 1,
    ) -> None:
        super().__init__(axis, name, bins)
        if not 2 <= int(bits) <= 16:
            raise QuantSpecError(f"observer of {name!r}: bits must be in 2..16, got {bits}")
        if int(stride) < 1:
            raise QuantSpecError(f"observer of {name!r}: stride must be >= 1, got {stride}")
        self.levels = 1 << (int(bits) - 1)
        self.bits = int(bits)
        self.stride = int(stride)

    def threshold(self, c: int = 0) -> float:
        """The chosen ``t`` of channel ``c``."""
        assert self.hist is not None
        i, _ = kl_thresholds(self.hist.abs_counts(c), self.levels, self.stride)
        return float(i * self.hist.width[c])

    def _channel_range(self, c: int) -> tuple[float, float]:
        assert self.min is not None and self.max is not None
        t = self.threshold(c)
        return max(float(self.min[c]), -t), min(float(self.max[c]), t)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "bins": self.bins, "bits": self.bits, "stride": self.stride}


def clip_mse(
    counts: np.ndarray,
    centres: np.ndarray,
    lo: float,
    hi: float,
    bits: int,
    symmetric: bool,
) -> float:
    """Expected squared error of quantizing the histogram to ``bits`` over ``[lo, hi]``."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if symmetric:
        m = max(-lo, hi)
        lo, hi = -m, m
        step = 2.0 * m / ((1 << bits) - 2)  # narrow symmetric grid: 2^bits - 1 codes
    else:
        step = (hi - lo) / ((1 << bits) - 1)
    inside = (centres >= lo) & (centres <= hi)
    err_in = counts[inside].sum() * step * step / 12.0
    below = centres < lo
    above = centres > hi
    err_out = float(np.sum(counts[below] * (centres[below] - lo) ** 2))
    err_out += float(np.sum(counts[above] * (centres[above] - hi) ** 2))
    return float(err_in + err_out)


class MSEObserver(_HistogramObserver):
    """Clip ratio minimizing the expected quantization MSE on the histogram (module docstring)."""

    kind = "mse"

    def __init__(
        self,
        axis: int | None = None,
        name: str = "tensor",
        bits: int = 8,
        symmetric: bool = False,
        bins: int = 2048,
        grid: int = 100,
    ) -> None:
        super().__init__(axis, name, bins)
        if not 2 <= int(bits) <= 16:
            raise QuantSpecError(f"observer of {name!r}: bits must be in 2..16, got {bits}")
        if int(grid) < 1:
            raise QuantSpecError(f"observer of {name!r}: grid must be >= 1, got {grid}")
        self.bits = int(bits)
        self.symmetric = bool(symmetric)
        self.grid = int(grid)

    def ratios(self) -> np.ndarray:
        return np.arange(1, self.grid + 1, dtype=np.float64) / self.grid

    def _channel_range(self, c: int) -> tuple[float, float]:
        assert self.hist is not None and self.min is not None and self.max is not None
        e = self.hist.edges(c)
        centres = 0.5 * (e[:-1] + e[1:])
        counts = self.hist.row(c).astype(np.float64)
        lo0, hi0 = float(self.min[c]), float(self.max[c])
        best, best_err = 1.0, np.inf
        for r in self.ratios():
            err = clip_mse(counts, centres, r * lo0, r * hi0, self.bits, self.symmetric)
            if err <= best_err:
                best, best_err = float(r), err
        return best * lo0, best * hi0

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "bins": self.bins, "bits": self.bits, "grid": self.grid}


@dataclass(frozen=True)
class ObserverSpec:
    """An observer kind and its settings, as a config states them."""

    kind: str = "minmax"
    params: tuple[tuple[str, Any], ...] = ()

    _ALLOWED = {  # noqa: RUF012 - constant table
        "minmax": (),
        "ema": ("averaging_constant",),
        "percentile": ("percentile", "bins"),
        "entropy": ("bins", "stride"),
        "mse": ("bins", "grid"),
    }

    @classmethod
    def parse(cls, value: Any, where: str = "observer") -> ObserverSpec:
        """``"minmax"`` or ``{"kind": "percentile", "percentile": 99.9}``; errors name ``where``."""
        if isinstance(value, ObserverSpec):
            return value
        if isinstance(value, str):
            value = {"kind": value}
        if not isinstance(value, Mapping):
            raise QuantSpecError(f"{where}: must be a name or an object, got {value!r}")
        kind = value.get("kind")
        if kind not in cls._ALLOWED:
            raise QuantSpecError(f"{where}.kind: {kind!r} is not one of {list(OBSERVERS)}")
        extra = sorted(set(value) - {"kind", *cls._ALLOWED[kind]})
        if extra:
            raise QuantSpecError(
                f"{where}: unknown keys {extra} for a {kind!r} observer "
                f"(allowed: {list(cls._ALLOWED[kind])})"
            )
        params = tuple(sorted((k, v) for k, v in value.items() if k != "kind"))
        spec = cls(kind, params)
        try:  # validate the values once
            spec.make(bits=8, symmetric=False, name=where)
        except TypeError as exc:
            raise QuantSpecError(f"{where}: {exc}") from None
        return spec

    def make(
        self, *, bits: int, symmetric: bool, axis: int | None = None, name: str = "tensor"
    ) -> Observer:
        """A fresh observer for a ``bits``-bit quantizer of the given symmetry."""
        kw = dict(self.params)
        if self.kind == "minmax":
            return MinMaxObserver(axis, name)
        if self.kind == "ema":
            return EmaMinMaxObserver(axis, name, **kw)
        if self.kind == "percentile":
            return PercentileObserver(axis, name, **kw)
        if self.kind == "entropy":
            return EntropyObserver(axis, name, bits=bits, **kw)
        return MSEObserver(axis, name, bits=bits, symmetric=symmetric, **kw)

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **dict(self.params)}
