"""Rendering C from Jinja2 templates, and writing the generated tree atomically.

:func:`environment` loads ``templates/`` with ``StrictUndefined`` (a missing variable is an error,
never an empty string), ``trim_blocks`` / ``lstrip_blocks`` (block tags leave no blank lines),
no autoescaping (this is C, not HTML: names go through :mod:`codegen.names` instead) and filters
for C literals:

* ``c_int(value, ctype)``: one integer literal that has the right value in ``ctype`` (``INT32_MIN``
  as ``(-2147483647 - 1)``, 64-bit values through ``INT64_C``, ``u`` suffixes);
* ``c_array(values, ctype)``: the body of an initializer, 16 values per line;
* ``c_const_array(name, ctype, values)``: a whole ``REFQ_ALIGN(16) const`` array definition;
* ``int4_pack(values)``: int4 values packed two per byte, element 0 in the low nibble
  (CMSIS-NN s4 and ONNX int4 order), as int8 values; ``c_size(values)``: the element count;
* ``c_string(text)`` / ``c_comment(text)``: safe string literals and comments.

:func:`write_tree` writes the whole output directory at once: it builds the tree in a temporary
directory next to the target and renames it into place. An existing directory is replaced only
if it carries refq's marker file (it was generated), or with ``force=True``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import jinja2
import numpy as np

from codegen.names import c_comment, c_string_literal, is_valid_identifier
from refq import __version__
from refq.errors import CodegenError

TEMPLATE_DIR = Path(__file__).resolve().parents[1] / "templates"
RUNTIME_DIR = TEMPLATE_DIR / "runtime"
"""Plain C headers copied into every generated tree: refq_types.h, refq_fixedpoint.h, refq_dsp.h."""

MARKER_FILE = ".refq-generated"
"""Present in every directory refq generates; its absence protects other directories."""

VALUES_PER_LINE = 16

C_INT_RANGES: dict[str, tuple[int, int]] = {
    "int8_t": (-(1 << 7), (1 << 7) - 1),
    "uint8_t": (0, (1 << 8) - 1),
    "int16_t": (-(1 << 15), (1 << 15) - 1),
    "uint16_t": (0, (1 << 16) - 1),
    "int32_t": (-(1 << 31), (1 << 31) - 1),
    "uint32_t": (0, (1 << 32) - 1),
    "int64_t": (-(1 << 63), (1 << 63) - 1),
    "uint64_t": (0, (1 << 64) - 1),
}


def _as_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise CodegenError(f"{what}: {value!r} is not an integer")
    return int(value)


def c_int_literal(value: int, ctype: str = "int32_t") -> str:
    """A C expression of type compatible with ``ctype`` whose value is ``value``.

    Negative minimums are written as ``(-MAX - 1)``: ``-2147483648`` in C is the negation of a
    constant that does not fit ``int``.
    """
    if ctype not in C_INT_RANGES:
        raise CodegenError(
            f"unknown C integer type {ctype!r}; use one of {', '.join(C_INT_RANGES)}"
        )
    v = _as_int(value, f"{ctype} literal")
    lo, hi = C_INT_RANGES[ctype]
    if not lo <= v <= hi:
        raise CodegenError(f"value {v} does not fit {ctype} [{lo}, {hi}]")
    if ctype == "int64_t":
        if v == lo:
            return f"(-INT64_C({hi}) - 1)"
        return f"INT64_C({v})" if not -(1 << 31) < v < (1 << 31) else str(v)
    if ctype == "uint64_t":
        return f"UINT64_C({v})" if v > 0x7FFFFFFF else str(v)
    if ctype == "uint32_t" and v > 0x7FFF:
        return f"{v}u"  # int may be 16 bits wide: make the constant unsigned explicitly
    if ctype == "int32_t" and v == lo:
        return "(-2147483647 - 1)"
    return str(v)


def _flat_ints(values: Any, what: str) -> list[int]:
    arr = np.asarray(values)
    if arr.dtype.kind == "O":
        return [_as_int(v, what) for v in arr.ravel()]
    if arr.size and arr.dtype.kind not in "iub":
        raise CodegenError(f"{what}: values must be integers, got dtype {arr.dtype}")
    return [int(v) for v in arr.ravel()]


def c_array(
    values: Any, ctype: str = "int8_t", per_line: int = VALUES_PER_LINE, indent: str = "    "
) -> str:
    """Initializer body: ``per_line`` literals per line, each line indented and comma-terminated."""
    items = [c_int_literal(v, ctype) for v in _flat_ints(values, f"{ctype} array")]
    lines = [
        indent + ", ".join(items[i : i + per_line]) + "," for i in range(0, len(items), per_line)
    ]
    return "\n".join(lines)


def c_const_array(
    name: str,
    ctype: str,
    values: Any,
    *,
    align: int = 16,
    static: bool = False,
    comment: str | None = None,
) -> str:
    """``REFQ_ALIGN(align) [static] const ctype name[N] = {...};`` with N > 0."""
    if not is_valid_identifier(name):
        raise CodegenError(f"array name {name!r} is not a safe C identifier (use codegen.names)")
    if align <= 0 or align & (align - 1):
        raise CodegenError(f"array {name!r}: alignment {align} must be a power of two")
    count = len(_flat_ints(values, f"array {name!r}"))
    if count == 0:
        raise CodegenError(f"array {name!r} is empty; C99 has no zero-length arrays")
    head = f"{c_comment(comment)}\n" if comment is not None else ""
    storage = "static " if static else ""
    return (
        f"{head}REFQ_ALIGN({align}) {storage}const {ctype} {name}[{count}] = {{\n"
        f"{c_array(values, ctype)}\n}};"
    )


def pack_int4(values: Any) -> list[int]:
    """Signed int4 values [-8, 7], two per byte, element 2i in the low nibble and 2i+1 in the high
    nibble (an odd count leaves the last high nibble 0); bytes returned as int8 values."""
    items = _flat_ints(values, "int4 array")
    for i, v in enumerate(items):
        if not -8 <= v <= 7:
            raise CodegenError(f"int4 array: value {v} at index {i} is outside [-8, 7]")
    if len(items) % 2:
        items.append(0)
    packed = []
    for lo, hi in zip(items[0::2], items[1::2], strict=True):
        byte = (lo & 0xF) | ((hi & 0xF) << 4)
        packed.append(byte - 256 if byte > 127 else byte)
    return packed


def environment(*extra_dirs: str | os.PathLike[str]) -> jinja2.Environment:
    """Jinja2 environment over ``extra_dirs`` then ``templates/`` (see the module docstring)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader([*map(str, extra_dirs), str(TEMPLATE_DIR)]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        autoescape=False,
    )
    env.filters.update(
        c_int=c_int_literal,
        c_array=c_array,
        c_string=c_string_literal,
        c_comment=c_comment,
        int4_pack=pack_int4,
        c_size=lambda values: len(_flat_ints(values, "array")),
    )
    env.globals.update(c_const_array=c_const_array)
    return env


