"""Every failure a user can cause is a :class:`RefqError`.

Messages name the tensor, op or value at fault. Subclasses also derive from the built-in
exception a Python user would expect (``ValueError``, ``TypeError``...), so existing
``except ValueError`` code keeps working.
"""

from __future__ import annotations


class RefqError(Exception):
    """Root of refq's exception hierarchy."""


class QuantSpecError(RefqError, ValueError):
    """An invalid quantization spec or parameter: bits, dtype, scale, zero point, axis, block."""


class ShapeError(RefqError, ValueError):
    """Shapes that do not fit together (scale vs. data, matmul operands, packed lengths)."""


class InvalidDataError(RefqError, ValueError):
    """Data that cannot be quantized as asked (NaN or Inf, out-of-range codes)."""


class PackingError(RefqError, ValueError):
    """A packed sub-byte buffer whose length does not match the element count."""


class UnsupportedError(RefqError, NotImplementedError):
    """An op, type, attribute or profile combination refq does not implement."""


class ExactnessError(RefqError, ArithmeticError):
    """A computation whose exact (or peer-defined) result cannot be produced.

    Raised instead of silently returning a wrong answer, e.g. the s8 softmax rows on which the
    TFLite reference itself is undefined, or a matmul whose partial sums would leave the exact
    range of the chosen path.
    """


class ModelFormatError(RefqError, ValueError):
    """A malformed, truncated or inconsistent model file (names the file, offset or field)."""


class IntegrityError(ModelFormatError):
    """A tensor whose SHA-256 does not match the manifest."""


class MissingExtraError(RefqError, ImportError):
    """An optional dependency is missing; the message names the pip extra to install."""


class BudgetError(RefqError, ValueError):
    """A generated program does not fit the target's flash or SRAM budget."""


class CodegenError(RefqError, RuntimeError):
    """Code generation or firmware build/run failure (output directory, compiler, emulator)."""


def require_extra(module: str, extra: str):
    """Import an optional dependency or raise :class:`MissingExtraError` naming the extra."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{module!r} is not installed; install it with: pip install 'refq[{extra}]'"
        ) from exc
