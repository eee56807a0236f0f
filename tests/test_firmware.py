"""firmware/: startup, linker scripts, semihosting harness and the instruction counter.

Runs tests/c/firmware_entry.c on the host and under QEMU on mps2-an500 (Cortex-M7) and
mps2-an386 (Cortex-M4): file I/O through semihosting, exit statuses (entry status, faults, stack
overflow), hard / soft float ABIs, the SysTick instruction counter under -icount shift=7
(deterministic, and calibrated against loops of exactly two instructions per iteration), and
the real STM32H743 linker script.
"""

from __future__ import annotations

import re
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from codegen import run as run_module
from codegen.build import FIRMWARE_DIR, build
from codegen.emit import write_tree
from codegen.run import (
    EXIT_FAULT_BASE,
    EXIT_INPUT_OPEN,
    EXIT_INPUT_SIZE,
    EXIT_STACK_OVERFLOW,
    describe_exit,
    run,
)
from refq.errors import CodegenError
from tests.codegen_image import require_target
from tests.conftest import require_tool

C_DIR = Path(__file__).parent / "c"
ECHO, STATUS, SPIN, FAULT, TICKS, FLOAT, STACK = range(7)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    src = (C_DIR / "firmware_entry.c").read_text()
    return write_tree(tmp_path_factory.mktemp("firmware") / "src", {"firmware_entry.c": src})


@pytest.fixture(scope="module")
def program(tree):
    cache = {}

    def get(target: str):
        require_target(target)
        if target not in cache:
            cache[target] = build(tree, target, build_dir=tree.parent / f"build-{target}")
        return cache[target]

    return get


def call(prog, command: int, argument: int = 0, data: bytes = b"", **kwargs):
    cmd = struct.pack("<Ii", command, argument)
    return run(prog, {"cmd.bin": cmd, "data.bin": data}, ["out.bin"], **kwargs)


@pytest.mark.parametrize("target", ["host", "m7", "m4"])
def test_harness_round_trips_files(target, program, checked):
    data = bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8))
    result = call(program(target), ECHO, data=data)
    assert result.returncode == 0
    assert result.outputs["out.bin"] == data
    empty = call(program(target), ECHO, data=b"")
    assert empty.outputs["out.bin"] == b""
    checked(f"semihosting file round trip on {target}", 2, len(data))


@pytest.mark.parametrize("target", ["host", "m7", "m4"])
@pytest.mark.parametrize(("status", "code"), [(-1, 17), (-2, 18), (-200, 63), (5, 69), (99, 95)])
def test_entry_status_becomes_exit_status(target, status, code, program):
    result = call(program(target), STATUS, status, check=False)
    assert result.returncode == code
    if -47 <= status < 0 or 0 < status <= 31:
        assert describe_exit(code) == f"the entry point returned status {status}"


def test_harness_exit_codes_match_header():
    header = (FIRMWARE_DIR / "refq_harness.h").read_text()
    defines = dict(re.findall(r"#define REFQ_EXIT_([A-Z_]+) (\d+)", header))
    assert len(defines) == 11
    for name, value in defines.items():
        assert getattr(run_module, f"EXIT_{name}") == int(value), name


@pytest.mark.parametrize("target", ["m7", "m4"])
def test_faults_exit_with_their_exception(target, program):
    prog = program(target)
    # load from an unmapped address: BusFault; UDF: UsageFault; UDIV by zero with DIV_0_TRP.
    for kind, exception in ((0, 5), (1, 6), (2, 6)):
        result = call(prog, FAULT, kind, check=False)
        assert result.returncode == EXIT_FAULT_BASE + exception, result.stderr
        assert "refq firmware: exception" in result.stderr
    with pytest.raises(CodegenError, match="BusFault"):
        call(prog, FAULT, 0)
    # 100 frames of 1 KB overflow the 16 KB stack: detected, not a hang or a lockup.
    overflow = call(prog, STACK, 100, check=False)
    assert overflow.returncode == EXIT_STACK_OVERFLOW, overflow.stderr


@pytest.mark.parametrize("target", ["m7", "m4"])
def test_input_errors_exit_with_harness_codes(target, program, tmp_path):
    prog = program(target)
    too_big = call(prog, ECHO, data=bytes(4097), check=False)
    assert too_big.returncode == EXIT_INPUT_SIZE
    missing = run(prog, {"cmd.bin": struct.pack("<Ii", ECHO, 0)}, ["out.bin"], check=False)
    assert missing.returncode == EXIT_INPUT_OPEN
    assert "cannot read input data.bin" in missing.stderr


@pytest.mark.parametrize("target", ["m7", "m4"])
def test_instruction_count_is_deterministic_and_calibrated(target, program, checked):
    prog = program(target)
    counts = {}
    for n in (1, 1000, 250_000):
        first = call(prog, SPIN, n)
        second = call(prog, SPIN, n)
        assert (first.ticks, first.overhead_ticks) == (second.ticks, second.overhead_ticks)
        counts[n] = first
    # subs + bne: exactly 2 instructions per iteration, 6.4 ticks at 3.2 ticks per instruction.
    for n in (1000, 250_000):
        dticks = counts[n].ticks - counts[1].ticks
        assert abs(5 * dticks - 32 * (n - 1)) <= 5, (dticks, n)  # |dticks - 6.4 dn| <= 1 tick
        dinsn = counts[n].instructions - counts[1].instructions
        assert abs(dinsn - 2 * (n - 1)) <= 1
    # The whole entry point: the loop plus a call, a switch and a return.
    assert 2 * 250_000 <= counts[250_000].instructions <= 2 * 250_000 + 40
    checked(f"icount instruction counter on {target} (loops of known length)", 6)


