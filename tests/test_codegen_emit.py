"""codegen.emit and codegen.budget: C literals, templates, the atomic tree writer, budgets.

Literal filters are checked by compiling rendered arrays (every integer type's edge values plus
seeded random values) for the host and Cortex-M7 and reading the bytes back: each array must
hold exactly the values NumPy stores for that type, at a 16-byte aligned address.
"""

from __future__ import annotations

import json
import os

import jinja2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codegen import emit
from codegen.budget import Budget, check_budget, get_budget
from codegen.build import build
from codegen.emit import (
    MARKER_FILE,
    c_array,
    c_const_array,
    c_int_literal,
    environment,
    is_generated_dir,
    pack_int4,
    render,
    write_tree,
)
from codegen.run import run
from refq.errors import BudgetError, CodegenError
from tests.conftest import require_tool

DTYPES = {
    "int8_t": np.int8,
    "uint8_t": np.uint8,
    "int16_t": np.int16,
    "uint16_t": np.uint16,
    "int32_t": np.int32,
    "uint32_t": np.uint32,
    "int64_t": np.int64,
    "uint64_t": np.uint64,
}


def _arrays(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    arrays = []
    for ctype, dtype in DTYPES.items():
        info = np.iinfo(dtype)
        edges = [info.min, info.min + 1, -1, 0, 1, 0x7FFF, 0x8000, 2**31 - 1, 2**31, info.max]
        edges = [v for v in edges if info.min <= v <= info.max]
        rand = rng.integers(info.min, info.max, 37, dtype=dtype, endpoint=True)
        arrays.append(
            {
                "name": f"a_{ctype[:-2]}",
                "ctype": ctype,
                "data": np.array([*edges, *rand.tolist()], dtype=dtype),
                "comment": f"{ctype} edges and random values */ not code",
            }
        )
    packed = np.array(pack_int4(rng.integers(-8, 7, 33, endpoint=True)), dtype=np.int8)
    arrays.append({"name": "a_int4", "ctype": "int8_t", "data": packed, "comment": "int4"})
    return arrays


def _dump_entry(arrays: list[dict]) -> tuple[str, bytes]:
    """An entry point that copies every array into the output and records misalignment."""
    total = sum(a["data"].nbytes for a in arrays) + 4 * len(arrays)
    lines = [
        "#include <stdint.h>",
        "#include <string.h>",
        '#include "constants.h"',
        '#include "refq_harness.h"',
        f"static uint8_t out[{total}];",
        "refq_harness_buffer refq_harness_inputs[1];",
        "const uint32_t refq_harness_num_inputs = 0;",
        'refq_harness_buffer refq_harness_outputs[] = {{"arrays.bin", out, sizeof out, 0}};',
        "const uint32_t refq_harness_num_outputs = 1;",
        "int32_t refq_harness_invoke(void)",
        "{",
        "    uint32_t at = 0;",
        "    uint32_t misaligned;",
    ]
    expected = bytearray()
    for a in arrays:
        name = a["name"]
        lines += [
            f"    memcpy(&out[at], {name}, sizeof {name});",
            f"    at += (uint32_t)sizeof {name};",
            f"    misaligned = (uint32_t)((uintptr_t){name} & 15u);",
            "    memcpy(&out[at], &misaligned, 4);",
            "    at += 4u;",
        ]
        expected += a["data"].astype(a["data"].dtype.newbyteorder("<")).tobytes() + bytes(4)
    lines += ["    refq_harness_outputs[0].length = at;", "    return 0;", "}"]
    return "\n".join(lines) + "\n", bytes(expected)


@pytest.mark.parametrize("target", ["host", "m7"])
def test_rendered_arrays_hold_their_values_aligned(target, tmp_path, checked):
    require_tool("make")
    require_tool("cc" if target == "host" else "arm-none-eabi-gcc")
    if target != "host":
        require_tool("qemu-system-arm")
    arrays = _arrays(5)
    context = {"arrays": arrays, "header": "test constants", "guard": "CONSTANTS_H"}
    entry, expected = _dump_entry(arrays)
    files = {
        "constants.h": render("constants.h.j2", context),
        "constants.c": render("constants.c.j2", context, header_name="constants.h"),
        "entry.c": entry,
    }
    prog = build(write_tree(tmp_path / "consts", files), target, sanitize=target == "host")
    got = run(prog, outputs=["arrays.bin"]).outputs["arrays.bin"]
    assert got == expected
    checked(
        f"C integer literals of 8 types on {target}",
        len(arrays),
        sum(a["data"].size for a in arrays),
    )


def test_int_literals():
    assert c_int_literal(-(2**31), "int32_t") == "(-2147483647 - 1)"
    assert c_int_literal(-(2**63), "int64_t") == "(-INT64_C(9223372036854775807) - 1)"
    assert c_int_literal(2**40, "int64_t") == "INT64_C(1099511627776)"
    assert c_int_literal(-5, "int64_t") == "-5"
    assert c_int_literal(2**32 - 1, "uint32_t") == "4294967295u"
    assert c_int_literal(2**63, "uint64_t") == "UINT64_C(9223372036854775808)"
    assert c_int_literal(np.int8(-3), "int8_t") == "-3"
    with pytest.raises(CodegenError, match=r"value 128 does not fit int8_t \[-128, 127\]"):
        c_int_literal(128, "int8_t")
    with pytest.raises(CodegenError, match="not an integer"):
        c_int_literal(1.5, "int32_t")
    with pytest.raises(CodegenError, match="unknown C integer type"):
        c_int_literal(1, "long")


def test_array_layout():
    body = c_array(np.arange(35), "int16_t")
    lines = body.split("\n")
    assert len(lines) == 3 and all(line.startswith("    ") and line.endswith(",") for line in lines)
    assert [len(line.split(",")) - 1 for line in lines] == [16, 16, 3]
    decl = c_const_array("w0", "int8_t", [[1, 2], [3, 4]], comment="x")
    assert decl.startswith("/* x */\nREFQ_ALIGN(16) const int8_t w0[4] = {\n")
    assert decl.endswith("};")
    with pytest.raises(CodegenError, match="empty"):
        c_const_array("w0", "int8_t", [])
    with pytest.raises(CodegenError, match="not a safe C identifier"):
        c_const_array("int", "int8_t", [1])
    with pytest.raises(CodegenError, match="dtype float"):
        c_array(np.zeros(3), "int8_t")


@settings(max_examples=300)
@given(st.lists(st.integers(-8, 7), max_size=64))
def test_int4_packing_unpacks_to_the_values(values):
    packed = pack_int4(values)
    assert len(packed) == (len(values) + 1) // 2
    unpacked = []
    for byte in packed:
        assert -128 <= byte <= 127
        u = byte % 256
        for nibble in (u & 0xF, u >> 4):  # element 2i in the low nibble
            unpacked.append(nibble - 16 if nibble >= 8 else nibble)
    assert unpacked[: len(values)] == values
    assert unpacked[len(values) :] in ([], [0])


def test_int4_range():
    with pytest.raises(CodegenError, match="value 8 at index 1"):
        pack_int4([0, 8])


def test_environment_is_strict():
    env = environment()
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ missing }}").render()
    with pytest.raises(CodegenError, match=r"constants\.c\.j2"):
        render("constants.c.j2", header="h")  # no arrays / header_name
    text = env.from_string("{% for x in xs %}\n  {{ x | c_int('int32_t') }}\n{% endfor %}\n")
    assert text.render(xs=[-(2**31), 7]) == "  (-2147483647 - 1)\n  7\n"
    assert env.from_string("{{ s | c_string }} {{ s | c_comment }}").render(s='*/"') == (
        '"*/\\"" /* \\052/\\" */'
    )


