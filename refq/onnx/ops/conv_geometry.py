"""Shared convolution arithmetic of ConvInteger and QLinearConv (ONNX Conv geometry).

NCHW (any number of spatial dims), ``group``, ``strides``, ``dilations``, ``pads`` as
``[x1_begin, x2_begin, ..., x1_end, x2_end]``, ``kernel_shape`` (must agree with W) and
``auto_pad``:

* ``NOTSET``: explicit ``pads``; ``out = floor((in + begin + end - ((k - 1) * d + 1)) / s) + 1``;
* ``VALID``: no padding;
* ``SAME_UPPER`` / ``SAME_LOWER``: ``out = ceil(in / s)``, total padding
  ``max(0, (out - 1) * s + (k - 1) * d + 1 - in)``, the odd unit at the end (UPPER) or the
  beginning (LOWER).

Padding holds the input's zero point, i.e. zero in the centered values ``x - x_zero_point``
(the ConvInteger node tests fix this). The product is an im2col matrix times the weights through
:func:`refq.intmatmul.int_matmul`, exact, with a wrapping int32 accumulator.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from refq.errors import ModelFormatError, ShapeError
from refq.intmatmul import int_matmul
from refq.onnx.node import NodeContext


@dataclass(frozen=True)
class ConvGeometry:
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads_begin: tuple[int, ...]
    pads_end: tuple[int, ...]
    out: tuple[int, ...]
    group: int


def _ints(ctx: NodeContext, key: str, n: int, default: int) -> tuple[int, ...]:
    v = ctx.attr(key)
    if v is None or len(v) == 0:
        return (default,) * n
    if len(v) != n:
        raise ModelFormatError(f"{ctx.where}: {key} has {len(v)} values; expected {n}")
    return tuple(int(i) for i in v)


def conv_geometry(
    ctx: NodeContext, x_shape: tuple[int, ...], w_shape: tuple[int, ...]
) -> ConvGeometry:
    """Validate the attributes against X and W and compute the output's spatial shape."""
    if len(x_shape) < 3 or len(w_shape) != len(x_shape):
        raise ShapeError(
            f"{ctx.where}: X must be (N, C, spatial...) and W (M, C/group, kernel...) of the "
            f"same rank; got X {x_shape} and W {w_shape}"
        )
    nd = len(x_shape) - 2
    group = int(ctx.attr("group", 1))
    c, m = x_shape[1], w_shape[0]
    if group < 1 or c != w_shape[1] * group or m % group:
        raise ShapeError(
            f"{ctx.where}: group={group} does not fit X channels {c}, W shape {w_shape} "
            f"(need C = W.shape[1] * group and M divisible by group)"
        )
    kernel = tuple(w_shape[2:])
    ks = ctx.attr("kernel_shape")
    if ks is not None and len(ks) and tuple(int(k) for k in ks) != kernel:
        raise ShapeError(f"{ctx.where}: kernel_shape {tuple(ks)} differs from W's {kernel}")
    strides = _ints(ctx, "strides", nd, 1)
    dilations = _ints(ctx, "dilations", nd, 1)
    if min(strides) < 1 or min(dilations) < 1:
        raise ModelFormatError(
            f"{ctx.where}: strides {strides} / dilations {dilations} must be >= 1"
        )
    eff = tuple((k - 1) * d + 1 for k, d in zip(kernel, dilations, strict=True))
    size = x_shape[2:]
    auto_pad = ctx.attr("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        out = tuple(math.ceil(i / s) for i, s in zip(size, strides, strict=True))
        total = [
            max(0, (o - 1) * s + e - i) for o, s, e, i in zip(out, strides, eff, size, strict=True)
        ]
        small = tuple(t // 2 for t in total)
        large = tuple(t - t // 2 for t in total)
        begin, end = (small, large) if auto_pad == "SAME_UPPER" else (large, small)
    elif auto_pad in ("NOTSET", "VALID"):
        pads = _ints(ctx, "pads", 2 * nd, 0) if auto_pad == "NOTSET" else (0,) * (2 * nd)
        if min(pads) < 0:
            raise ModelFormatError(f"{ctx.where}: negative pads {pads}")
        begin, end = pads[:nd], pads[nd:]
        out = tuple(
            (i + b + e2 - e) // s + 1
            for i, b, e2, e, s in zip(size, begin, end, eff, strides, strict=True)
        )
    else:
        raise ModelFormatError(f"{ctx.where}: unknown auto_pad {auto_pad!r}")
    if min(out) < 1:
        raise ShapeError(
            f"{ctx.where}: the (dilated) kernel {eff} does not fit the padded input {size} "
            f"(pads {begin} / {end})"
        )
    return ConvGeometry(kernel, strides, dilations, tuple(begin), tuple(end), out, group)


def int_conv(xc: np.ndarray, wc: np.ndarray, g: ConvGeometry) -> np.ndarray:
    """Exact int32 (wrapping) convolution of centered integer X (N, C, ...) and W (M, C/g, ...)."""
    n, c = xc.shape[:2]
    m = wc.shape[0]
    pad = [(0, 0), (0, 0), *zip(g.pads_begin, g.pads_end, strict=True)]
    xp = np.pad(xc, pad)  # zeros: the zero point in centered values
    p = math.prod(g.out)
    nk = math.prod(g.kernel)
    cols = np.empty((n, c, nk, p), dtype=xc.dtype)
    for j, offs in enumerate(itertools.product(*(range(k) for k in g.kernel))):
        index = tuple(
            slice(o * d, o * d + (out - 1) * s + 1, s)
            for o, d, s, out in zip(offs, g.dilations, g.strides, g.out, strict=True)
        )
        cols[:, :, j, :] = xp[(slice(None), slice(None), *index)].reshape(n, c, p)
    cg = c // g.group
    cols = cols.reshape(n, g.group, cg * nk, p)
    w = wc.reshape(1, g.group, m // g.group, cg * nk)
    acc = int_matmul(w, cols, accumulate="int32_wrap")  # (N, group, M/group, P)
    return acc.reshape((n, m, *g.out))
