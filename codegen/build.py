"""Build a generated C tree together with the firmware test harness (host or Cortex-M).

The build goes through ``firmware/Makefile``, so the flags an engineer reads there are exactly
the flags used here: ``-std=c99 -Wall -Wextra -Wpedantic -Werror -O2`` everywhere; Cortex-M7
``-mcpu=cortex-m7 -mthumb -mfpu=fpv5-d16``, Cortex-M4 ``-mcpu=cortex-m4 -mthumb
-mfpu=fpv4-sp-d16`` with the hard, softfp or soft float ABI; host builds optionally with
``-fsanitize=undefined,address -fno-sanitize-recover=all``. Sizes come from
``arm-none-eabi-size`` (Berkeley format: flash = text + data, SRAM = data + bss).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from refq.errors import CodegenError

FIRMWARE_DIR = Path(__file__).resolve().parents[1] / "firmware"
"""startup code, linker scripts, semihosting harness and the Makefile."""

ARM_PACKAGES = "gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
"""Debian packages that provide the Cortex-M toolchain and emulator."""

BOARDS = ("mps2", "stm32h743")
"""Linker scripts: QEMU's mps2 boards with an STM32H743-sized budget, or the real STM32H743."""


@dataclass(frozen=True)
class Target:
    """A build configuration of firmware/Makefile (its ``TARGET=`` value)."""

    name: str
    cpu: str | None = None  # gcc -mcpu, None for the host
    float_abi: str | None = None  # hard, softfp or soft
    qemu_machine: str | None = None
    qemu_cpu: str | None = None

    @property
    def is_arm(self) -> bool:
        return self.cpu is not None


def _arm(name: str, cpu: str, abi: str, machine: str) -> Target:
    return Target(name, cpu, abi, machine, cpu)


TARGETS: dict[str, Target] = {
    t.name: t
    for t in (
        Target("host"),
        _arm("m7", "cortex-m7", "hard", "mps2-an500"),
        _arm("m7-softfp", "cortex-m7", "softfp", "mps2-an500"),
        _arm("m7-soft", "cortex-m7", "soft", "mps2-an500"),
        _arm("m4", "cortex-m4", "hard", "mps2-an386"),
        _arm("m4-softfp", "cortex-m4", "softfp", "mps2-an386"),
        _arm("m4-soft", "cortex-m4", "soft", "mps2-an386"),
    )
}


def get_target(target: str | Target) -> Target:
    """Look a target up by name (or pass a :class:`Target` through)."""
    if isinstance(target, Target):
        return target
    try:
        return TARGETS[target]
    except KeyError:
        raise CodegenError(
            f"unknown build target {target!r}; known targets: {', '.join(TARGETS)}"
        ) from None


@dataclass(frozen=True)
class SizeInfo:
    """``arm-none-eabi-size`` of a linked program (bytes)."""

    text: int  # code, constants, weights, vector table
    data: int  # initialized variables: in flash (image) and in SRAM
    bss: int  # zeroed variables, stack, model state and arena

    @property
    def flash(self) -> int:
        return self.text + self.data

    @property
    def sram(self) -> int:
        return self.data + self.bss


@dataclass(frozen=True)
class Build:
    """A linked program: where it is and how it was configured."""

    target: Target
    program: Path  # prog.elf (Cortex-M) or prog (host)
    build_dir: Path
    board: str
    sanitize: bool
    size: SizeInfo | None  # None for host builds
    log: str  # make's output (the compiler command lines)


_MAKE_UNSAFE = re.compile(r"[\s$#%:;=\\'\"`]")
_SAFE_FLAG = re.compile(r"-[A-Za-z0-9_=.,+/-]+")


def _make_path(path: Path, what: str) -> str:
    text = str(path)
    if _MAKE_UNSAFE.search(text):
        raise CodegenError(
            f"{what} {text!r} contains a character make cannot handle in a path "
            "(whitespace, $, #, %, :, ;, =, quotes or backslash)"
        )
    return text


def _require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise CodegenError(f"{tool!r} not found on PATH; {hint}")
    return path


def check_tools(target: str | Target, *, run: bool = False) -> None:
    """Raise :class:`CodegenError` naming what to install if ``target`` cannot be built (or run)."""
    t = get_target(target)
    _require("make", "install it with: apt-get install make")
    if t.is_arm:
        hint = f"install the Arm toolchain with: apt-get install {ARM_PACKAGES}"
        _require("arm-none-eabi-gcc", hint)
        _require("arm-none-eabi-size", hint)
        if run:
            _require("qemu-system-arm", hint)
    else:
        _require(os.environ.get("CC", "cc"), "install a C compiler, e.g. apt-get install gcc")


