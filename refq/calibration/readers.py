"""Calibration data readers: deterministic windows of token ids from text, and a progress bar.

A reader is an iterable of 1-D ``int64`` token arrays with a ``len()`` (the number of windows);
iterating again yields the same windows (the PTQ pipeline makes several passes).

- :class:`TokenWindows`: windows of ``window`` tokens over a token sequence, taken at
  ``n_windows`` evenly spaced starts (``start_k = offset + floor(k * span / n)`` with
  ``span = len - offset - window``) so a few windows cover the whole text; ``stride`` instead
  gives consecutive windows every ``stride`` tokens from ``offset``.
- :func:`byte_windows` (byte-level models such as the tiny LM: tokens are UTF-8 bytes) and
  :func:`tokenizer_windows` (SmolLM2 / MiniLM through a ``tokenizers.Tokenizer``, or any object
  with ``encode(text).ids``) build one from a text file or string.
- :class:`SentenceReader`: one window per non-empty line (BERT-style encoders), truncated to
  ``max_len`` tokens.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from refq.errors import InvalidDataError, ShapeError


class CalibrationReader(Protocol):
    """What the PTQ pipeline reads: re-iterable windows of token ids with a length."""

    def __iter__(self) -> Iterator[np.ndarray]: ...

    def __len__(self) -> int: ...


class TokenWindows:
    """Deterministic windows over a token sequence (module docstring)."""

    def __init__(
        self,
        tokens: Sequence[int] | np.ndarray,
        window: int,
        n_windows: int | None = None,
        *,
        offset: int = 0,
        stride: int | None = None,
        name: str = "calibration text",
    ) -> None:
        t = np.asarray(tokens, dtype=np.int64).reshape(-1)
        if window < 1:
            raise ShapeError(f"{name}: calibration window must be >= 1 token, got {window}")
        if offset < 0 or offset + window > t.size:
            raise ShapeError(
                f"{name}: {t.size} tokens cannot hold one window of {window} after offset {offset}"
            )
        if (n_windows is None) == (stride is None):
            raise ShapeError(f"{name}: give exactly one of n_windows and stride")
        span = t.size - offset - window
        if stride is not None:
            if stride < 1:
                raise ShapeError(f"{name}: stride must be >= 1, got {stride}")
            starts = list(range(offset, offset + span + 1, stride))
        else:
            assert n_windows is not None
            if n_windows < 1:
                raise ShapeError(f"{name}: n_windows must be >= 1, got {n_windows}")
            if n_windows == 1:
                starts = [offset]
            else:
                starts = [offset + (k * span) // (n_windows - 1) for k in range(n_windows)]
        self.tokens = t
        self.window = int(window)
        self.starts = starts
        self.name = name

    def __len__(self) -> int:
        return len(self.starts)

    def __iter__(self) -> Iterator[np.ndarray]:
        for s in self.starts:
            yield self.tokens[s : s + self.window]

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "window": self.window,
            "windows": len(self.starts),
            "tokens": int(self.tokens.size),
            "first_start": int(self.starts[0]),
            "last_start": int(self.starts[-1]),
        }


def _read_text(source: str | os.PathLike | bytes, what: str) -> tuple[bytes, str]:
    if isinstance(source, bytes):
        return source, what
    if isinstance(source, os.PathLike) or (
        isinstance(source, str) and "\n" not in source and len(source) < 4096
    ):
        p = Path(source)
        if p.is_file():
            return p.read_bytes(), str(p)
        if isinstance(source, os.PathLike):
            raise InvalidDataError(f"calibration text file {str(p)!r} does not exist")
    return str(source).encode("utf-8"), what


def byte_windows(
    source: str | os.PathLike | bytes,
    window: int,
    n_windows: int | None = None,
    *,
    start: int = 0,
    end: int | None = None,
    offset: int = 0,
    stride: int | None = None,
) -> TokenWindows:
    """Windows of UTF-8 bytes of a text file (path) or string, from bytes ``start:end``."""
    data, name = _read_text(source, "calibration text")
    data = data[start:end]
    tokens = np.frombuffer(data, dtype=np.uint8).astype(np.int64)
    return TokenWindows(
        tokens, window, n_windows, offset=offset, stride=stride, name=f"{name}[{start}:{end}]"
    )


def tokenizer_windows(
    tokenizer: Any,
    source: str | os.PathLike | bytes,
    window: int,
    n_windows: int | None = None,
    *,
    max_chars: int | None = None,
    offset: int = 0,
    stride: int | None = None,
) -> TokenWindows:
    """Windows of a tokenizer's ids over a text file or string (first ``max_chars`` chars)."""
    data, name = _read_text(source, "calibration text")
    text = data.decode("utf-8")[:max_chars]
    ids = np.asarray(tokenizer.encode(text).ids, dtype=np.int64)
    return TokenWindows(ids, window, n_windows, offset=offset, stride=stride, name=name)


class SentenceReader:
    """One window per non-empty line of text (BERT sentence calibration)."""

    def __init__(
        self,
        tokenizer: Any,
        lines: Iterable[str],
        max_len: int = 128,
        limit: int | None = None,
    ) -> None:
        sents = [s.strip() for s in lines if s.strip()]
        if limit is not None:
            sents = sents[:limit]
        if not sents:
            raise InvalidDataError("sentence calibration reader got no non-empty line")
        self.windows = [
            np.asarray(tokenizer.encode(s).ids[:max_len], dtype=np.int64) for s in sents
        ]
        self.max_len = max_len

    def __len__(self) -> int:
        return len(self.windows)

    def __iter__(self) -> Iterator[np.ndarray]:
        yield from self.windows

    def describe(self) -> dict[str, Any]:
        return {"source": "sentences", "windows": len(self.windows), "max_len": self.max_len}


class Progress:
    """A one-line stderr progress bar: ``label [#####.....] 5/10 1.2s`` (no dependency).

    Redraws at most every 0.1 s and at the end; silent when ``enabled`` is false.
    """

    def __init__(self, total: int, label: str, enabled: bool = True, width: int = 24) -> None:
        self.total = max(int(total), 0)
        self.label = label
        self.enabled = enabled
        self.width = width
        self.done = 0
        self.t0 = time.perf_counter()
        self._last = 0.0

    def advance(self, n: int = 1) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.perf_counter()
        if self.done < self.total and now - self._last < 0.1:
            return
        self._last = now
        frac = self.done / self.total if self.total else 1.0
        fill = round(frac * self.width)
        bar = "#" * fill + "." * (self.width - fill)
        sys.stderr.write(f"\r{self.label} [{bar}] {self.done}/{self.total} {now - self.t0:.1f}s")
        if self.done >= self.total:
            sys.stderr.write("\n")
        sys.stderr.flush()


def iterate(reader: Iterable[np.ndarray], label: str, progress: bool) -> Iterator[np.ndarray]:
    """Iterate a reader with a progress bar (length from ``len(reader)`` when it has one)."""
    try:
        total = len(reader)  # type: ignore[arg-type]
    except TypeError:
        total = 0
    bar = Progress(total, label, enabled=progress)
    for item in reader:
        yield item
        bar.advance()