def test_write_tree_creates_and_replaces_atomically(tmp_path):
    out = tmp_path / "gen"
    write_tree(out, {"model.c": "int x;\n", "sub/model.h": "#define Y 1\n"})
    assert is_generated_dir(out)
    assert (out / "sub" / "model.h").read_text() == "#define Y 1\n"
    assert {p.name for p in out.iterdir()} == {
        "model.c",
        "sub",
        MARKER_FILE,
        "refq_types.h",
        "refq_fixedpoint.h",
        "refq_dsp.h",
    }
    marker = json.loads((out / MARKER_FILE).read_text())
    assert marker["generator"] == "refq" and "model.c" in marker["files"]
    write_tree(out, {"other.c": "int y;\n"}, runtime=False)
    assert sorted(p.name for p in out.iterdir()) == [MARKER_FILE, "other.c"]
    assert [p.name for p in tmp_path.iterdir()] == ["gen"]  # no temporary directories left


def test_write_tree_protects_foreign_directories(tmp_path):
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(CodegenError, match=r"mine.*not generated by refq.*force"):
        write_tree(foreign, {"a.c": "int a;\n"})
    assert (foreign / "notes.txt").read_text() == "keep"
    write_tree(foreign, {"a.c": "int a;\n"}, force=True)
    assert not (foreign / "notes.txt").exists() and is_generated_dir(foreign)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(CodegenError, match="not a directory"):
        write_tree(a_file, {"a.c": ""}, force=True)
    (tmp_path / "link").symlink_to(foreign)
    with pytest.raises(CodegenError, match="not a directory"):
        write_tree(tmp_path / "link", {"a.c": ""}, force=True)


