"""Bounds-checked flatbuffer tables for the generated TFLite schema accessors.

The flatbuffers Python runtime trusts every offset it reads: a hostile or truncated file makes it
raise ``struct.error`` / ``IndexError`` / ``TypeError``, read from the wrong place (Python's
negative indexing), silently truncate strings, or loop over a vector whose length field says
four billion. :class:`CheckedTable` implements the interface the generated classes of the schema
module call on their ``_tab`` (``Offset``, ``Get``, ``Indirect``, ``String``, ``Vector``,
``VectorLen``, ``GetVectorAsNumpy``, ``Union``) and validates every position before reading it,
as the C++ flatbuffers verifier does:

- a table starts 4-aligned inside the file; its vtable (``pos - soffset``) is 2-aligned, at least
  4 bytes long, inside the file; the table's inline size lies inside the file;
- a field offset from the vtable points inside the table; a scalar lies inside the table (or,
  for vector elements, inside the file) and is aligned to its width;
- a vector's or string's length prefix is 4-aligned and its data (length x element width) ends
  inside the file, so no loop over a vector can run longer than the file is big; strings end
  with their NUL terminator.

Any violation raises :class:`~refq.errors.ModelFormatError` naming the object path
(``subgraphs[0].tensors[3].quantization``), the vtable slot and the byte offset. Nested tables
are reached through the generated accessors and re-wrapped with :func:`wrap` before use.
"""

from __future__ import annotations

import struct
from functools import cache
from typing import Any, TypeVar

import numpy as np

from refq.errors import ModelFormatError

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")

T = TypeVar("T")


class CheckedTable:
    """A flatbuffers ``Table`` whose every read is validated against the file bounds."""

    __slots__ = ("Bytes", "Pos", "_n", "_size", "_vt", "_vt_size", "path")

    def __init__(self, buf: bytes, pos: int, path: str) -> None:
        self.Bytes = buf
        self.Pos = pos
        self.path = path
        n = self._n = len(buf)
        if pos < 0 or pos % 4 or pos + 4 > n:
            self._fail(f"table at offset {pos} is misaligned or outside the {n}-byte file")
        vt = pos - _I32.unpack_from(buf, pos)[0]
        if vt < 0 or vt % 2 or vt + 4 > n:
            self._fail(f"vtable of the table at offset {pos} is at {vt}, outside the file")
        vt_size, size = _U16.unpack_from(buf, vt)[0], _U16.unpack_from(buf, vt + 2)[0]
        if vt_size < 4 or vt_size % 2 or vt + vt_size > n:
            self._fail(f"vtable at offset {vt} declares an invalid size of {vt_size} bytes")
        if size < 4 or pos + size > n:
            self._fail(f"table at offset {pos} declares {size} bytes, past the end of the file")
        # Every field the vtable lists, known to the schema or not, lies inside the table.
        for slot in range(4, vt_size, 2):
            off = _U16.unpack_from(buf, vt + slot)[0]
            if off and not 4 <= off < size:
                self._fail(
                    f"vtable slot {slot} gives field offset {off} outside the {size}-byte table"
                )
        self._vt, self._vt_size, self._size = vt, vt_size, size

    def _fail(self, what: str) -> None:
        raise ModelFormatError(f"malformed .tflite at {self.path}: {what}")

    def _uoffset_target(self, at: int, what: str) -> int:
        """Follow the unsigned offset stored at absolute position ``at``."""
        if at % 4 or at < 0 or at + 4 > self._n:
            self._fail(f"{what}: offset field at byte {at} is misaligned or outside the file")
        target = at + _U32.unpack_from(self.Bytes, at)[0]
        if target % 4 or target + 4 > self._n:
            self._fail(f"{what}: offset at byte {at} points to {target}, outside the file")
        return target

    # -- the interface used by the generated schema classes ------------------------------------
    def Offset(self, slot: int) -> int:
        if slot + 2 > self._vt_size:
            return 0  # field absent from an older / shorter vtable: default value
        return _U16.unpack_from(self.Bytes, self._vt + slot)[0]  # checked in __init__

    def Get(self, flags: Any, off: int) -> Any:
        width = flags.bytewidth
        inline = self.Pos <= off < self.Pos + self._size
        end = self.Pos + self._size if inline else self._n  # inline fields fit in their table
        if off < 0 or off + width > end or off % width:
            self._fail(f"{width}-byte value at byte {off} is misaligned or out of bounds")
        return flags.py_type(flags.packer_type.unpack_from(self.Bytes, off)[0])

    def Indirect(self, off: int) -> int:
        return self._uoffset_target(off, "table reference")

    def String(self, off: int) -> bytes:
        start = self._uoffset_target(off, "string")
        length = _U32.unpack_from(self.Bytes, start)[0]
        end = start + 4 + length
        if end + 1 > self._n or self.Bytes[end] != 0:
            self._fail(f"string at byte {start} of length {length} runs past the end of the file")
        return bytes(self.Bytes[start + 4 : end])

    def _vector(self, off: int) -> tuple[int, int]:
        if not 4 <= off <= self._size - 4:
            self._fail(f"vector field offset {off} outside the table")
        start = self._uoffset_target(self.Pos + off, "vector")
        length = _U32.unpack_from(self.Bytes, start)[0]
        # Every element takes at least one byte: a length past the file end is corrupt, and
        # no loop over this vector can run longer than the file is big.
        if start + 4 + length > self._n:
            self._fail(f"vector at byte {start} claims {length} elements, past the end of the file")
        return start + 4, length

    def VectorLen(self, off: int) -> int:
        return self._vector(off)[1]

    def Vector(self, off: int) -> int:
        return self._vector(off)[0]

    def GetVectorAsNumpy(self, flags: Any, off: int) -> np.ndarray:
        start, length = self._vector(off)
        width = flags.bytewidth
        if start + length * width > self._n or start % min(width, 8):
            self._fail(
                f"vector of {length} {width}-byte elements at byte {start} is misaligned or "
                "runs past the end of the file"
            )
        dtype = np.dtype(flags.name).newbyteorder("<")
        return np.frombuffer(self.Bytes, dtype=dtype, count=length, offset=start)

    def Union(self, t2: Any, off: int) -> None:
        if not 4 <= off <= self._size - 4:
            self._fail(f"union field offset {off} outside the table")
        t2.Pos = self._uoffset_target(self.Pos + off, "union")
        t2.Bytes = self.Bytes


