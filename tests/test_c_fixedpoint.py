"""templates/runtime/refq_fixedpoint.h against refq.fixedpoint, byte for byte; refq_dsp.h too.

One C program (tests/c/fixedpoint_entry.c) runs every primitive on cases read from a file: on the
host under UBSan + ASan with -fno-sanitize-recover (any undefined behaviour fails the run), and
under QEMU on Cortex-M7 and Cortex-M4 with hard and soft float ABIs, with the DSP path (QADD,
SSAT) and the plain-C path. Cases come from a seeded generator: uniform int32 values, small
values, powers of two and their neighbours, and every combination of the edge values
(INT32_MIN, INT32_MAX, 0, +-1, shifts +-31). The expected bytes come from refq.fixedpoint (the
Python reference the kernels use), so C and Python must agree bit for bit. The DSP helpers
(SXTB16, SMLAD and their plain-C forms) are checked against Python-int definitions of the
instructions.
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from codegen.build import build
from codegen.emit import write_tree
from codegen.run import run
from refq import fixedpoint as fp
from refq.errors import CodegenError
from tests.codegen_image import CONFIGS as IMAGE_CONFIGS
from tests.codegen_image import require_config, require_target
from tests.conftest import require_tool

C_DIR = Path(__file__).parent / "c"
MAX_CASES = 16384  # fixedpoint_entry.c's buffer
PER_OP = 400
SEED = 20261127

I32_MIN, I32_MAX = -(2**31), 2**31 - 1
EDGES = np.array([I32_MIN, I32_MIN + 1, -(2**30), -2, -1, 0, 1, 2, 2**30, I32_MAX - 1, I32_MAX])


def _int32(rng: np.random.Generator, n: int, lo: int = I32_MIN, hi: int = I32_MAX) -> np.ndarray:
    """Values in [lo, hi]: a third uniform, a third small, a third powers of two +-1."""
    uniform = rng.integers(lo, hi, n, endpoint=True)
    small = np.clip(rng.integers(-1000, 1000, n, endpoint=True), lo, hi)
    k = rng.integers(0, 31, n, endpoint=True)
    sign = rng.choice([-1, 1], n)
    pot = np.clip(sign * (2**k) + rng.integers(-1, 1, n, endpoint=True), lo, hi)
    pick = rng.integers(0, 3, n)
    return np.where(pick == 0, uniform, np.where(pick == 1, small, pot)).astype(np.int64)


def _edges(*columns: np.ndarray) -> list[np.ndarray]:
    """Every combination of the given edge values, as one array per column."""
    combos = np.array(list(itertools.product(*columns)), dtype=np.int64)
    return [combos[:, i] for i in range(len(columns))]


def _join(random_cols: list[np.ndarray], edge_cols: list[np.ndarray]) -> list[np.ndarray]:
    return [np.concatenate([r, e]) for r, e in zip(random_cols, edge_cols, strict=True)]


Op = tuple[str, list[np.ndarray], Callable[..., np.ndarray]]


def _ops(rng: np.random.Generator) -> list[Op]:
    """(name, argument columns, reference) in the order of fixedpoint_entry.c's op codes."""
    n = PER_OP
    shifts = np.array([-31, -30, -1, 0, 1, 29, 30])
    multipliers = np.array([I32_MIN, -(2**30), -1, 0, 1, 2**30, 1518500250, I32_MAX])

    def two(lo_b: int = I32_MIN, hi_b: int = I32_MAX, b_edges: np.ndarray = EDGES):
        cols = [_int32(rng, n), rng.integers(lo_b, hi_b, n, endpoint=True)]
        return _join(cols, _edges(EDGES, b_edges))

    def requant():
        big = rng.integers(2**30, 2**31, n)  # QuantizeMultiplier's normal range
        m = np.where(rng.integers(0, 4, n) == 0, _int32(rng, n), big)
        cols = [_int32(rng, n), m, rng.integers(-31, 30, n, endpoint=True)]
        return _join(cols, _edges(EDGES, multipliers, shifts))

    def acc64(m_hi: int, m_edges: np.ndarray):
        acc = rng.integers(-(2**47), 2**47, n)
        acc = np.where(rng.integers(0, 2, n) == 0, acc, acc >> rng.integers(0, 40, n))
        cols = [
            acc,
            rng.integers(0, m_hi, n, endpoint=True),
            rng.integers(-31, 7, n, endpoint=True),
        ]
        acc_edges = np.array([-(2**47), -(2**47) + 1, -1, 0, 1, 2**47 - 1, 2**32, -(2**32)])
        return _join(cols, _edges(acc_edges, m_edges, np.array([-31, -1, 0, 6, 7])))

    def unary(lo: int = I32_MIN, hi: int = I32_MAX):
        edges = EDGES[(lo <= EDGES) & (hi >= EDGES)]
        return [np.concatenate([_int32(rng, n, lo, hi), edges])]

    def with_bits(max_bits: int, negative: bool):
        a = _int32(rng, n)
        a = np.where(negative & (a > 0), -a, a)
        cols = [a, rng.integers(0, max_bits, n, endpoint=True)]
        return _join(cols, _edges(EDGES, np.array([0, 1, 4, 5, 6, max_bits])))

    def per_bits(f: Callable[[np.ndarray, int], np.ndarray]) -> Callable[..., np.ndarray]:
        # integer_bits is a template parameter in gemmlowp: a scalar in refq.fixedpoint.
        def apply(a: np.ndarray, bits: np.ndarray) -> np.ndarray:
            out = np.zeros(len(a), dtype=np.int64)
            for b in np.unique(bits):
                out[bits == b] = f(a[bits == b], int(b))
            return out

        return apply

    def clip(lo: int, hi: int) -> Callable[[np.ndarray], np.ndarray]:
        return lambda a: np.clip(a, lo, hi)

    m_reduced = np.array([0, 0x7FFEFFFF, 0x7FFF0000, I32_MAX, 2**30])
    return [
        ("srdhm", two(), fp.srdhm),
        ("rounding_divide_by_pot", two(0, 31, np.arange(32)), fp.rounding_divide_by_pot),
        (
            "saturating_rounding_multiply_by_pot",
            two(-31, 31, np.array([-31, -1, 0, 1, 30, 31])),
            fp.saturating_rounding_multiply_by_pot,
        ),
        ("rounding_half_sum", two(), fp.rounding_half_sum),
        ("saturating_add", two(), fp.saturating_add),
        ("saturating_sub", two(), fp.saturating_sub),
        ("mbqm double", requant(), lambda x, m, s: fp.multiply_by_quantized_multiplier(x, m, s)),
        (
            "mbqm single",
            requant(),
            lambda x, m, s: fp.multiply_by_quantized_multiplier(x, m, s, "single"),
        ),
        ("cmsis_requantize double", requant(), lambda x, m, s: fp.cmsis_requantize(x, m, s)),
        (
            "cmsis_requantize single",
            requant(),
            lambda x, m, s: fp.cmsis_requantize(x, m, s, "single"),
        ),
        ("reduce_multiplier", unary(0, I32_MAX), fp.reduce_multiplier),
        (
            "multiply_by_quantized_multiplier_s64",
            acc64(I32_MAX, m_reduced),
            fp.multiply_by_quantized_multiplier_s64,
        ),
        (
            "cmsis_requantize_s64",
            acc64(0x7FFF, np.array([0, 1, 0x4000, 0x7FFF])),
            fp.cmsis_requantize_s64,
        ),
        ("exp_on_negative_values", with_bits(29, True), per_bits(fp.exp_on_negative_values)),
        ("one_over_one_plus_x_for_x_in_0_1", unary(), fp.one_over_one_plus_x_for_x_in_0_1),
        (
            "one_minus_x_over_one_plus_x_for_x_in_0_1",
            unary(),
            fp.one_minus_x_over_one_plus_x_for_x_in_0_1,
        ),
        ("gemmlowp_tanh", with_bits(28, False), per_bits(fp.gemmlowp_tanh)),
        ("gemmlowp_logistic", with_bits(29, False), per_bits(fp.gemmlowp_logistic)),
        ("count_leading_zeros", unary(), fp.count_leading_zeros),
        ("count_leading_sign_bits", unary(), fp.count_leading_sign_bits),
        ("sat_s8", unary(), clip(-128, 127)),
        ("sat_s16", unary(), clip(-32768, 32767)),
        (
            "inv_sqrt_quantized_multiplier_exp",
            _join(
                [_int32(rng, n, 0, I32_MAX), rng.choice([-1, 1], n)],
                _edges(np.array([0, 1, 2, 3, 2**27, 2**29 - 1, 2**29, I32_MAX]), np.array([-1, 1])),
            ),
            None,
        ),
        ("sxtb16", unary(), sxtb16),
        ("sxtb16 ror 8", unary(), lambda x: sxtb16(x, 8)),
        (
            "smlad",
            _join([_int32(rng, n) for _ in range(3)], _edges(EDGES, EDGES, EDGES[::3])),
            smlad,
        ),
        ("read_s8x4 unaligned", unary(), lambda x: x),
        (
            # acc within +-2^62: the portable form adds in int64 (no wrap-around to reproduce)
            "smlald_s64",
            _join(
                [rng.integers(-(2**62), 2**62, n), _int32(rng, n), _int32(rng, n)],
                _edges(np.array([-(2**62), -1, 0, 2**62 - 1]), EDGES[::2], EDGES[::2]),
            ),
            smlald,
        ),
    ]


