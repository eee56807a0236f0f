"""refq's model file: one ``.refq`` file holding a JSON manifest and the raw tensor bytes.

Layout (all integers little-endian)::

    0   8 bytes   magic b"REFQMDL" + format version byte (1)
    8   8 bytes   uint64 N: manifest length in bytes
    16  N bytes   manifest, UTF-8 JSON, space-padded so the data starts on a 64-byte boundary
    ... data      each tensor's bytes (C order, little-endian) at a 64-byte aligned offset

The manifest records ``architecture`` (the config dict, ``arch`` = llama | bert),
``quantization`` (free-form per-tensor / per-point dict, filled by PTQ), ``profile``,
``refq_version``, ``metadata`` and, per tensor, ``dtype``, ``shape``, ``offset`` (from the
data start), ``nbytes`` and the ``sha256`` of its bytes. ``head -c 4096 model.refq`` shows it.

:func:`save` writes a temporary file in the target directory and ``os.replace`` s it, so a
reader never sees a half-written model. :func:`load` checks the magic, the manifest, the file
size, every tensor's extent and SHA-256 (mismatch: :class:`IntegrityError` naming the tensor)
and, for an unquantized model or when ``expected`` is given, the set of tensor names.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from refq.atomicfile import write_atomic
from refq.errors import IntegrityError, ModelFormatError, ShapeError
from refq.models.config import ModelConfig, check_weights, config_from_dict

MAGIC = b"REFQMDL"
FORMAT_VERSION = 1
ALIGN = 64
_HEADER = struct.Struct("<7sBQ")
# dtypes a model file may hold (sub-byte tensors are stored packed as uint8).
DTYPES = ("<f4", "<f2", "<f8", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "|b1")
MAX_MANIFEST = 256 * 1024 * 1024


@dataclass
class ModelFile:
    """The content of a ``.refq`` file."""

    config: ModelConfig
    tensors: dict[str, np.ndarray]
    quantization: dict[str, Any] = field(default_factory=dict)
    profile: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    refq_version: str = ""


def _bytes(a: np.ndarray) -> memoryview:
    """The C-order bytes of a contiguous array (also for empty arrays)."""
    return a.reshape(-1).view(np.uint8).data


def _sha256(a: np.ndarray) -> str:
    return hashlib.sha256(_bytes(a)).hexdigest()


def _le(name: str, a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    dt = a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    if dt.str not in DTYPES:
        raise ModelFormatError(f"tensor {name!r}: dtype {a.dtype} cannot be stored in a model file")
    return np.ascontiguousarray(a, dtype=dt)


def save(
    path: str | os.PathLike,
    config: ModelConfig,
    tensors: dict[str, np.ndarray],
    quantization: dict[str, Any] | None = None,
    profile: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write a model file atomically; returns its path. JSON-serialisable ``quantization`` /
    ``metadata`` are stored as given; ``profile`` must name a profile of :mod:`refq.profiles`."""
    from refq import __version__
    from refq.profiles import get_profile

    if profile is not None:
        get_profile(profile)  # unknown profile -> UnsupportedError before anything is written
    arrays = {n: _le(n, a) for n, a in tensors.items()}
    entries: dict[str, dict[str, Any]] = {}
    offset = 0
    for name, a in arrays.items():
        offset = -(-offset // ALIGN) * ALIGN
        entries[name] = {
            "dtype": a.dtype.str,
            "shape": list(a.shape),
            "offset": offset,
            "nbytes": int(a.nbytes),
            "sha256": _sha256(a),
        }
        offset += a.nbytes
    manifest = {
        "format": "refq-model",
        "format_version": FORMAT_VERSION,
        "refq_version": __version__,
        "profile": profile,
        "architecture": config.to_dict(),
        "quantization": quantization or {},
        "metadata": metadata or {},
        "data_bytes": offset,
        "tensors": entries,
    }
    try:
        text = json.dumps(manifest, indent=1, sort_keys=False, allow_nan=False).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ModelFormatError(f"manifest of {path} is not JSON-serialisable ({exc})") from None
    start = -(-(_HEADER.size + len(text)) // ALIGN) * ALIGN
    text += b" " * (start - _HEADER.size - len(text))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)

    def write(f: BinaryIO) -> None:
        f.write(_HEADER.pack(MAGIC, FORMAT_VERSION, len(text)))
        f.write(text)
        pos = 0
        for name, a in arrays.items():
            f.write(b"\0" * (entries[name]["offset"] - pos))
            f.write(_bytes(a))
            pos = entries[name]["offset"] + a.nbytes

    return write_atomic(path, write, fsync=True)


def read_manifest(path: str | os.PathLike) -> tuple[dict[str, Any], int]:
    """(manifest, data start offset) of a model file, without reading the tensors."""
    p = Path(path)
    try:
        with open(p, "rb") as f:
            head = f.read(_HEADER.size)
            if len(head) < _HEADER.size:
                raise ModelFormatError(f"{p}: file of {len(head)} bytes is too short for a header")
            magic, version, n = _HEADER.unpack(head)
            if magic != MAGIC:
                raise ModelFormatError(f"{p}: not a refq model file (magic {magic!r})")
            if version != FORMAT_VERSION:
                raise ModelFormatError(f"{p}: format version {version} (this refq reads 1)")
            if n > MAX_MANIFEST:
                raise ModelFormatError(f"{p}: manifest length {n} is implausible")
            text = f.read(n)
    except FileNotFoundError:
        raise ModelFormatError(f"{p}: no such model file") from None
    if len(text) < n:
        raise ModelFormatError(f"{p}: truncated in the manifest ({len(text)} of {n} bytes)")
    try:
        manifest = json.loads(text.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFormatError(f"{p}: corrupt manifest JSON ({exc})") from None
    if not isinstance(manifest, dict):
        raise ModelFormatError(f"{p}: manifest is not a JSON object")
    for key in ("architecture", "tensors", "data_bytes"):
        if key not in manifest:
            raise ModelFormatError(f"{p}: manifest has no {key!r} field")
    return manifest, _HEADER.size + n


def load(
    path: str | os.PathLike,
    expected: Iterable[str] | None = None,
    verify: bool = True,
) -> ModelFile:
    """Read and verify a model file.

    ``expected``: the exact tensor names the caller needs (missing or extra -> error). Without
    it, a model with an empty ``quantization`` must hold exactly the float weights of its
    architecture. ``verify=False`` skips the SHA-256 checks (never the size checks)."""
    p = Path(path)
    manifest, start = read_manifest(p)
    config = config_from_dict(manifest["architecture"])
    data_bytes = manifest["data_bytes"]
    size = p.stat().st_size
    if not isinstance(data_bytes, int) or data_bytes < 0:
        raise ModelFormatError(f"{p}: manifest data_bytes {data_bytes!r} is not a byte count")
    if size != start + data_bytes:
        what = "truncated" if size < start + data_bytes else "trailing bytes"
        raise ModelFormatError(
            f"{p}: {what}: file has {size} bytes, manifest says {start} + {data_bytes}"
        )
    entries = manifest["tensors"]
    if not isinstance(entries, dict):
        raise ModelFormatError(f"{p}: manifest 'tensors' is not an object")
    buf = (
        np.memmap(p, dtype=np.uint8, mode="r", offset=start, shape=(data_bytes,))
        if data_bytes
        else np.zeros(0, np.uint8)
    )
    tensors: dict[str, np.ndarray] = {}
    for name, e in entries.items():
        try:
            dt = np.dtype(e["dtype"])
            shape = tuple(int(s) for s in e["shape"])
            off, nbytes, digest = int(e["offset"]), int(e["nbytes"]), str(e["sha256"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelFormatError(
                f"{p}: manifest entry of tensor {name!r} is malformed ({exc})"
            ) from None
        if e["dtype"] not in DTYPES or any(s < 0 for s in shape):
            raise ModelFormatError(f"{p}: tensor {name!r} has dtype {e['dtype']!r} shape {shape}")
        if nbytes != int(np.prod(shape, dtype=np.int64)) * dt.itemsize:
            raise ModelFormatError(
                f"{p}: tensor {name!r}: {nbytes} bytes do not fit {e['dtype']} {shape}"
            )
        if off < 0 or off + nbytes > data_bytes:
            raise ModelFormatError(f"{p}: tensor {name!r} at {off}+{nbytes} lies outside the data")
        raw = np.array(buf[off : off + nbytes])
        if verify and hashlib.sha256(raw).hexdigest() != digest:
            raise IntegrityError(
                f"{p}: tensor {name!r} fails its SHA-256 check (manifest {digest[:16]}..., "
                f"data {hashlib.sha256(raw).hexdigest()[:16]}...)"
            )
        tensors[name] = raw.view(dt).reshape(shape)
    del buf
    if expected is not None:
        want = list(expected)
        missing = [n for n in want if n not in tensors]
        extra = sorted(set(tensors) - set(want))
        if missing or extra:
            raise ModelFormatError(
                f"{p}: missing tensors {missing[:5]}, unexpected tensors {extra[:5]}"
            )
    elif not manifest.get("quantization"):
        try:
            check_weights(config, tensors, str(p))
        except ShapeError as exc:
            raise ModelFormatError(str(exc)) from None
    return ModelFile(
        config=config,
        tensors=tensors,
        quantization=manifest.get("quantization") or {},
        profile=manifest.get("profile"),
        metadata=manifest.get("metadata") or {},
        refq_version=str(manifest.get("refq_version", "")),
    )
