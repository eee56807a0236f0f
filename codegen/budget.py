"""Flash and SRAM budgets of target chips, and the check that a program fits.

The default is the STM32H743 (2 MB flash, 1 MB SRAM), which the QEMU linker script
firmware/mps2.ld mirrors. Numbers come from the memory plan and the constant data before a build
(an estimate) or from ``arm-none-eabi-size`` after it (flash = text + data, SRAM = data + bss,
stack included).
"""

from __future__ import annotations

from dataclasses import dataclass

from refq.errors import BudgetError

KIB = 1024
MIB = 1024 * 1024


@dataclass(frozen=True)
class Budget:
    """Bytes of flash and SRAM a program may use on a chip."""

    name: str
    flash: int
    sram: int

    def __post_init__(self) -> None:
        if self.flash <= 0 or self.sram <= 0:
            raise BudgetError(
                f"budget {self.name!r} needs positive flash and SRAM sizes, "
                f"got flash={self.flash}, sram={self.sram}"
            )


BUDGETS: dict[str, Budget] = {
    b.name: b
    for b in (
        Budget("stm32h743", 2 * MIB, 1 * MIB),
        Budget("stm32f746", 1 * MIB, 320 * KIB),
        Budget("stm32f446", 512 * KIB, 128 * KIB),
    )
}
DEFAULT_BUDGET = BUDGETS["stm32h743"]


@dataclass(frozen=True)
class BudgetUse:
    """How much of a budget a program uses."""

    budget: Budget
    flash: int
    sram: int

    def report(self) -> str:
        b = self.budget
        flash_pct = 100 * self.flash / b.flash
        sram_pct = 100 * self.sram / b.sram
        return (
            f"{b.name}: flash {self.flash:,} of {b.flash:,} bytes ({flash_pct:.1f}%), "
            f"SRAM {self.sram:,} of {b.sram:,} bytes ({sram_pct:.1f}%)"
        )


def get_budget(budget: str | Budget | None) -> Budget:
    """A :data:`BUDGETS` entry by name, a :class:`Budget` as is, or the default for ``None``."""
    if budget is None:
        return DEFAULT_BUDGET
    if isinstance(budget, Budget):
        return budget
    try:
        return BUDGETS[budget.lower()]
    except KeyError:
        raise BudgetError(
            f"unknown budget {budget!r}; known budgets: {', '.join(BUDGETS)} "
            "(or pass Budget(name, flash, sram))"
        ) from None


def check_budget(flash: int, sram: int, budget: str | Budget | None = None) -> BudgetUse:
    """The use of ``budget``; :class:`BudgetError` names the budget, the need and the overflow."""
    b = get_budget(budget)
    problems = []
    for what, need, have in (("flash", flash, b.flash), ("SRAM", sram, b.sram)):
        if need < 0:
            raise BudgetError(f"{what} use {need} is negative")
        if need > have:
            problems.append(
                f"{what}: needs {need:,} bytes, budget {have:,} bytes, "
                f"over by {need - have:,} bytes"
            )
    if problems:
        raise BudgetError(f"program does not fit budget {b.name!r}: " + "; ".join(problems))
    return BudgetUse(b, flash, sram)
