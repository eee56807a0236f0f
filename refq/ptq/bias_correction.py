"""Bias correction (the guide's 7.3): remove the expected output error of quantized weights.

For a linear ``y = W x + b`` whose weights are replaced by ``Wq`` (dequantized codes), the
output error is ``(Wq - W) x``; its expectation over the calibration data is
``(Wq - W) E[x]`` with ``E[x]`` the per-channel mean of the linear's input (measured on the
float model during calibration). The corrected bias is::

    b' = b - (Wq - W) E[x]

(Nagel et al. 2019, "data-free quantization", empirical form). A model without biases (Llama)
gains one per corrected linear; the integer graph adds it as the int32 bias of FULLY_CONNECTED
(``round(b' / (s_in s_w[n]))``). It corrects the *mean* error only, so it matters where the
weight error is systematic per output channel: coarse weights (4 bits) and inputs with a
large mean (post-SiLU / GELU activations, LayerNorm outputs with a bias).
"""

from __future__ import annotations

import numpy as np


class ChannelMean:
    """Running per-channel mean over every axis but the last (float64 sums)."""

    def __init__(self) -> None:
        self.total: np.ndarray | None = None
        self.count = 0

    def update(self, x: np.ndarray) -> None:
        a = np.asarray(x, dtype=np.float64)
        a2 = a.reshape(-1, a.shape[-1])
        s = a2.sum(axis=0)
        self.total = s if self.total is None else self.total + s
        self.count += a2.shape[0]

    def mean(self) -> np.ndarray:
        if self.total is None or self.count == 0:
            raise ValueError("no data observed")
        return self.total / self.count


def corrected_bias(
    w: np.ndarray, wq: np.ndarray, mean_x: np.ndarray, bias: np.ndarray | None
) -> np.ndarray:
    """``b - (Wq - W) E[x]`` as float32 (``b`` = 0 when absent)."""
    delta = (wq.astype(np.float64) - w.astype(np.float64)) @ mean_x.astype(np.float64)
    b = np.zeros(w.shape[0]) if bias is None else np.asarray(bias, np.float64)
    return (b - delta).astype(np.float32)
