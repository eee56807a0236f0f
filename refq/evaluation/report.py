"""Result records of ``refq eval`` and their Markdown tables (docs/results.md).

A record is JSON data: ``model``, ``command`` (the exact command line), ``setup`` (text,
window, windows, tokens, prompt), ``float`` (per-metric results and size) and ``quantized``
(one entry per config / file with ``sim`` and ``int`` results, sizes and the profile).
:func:`write_json` writes it atomically; :func:`lm_table` / :func:`embedding_table` render it.

Relative perplexity change: ``delta = ppl_q / ppl_float - 1`` over the same windows.

    python -m refq.evaluation.report RESULT.json ...    # the tables of each record
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from refq.errors import InvalidDataError


def command_line(argv: Sequence[str]) -> str:
    """``refq ARGS`` quoted for a shell, as recorded next to every number."""
    return "refq " + " ".join(shlex.quote(a) for a in argv)


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON atomically (:func:`refq.atomicfile.write_atomic`)."""
    from refq.atomicfile import write_atomic

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = (json.dumps(data, indent=1) + "\n").encode("utf-8")
    return write_atomic(p, lambda f: f.write(text))


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidDataError(f"result file {str(path)!r} cannot be read ({exc})") from None


def _f(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:+.2f}%"


def _bytes(n: int | None) -> str:
    return "—" if n is None else f"{n:,d}"


def _ppl(entry: Mapping[str, Any] | None) -> float | None:
    if not entry or "perplexity" not in entry:
        return None
    return float(entry["perplexity"]["perplexity"])


def _agree(entry: Mapping[str, Any] | None) -> str:
    if not entry or "agreement" not in entry:
        return "—"
    a = entry["agreement"]
    pct = 100 * a["agreement"]
    return f"{a['matches']}/{a['total']} ({pct:.1f}%), first miss {a['first_mismatch']}"


def lm_table(record: Mapping[str, Any]) -> str:
    """Rows: float, then ``sim`` / ``int`` of each quantized model."""
    base = _ppl(record.get("float"))
    n = (record.get("setup", {}).get("agreement") or {}).get("new_tokens", "—")
    head = (
        "| model | engine | perplexity | vs float | "
        f"top-1 agreement ({n} greedy) | size (bytes) |\n"
        "|---|---|---:|---:|---|---:|\n"
    )
    rows = []
    fl = record.get("float") or {}
    if fl:
        rows.append(
            f"| float | float32 NumPy | {_f(base)} | — | — | {_bytes(fl.get('size_bytes'))} |"
        )
    for q in record.get("quantized", []):
        size = q.get("file_bytes") or (q.get("size_bytes") or {}).get("total")
        for engine, label in (("sim", "fake-quant float"), ("int", "integer-only")):
            e = q.get(engine)
            if not e:
                continue
            p = _ppl(e)
            delta = None if p is None or base is None else p / base - 1
            rows.append(
                f"| {q['name']} | {label} | {_f(p)} | {_pct(delta)} | {_agree(e)} | "
                f"{_bytes(size)} |"
            )
    return head + "\n".join(rows) + "\n"


def embedding_table(record: Mapping[str, Any]) -> str:
    """Rows: cosine summary of each quantized model's engines against float."""
    head = (
        "| model | engine | sentences | mean cosine | min | 5th pct | median | size (bytes) |\n"
        "|---|---|---:|---:|---:|---:|---:|---:|\n"
    )
    rows = []
    for q in record.get("quantized", []):
        size = q.get("file_bytes") or (q.get("size_bytes") or {}).get("total")
        for engine, label in (("sim", "fake-quant float"), ("int", "integer-only")):
            e = (q.get(engine) or {}).get("embeddings")
            if not e:
                continue
            rows.append(
                f"| {q['name']} | {label} | {e['n']} | {e['mean']:.5f} | {e['min']:.5f} | "
                f"{e['p05']:.5f} | {e['median']:.5f} | {_bytes(size)} |"
            )
    return head + "\n".join(rows) + "\n"


def render(record: Mapping[str, Any]) -> str:
    """The command and the table of one record."""
    table = embedding_table(record) if record.get("kind") == "embeddings" else lm_table(record)
    setup = dict(record.get("setup", {}))
    agree = setup.pop("agreement", None)
    lines = [f"    {record.get('command', '')}", ""]
    if setup:
        lines += ["setup: " + ", ".join(f"{k} = {v}" for k, v in setup.items()), ""]
    if agree:
        lines += [
            f"agreement: {agree['new_tokens']} float greedy tokens after the first "
            f"{agree['prompt_tokens']} tokens of the text: {agree.get('float_greedy_text', '')!r}",
            "",
        ]
    return "\n".join(lines) + table


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        print("usage: python -m refq.evaluation.report RESULT.json ...", file=sys.stderr)
        return 2
    for path in args:
        print(render(read_json(path)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
