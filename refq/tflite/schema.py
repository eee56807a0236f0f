"""Access to the TFLite flatbuffer schema through the tflite-micro wheel (optional extra)."""

from __future__ import annotations

from functools import cache
from types import ModuleType

from refq.errors import require_extra


@cache
def schema() -> ModuleType:
    """The generated flatbuffer schema module (``schema_py_generated``)."""
    return require_extra("tflite_micro.tensorflow.lite.micro.python.schema_py_generated", "tflite")


@cache
def model_editor() -> ModuleType:
    """tflite-micro's model editor (builds flatbuffers without TensorFlow)."""
    return require_extra("tflite_micro.tensorflow.lite.micro.compression.model_editor", "tflite")
