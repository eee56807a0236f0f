"""Post-training quantization: config, calibration pipeline, weight quantization, SmoothQuant,
bias correction, lowering to an integer refq Graph, and the fake-quantized simulation."""

from refq.ptq.config import ActSpec, QuantConfig, WeightSpec
from refq.ptq.model import PointQuant, QuantizedModel, load_quantized
from refq.ptq.pipeline import Calibration, quantize_model

__all__ = [
    "ActSpec",
    "Calibration",
    "PointQuant",
    "QuantConfig",
    "QuantizedModel",
    "WeightSpec",
    "load_quantized",
    "quantize_model",
]
