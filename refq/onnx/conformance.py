"""``refq conformance``: ONNX's node test cases for the quantization ops and refq's self-checks.

1. ONNX node conformance. The installed ``onnx`` wheel ships the node-test *generators*
   (``onnx/backend/test/case/node/*.py``) but not their data. :func:`collect_node_cases` runs the
   generators (``onnx.backend.test.case.node.collect_testcases``) and keeps every case whose graph
   uses QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, MatMulInteger, QLinearMatMul,
   QLinearConv or ConvInteger (including the ``_expanded`` function-body graphs).
   :func:`write_node_cases` writes them in ONNX's data layout (``node/<case>/model.onnx``,
   ``test_data_set_0/input_<i>.pb`` / ``output_<i>.pb``, as ``onnx.backend.test.cmd_tools
   generate-data`` does); :func:`check_case_dir` loads one back, runs it on
   :class:`refq.onnx.backend.RefqBackend` and compares bit for bit (float bit patterns, integer
   values, minifloat codes; no tolerance).
2. Self-checks: :func:`refq.selfcheck.self_check_rows`, seeded random comparisons of refq's
   vectorized arithmetic with the exact scalar definitions of :mod:`refq.oracle`.

The table lists op, variant, cases and whether every element is bit-exact (with mismatch counts);
the exit status is 1 if anything is not.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from refq.errors import RefqError, UnsupportedError
from refq.selfcheck import ConformanceRow as Row

NODE_OPS = (
    "QuantizeLinear",
    "DequantizeLinear",
    "DynamicQuantizeLinear",
    "MatMulInteger",
    "QLinearMatMul",
    "QLinearConv",
    "ConvInteger",
)


@dataclass(frozen=True)
class NodeCase:
    """One generated ONNX node test case (one data set)."""

    op: str
    name: str
    model: onnx.ModelProto
    inputs: list[np.ndarray | onnx.TensorProto]
    outputs: list[np.ndarray | onnx.TensorProto]
    dataset: int = 0


def case_op(name: str, op_types: Iterable[str], ops: Sequence[str] = NODE_OPS) -> str | None:
    """The quantization op a case tests: its name's ``test_<op>`` prefix, else an op in it."""
    prefixes = [op for op in ops if name.lower().startswith("test_" + op.lower())]
    if prefixes:
        return max(prefixes, key=len)
    present = [op for op in ops if op in set(op_types)]
    return present[0] if present else None


def variant_of(name: str, op: str) -> str:
    rest = name[len("test_") + len(op) :] if name.lower().startswith("test_" + op.lower()) else name
    return rest.strip("_") or "default"


def collect_node_cases(ops: Sequence[str] = NODE_OPS) -> list[NodeCase]:
    """Run the installed onnx's node-test generators; keep the cases of ``ops``."""
    import warnings

    import onnx.backend.test.case.node as node_cases
    from onnx.backend.test.case.node import collect_testcases

    earlier = getattr(node_cases, "_TargetOpType", None)
    if earlier:
        # The generators run once per process, at import; a filtered first run hides the rest.
        raise UnsupportedError(
            f"onnx's node-test generators already ran in this process filtered to {earlier!r}; "
            f"run the conformance in a fresh process"
        )
    with warnings.catch_warnings():
        # Some unrelated generators overflow casts on purpose.
        warnings.simplefilter("ignore")
        all_cases = collect_testcases()  # all ops: a filtered first call would hide the rest
    cases = []
    for tc in all_cases:
        op = case_op(tc.name, (n.op_type for n in tc.model.graph.node), ops)
        if op is None or not any(n.op_type in ops for n in tc.model.graph.node):
            continue
        for i, (inputs, outputs) in enumerate(tc.data_sets):
            cases.append(NodeCase(op, tc.name, tc.model, list(inputs), list(outputs), i))
    return cases


def _proto(value: np.ndarray | onnx.TensorProto, name: str) -> onnx.TensorProto:
    if isinstance(value, onnx.TensorProto):
        return value
    return numpy_helper.from_array(np.asarray(value), name)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def write_node_cases(cases: Sequence[NodeCase], root: Path) -> list[Path]:
    """Write cases as ``root/node/<name>/model.onnx`` + ``test_data_set_<i>/*.pb``."""
    dirs: list[Path] = []
    for case in cases:
        d = Path(root) / "node" / case.name
        data = d / f"test_data_set_{case.dataset}"
        data.mkdir(parents=True, exist_ok=True)
        _write_atomic(d / "model.onnx", case.model.SerializeToString())
        graph = case.model.graph
        for i, value in enumerate(case.inputs):
            proto = _proto(value, graph.input[i].name)
            _write_atomic(data / f"input_{i}.pb", proto.SerializeToString())
        for i, value in enumerate(case.outputs):
            proto = _proto(value, graph.output[i].name)
            _write_atomic(data / f"output_{i}.pb", proto.SerializeToString())
        if d not in dirs:
            dirs.append(d)
    return dirs