def test_tick_counter_is_monotonic_across_systick_wraps(program):
    result = call(program("m7"), TICKS, 400_000)
    first, last, smallest, largest = struct.unpack("<4Q", result.outputs["out.bin"])
    assert last - first > 2 * (1 << 24)  # at least two SysTick periods went by
    assert 0 < smallest <= largest < 200  # one loop iteration is a few dozen instructions


@pytest.mark.parametrize("target", ["m7", "m7-soft", "m7-softfp", "m4", "m4-soft", "m4-softfp"])
def test_float_abis(target, program):
    """Hard-float code faults unless the reset handler enabled the FPU; every ABI must agree
    with IEEE float32 arithmetic (two separately rounded operations, no fused multiply-add)."""
    rng = np.random.default_rng(7)
    abc = rng.standard_normal(3).astype(np.float32)
    result = call(program(target), FLOAT, data=abc.tobytes())
    expected = np.float32(abc[0] * abc[1]) + abc[2]
    assert result.outputs["out.bin"] == expected.tobytes()


def test_stack_high_water_mark(program):
    prog = program("m7")
    shallow = call(prog, STACK, 0)
    deep = call(prog, STACK, 8)
    # The painted stack shows how deep the 1 KB frames went (gcc may inline a level or two).
    assert 0 < shallow.stack_bytes < 8 * 1024
    assert 8 * 1024 - 512 <= deep.stack_bytes - shallow.stack_bytes <= 8 * 1024 + 2048


def test_qemu_run_times_out(program):
    with pytest.raises(CodegenError, match=r"timed out after 0\.5 s"):
        call(program("m7"), SPIN, 2**31 - 1, timeout=0.5)


def test_makefile_uses_the_documented_flags(program):
    m7 = program("m7").log
    assert "-mcpu=cortex-m7 -mthumb -mfloat-abi=hard -mfpu=fpv5-d16" in m7
    assert "-std=c99 -Wall -Wextra -Wpedantic -Werror -O2" in m7
    assert "-nostartfiles --specs=nano.specs" in m7
    assert "-mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16" in program("m4").log
    assert "-mfloat-abi=soft " in program("m4-soft").log


ARENA_ENTRY = r"""
#include <stdint.h>
#include "refq_types.h"
#include "refq_harness.h"
/* volatile: the arena must survive optimization for its size to show in the ELF */
REFQ_ALIGN(16) REFQ_SECTION(".refq_arena") static volatile uint8_t arena[ARENA_BYTES];
REFQ_ALIGN(16) REFQ_SECTION(".refq_state") static int8_t kv_cache[4096];
static const int8_t weights[8] = {1, 2, 3, 4, 5, 6, 7, 8};
static int32_t sum[1];
refq_harness_buffer refq_harness_inputs[1];
const uint32_t refq_harness_num_inputs = 0;
refq_harness_buffer refq_harness_outputs[] = {{"sum.bin", sum, sizeof sum, 0}};
const uint32_t refq_harness_num_outputs = 1;
int32_t refq_harness_invoke(void)
{
    uint32_t i;
    for (i = 0; i < 8u; ++i) {
        arena[i] = (uint8_t)(weights[i] + kv_cache[i]);
        sum[0] += arena[i];
    }
    refq_harness_outputs[0].length = sizeof sum;
    return 0;
}
"""


def _sections(elf: Path) -> dict[str, tuple[int, int]]:
    objdump = require_tool("arm-none-eabi-objdump")
    text = subprocess.run([objdump, "-h", str(elf)], capture_output=True, text=True, check=True)
    found = {}
    for line in text.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[0].isdigit():
            found[parts[1]] = (int(parts[3], 16), int(parts[2], 16))  # (address, size)
    return found


def test_linker_scripts_place_arena_state_and_stack(tmp_path):
    require_target("m7")
    src = write_tree(tmp_path / "arena", {"entry.c": ARENA_ENTRY})
    qemu = build(src, "m7", extra_cflags=["-DARENA_BYTES=65536"])
    assert run(qemu).returncode == 0  # zeroed state and arena, no outputs read back here
    s = _sections(qemu.program)
    assert s[".isr_vector"][0] == 0 and s[".stack"][0] == 0x20000000
    assert s[".refq_arena"][1] == 65536 and 0x20000000 < s[".refq_arena"][0] < 0x20100000
    assert qemu.size is not None and qemu.size.sram >= 65536 + 4096 + 16384

    h7 = build(src, "m7", board="stm32h743", extra_cflags=["-DARENA_BYTES=65536"])
    s = _sections(h7.program)
    assert s[".isr_vector"][0] == 0x08000000
    assert s[".stack"][0] == 0x20000000  # bottom of DTCM: an overflow faults below it
    assert s[".refq_arena"][0] == 0x24000000 + s[".refq_state"][1]  # AXI SRAM
    assert s[".refq_state"][0] == 0x24000000

    # An arena beyond the 1 MB SRAM budget (QEMU script) or the 512 KB AXI SRAM fails to link.
    with pytest.raises(CodegenError, match="overflowed"):
        build(src, "m7", extra_cflags=["-DARENA_BYTES=1048576"])
    with pytest.raises(CodegenError, match="AXI_SRAM' overflowed"):
        build(src, "m7", board="stm32h743", extra_cflags=["-DARENA_BYTES=600000"])


def test_compile_errors_name_the_file(tmp_path):
    require_target("host")
    src = write_tree(tmp_path / "broken", {"broken.c": "int f(void) { return undefined_name; }\n"})
    with pytest.raises(CodegenError, match=r"broken\.c.*undefined_name"):
        build(src, "host")
    # Warnings are errors: an unused variable stops the build.
    src = write_tree(tmp_path / "warn", {"warn.c": "int g(void) { int unused; return 0; }\n"})
    with pytest.raises(CodegenError, match="unused"):
        build(src, "host")
