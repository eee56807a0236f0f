"""Atomic file writes: a temporary file in the target's directory, then ``os.replace``.

A reader never sees a half-written file: either the old content or the new one. The temporary
file lives next to the target (``os.replace`` is atomic only within one file system) and is
removed if writing fails.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def write_atomic(
    path: str | os.PathLike,
    write: Callable[[BinaryIO], object],
    *,
    fsync: bool = False,
    mode: int = 0o644,
) -> Path:
    """Call ``write(f)`` on a temporary binary file beside ``path``, then move it into place.

    ``fsync`` flushes the data to disk before the rename (worth it for large model files).
    ``mode``: the file's permissions (``mkstemp`` creates 0600; written files are meant to be
    shared). ``OSError`` (unwritable directory, full disk) propagates to the caller.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


__all__ = ["write_atomic"]
