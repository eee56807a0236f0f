"""codegen.names: identifiers are valid and unique, literals and comments cannot inject code.

Properties run on arbitrary Unicode names (hypothesis). The compile test puts hostile names and
a few hundred hypothesis-drawn batches into one C file as identifiers, comments and string
literals, builds it with -std=c99 -Wall -Wextra -Wpedantic -Werror for the host (UBSan + ASan)
and for Cortex-M7, runs it, and requires every string to print back as the name's exact UTF-8
bytes and every identifier to name its own variable.
"""

from __future__ import annotations

import hashlib
import re
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codegen.build import build
from codegen.emit import write_tree
from codegen.names import (
    C_KEYWORDS,
    NameTable,
    c_comment,
    c_identifiers,
    c_string_literal,
    is_valid_identifier,
    sanitize,
)
from codegen.run import run
from refq.errors import CodegenError
from tests.conftest import require_tool

HOSTILE = [
    "*/ int evil = 1; /*",
    '"); abort(); ("',
    "a\\",
    "trailing backslash \\",
    "line\nbreak",
    "\r\n",
    "\t",
    "??/",
    "??=define X",
    "??)??(??<??>??!??'??-",
    "int",
    "main",
    "_Bool",
    "__x",
    "_Upper",
    "static_assert",
    "NULL",
    "errno",
    "refq_arena",
    "REFQ_SUCCESS",
    "isalpha",
    "uint8_t",
    "E2BIG",
    "é",
    "café",
    "名前",
    "😀",
    "",
    " ",
    "\x00",
    "nul\x00inside",
    "\\u0041",
    "'",
    "%s%n",
    "a" * 200,
    "x.y",
    "x_y",
    "x-y",
    "x y",
    "/*",
    "//",
    "\\\n",
    "#define",
    "0leading_digit",
    "model.layers.0.self_attn.q_proj.weight",
]

# Independent statement of the rules (not codegen.names' own regexes).
C99_KEYWORDS = {
    "auto",
    "break",
    "case",
    "char",
    "const",
    "continue",
    "default",
    "do",
    "double",
    "else",
    "enum",
    "extern",
    "float",
    "for",
    "goto",
    "if",
    "inline",
    "int",
    "long",
    "register",
    "restrict",
    "return",
    "short",
    "signed",
    "sizeof",
    "static",
    "struct",
    "switch",
    "typedef",
    "union",
    "unsigned",
    "void",
    "volatile",
    "while",
}


def assert_safe_identifier(ident: str, max_len: int = 63) -> None:
    assert re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", ident), ident
    assert ident not in C99_KEYWORDS and ident not in C_KEYWORDS
    assert "__" not in ident and len(ident) <= max_len
    assert not ident.lower().startswith("refq_")


names_lists = st.lists(st.text(max_size=24), min_size=1, max_size=12)


@settings(max_examples=300)
@given(names_lists, st.sampled_from(["", "w_", "t0_", "tensor_"]))
def test_identifiers_are_valid_unique_and_order_independent(names, prefix):
    table = c_identifiers(names, prefix)
    assert set(table) == set(names)
    idents = list(table.values())
    assert len(set(idents)) == len(idents), table  # injective
    for ident in idents:
        assert_safe_identifier(ident)
        assert ident.startswith(prefix)
    assert c_identifiers(list(reversed(names)), prefix) == table


@settings(max_examples=300)
@given(names_lists, st.integers(16, 40))
def test_length_limit(names, max_len):
    for ident in NameTable(max_len=max_len).assign(names, "p_").values():
        assert_safe_identifier(ident, max_len)


@settings(max_examples=200)
@given(st.lists(st.text(max_size=10), min_size=1, max_size=6), names_lists)
def test_one_table_keeps_namespaces_apart(a, b):
    table = NameTable(reserved=["shared"])
    first = table.assign(a, "")
    second = table.assign(b, "")
    new = {second[name] for name in b if name not in a}
    assert new.isdisjoint(first.values())
    assert all(second[name] == first[name] for name in b if name in a)
    assert "shared" not in first.values() and "shared" not in second.values()
    assert table.assign(a, "") == first  # asking again gives the same identifiers