@pytest.mark.parametrize(
    "path", ["../evil.c", "/etc/passwd", "a/../b.c", "", "a//b.c", MARKER_FILE, "sp ace.c", "é.c"]
)
def test_write_tree_rejects_bad_paths(path, tmp_path):
    with pytest.raises(CodegenError):
        write_tree(tmp_path / "gen", {path: "x"})
    assert not (tmp_path / "gen").exists()


def test_write_tree_rejects_non_ascii_c(tmp_path):
    with pytest.raises(CodegenError, match="non-ASCII byte on line 2"):
        write_tree(tmp_path / "gen", {"a.c": "int a;\n/* é */\n"})
    write_tree(tmp_path / "gen", {"notes.txt": "é\n", "blob.bin": b"\xff"})


def test_failed_swap_keeps_the_old_tree(tmp_path, monkeypatch):
    out = tmp_path / "gen"
    write_tree(out, {"old.c": "int old;\n"})

    def broken(tmp, target):
        raise OSError("disk full")

    monkeypatch.setattr(emit, "_swap_into_place", broken)
    with pytest.raises(OSError, match="disk full"):
        write_tree(out, {"new.c": "int new;\n"})
    assert (out / "old.c").exists() and not (out / "new.c").exists()
    assert os.listdir(tmp_path) == ["gen"]


def test_budgets():
    use = check_budget(flash=2 * 1024 * 1024, sram=1000)
    assert use.budget.name == "stm32h743" and "100.0%" in use.report()
    with pytest.raises(BudgetError) as err:
        check_budget(flash=3_000_000, sram=1_100_000, budget="stm32h743")
    message = str(err.value)
    assert "'stm32h743'" in message
    assert "flash: needs 3,000,000 bytes, budget 2,097,152 bytes, over by 902,848 bytes" in message
    assert "SRAM: needs 1,100,000 bytes, budget 1,048,576 bytes, over by 51,424 bytes" in message
    tiny = Budget("tiny", 1024, 256)
    assert check_budget(1024, 256, tiny).budget is tiny
    with pytest.raises(BudgetError, match=r"'tiny'.*SRAM: needs 257"):
        check_budget(10, 257, tiny)
    with pytest.raises(BudgetError, match="unknown budget 'x'"):
        get_budget("x")
    with pytest.raises(BudgetError, match="positive"):
        Budget("bad", 0, 1)
