"""The post-training quantization pipeline: calibrate, choose qparams, quantize, correct, lower.

:func:`quantize_model` ``(cfg, weights, qconfig, calib_reader) -> QuantizedModel``:

1. validate the config against the model (every pattern must match);
2. ``smooth`` (optional): a float pass collecting per-channel ``max |x|`` of the smoothed
   linears' inputs, then SmoothQuant migration of the float weights (:mod:`refq.ptq.smooth`);
3. calibration: the float model runs over every window of the reader, each activation point
   feeding its observer (the config's ``observer``; per-tensor) and, for bias correction, a
   per-channel mean of every linear input;
4. activation qparams from the observed ranges (:class:`refq.ptq.model.PointQuant`);
5. weights: linears per their rule (:mod:`refq.ptq.weights`), embedding tables per-tensor for
   EMBEDDING_LOOKUP (a tied table also gets its own head quantization by the head's rule);
   norm weights stay float32 (the integer norms take real gamma / beta), ops in ``float_ops``
   keep float weights;
6. ``bias_correction`` (optional, :mod:`refq.ptq.bias_correction`).

The integer graph is built on demand (:meth:`QuantizedModel.graph`, :mod:`refq.ptq.lower`).
Calibration windows are a :class:`refq.calibration.readers.CalibrationReader`; a progress bar
goes to stderr with ``progress=True``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from refq.calibration.readers import iterate
from refq.errors import QuantSpecError
from refq.models.config import LlamaConfig, ModelConfig, check_weights
from refq.models.layout import activation_points, linears, model_graph
from refq.ptq.bias_correction import ChannelMean, corrected_bias
from refq.ptq.config import QuantConfig
from refq.ptq.model import PointQuant, QuantizedModel
from refq.ptq.smooth import collect_absmax, migrate, smoothing_points
from refq.ptq.weights import quantize_table, quantize_weight

Forward = Callable[[dict[str, np.ndarray], np.ndarray, Callable], Any]


def float_forward(cfg: ModelConfig) -> Forward:
    """``forward(weights, window, observe)`` of the float reference for ``cfg``."""
    from refq.models import bert, llama

    if isinstance(cfg, LlamaConfig):
        return lambda w, t, obs: llama.forward(w, cfg, np.asarray(t), observe=obs)
    return lambda w, t, obs: bert.forward(w, cfg, np.asarray(t)[None], observe=obs)


class Calibration:
    """Observers of every activation point and per-channel input means, filled by :meth:`run`."""

    def __init__(self, cfg: ModelConfig, qconfig: QuantConfig, means: Iterable[str] = ()) -> None:
        self.cfg = cfg
        self.observers = {}
        for op in model_graph(cfg):
            if op.kind == "pool":  # post-processing, not part of the integer graph
                continue
            p = op.output
            a = qconfig.act_spec(p)
            self.observers[p] = a.observer.make(bits=a.bits, symmetric=a.symmetric, name=p)
        self.means = {p: ChannelMean() for p in means}
        self.windows = 0
        self.seconds = 0.0

    def hook(self, point: str, value: np.ndarray) -> None:
        obs = self.observers.get(point)
        if obs is not None:
            obs.update(value)
        m = self.means.get(point)
        if m is not None:
            m.update(value)

    def run(
        self,
        weights: dict[str, np.ndarray],
        reader: Iterable[np.ndarray],
        progress: bool = False,
    ) -> Calibration:
        fwd = float_forward(self.cfg)
        t0 = time.perf_counter()
        for window in iterate(reader, "calibrate", progress):
            fwd(weights, window, self.hook)
            self.windows += 1
        self.seconds += time.perf_counter() - t0
        if self.windows == 0:
            raise QuantSpecError("the calibration reader yielded no window")
        return self

    def ranges(self) -> dict[str, tuple[float, float]]:
        out = {}
        for p, o in self.observers.items():
            lo, hi = o.range()
            out[p] = (float(lo[0]), float(hi[0]))
        return out


def _check_config(cfg: ModelConfig, qconfig: QuantConfig) -> None:
    from refq.models.config import weight_shapes

    ops = model_graph(cfg)
    qconfig.check_patterns(
        list(weight_shapes(cfg)),
        activation_points(cfg),
        [op.weights[0] for op in linears(cfg)],
        [op.output for op in ops],
        cfg.arch,
    )


def quantize_model(
    cfg: ModelConfig,
    weights: dict[str, np.ndarray],
    qconfig: QuantConfig,
    calib_reader: Iterable[np.ndarray],
    *,
    progress: bool = False,
    metadata: dict[str, Any] | None = None,
) -> QuantizedModel:
    """Run PTQ (module docstring) and return the :class:`QuantizedModel`."""
    check_weights(cfg, weights)
    _check_config(cfg, qconfig)
    t0 = time.perf_counter()
    w = {n: np.asarray(a, np.float32) for n, a in weights.items()}
    ops = model_graph(cfg)
    meta: dict[str, Any] = {"ptq": {}}
    if qconfig.smooth is not None:
        readers = smoothing_points(cfg, qconfig)
        absmax = collect_absmax(cfg, w, readers, calib_reader, float_forward(cfg), progress)
        w, stats = migrate(cfg, w, absmax, readers, qconfig.smooth.alpha)
        meta["ptq"]["smooth"] = stats
    lin_ops = [op for op in ops if op.kind == "linear" and not qconfig.is_float(op.output)]
    means = {op.inputs[0] for op in lin_ops} if qconfig.bias_correction else set()
    cal = Calibration(cfg, qconfig, means).run(w, calib_reader, progress)
    points = {p: PointQuant(p, lo, hi, qconfig.act_spec(p)) for p, (lo, hi) in cal.ranges().items()}

    qweights = {}
    for op in lin_ops:
        name = op.weights[0]
        if name not in qweights:
            qweights[name] = quantize_weight(name, w[name], qconfig.weight_spec(name))
    tables = {}
    floats: dict[str, np.ndarray] = {}
    for op in ops:
        is_float = qconfig.is_float(op.output)
        if op.kind == "embedding":
            for name in op.weights:
                if is_float:
                    floats[name] = w[name]
                else:
                    tables[name] = quantize_table(name, w[name], qconfig.weight_spec(name).bits)
        elif op.kind in ("rmsnorm", "layernorm"):
            for name in op.weights:
                floats[name] = w[name]
        elif op.kind == "linear":
            if is_float:
                floats[op.weights[0]] = w[op.weights[0]]
            for name in op.weights[1:]:  # biases (BERT)
                floats[name] = w[name]
    if qconfig.bias_correction:
        for op in lin_ops:
            name = op.weights[0]
            bname = f"{name}.bias"
            floats[bname] = corrected_bias(
                w[name],
                qweights[name].dequantize(),
                cal.means[op.inputs[0]].mean(),
                floats.get(bname),
            )
    meta["ptq"].update(
        {
            "calibration_windows": cal.windows,
            "calibration_seconds": round(cal.seconds, 3),
            "total_seconds": round(time.perf_counter() - t0, 3),
        }
    )
    describe = getattr(calib_reader, "describe", None)
    if callable(describe):
        meta["ptq"]["calibration_data"] = describe()
    meta.update(metadata or {})
    return QuantizedModel(cfg, qconfig, qweights, tables, floats, points, meta)


__all__ = ["Calibration", "float_forward", "quantize_model"]
