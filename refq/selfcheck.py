"""Run-time self-checks: refq's vectorized arithmetic against :mod:`refq.oracle`'s definitions.

Every module of the :mod:`refq.oracle` package that defines ``self_check(samples, seed)`` is run;
each returns rows ``(op, variant, cases, bit_exact)`` comparing the fast NumPy / Numba code with
the exact scalar Python-int / Fraction definitions on seeded random and edge-case inputs (no
hypothesis at run time). ``refq conformance`` prints them after the ONNX node cases.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from types import ModuleType


@dataclass(frozen=True)
class ConformanceRow:
    """One line of the ``refq conformance`` table."""

    op: str
    variant: str
    cases: int
    elements: int | None = None
    """Output elements compared (None where a row counts cases only)."""
    mismatches: int | None = 0
    """Elements (or cases) that differ; None when the check reports only yes / no."""
    error: str | None = None
    exact: bool = True

    @property
    def bit_exact(self) -> bool:
        return self.exact and self.error is None and not self.mismatches


def oracle_modules() -> list[ModuleType]:
    """The :mod:`refq.oracle` modules that define ``self_check``, in name order."""
    import refq.oracle as package

    mods = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda i: i.name):
        mod = importlib.import_module(f"{package.__name__}.{info.name}")
        if callable(getattr(mod, "self_check", None)):
            mods.append(mod)
    return mods


def _py_matmul(a, b) -> list[list[int]]:
    """The definition: sum over k of Python-int products (2-D)."""
    return [
        [sum(int(a[i][k]) * int(b[k][j]) for k in range(len(b))) for j in range(len(b[0]))]
        for i in range(len(a))
    ]


def _sat16_dot(a: list[int], b: list[int]) -> int:
    """Pairs (2j, 2j+1) clipped to int16, an odd tail alone: the AVX2 u8 x s8 definition."""
    total = 0
    for q in range(0, len(a), 2):
        pair = sum(x * y for x, y in zip(a[q : q + 2], b[q : q + 2], strict=True))
        total += min(max(pair, -32768), 32767)
    return total


def intmatmul_self_check(samples: int = 400, seed: int = 0) -> list[ConformanceRow]:
    """:mod:`refq.intmatmul` against Python-int sums on each path (float32, float64, int64),
    int32 wrap-around, and the u8 x s8 int16-pair saturation; ``samples`` outputs per row."""
    import numpy as np

    from refq.intmatmul import int_matmul, int_matmul_u8s8_sat16, plan_int_matmul

    rng = np.random.default_rng(seed)
    rows = []
    n = max(1, round(samples**0.5))
    cases = {  # path -> (operand magnitude, K)
        "float32": (127, 64),
        "float64": (2**20, 64),
        "int64": (2**28, 64),  # 64 * 2^56 = 2^62: beyond float64, inside int64
    }
    for path, (mag, k) in cases.items():
        a = rng.integers(-mag, mag, (n, k), endpoint=True)
        b = rng.integers(-mag, mag, (k, n), endpoint=True)
        a[0, :] = mag  # reach the bound
        b[:, 0] = mag
        want = _py_matmul(a.tolist(), b.tolist())
        got = int_matmul(a, b, accumulate="int64")
        bad = sum(int(g) != w for g, w in zip(got.ravel(), np.ravel(want), strict=True))
        ok = plan_int_matmul(a, b).path == path
        rows.append(ConformanceRow("intmatmul.int_matmul", path, n * n, mismatches=bad, exact=ok))
    a = rng.integers(-(2**31), 2**31, (n, 16))
    b = rng.integers(-(2**31), 2**31, (16, n))
    wrap = [[((v + 2**31) % 2**32) - 2**31 for v in row] for row in _py_matmul(a, b)]
    got = int_matmul(a, b, accumulate="int32_wrap")
    bad = sum(int(g) != w for g, w in zip(got.ravel(), np.ravel(wrap), strict=True))
    rows.append(ConformanceRow("intmatmul.int_matmul", "int32_wrap", n * n, mismatches=bad))
    a = rng.integers(0, 256, (n, 33)).astype(np.uint8)
    b = rng.integers(-128, 128, (33, n)).astype(np.int8)
    want = [[_sat16_dot(a[i].tolist(), b[:, j].tolist()) for j in range(n)] for i in range(n)]
    got = int_matmul_u8s8_sat16(a, b)
    bad = sum(int(g) != w for g, w in zip(got.ravel(), np.ravel(want), strict=True))
    rows.append(ConformanceRow("intmatmul.u8s8_sat16", "ort-x86-u8s8", n * n, mismatches=bad))
    return rows


def self_check_rows(samples: int = 400, seed: int = 0) -> list[ConformanceRow]:
    """Run every oracle self-check; a check that raises becomes a failed row naming the error."""
    rows: list[ConformanceRow] = []
    try:
        rows.extend(intmatmul_self_check(samples, seed))
    except Exception as exc:  # reported as a failed row, like the oracle checks
        rows.append(
            ConformanceRow("intmatmul", "self_check", 0, error=f"{type(exc).__name__}: {exc}")
        )
    for mod in oracle_modules():
        area = mod.__name__.rsplit(".", 1)[-1]
        try:
            results = mod.self_check(samples=samples, seed=seed)
        except Exception as exc:  # a crashing check must show up as a failure, not abort the run
            rows.append(ConformanceRow(area, "self_check", 0, error=f"{type(exc).__name__}: {exc}"))
            continue
        for r in results:
            rows.append(
                ConformanceRow(
                    f"{area}.{r.op}",
                    str(r.variant),
                    int(r.cases),
                    mismatches=getattr(r, "mismatches", None),
                    exact=bool(r.bit_exact),
                )
            )
    return rows