def _read_tensors(directory: Path, prefix: str) -> list[onnx.TensorProto]:
    tensors = []
    i = 0
    while (p := directory / f"{prefix}_{i}.pb").exists():
        t = onnx.TensorProto()
        t.ParseFromString(p.read_bytes())
        tensors.append(t)
        i += 1
    return tensors


def check_case_dir(case_dir: Path, ops: Sequence[str] = NODE_OPS) -> Row:
    """Load a written case, run each data set on refq, compare every output bit for bit."""
    from refq.onnx.backend import RefqBackend
    from refq.onnx.tensor import bit_mismatches, from_numpy

    case_dir = Path(case_dir)
    model = onnx.load(str(case_dir / "model.onnx"))
    name = case_dir.name
    op = case_op(name, (n.op_type for n in model.graph.node), ops) or "?"
    variant = variant_of(name, op)
    datasets = sorted(case_dir.glob("test_data_set_*"))
    expected = [_read_tensors(d, "output") for d in datasets]
    elements = sum(int(np.prod(t.dims, dtype=np.int64)) for ts in expected for t in ts)
    try:
        rep = RefqBackend.prepare(model)
        mismatches = 0
        for data, want in zip(datasets, expected, strict=True):
            inputs = [numpy_helper.to_array(t) for t in _read_tensors(data, "input")]
            got = rep.run_tensors(inputs)
            if len(got) != len(want):
                msg = f"{len(got)} outputs, expected {len(want)}"
                return Row(op, variant, len(datasets), elements, elements, msg)
            mismatches += sum(
                bit_mismatches(g, from_numpy(numpy_helper.to_array(t), t.data_type, name=t.name))
                for g, t in zip(got, want, strict=True)
            )
        return Row(op, variant, len(datasets), elements, mismatches)
    except (RefqError, onnx.checker.ValidationError) as exc:
        return Row(op, variant, len(datasets), elements, elements, f"{type(exc).__name__}: {exc}")


def run_node_conformance(workdir: Path | None = None) -> list[Row]:
    """Generate the node cases into ``workdir`` (a temp dir by default) and check each one."""
    cases = collect_node_cases()
    with tempfile.TemporaryDirectory(prefix="refq-onnx-node-") as tmp:
        root = Path(workdir) if workdir is not None else Path(tmp)
        dirs = write_node_cases(cases, root)
        rows = [check_case_dir(d) for d in dirs]
    for op in NODE_OPS:
        if not any(r.op == op for r in rows):  # never report an op as passing on zero cases
            rows.append(Row(op, "-", 0, None, None, "the installed onnx generated no cases"))
    order = {op: i for i, op in enumerate(NODE_OPS)}
    return sorted(rows, key=lambda r: (order.get(r.op, len(order)), r.variant))


def format_table(rows: Sequence[Row]) -> str:
    """op | variant | cases | elements | bit-exact, one line per row."""
    w_op = max([len("op"), *(len(r.op) for r in rows)])
    w_var = max([len("variant"), *(len(r.variant) for r in rows)])
    lines = [f"{'op':<{w_op}}  {'variant':<{w_var}}  {'cases':>6}  {'elements':>9}  bit-exact"]
    lines.append("-" * len(lines[0]))
    for r in rows:
        elements = "-" if r.elements is None else f"{r.elements:,d}"
        if r.bit_exact:
            verdict = "yes"
        elif r.error:
            verdict = f"no ({r.error})"
        elif r.mismatches is None:
            verdict = "no"
        else:
            total = r.elements if r.elements is not None else r.cases
            verdict = f"no ({r.mismatches} of {total} differ)"
        lines.append(
            f"{r.op:<{w_op}}  {r.variant:<{w_var}}  {r.cases:>6,d}  {elements:>9}  {verdict}"
        )
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--keep",
        metavar="DIR",
        type=Path,
        help="write the generated ONNX node cases into DIR (default: a temporary directory)",
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=400,
        help="inputs per function in the self-checks (default: 400)",
    )
    parser.add_argument("--seed", type=int, default=0, help="self-check seed (default: 0)")
    parser.add_argument(
        "--only",
        choices=("node", "selfcheck"),
        help="run only the ONNX node conformance or only the self-checks",
    )


def run(args: argparse.Namespace) -> int:
    from refq.selfcheck import self_check_rows

    t0 = time.perf_counter()
    node_rows: list[Row] = []
    check_rows: list[Row] = []
    if args.only in (None, "node"):
        node_rows = run_node_conformance(args.keep)
    if args.only in (None, "selfcheck"):
        check_rows = self_check_rows(samples=args.samples, seed=args.seed)
    rows = node_rows + check_rows
    print(f"refq conformance (onnx {onnx.__version__})")
    print(format_table(rows))
    bad = [r for r in rows if not r.bit_exact]
    n_cases = sum(r.cases for r in node_rows)
    summary = (
        f"{n_cases} ONNX node cases ({len(node_rows)} rows), "
        f"{sum(r.cases for r in check_rows)} self-check inputs ({len(check_rows)} rows): "
    )
    summary += "all bit-exact" if not bad else f"{len(bad)} rows NOT bit-exact"
    print(f"{summary}  [{time.perf_counter() - t0:.1f} s]")
    return 1 if bad else 0