def wrap(obj: T, path: str) -> T:
    """Give a generated schema object (fresh from a nested accessor) a checked ``_tab``."""
    tab = obj._tab  # type: ignore[attr-defined]
    obj._tab = CheckedTable(tab.Bytes, tab.Pos, path)  # type: ignore[attr-defined]
    return obj


def open_table(cls: type[T], buf: bytes, pos: int, path: str) -> T:
    """A generated schema object of class ``cls`` over the table at ``pos``, checked."""
    obj = cls()
    obj._tab = CheckedTable(buf, pos, path)  # type: ignore[attr-defined]
    return obj


def open_root(cls: type[T], buf: bytes, path: str = "model") -> T:
    """The root table of a finished flatbuffer (uoffset at byte 0), checked."""
    if len(buf) < 8:
        raise ModelFormatError(f"malformed .tflite: {len(buf)} bytes is too short for a flatbuffer")
    root = _U32.unpack_from(buf, 0)[0]
    if root % 4 or root + 4 > len(buf):
        raise ModelFormatError(
            f"malformed .tflite: root table offset {root} is misaligned or lies outside the "
            f"{len(buf)}-byte file"
        )
    return open_table(cls, buf, root, path)


# Union fields of the TFLite schema -> the union enum naming the table type of each value.
UNION_ENUMS = {
    "BuiltinOptions": "BuiltinOptions",
    "BuiltinOptions2": "BuiltinOptions2",
    "Details": "QuantizationDetails",
    "ArraySegments": "SparseIndexVector",
    "ArrayIndices": "SparseIndexVector",
}
MAX_DEPTH = 32


@cache
def _fields(cls: type) -> tuple[tuple[str, str], ...]:
    """(accessor, kind) of every field of a generated table class; kind is ``numbers`` (vector
    of scalars), ``list`` (vector of tables or strings), ``union`` or ``one`` (scalar, string
    or table)."""
    names = {n for n, v in vars(cls).items() if n[:1].isupper() and callable(v)}
    out = []
    for n in sorted(names):
        if n == "Init" or n.startswith("GetRootAs") or n.endswith("BufferHasIdentifier"):
            continue
        if any(n.endswith(sfx) and n[: -len(sfx)] in names for sfx in _HELPER_SUFFIXES):
            continue
        if n + "Length" in names:
            out.append((n, "numbers" if n + "AsNumpy" in names else "list"))
        elif n + "Type" in names and n in UNION_ENUMS:
            out.append((n, "union"))
        else:
            out.append((n, "one"))
    return tuple(out)


_HELPER_SUFFIXES = ("Length", "AsNumpy", "IsNone", "Type")


def verify_tree(root: Any, schema: Any) -> None:
    """Walk every table reachable from ``root`` and read every field through checked tables,
    as the flatbuffers verifier does: afterwards no accessor of the tree can leave the file.

    Tables are visited once each (shared subtrees cost nothing extra) and nesting is limited to
    :data:`MAX_DEPTH`, so the work is bounded by the file size.
    """
    buf = root._tab.Bytes
    seen: set[tuple[str, int]] = set()
    union_names = {
        enum: {v: k for k, v in vars(getattr(schema, enum)).items() if not k.startswith("_")}
        for enum in set(UNION_ENUMS.values())
        if hasattr(schema, enum)
    }

    def visit(obj: Any, path: str, depth: int) -> None:
        key = (type(obj).__name__, obj._tab.Pos)
        if key in seen:
            return
        seen.add(key)
        if depth > MAX_DEPTH:
            raise ModelFormatError(f"malformed .tflite at {path}: tables nested too deeply")
        for name, kind in _fields(type(obj)):
            acc = getattr(obj, name)
            if kind == "numbers":
                if not getattr(obj, name + "IsNone")():
                    getattr(obj, name + "AsNumpy")()
            elif kind == "list":
                for j in range(getattr(obj, name + "Length")()):
                    child(acc(j), f"{path}.{name}[{j}]", depth)
            elif kind == "union":
                value = acc()
                if value is None:
                    continue
                tag = getattr(obj, name + "Type")()
                cls_name = union_names.get(UNION_ENUMS[name], {}).get(tag)
                cls = getattr(schema, cls_name, None) if cls_name else None
                if cls is None:
                    CheckedTable(buf, value.Pos, f"{path}.{name}")  # header checks only
                else:
                    visit(
                        open_table(cls, buf, value.Pos, f"{path}.{name}"),
                        f"{path}.{name}",
                        depth + 1,
                    )
            else:
                child(acc(), f"{path}.{name}", depth)

    def child(value: Any, path: str, depth: int) -> None:
        if hasattr(value, "_tab"):
            visit(wrap(value, path), path, depth + 1)

    visit(root, root._tab.path, 0)