def _wrap32(v: np.ndarray) -> np.ndarray:
    return ((v + 2**31) % 2**32) - 2**31


def _lane(x: np.ndarray, shift: int, bits: int) -> np.ndarray:
    """Signed ``bits``-wide lane of the 32-bit pattern of x starting at bit ``shift``."""
    u = (x % 2**32) >> shift & (2**bits - 1)
    return np.where(u >= 2 ** (bits - 1), u - 2**bits, u)


def sxtb16(x: np.ndarray, rotate: int = 0) -> np.ndarray:
    """Arm SXTB16 (after ROR #rotate): bytes 0 and 2 sign-extended into halfwords 0 and 1."""
    lo, hi = _lane(x, rotate, 8), _lane(x, 16 + rotate, 8)
    return _wrap32((hi % 2**16) * 2**16 + lo % 2**16)


def smlad(x: np.ndarray, y: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """Arm SMLAD: acc + the two signed halfword products, wrapped to 32 bits."""
    return _wrap32(acc + _lane(x, 0, 16) * _lane(y, 0, 16) + _lane(x, 16, 16) * _lane(y, 16, 16))


def smlald(acc: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Arm SMLALD: acc + the two signed halfword products, in 64 bits."""
    return acc + _lane(x, 0, 16) * _lane(y, 0, 16) + _lane(x, 16, 16) * _lane(y, 16, 16)


def make_cases(seed: int) -> tuple[bytes, bytes, list[tuple[str, int]]]:
    """(cases.bin, expected results.bin, [(op name, count)]) for fixedpoint_entry.c."""
    rng = np.random.default_rng(seed)
    records, expected, counts = [], [], []
    for code, (name, cols, ref) in enumerate(_ops(rng)):
        count = len(cols[0])
        rec = np.zeros((count, 5), dtype=np.int64)
        rec[:, 0] = code
        if name.endswith("_s64"):  # int64 first argument: low and high 32-bit halves
            acc = cols[0]
            rec[:, 1] = (acc & 0xFFFFFFFF).astype(np.uint32).astype(np.int32)
            rec[:, 2] = acc >> 32
            rec[:, 3:5] = np.stack(cols[1:], axis=1)
        else:
            rec[:, 1 : 1 + len(cols)] = np.stack(cols, axis=1)
        out = np.zeros((count, 2), dtype=np.int64)
        if ref is None:  # the one two-result function; reverse_shift is a scalar in Python
            for reverse in (-1, 1):
                rows = cols[1] == reverse
                m, s = fp.inv_sqrt_quantized_multiplier_exp(cols[0][rows], reverse)
                out[rows, 0], out[rows, 1] = m, s
        elif name == "smlald_s64":  # the int64 result as its low and high 32-bit halves
            v = ref(*cols)
            out[:, 0], out[:, 1] = _wrap32(v & 0xFFFFFFFF), v >> 32
        else:
            out[:, 0] = ref(*cols)
        records.append(rec)
        expected.append(out)
        counts.append((name, count))
    rec = np.concatenate(records)
    assert len(rec) <= MAX_CASES, f"{len(rec)} cases exceed the C buffer of {MAX_CASES}"
    return (
        rec.astype("<i4").tobytes(),
        np.concatenate(expected).astype("<i4").tobytes(),
        counts,
    )


def _describe_mismatch(cases: bytes, expected: bytes, got: bytes, counts) -> str:
    c = np.frombuffer(cases, "<i4").reshape(-1, 5)
    e = np.frombuffer(expected, "<i4").reshape(-1, 2)
    g = np.frombuffer(got, "<i4").reshape(-1, 2) if len(got) == len(expected) else None
    if g is None:
        return f"results have {len(got)} bytes, expected {len(expected)}"
    names = [name for name, k in counts for _ in range(k)]
    bad = np.nonzero((e != g).any(axis=1))[0]
    lines = [f"{len(bad)} of {len(c)} cases differ; first ones:"]
    for i in bad[:8]:
        lines.append(f"  {names[i]}{tuple(int(v) for v in c[i, 1:])}: C {g[i]}, Python {e[i]}")
    return "\n".join(lines)


# Every build configuration of the generated-code tests but plain host (UBSan + ASan covers it).
CONFIGS = {name: c for name, c in IMAGE_CONFIGS.items() if name != "host"}


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    src = (C_DIR / "fixedpoint_entry.c").read_text()
    return write_tree(tmp_path_factory.mktemp("fixedpoint") / "src", {"fixedpoint_entry.c": src})


@pytest.fixture(scope="module")
def cases() -> tuple[bytes, bytes, list[tuple[str, int]]]:
    return make_cases(SEED)


@pytest.fixture(scope="module")
def builds(tree):
    cache = {}

    def get(config: str):
        if config not in cache:
            target, sanitize, flags = CONFIGS[config]
            cache[config] = build(
                tree,
                target,
                build_dir=tree.parent / f"build-{config}",
                sanitize=sanitize,
                extra_cflags=flags,
            )
        return cache[config]

    return get


def test_cases_cover_every_op_and_edges(cases):
    data, expected, counts = cases
    assert [name for name, _ in counts][:2] == ["srdhm", "rounding_divide_by_pot"]
    assert len(counts) == 28 and all(k >= PER_OP for _, k in counts)
    c = np.frombuffer(data, "<i4").reshape(-1, 5)
    # The generator really produces the edges the header must survive.
    for op in (0, 6, 7, 8, 9):
        rows = c[c[:, 0] == op]
        assert {I32_MIN, I32_MAX} <= set(rows[:, 1].tolist())
    mbqm = c[c[:, 0] == 6]
    assert {-31, 30} <= set(mbqm[:, 3].tolist())
    assert len(expected) == 8 * len(c)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_c_fixedpoint_matches_python(config, builds, cases, checked):
    require_config(config)
    data, expected, counts = cases
    result = run(builds(config), {"cases.bin": data}, ["results.bin"], timeout=120)
    got = result.outputs["results.bin"]
    assert got == expected, _describe_mismatch(data, expected, got, counts)
    what = f"refq_fixedpoint.h + refq_dsp.h on {config} vs refq.fixedpoint / Python ints"
    checked(what, len(data) // 20)


@pytest.mark.parametrize(("config", "dsp"), [("m7", True), ("m7-plain-c", False)])
def test_dsp_path_uses_saturating_instructions(config, dsp, builds):
    require_tool("arm-none-eabi-gcc")
    objdump = require_tool("arm-none-eabi-objdump")
    text = subprocess.run(
        [objdump, "-d", str(builds(config).program)], capture_output=True, text=True, check=True
    ).stdout
    mnemonics = {
        line.split("\t")[2].split()[0] for line in text.splitlines() if line.count("\t") >= 2
    }
    assert ("qadd" in mnemonics and "ssat" in mnemonics) == dsp
    assert ("smlad" in mnemonics and "sxtb16" in mnemonics and "smlald" in mnemonics) == dsp


def test_host_sanitizers_catch_undefined_behaviour(tmp_path):
    """The UBSan configuration used above does fail on a left shift of a negative value."""
    require_target("host")
    entry = r"""
#include <stdint.h>
#include "refq_harness.h"
static int32_t x[1];
refq_harness_buffer refq_harness_inputs[] = {{"x.bin", x, sizeof x, 0}};
const uint32_t refq_harness_num_inputs = 1;
refq_harness_buffer refq_harness_outputs[] = {{"y.bin", x, sizeof x, 0}};
const uint32_t refq_harness_num_outputs = 1;
int32_t refq_harness_invoke(void)
{
    x[0] = x[0] << 1; /* undefined for negative x */
    refq_harness_outputs[0].length = sizeof x;
    return 0;
}
"""
    src = write_tree(tmp_path / "ub", {"entry.c": entry})
    prog = build(src, "host", sanitize=True)
    ok = run(prog, {"x.bin": np.array([5], "<i4").tobytes()}, ["y.bin"])
    assert np.frombuffer(ok.outputs["y.bin"], "<i4")[0] == 10
    with pytest.raises(CodegenError, match="left shift of negative value"):
        run(prog, {"x.bin": np.array([-5], "<i4").tobytes()}, ["y.bin"])
