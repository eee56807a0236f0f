"""docs/profiles.md cannot go stale: its tables are checked against the code and the tests.

* The profile table equals the one rendered from :data:`refq.profiles.PROFILES` (on failure the
  message prints the table to paste).
* The kernel table has exactly one row per registered op
  (:func:`refq.kernels.registry.registered_ops`); each row's module registers that op, its
  profiles are real profile names (or ``all``), and each test file it cites exists and names the
  op (or its module).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from refq.kernels.registry import registered_ops
from refq.profiles import PROFILES, Profile

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "profiles.md"
_TEXT_FIELDS = ("name", "peer", "limitations")
ARITHMETIC_FIELDS = [f.name for f in dataclasses.fields(Profile) if f.name not in _TEXT_FIELDS]
"""Every arithmetic choice of a profile is a column, so a new Profile field shows up here."""
PROFILE_HEADER = ("profile", *ARITHMETIC_FIELDS, "reproduces", "cannot reproduce")
KERNEL_HEADER = ("op", "module", "profiles", "verified against", "tests")


def table(section: str) -> list[list[str]]:
    """Rows (cells stripped) of the first Markdown table after the ``## section`` heading."""
    lines = DOC.read_text(encoding="utf-8").splitlines()
    start = lines.index(f"## {section}")
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("## "):
            break
        if line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                rows.append(cells)
        elif rows:
            break
    return rows


def cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value) if value != "" else "-"


def profile_row(p: Profile) -> list[str]:
    values = [cell(getattr(p, name)) for name in ARITHMETIC_FIELDS]
    return [f"`{p.name}`", *values, p.peer or "-", p.limitations or "-"]


def test_profile_table_is_generated_from_profiles() -> None:
    rows = table("Profiles")
    expected = [list(PROFILE_HEADER)] + [profile_row(p) for p in PROFILES.values()]
    if rows != expected:
        text = "\n".join(
            "| " + " | ".join(r) + " |"
            for r in [expected[0], ["---"] * len(PROFILE_HEADER), *expected[1:]]
        )
        raise AssertionError(f"docs/profiles.md profile table is stale; it should read:\n{text}")


def test_kernel_table_covers_every_registered_op() -> None:
    rows = table("Kernels")
    assert rows[0] == list(KERNEL_HEADER)
    ops = [r[0].strip("`") for r in rows[1:]]
    assert len(ops) == len(set(ops)), (
        f"duplicate rows: {sorted(o for o in ops if ops.count(o) > 1)}"
    )
    registered = set(registered_ops("refq.kernels"))
    assert not registered - set(ops), (
        f"ops missing from docs/profiles.md: {sorted(registered - set(ops))}"
    )
    assert not set(ops) - registered, f"rows for unregistered ops: {sorted(set(ops) - registered)}"


def test_kernel_rows_cite_real_modules_profiles_and_tests() -> None:
    for row in table("Kernels")[1:]:
        op, module, profiles, verified, tests = (c.strip() for c in row)
        op = op.strip("`")
        source = ROOT / "refq" / "kernels" / f"{module.strip('`')}.py"
        assert source.is_file(), f"{op}: module {module} does not exist"
        assert f'"{op}"' in source.read_text(encoding="utf-8"), f"{op}: not named in {source}"
        names = [p.strip().strip("`") for p in profiles.split(",")]
        unknown = [p for p in names if p != "all" and p not in PROFILES]
        assert names and not unknown, f"{op}: unknown profiles {unknown}"
        assert verified, f"{op}: 'verified against' is empty"
        cited = re.findall(r"`(tests/[\w/]+\.py)`", tests)
        assert cited, f"{op}: no test file cited"
        for path in cited:
            test_file = ROOT / path
            assert test_file.is_file(), f"{op}: cited test {path} does not exist"
            text = test_file.read_text(encoding="utf-8")
            assert op in text or module.strip("`") in text, (
                f"{op}: {path} names neither op nor module"
            )
