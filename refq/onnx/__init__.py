"""ONNX quantization operators in exact NumPy, refq as an ``onnx.backend`` and the conformance run.

- :mod:`refq.onnx.tensor`   element types and the ml_dtypes <-> NumPy boundary
- :mod:`refq.onnx.ops`      QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger,
  QLinearMatMul, QLinearConv, ConvInteger (one module each) and the plumbing ops
- :mod:`refq.onnx.backend`  ``RefqBackend`` for ``onnx.backend.test.BackendTest``
- :mod:`refq.onnx.conformance`  ``refq conformance``: ONNX node tests + property self-checks
"""
