"""Run a built program on the host or under QEMU, with its input and output files.

Cortex-M programs run as ``qemu-system-arm -M mps2-an500 -cpu cortex-m7`` (M7) or ``-M
mps2-an386 -cpu cortex-m4`` (M4) with semihosting and ``-icount shift=7``, in a temporary
working directory that holds the input files; the harness writes the outputs there. Every run
has a timeout.

Instruction counts: with ``-icount shift=7`` every guest instruction advances QEMU's virtual
clock by 2^7 ns and the SysTick counts the 25 MHz core clock of virtual time, so one instruction
is exactly 3.2 ticks. The harness reports the ticks spent in the entry point and the ticks of an
empty measurement; ``instructions = round((ticks - overhead) / 3.2)``, exact to within one
instruction (calibrated against loops of known length in tests/test_firmware.py) and identical
from run to run.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from codegen.build import ARM_PACKAGES, Build
from refq.errors import CodegenError

STATS_FILE = "refq_stats.txt"
TICKS_PER_INSTRUCTION = (16, 5)
"""3.2 SysTick ticks per instruction (25 MHz x 128 ns), as a fraction."""

# Exit statuses of firmware/refq_harness.h (tests check that the two agree).
EXIT_OK = 0
EXIT_INPUT_OPEN = 2
EXIT_INPUT_SIZE = 3
EXIT_INPUT_READ = 4
EXIT_OUTPUT_WRITE = 5
EXIT_OUTPUT_SIZE = 6
EXIT_STATUS_NEGATIVE_BASE = 16
EXIT_STATUS_POSITIVE_BASE = 64
EXIT_STACK_OVERFLOW = 99
EXIT_FAULT_BASE = 100
EXIT_UNEXPECTED_IRQ = 120
QEMU_ABORT = 134
"""QEMU aborts (SIGABRT) on a CPU lockup: a fault while the fault handler itself runs."""

_EXCEPTIONS = {2: "NMI", 3: "HardFault", 4: "MemManage fault", 5: "BusFault", 6: "UsageFault"}
_FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def describe_exit(status: int) -> str:
    """What an exit status of a harness program means."""
    fixed = {
        EXIT_OK: "success",
        1: "failure outside the harness (a sanitizer report or a host abort: see stderr)",
        EXIT_INPUT_OPEN: "an input file could not be opened",
        EXIT_INPUT_SIZE: "an input file is larger than its buffer",
        EXIT_INPUT_READ: "an input file could not be read completely",
        EXIT_OUTPUT_WRITE: "an output file could not be written",
        EXIT_OUTPUT_SIZE: "the entry point set an output length above the buffer's capacity",
        EXIT_STACK_OVERFLOW: "stack overflow (a fault with the stack pointer outside the stack)",
        EXIT_UNEXPECTED_IRQ: "an interrupt fired that nothing enabled",
        QEMU_ABORT: "QEMU aborted: CPU lockup (a fault inside the fault handler)",
    }
    if status in fixed:
        return fixed[status]
    if status < 0:
        return f"killed by signal {-status}"
    if EXIT_STATUS_NEGATIVE_BASE < status < EXIT_STATUS_POSITIVE_BASE:
        return f"the entry point returned status {EXIT_STATUS_NEGATIVE_BASE - status}"
    if EXIT_STATUS_POSITIVE_BASE < status < 96:
        return f"the entry point returned status {status - EXIT_STATUS_POSITIVE_BASE}"
    if EXIT_FAULT_BASE < status < EXIT_FAULT_BASE + 16:
        number = status - EXIT_FAULT_BASE
        name = _EXCEPTIONS.get(number, f"exception {number}")
        return f"Cortex-M {name} (see stderr for the fault registers)"
    return f"exit status {status}"


@dataclass(frozen=True)
class RunResult:
    """Outcome of one run: exit status, output files, counters, console text."""

    target: str
    returncode: int
    outputs: dict[str, bytes] = field(repr=False)
    ticks: int | None  # SysTick ticks in the entry point (None: no stats file, or a host run)
    overhead_ticks: int | None
    stack_bytes: int | None  # high-water mark of the main stack (Cortex-M)
    stdout: str = field(repr=False)
    stderr: str = field(repr=False)

    @property
    def status(self) -> str:
        return describe_exit(self.returncode)

    @property
    def instructions(self) -> int | None:
        """Instructions executed in the entry point, rounded to the nearest integer."""
        if self.ticks is None or self.overhead_ticks is None:
            return None
        num, den = TICKS_PER_INSTRUCTION
        net = self.ticks - self.overhead_ticks
        return (2 * net * den + num) // (2 * num)


def qemu_command(build: Build, *, icount: bool = True) -> list[str]:
    """The qemu-system-arm command line that runs ``build`` (semihosting, no display)."""
    t = build.target
    if not t.is_arm:
        raise CodegenError(f"target {t.name!r} runs on the host, not under QEMU")
    if build.board != "mps2":
        raise CodegenError(
            f"{str(build.program)!r} is linked for board {build.board!r}; "
            "QEMU runs mps2 builds only"
        )
    command = [
        "qemu-system-arm",
        "-M",
        str(t.qemu_machine),
        "-cpu",
        str(t.qemu_cpu),
        "-nographic",
        "-monitor",
        "none",
        "-semihosting-config",
        "enable=on,target=native",
    ]
    if icount:
        command += ["-icount", "shift=7"]
    return [*command, "-kernel", str(build.program)]


def _parse_stats(text: str) -> dict[str, int]:
    stats = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if value.strip().isdigit():
            stats[key] = int(value)
    return stats


def run(
    build: Build,
    inputs: Mapping[str, bytes] | None = None,
    outputs: Sequence[str] = (),
    *,
    timeout: float = 60.0,
    check: bool = True,
    icount: bool = True,
    workdir: str | os.PathLike[str] | None = None,
) -> RunResult:
    """Run ``build`` with ``inputs`` (file name -> bytes) and collect the ``outputs`` files.

    Host builds run directly, Cortex-M builds under QEMU (:func:`qemu_command`), in ``workdir``
    or a fresh temporary directory. With ``check`` a non-zero exit status or a missing output
    raises :class:`CodegenError` with the meaning of the status and the program's stderr. A run
    longer than ``timeout`` seconds is killed and raises.
    """
    inputs = dict(inputs or {})
    for name in [*inputs, *outputs]:
        if not _FILE_NAME.fullmatch(name):
            raise CodegenError(
                f"file name {name!r} must be a plain name (letters, digits, _ . -), no directories"
            )
    if build.target.is_arm:
        if shutil.which("qemu-system-arm") is None:
            raise CodegenError(
                "'qemu-system-arm' not found on PATH; install it with: "
                f"apt-get install {ARM_PACKAGES}"
            )
        command = qemu_command(build, icount=icount)
        what = f"QEMU run of {str(build.program)!r} ({build.target.qemu_machine})"
    else:
        command = [str(build.program)]
        what = f"host run of {str(build.program)!r}"
    with tempfile.TemporaryDirectory(prefix="refq-run-") as tmp:
        cwd = Path(workdir) if workdir is not None else Path(tmp)
        cwd.mkdir(parents=True, exist_ok=True)
        for name in [*outputs, STATS_FILE]:
            (cwd / name).unlink(missing_ok=True)  # never report a stale file
        for name, data in inputs.items():
            (cwd / name).write_bytes(bytes(data))
        try:
            proc = subprocess.run(
                command,
                cwd=cwd,
                capture_output=True,
                timeout=timeout,
                stdin=subprocess.DEVNULL,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise CodegenError(f"{what} timed out after {timeout} s") from exc
        stdout = proc.stdout.decode("utf-8", "replace")
        stderr = proc.stderr.decode("utf-8", "replace")
        if check and proc.returncode != 0:
            raise CodegenError(
                f"{what} failed with exit status {proc.returncode}: "
                f"{describe_exit(proc.returncode)}\n{stderr[-4000:]}"
            )
        collected = {}
        for name in outputs:
            path = cwd / name
            if path.is_file():
                collected[name] = path.read_bytes()
            elif check:
                raise CodegenError(f"{what} succeeded but wrote no output file {name!r}")
        stats_path = cwd / STATS_FILE
        stats = _parse_stats(stats_path.read_text()) if stats_path.is_file() else {}
    arm = build.target.is_arm
    return RunResult(
        target=build.target.name,
        returncode=proc.returncode,
        outputs=collected,
        ticks=stats.get("ticks") if arm else None,
        overhead_ticks=stats.get("overhead_ticks") if arm else None,
        stack_bytes=stats.get("stack_bytes") if arm else None,
        stdout=stdout,
        stderr=stderr,
    )
