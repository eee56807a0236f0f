"""``refq conformance`` through the CLI entry point: exit status and the table's rows."""

from __future__ import annotations

import re

import numpy as np
import onnx

from refq.cli import main
from refq.onnx import ops
from refq.onnx.conformance import NODE_OPS


def _rows(out: str) -> list[list[str]]:
    """Table rows as [op, variant, cases, elements, verdict...]."""
    rows = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[2].replace(",", "").isdigit():
            rows.append(parts)
    return rows


def test_conformance_passes_and_prints_the_table(tmp_path, capsys, checked):
    status = main(["conformance", "--keep", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0, out
    rows = _rows(out)
    node_rows = [r for r in rows if r[0] in NODE_OPS]
    assert {r[0] for r in node_rows} == set(NODE_OPS)
    if onnx.__version__ == "1.23.2":
        assert len(node_rows) == 45
    assert all(r[4] == "yes" for r in rows), [r for r in rows if r[4] != "yes"]
    check_rows = [r for r in rows if r[0].startswith("fixedpoint.")]
    assert check_rows, "the oracle self-checks ran"
    assert re.search(r"\b45 ONNX node cases\b.*all bit-exact", out) or onnx.__version__ != "1.23.2"
    # the generated cases are on disk in ONNX's layout
    case = tmp_path / "node" / "test_qlinearconv"
    assert (case / "model.onnx").is_file()
    assert len(list((case / "test_data_set_0").glob("input_*.pb"))) == 8
    assert (case / "test_data_set_0" / "output_0.pb").is_file()
    checked("refq conformance table rows (node + self-check)", len(rows))


def test_conformance_fails_when_an_op_is_wrong(capsys, monkeypatch):
    real = ops.OPS["MatMulInteger"]

    def off_by_one(ctx, inputs):
        (y,) = real(ctx, inputs)
        data = y.data.copy()
        data.flat[0] += np.int32(1)
        return [type(y)(y.elem_type, data)]

    monkeypatch.setitem(ops.OPS, "MatMulInteger", off_by_one)
    status = main(["conformance", "--only", "node"])
    out = capsys.readouterr().out
    assert status == 1
    bad = [r for r in _rows(out) if r[4] != "yes"]
    assert [r[0] for r in bad] == ["MatMulInteger"]
    assert "no (1 of 8 differ)" in out
    assert "1 rows NOT bit-exact" in out


def test_conformance_selfcheck_only(capsys):
    assert main(["conformance", "--only", "selfcheck", "--samples", "50", "--seed", "3"]) == 0
    rows = _rows(capsys.readouterr().out)
    assert rows and all(r[0] not in NODE_OPS for r in rows)
