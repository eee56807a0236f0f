"""refq: the bit-exact reference for quantized small language models, and their MCU code."""

from refq.errors import RefqError

__version__ = "0.1.0"

__all__ = ["RefqError", "__version__"]