def test_readable_and_stable_names():
    table = c_identifiers(["model.layers.0.q_proj", "x.y", "x_y", "x-y", "café", "int"], "w_")
    assert table["model.layers.0.q_proj"] == "w_model_layers_0_q_proj"
    assert table["café"] == "w_cafe"
    assert table["int"] == "w_int"
    # "x_y" is already an identifier and keeps it; the others carry a hash of their own name,
    # so they do not depend on which other names exist.
    assert table["x_y"] == "w_x_y"
    for name in ("x.y", "x-y"):
        assert table[name] == "w_x_y_" + hashlib.sha256(name.encode()).hexdigest()[:6]
    assert c_identifiers(["x-y"], "w_") == {"x-y": "w_x_y"}
    bare = c_identifiers(["int", "main", "_Bool", "refq_x", "3d", ""])
    assert bare == {
        "int": "x_int",
        "main": "x_main",
        "_Bool": "Bool",
        "refq_x": "x_refq_x",
        "3d": "n3d",
        "": "unnamed",
    }


def test_lone_surrogates_do_not_crash():
    assert decode_c_literal(c_string_literal("a\ud800")) == "a\ud800".encode(
        "utf-8", "surrogatepass"
    )
    assert_safe_identifier(c_identifiers(["\udfff"])["\udfff"])


def test_sanitize_and_reserved():
    assert sanitize("a..b--c") == "a_b_c"
    assert sanitize("__init__") == "init"
    assert sanitize("名前") == ""
    for bad in ("int", "_x", "a__b", "isdigit", "strdup", "E2BIG", "int8_t", "refq_y", "9a", ""):
        assert not is_valid_identifier(bad), bad
    assert is_valid_identifier("weights_0")


def test_bad_prefix_and_names():
    with pytest.raises(CodegenError, match="prefix"):
        c_identifiers(["x"], "_p")
    with pytest.raises(CodegenError, match="prefix"):
        c_identifiers(["x"], "a b")
    with pytest.raises(CodegenError, match="not a string"):
        c_identifiers([b"bytes"])  # type: ignore[list-item]


_C_ESCAPES = {"n": 10, "t": 9, "\\": 92, '"': 34, "?": 63, "'": 39}


def decode_c_literal(literal: str) -> bytes:
    """Bytes of a C string literal with simple and octal escapes (a test-side parser)."""
    assert literal[0] == literal[-1] == '"'
    body, out, i = literal[1:-1], bytearray(), 0
    while i < len(body):
        c = body[i]
        if c != "\\":
            assert c != '"' and 0x20 <= ord(c) < 0x7F
            out.append(ord(c))
            i += 1
        elif body[i + 1] in _C_ESCAPES:
            out.append(_C_ESCAPES[body[i + 1]])
            i += 2
        else:
            digits = re.match(r"[0-7]{1,3}", body[i + 1 :]).group()
            out.append(int(digits, 8))
            i += 1 + len(digits)
    return bytes(out)


@settings(max_examples=500)
@given(st.text())
def test_string_literal_round_trips(text):
    literal = c_string_literal(text)
    assert literal.isascii() and "\n" not in literal and "??" not in literal
    assert decode_c_literal(literal) == text.encode("utf-8")


@settings(max_examples=500)
@given(st.text())
def test_comment_stays_one_comment(text):
    comment = c_comment(text)
    assert comment.isascii() and "\n" not in comment and "\r" not in comment
    assert comment.startswith("/* ") and comment.endswith(" */")
    inner = comment[3:-3]
    assert "*" not in inner and "??" not in inner


@pytest.fixture(scope="module")
def name_batches() -> list[list[str]]:
    batches: list[list[str]] = [HOSTILE]

    @settings(max_examples=200, database=None)
    @given(names_lists)
    def collect(names):
        batches.append(names)

    collect()
    return batches


