"""C lowerings of graph ops, one module per op family (mirroring refq/kernels/).

Each module registers its kernels (:func:`codegen.lower.register_kernel`) and lowerings
(:func:`codegen.lower.lowering`); importing this package registers them all. To add an op: a
template pair under templates/kernels/, a module here (or an entry in one), and its name in
``_MODULES``.
"""

import importlib

_MODULES: tuple[str, ...] = (
    "fully_connected",
    "batch_matmul",
    "elementwise",
    "quantize",
    "data_movement",
    "softmax",
    "norms",
    "rope",
    "activations",
    "attention",
)

for _name in _MODULES:
    importlib.import_module(f"codegen.ops.{_name}")
