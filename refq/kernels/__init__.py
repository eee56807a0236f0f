"""Integer-only kernels, one module per op family; importing this package registers them all.

Each module's docstring names the peer semantics it reproduces (TFLite Micro reference kernels,
CMSIS-NN, LiteRT reference, ONNX / onnxruntime, I-BERT, I-ViT) and the formulas.
"""

import importlib

_MODULES: tuple[str, ...] = (
    "fully_connected",
    "batch_matmul",
    "quantize_ops",
    "norms",
    "softmax",
    "gelu",
    "silu",
    "rope",
    "attention",
    "elementwise",
    "reduce",
    "activations",
    "gather",
    "shape_ops",
    "wide",
)

for _name in _MODULES:
    importlib.import_module(f"refq.kernels.{_name}")