def _program(batches: list[list[str]]) -> tuple[str, bytes]:
    """A C entry point using every name; and the output it must produce.

    Each batch becomes one function: its names are file-scope function identifiers (prefix
    f<b>_) and, with no prefix at all (keywords and library names must be avoided), local
    variables; each name also appears in two comments and a string literal.
    """
    fixed = ["out", "put", "at", "refq_harness_invoke", "refq_harness_inputs"]
    globals_table = NameTable(reserved=fixed)
    head = ["#include <stdint.h>", "#include <string.h>", '#include "refq_harness.h"', ""]
    body, expected = [], bytearray()
    for b, names in enumerate(batches):
        unique = list(dict.fromkeys(names))
        functions = globals_table.assign(unique, f"f{b}_")
        strings = [f"s{b}_{k}" for k in range(len(unique))]
        local = NameTable(reserved=[*fixed, *functions.values(), *strings]).assign(unique)
        body.append(f"static uint32_t batch{b}(uint32_t at)")
        body.append("{")
        for k, name in enumerate(unique):
            value = b * 1000 + k
            head.append(c_comment(name))
            head.append(f"static int32_t {functions[name]}(void) {{ return {value}; }}")
            literal = c_string_literal(name)
            body.append(f"    static const char {strings[k]}[] = {literal}; {c_comment(name)}")
            body.append(f"    const int32_t {local[name]} = {functions[name]}();")
            n = f"(uint32_t)(sizeof {strings[k]} - 1u)"
            body.append(f"    at = put(at, {local[name]}, {strings[k]}, {n});")
            data = name.encode("utf-8")
            expected += struct.pack("<iI", value, len(data)) + data
        body.append("    return at;")
        body.append("}")
    lines = [
        *head[:4],
        f"static uint8_t out[{len(expected)}];",
        "static uint32_t put(uint32_t at, int32_t value, const char *s, uint32_t n)",
        "{",
        "    const uint32_t v = (uint32_t)value;",
        "    uint32_t i;",
        "    for (i = 0; i < 4u; ++i) { out[at + i] = (uint8_t)(v >> (8u * i)); }",
        "    for (i = 0; i < 4u; ++i) { out[at + 4u + i] = (uint8_t)(n >> (8u * i)); }",
        "    memcpy(&out[at + 8u], s, n);",
        "    return at + 8u + n;",
        "}",
        *head[4:],
        *body,
        "refq_harness_buffer refq_harness_inputs[1];",
        "const uint32_t refq_harness_num_inputs = 0;",
        "refq_harness_buffer refq_harness_outputs[] = {",
        '    {"names.bin", out, sizeof out, 0}};',
        "const uint32_t refq_harness_num_outputs = 1;",
        "int32_t refq_harness_invoke(void)",
        "{",
        "    uint32_t at = 0;",
        *[f"    at = batch{b}(at);" for b in range(len(batches))],
        "    refq_harness_outputs[0].length = at;",
        "    return 0;",
        "}",
    ]
    return "\n".join(lines) + "\n", bytes(expected)


@pytest.mark.parametrize("target", ["host", "m7"])
def test_hostile_names_compile_and_round_trip(target, name_batches, tmp_path, checked):
    require_tool("make")
    require_tool("cc" if target == "host" else "arm-none-eabi-gcc")
    if target != "host":
        require_tool("qemu-system-arm")
    source, expected = _program(name_batches)
    src = write_tree(tmp_path / "names", {"names.c": source})
    prog = build(src, target, sanitize=target == "host")
    result = run(prog, outputs=["names.bin"])
    got = result.outputs["names.bin"]
    if got != expected:
        at = next(i for i, (x, y) in enumerate(zip(got, expected, strict=False)) if x != y)
        pytest.fail(f"output differs from byte {at}: {got[at - 20 : at + 20]!r}")
    count = sum(len(set(b)) for b in name_batches)
    checked(f"hostile / random names as C identifiers, comments, strings on {target}", count)