def _tail(text: str, limit: int = 6000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


def build(
    src_dir: str | os.PathLike[str],
    target: str | Target = "host",
    *,
    build_dir: str | os.PathLike[str] | None = None,
    board: str = "mps2",
    sanitize: bool = False,
    extra_cflags: Sequence[str] = (),
    stack_size: int | None = None,
    jobs: int = 1,
    timeout: float = 600.0,
) -> Build:
    """Compile every ``.c`` file under ``src_dir`` with the harness and link a program.

    ``target``: a :data:`TARGETS` name. ``board``: ``mps2`` (QEMU) or ``stm32h743`` (real chip,
    Cortex-M7 targets only). ``sanitize``: host only, UBSan + ASan. ``extra_cflags``: e.g.
    ``["-DREFQ_NO_DSP"]`` for the plain-C path. ``build_dir`` defaults to a sibling of
    ``src_dir`` named after the configuration. Compiler, linker or make failures raise
    :class:`CodegenError` with make's output.
    """
    t = get_target(target)
    if board not in BOARDS:
        raise CodegenError(f"unknown board {board!r}; known boards: {', '.join(BOARDS)}")
    if board == "stm32h743" and t.cpu != "cortex-m7":
        raise CodegenError(
            f"board stm32h743 has a Cortex-M7; target {t.name!r} does not build for it"
        )
    if sanitize and t.is_arm:
        raise CodegenError(f"sanitizers exist only for host builds, not for target {t.name!r}")
    if stack_size is not None and (stack_size <= 0 or stack_size % 8):
        raise CodegenError(f"stack_size {stack_size} must be a positive multiple of 8 bytes")
    src = Path(src_dir).resolve()
    if not src.is_dir():
        raise CodegenError(f"source tree {str(src)!r} is not a directory")
    if build_dir is None:
        suffix = f"{t.name}-{board}" + ("-sanitize" if sanitize else "")
        build_dir = src.with_name(f"{src.name}.build-{suffix}")
    out = Path(build_dir).resolve()
    check_tools(t)
    flags = list(extra_cflags)
    for flag in flags:
        if not _SAFE_FLAG.fullmatch(flag):
            raise CodegenError(
                f"extra C flag {flag!r} must look like -DNAME, -DNAME=value or -fsomething "
                "(letters, digits and _ = . , + / - only)"
            )
    command = [
        "make",
        "--no-print-directory",
        "-f",
        _make_path(FIRMWARE_DIR / "Makefile", "firmware directory"),
        f"-j{max(1, int(jobs))}",
        f"TARGET={t.name}",
        f"BOARD={board}",
        f"SRC_DIR={_make_path(src, 'source tree')}",
        f"BUILD_DIR={_make_path(out, 'build directory')}",
        f"SANITIZE={1 if sanitize else 0}",
        f"EXTRA_CFLAGS={' '.join(flags)}",
    ]
    if stack_size is not None:
        command.append(f"STACK_SIZE={int(stack_size)}")
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as exc:
        raise CodegenError(
            f"build of {str(src)!r} for {t.name} timed out after {timeout} s"
        ) from exc
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise CodegenError(
            f"build of {str(src)!r} for target {t.name} (board {board}) failed "
            f"(make exit status {proc.returncode}):\n{_tail(log)}"
        )
    program = out / ("prog.elf" if t.is_arm else "prog")
    size = read_size(program) if t.is_arm else None
    return Build(t, program, out, board, sanitize, size, log)


def read_size(elf: str | os.PathLike[str]) -> SizeInfo:
    """text / data / bss of an ARM ELF from ``arm-none-eabi-size`` (Berkeley format)."""
    tool = _require("arm-none-eabi-size", f"install it with: apt-get install {ARM_PACKAGES}")
    proc = subprocess.run([tool, str(elf)], capture_output=True, text=True, check=False)
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or len(lines) < 2:
        raise CodegenError(f"arm-none-eabi-size {str(elf)!r} failed:\n{proc.stderr.strip()}")
    fields = lines[1].split()
    try:
        text, data, bss = (int(v) for v in fields[:3])
    except ValueError:
        raise CodegenError(f"unexpected arm-none-eabi-size output: {lines[1]!r}") from None
    return SizeInfo(text, data, bss)
