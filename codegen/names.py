"""Model names to C: valid, unique identifiers, and literals / comments that cannot inject code.

Model files name tensors and ops with arbitrary Unicode ("model.layers.0.self_attn.q_proj",
"ресурс", 'a"*/ int x; /*'). In generated C a name appears three ways, each made safe here:

* as an identifier: :class:`NameTable` turns names into ASCII ``[A-Za-z_][A-Za-z0-9_]*``
  identifiers that are no C / C++ keyword, no reserved identifier (leading underscore, double
  underscore, the C library's reserved prefixes and macros, refq's own ``refq_`` namespace),
  at most ``max_len`` characters, and unique. Readable where possible: accents are folded to
  ASCII, runs of other characters become one ``_``. Names whose sanitized form is ambiguous get
  a suffix from a hash of the original name, so an identifier does not change when other names
  are added or reordered.
* inside a string literal: :func:`c_string_literal` escapes the UTF-8 bytes (quotes,
  backslashes, ``?`` against trigraphs, everything outside printable ASCII as octal escapes); the
  program prints back exactly the original bytes.
* inside a comment: :func:`c_comment` uses the same escapes and also escapes ``*``, so neither
  ``*/`` nor a nested ``/*`` can appear.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable

from refq.errors import CodegenError


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


C_KEYWORDS = _words(
    # C89 / C99
    "auto break case char const continue default do double else enum extern float for goto if "
    "inline int long register restrict return short signed sizeof static struct switch typedef "
    "union unsigned void volatile while "
    # C11 / C23 spellings without the leading underscore
    "alignas alignof bool constexpr false nullptr static_assert thread_local true typeof "
    "typeof_unqual noreturn complex imaginary "
    # C++ (generated headers may be included from C++)
    "and and_eq asm bitand bitor catch char8_t char16_t char32_t class co_await co_return "
    "co_yield compl concept const_cast consteval constinit decltype delete dynamic_cast explicit "
    "export friend mutable namespace new noexcept not not_eq operator or or_eq private protected "
    "public reinterpret_cast requires static_cast template this throw try typeid typename using "
    "virtual wchar_t xor xor_eq"
)
"""Keywords of C99, C11 / C23 and C++ that a generated identifier must not be."""

C_RESERVED_NAMES = _words(
    # Macros and names of the headers generated code includes, and main
    "NULL EOF BUFSIZ FILE errno assert main offsetof size_t ptrdiff_t wchar_t va_list "
    "int8_t int16_t int32_t int64_t uint8_t uint16_t uint32_t uint64_t intptr_t uintptr_t "
    "intmax_t uintmax_t INT8_MIN INT8_MAX INT16_MIN INT16_MAX INT32_MIN INT32_MAX INT64_MIN "
    "INT64_MAX UINT8_MAX UINT16_MAX UINT32_MAX UINT64_MAX SIZE_MAX CHAR_BIT "
    "abort exit malloc free calloc realloc memcpy memset memmove memcmp printf puts putchar "
    "fwrite fputs stdin stdout stderr"
)
"""Library names (macros, types, functions) a generated identifier must not shadow."""

# Identifiers the C standard reserves for future library use (C99 7.26) or for the
# implementation (7.1.3), plus refq's own runtime namespace.
_RESERVED_PATTERNS = re.compile(
    r"_.*|.*__.*"  # leading underscore, double underscore (C++ too)
    r"|(?:is|to|str|mem|wcs|atomic_|memory_|cnd_|mtx_|thrd_|tss_)[a-z].*"
    r"|E[0-9A-Z].*|SIG_?[A-Z].*|LC_[A-Z].*|(?:PRI|SCN)[a-zX].*|FE_[A-Z].*"
    r"|u?int[0-9a-zA-Z_]*_t|U?INT[0-9A-Z_]*_(?:MAX|MIN|C)"
    r"|(?:refq|REFQ|Refq)(?:_.*)?"
)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NOT_IDENT_CHAR = re.compile(r"[^A-Za-z0-9_]+")
_UNDERSCORES = re.compile(r"__+")
_HASH_DIGITS = 6
MAX_IDENTIFIER_LENGTH = 63
"""C99 guarantees 63 significant characters for internal identifiers (31 for external ones)."""


def is_valid_identifier(text: str) -> bool:
    """ASCII C identifier that is no keyword and not reserved (see the module docstring)."""
    return (
        _IDENTIFIER.fullmatch(text) is not None
        and text not in C_KEYWORDS
        and text not in C_RESERVED_NAMES
        and _RESERVED_PATTERNS.fullmatch(text) is None
    )


def _utf8(text: str) -> bytes:
    # Lone surrogates cannot come from a UTF-8 model file, but must not crash the generator.
    return text.encode("utf-8", "surrogatepass")


def sanitize(name: str) -> str:
    """Readable ASCII body of an identifier: accents folded, other runs of characters to ``_``.

    May be empty or start with a digit; :class:`NameTable` completes it.
    """
    chars = []
    for c in name:
        if c.isascii():
            chars.append(c)
        else:
            # "é" -> "e", "ﬁ" -> "fi"; a character that folds to nothing still separates words.
            folded = unicodedata.normalize("NFKD", c).encode("ascii", "ignore").decode("ascii")
            chars.append(folded or "_")
    body = _NOT_IDENT_CHAR.sub("_", "".join(chars))
    return _UNDERSCORES.sub("_", body).strip("_")


def _name_hash(name: str, digits: int) -> str:
    return hashlib.sha256(_utf8(name)).hexdigest()[:digits]


class NameTable:
    """Assigns C identifiers to model names; every identifier it hands out is unique.

    ``reserved``: identifiers already taken (fixed runtime symbols). One table serves several
    namespaces (tensors, ops, functions) through their prefixes, and guarantees no collisions
    across them either.
    """

    def __init__(
        self, *, max_len: int = MAX_IDENTIFIER_LENGTH, reserved: Iterable[str] = ()
    ) -> None:
        if max_len < 16:
            raise CodegenError(f"max_len {max_len} is too short for identifiers (minimum 16)")
        self.max_len = max_len
        self._used: set[str] = set(reserved)
        self._assigned: dict[tuple[str, str], str] = {}

    def __contains__(self, identifier: object) -> bool:
        return identifier in self._used

    def _candidate(self, name: str, prefix: str) -> tuple[str, bool]:
        """(identifier before deduplication, whether it lost information)."""
        body = sanitize(name) or ("name" if name else "unnamed")
        exact = body == name
        ident = prefix + body
        if ident[0].isdigit():
            ident = "n" + ident
            exact = False
        if not is_valid_identifier(ident):
            ident = "x_" + ident.lstrip("_")
            exact = False
        if len(ident) > self.max_len:
            ident = ident[: self.max_len].rstrip("_")
            exact = False
        return ident, exact

    def _with_hash(self, base: str, name: str, digits: int) -> str:
        suffix = "_" + _name_hash(name, digits)
        return base[: self.max_len - len(suffix)].rstrip("_") + suffix

    def assign(self, names: Iterable[str], prefix: str = "") -> dict[str, str]:
        """Identifiers for ``names`` (duplicates share one), each starting with ``prefix``.

        A name whose sanitized identifier is unambiguous keeps it plain; when several names (or
        an identifier taken earlier) compete for one identifier, the name that needed no change
        keeps it and the others get ``_`` + the first hex digits of SHA-256(name).
        """
        if prefix and not (
            _IDENTIFIER.fullmatch(prefix) and not prefix.startswith("_") and "__" not in prefix
        ):
            raise CodegenError(
                f"identifier prefix {prefix!r} must be letters, digits and single underscores, "
                "starting with a letter"
            )
        if len(prefix) > self.max_len - 2 * _HASH_DIGITS:
            raise CodegenError(f"identifier prefix {prefix!r} leaves no room in {self.max_len}")
        result: dict[str, str] = {}
        pending: dict[str, list[tuple[str, bool]]] = {}
        seen: set[str] = set()
        for name in names:
            if not isinstance(name, str):
                raise CodegenError(f"model name {name!r} is not a string")
            if name in seen:
                continue
            seen.add(name)
            if (prefix, name) in self._assigned:
                result[name] = self._assigned[(prefix, name)]
            else:
                ident, exact = self._candidate(name, prefix)
                pending.setdefault(ident, []).append((name, exact))
        # Plain identifiers first, so that a hashed one can never take a plain one's place.
        hashed: list[tuple[str, str]] = []
        for ident, group in pending.items():
            keeper = None
            if ident not in self._used:
                exact = [n for n, e in group if e]
                if len(group) == 1:
                    keeper = group[0][0]
                elif exact:
                    keeper = exact[0]
            for name, _ in group:
                if name == keeper:
                    self._claim(prefix, name, ident, result)
                else:
                    hashed.append((ident, name))
        for ident, name in sorted(hashed, key=lambda item: item[1]):
            digits = _HASH_DIGITS
            candidate = self._with_hash(ident, name, digits)
            while candidate in self._used or candidate in pending:
                digits += 2
                if digits > 16:
                    candidate = self._counter(ident)
                    break
                candidate = self._with_hash(ident, name, digits)
            self._claim(prefix, name, candidate, result)
        return result

    def _counter(self, base: str) -> str:
        k = 2
        while True:
            suffix = f"_{k}"
            candidate = base[: self.max_len - len(suffix)] + suffix
            if candidate not in self._used:
                return candidate
            k += 1

    def _claim(self, prefix: str, name: str, ident: str, result: dict[str, str]) -> None:
        self._used.add(ident)
        self._assigned[(prefix, name)] = ident
        result[name] = ident


def c_identifiers(
    names: Iterable[str], prefix: str = "", *, max_len: int = MAX_IDENTIFIER_LENGTH
) -> dict[str, str]:
    """One-shot :meth:`NameTable.assign` with a fresh table."""
    return NameTable(max_len=max_len).assign(names, prefix)


_SIMPLE_ESCAPES = {
    ord("\\"): "\\\\",
    ord('"'): '\\"',
    ord("?"): "\\?",  # never two ?s in a row: no trigraph (??/ is a backslash in C99)
    ord("\n"): "\\n",
    ord("\t"): "\\t",
}


def _escape_bytes(data: bytes, extra: frozenset[int] = frozenset()) -> str:
    parts = []
    for b in data:
        if b in _SIMPLE_ESCAPES:
            parts.append(_SIMPLE_ESCAPES[b])
        elif 0x20 <= b < 0x7F and b not in extra:
            parts.append(chr(b))
        else:
            # Always three octal digits: a following digit can never extend the escape
            # (hexadecimal escapes would swallow any following hex digit).
            parts.append(f"\\{b:03o}")
    return "".join(parts)


def c_string_literal(text: str | bytes) -> str:
    """A C string literal (with its quotes) whose bytes are the UTF-8 encoding of ``text``."""
    data = text if isinstance(text, bytes) else _utf8(text)
    return '"' + _escape_bytes(data) + '"'


_STAR = frozenset({ord("*")})


def c_comment(text: str) -> str:
    """``/* text */`` on one line, with ``text`` escaped so that it cannot end the comment.

    Non-ASCII bytes, control characters and ``*`` become octal escapes (``\\052``), quotes,
    backslashes and ``?`` are escaped as in a string literal: the comment stays one comment
    whatever the name holds, and tools still show a recognizable name.
    """
    return "/* " + _escape_bytes(_utf8(text), _STAR) + " */"