def render(template: str, context: Mapping[str, Any] | None = None, **kwargs: Any) -> str:
    """Render one template of ``templates/``; undefined variables raise :class:`CodegenError`."""
    try:
        return environment().get_template(template).render({**(context or {}), **kwargs})
    except jinja2.TemplateError as exc:
        raise CodegenError(f"template {template!r}: {exc}") from exc


def runtime_files() -> dict[str, str]:
    """The runtime headers (name -> text) every generated tree includes."""
    return {p.name: p.read_text(encoding="ascii") for p in sorted(RUNTIME_DIR.glob("*.h"))}


_SAFE_PATH_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_TEXT_SUFFIXES = {".c", ".h", ".txt", ".md", ".ld", ".mk", ".json"}


def _check_relative(path: str) -> PurePosixPath:
    rel = PurePosixPath(path)
    if (
        not path
        or rel.is_absolute()
        or any(part in ("", ".", "..") for part in path.split("/"))
        or not all(_SAFE_PATH_PART.fullmatch(part) for part in rel.parts)
    ):
        raise CodegenError(
            f"output file name {path!r} must be a relative path of plain names "
            "(letters, digits, _ . -; no '..')"
        )
    if rel.name == MARKER_FILE:
        raise CodegenError(f"output file name {path!r} is reserved for refq's marker")
    return rel


def _encode(rel: PurePosixPath, content: str | bytes) -> bytes:
    if isinstance(content, bytes):
        return content
    data = content.encode("utf-8")
    if rel.suffix in (".c", ".h"):
        # Generated C is pure ASCII: names reach it only through codegen.names' escapes, so a
        # non-ASCII byte here means something bypassed them.
        for i, b in enumerate(data):
            if b > 0x7F:
                line = data[:i].count(b"\n") + 1
                raise CodegenError(
                    f"generated file {str(rel)!r} has a non-ASCII byte on line {line}"
                )
    return data


def is_generated_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory refq generated (it holds the marker file)."""
    p = Path(path)
    return p.is_dir() and not p.is_symlink() and (p / MARKER_FILE).is_file()


def write_tree(
    out_dir: str | os.PathLike[str],
    files: Mapping[str, str | bytes],
    *,
    force: bool = False,
    runtime: bool = True,
) -> Path:
    """Write ``files`` (relative path -> text or bytes) as the directory ``out_dir``, atomically.

    The tree is built in a temporary directory beside ``out_dir`` (same file system) and renamed
    into place, so readers see the old tree or the new one, never a mix. ``runtime`` adds the
    runtime headers. An existing ``out_dir`` is replaced only if it holds refq's marker file or
    with ``force``; anything that is not a directory is never replaced.
    """
    out = Path(out_dir).absolute()
    contents: dict[PurePosixPath, bytes] = {}
    merged: dict[str, str | bytes] = {**(runtime_files() if runtime else {}), **files}
    for path, content in merged.items():
        rel = _check_relative(path)
        if rel in contents:
            raise CodegenError(f"output file {path!r} is given twice")
        contents[rel] = _encode(rel, content)
    for rel in contents:
        for parent in rel.parents:
            if parent in contents:
                raise CodegenError(f"output path {str(rel)!r} needs {str(parent)!r} as a directory")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise CodegenError(
            f"output path {str(out)!r} exists and is not a directory; not replacing it"
        )
    if out.exists() and not is_generated_dir(out) and not force:
        raise CodegenError(
            f"output directory {str(out)!r} exists and was not generated by refq "
            f"(no {MARKER_FILE} file); refusing to replace it without force=True (--force)"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private; the tree should not be
        for rel, data in contents.items():
            target = tmp.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        marker = {"generator": "refq", "version": __version__, "files": sorted(map(str, contents))}
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=1) + "\n", encoding="ascii")
        _swap_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _swap_into_place(tmp: Path, out: Path) -> None:
    if not out.exists():
        os.rename(tmp, out)
        return
    old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
    os.rename(out, old)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(old, out)  # put the previous tree back
        raise
    shutil.rmtree(old, ignore_errors=True)
