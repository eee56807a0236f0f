"""Generated C on Cortex-M7 / M4 under QEMU: instructions per MAC / per element, flash and RAM.

Run:  .venv/bin/python bench/bench_mcu.py [--markdown] [--only fc|elementwise|lm]

For each fully connected layer (K, N) in (256, 256), (1024, 256), (576, 1536) at batch 1 (int8
weights per output channel, int32 bias, profile tflm) and each element-wise op (ADD over 4096
elements; SOFTMAX once codegen lowers it), the script generates the model with
codegen.generate, builds it with firmware/Makefile for Cortex-M7 and Cortex-M4 with the DSP
path and with the plain-C path (-DREFQ_NO_DSP), runs it under QEMU with -icount shift=7 and
reads the instruction count of one invoke (codegen.run; exact to one instruction, the same on
every run). Every run's output is checked byte for byte against refq's NumPy reference before
a number is printed. Instruction counts are not cycles: see docs/firmware.md.

LM (``--only lm``): the shipped tiny LM quantized with the w8a8 config, generated with codegen.lm
(one token per step, static KV cache), built for the same four configurations and stepped
through 128 tokens of held-out text (the whole context); each step's instructions come from the
tick counter around ``refq_lm_step`` (the LM harness), its logits are checked byte for byte
against refq's integer engine (a prefill of the same 128 tokens). Tokens per second assume
400 MHz and one instruction per cycle.

Sizes: flash = text + data of the model's own objects (model.o, weights.o, its kernels) and of
the whole program (arm-none-eabi-size, including the test harness, startup code and newlib's
memcpy); RAM = the planned arena (+ state) and the whole program's data + bss (including the
harness's I/O buffers and its 16 KB stack).

Anchors (issue 5, measured on this machine with the real CMSIS-NN v7 DSP path on Cortex-M7,
-O2): fully connected 1.92-2.07 instructions per MAC (int8 weights), elementwise add ~80 per
element, softmax s8 ~530 per element. Targets: FC <= 1.4 per MAC at K >= 256, add <= 40,
softmax <= 60 per element. CMSIS-NN is not installed here, so the anchors are constants.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from codegen.build import build, read_size
from codegen.generate import generate
from codegen.lower import lowered_ops
from codegen.run import run
from refq.graph import Graph, Node, Program, TensorInfo

FC_SHAPES = ((256, 256), (1024, 256), (576, 1536))
CONFIGS = (
    ("M7 DSP", "m7", ()),
    ("M7 plain C", "m7", ("-DREFQ_NO_DSP",)),
    ("M4 DSP", "m4", ()),
    ("M4 plain C", "m4", ("-DREFQ_NO_DSP",)),
)
FC_ANCHOR = (1.92, 2.07)
FC_TARGET = 1.4
ELEMENTS = 4096


@dataclass(frozen=True)
class ElementwiseBench:
    """An element-wise op to measure: a graph builder (elements -> graph), its CMSIS-NN anchor
    and refq's target in instructions per element."""

    op: str
    make: Callable[[int], Graph]
    anchor: float
    target: float


def fc_graph(k: int, n: int, seed: int = 0) -> Graph:
    """FULLY_CONNECTED at batch 1: int8 in / out, int8 weights per output channel, int32 bias."""
    rng = np.random.default_rng(seed)
    s_w = rng.uniform(0.002, 0.01, n).astype(np.float32)
    t = {
        "x": TensorInfo("x", "int8", (1, k), scale=0.05, zero_point=-3),
        "w": TensorInfo(
            "w",
            "int8",
            (n, k),
            scale=s_w,
            zero_point=np.zeros(n, np.int64),
            axis=0,
            data=rng.integers(-128, 128, (n, k)).astype(np.int8),
        ),
        "b": TensorInfo("b", "int32", (n,), data=rng.integers(-5000, 5000, n).astype(np.int32)),
        "y": TensorInfo(
            "y",
            "int8",
            (1, n),
            scale=float(np.float32(0.05 * 0.006 * np.sqrt(k) * 8)),
            zero_point=4,
        ),
    }
    node = Node("FULLY_CONNECTED", ("x", "w", "b"), ("y",))
    return Graph(t, [node], ["x"], ["y"], name=f"fc {k}x{n}")


def add_graph(count: int) -> Graph:
    """ADD of two int8 vectors with different scales (TFLite's general int8 ADD)."""
    t = {
        "a": TensorInfo("a", "int8", (count,), scale=0.02, zero_point=3),
        "b": TensorInfo("b", "int8", (count,), scale=0.013, zero_point=-7),
        "y": TensorInfo("y", "int8", (count,), scale=0.05, zero_point=1),
    }
    return Graph(t, [Node("ADD", ("a", "b"), ("y",))], ["a", "b"], ["y"], name="add")


def softmax_graph(count: int) -> Graph:
    """SOFTMAX int8 over rows of 256 (TFLite: output scale 1/256, zero point -128)."""
    rows = max(1, count // 256)
    t = {
        "x": TensorInfo("x", "int8", (rows, 256), scale=0.1, zero_point=-10),
        "y": TensorInfo("y", "int8", (rows, 256), scale=1 / 256, zero_point=-128),
    }
    return Graph(t, [Node("SOFTMAX", ("x",), ("y",), {"beta": 1.0})], ["x"], ["y"], name="softmax")


ELEMENTWISE = (
    ElementwiseBench("ADD", add_graph, 80.0, 40.0),
    # Hook: measured as soon as codegen lowers SOFTMAX (codegen.lower.lowered_ops()).
    ElementwiseBench("SOFTMAX", softmax_graph, 530.0, 60.0),
)


@dataclass
class Measure:
    instructions: int
    model_flash: int
    program_flash: int
    program_ram: int
    arena: int


def _object_flash(build_dir: Path, kernels: list[str]) -> int:
    gen = build_dir / "gen"
    objects = [gen / "model.o", gen / "weights.o"] + [gen / f"{k}.o" for k in kernels]
    out = subprocess.run(
        ["arm-none-eabi-size", "-A", *map(str, objects)], capture_output=True, text=True, check=True
    ).stdout
    total = 0
    for line in out.splitlines():
        parts = line.split()
        if (
            len(parts) >= 2
            and parts[1].isdigit()
            and parts[0].startswith((".text", ".rodata", ".data"))
        ):
            total += int(parts[1])
    return total


def measure(graph: Graph, workdir: Path, seed: int = 1) -> dict[str, Measure]:
    """Generate, build and run ``graph`` on every configuration; outputs checked bit-exact."""
    rng = np.random.default_rng(seed)
    inputs = [rng.integers(-128, 128, graph.tensors[n].shape).astype(np.int8) for n in graph.inputs]
    expected = Program(graph, "tflm").run(inputs)
    src = workdir / "src"
    model = generate(graph, src, profile="tflm", harness=True, force=True)
    files = {f"refq_model_in{i}.bin": x.tobytes() for i, x in enumerate(inputs)}
    outs = [f"refq_model_out{i}.bin" for i in range(len(graph.outputs))]
    results = {}
    for label, target, flags in CONFIGS:
        b = build(
            src, target, build_dir=workdir / f"build-{label.replace(' ', '-')}", extra_cflags=flags
        )
        r = run(b, files, outs, timeout=300)
        for name, want in zip(outs, expected, strict=True):
            if r.outputs[name] != want.tobytes():
                raise SystemExit(f"{graph.name} on {label}: output differs from refq's reference")
        size = read_size(b.program)
        results[label] = Measure(
            instructions=int(r.instructions),
            model_flash=_object_flash(b.build_dir, [k.name for k in model.lowered.kernels]),
            program_flash=size.flash,
            program_ram=size.sram,
            arena=model.lowered.arena_size + model.lowered.state_size,
        )
    return results


def _row(cells: list[str], markdown: bool) -> str:
    return "| " + " | ".join(cells) + " |" if markdown else "  ".join(f"{c:>14}" for c in cells)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markdown", action="store_true", help="print Markdown tables")
    parser.add_argument("--only", choices=("fc", "elementwise", "lm"), help="run one part")
    args = parser.parse_args()
    md = args.markdown
    with tempfile.TemporaryDirectory(prefix="refq-bench-mcu-") as tmp:
        root = Path(tmp)
        if args.only in (None, "fc"):
            head = ["K x N", "MACs", "model flash", "arena", "program flash / RAM"]
            head += [f"{label} instr (per MAC)" for label, _, _ in CONFIGS]
            head += ["M7 DSP vs CMSIS-NN 1.92-2.07"]
            print("Fully connected, batch 1, int8 weights per channel (tflm):")
            print(_row(head, md))
            if md:
                print("|" + "---|" * len(head))
            for k, n in FC_SHAPES:
                res = measure(fc_graph(k, n), root / f"fc-{k}-{n}")
                macs = k * n
                m7 = res["M7 DSP"].instructions / macs
                first = res["M7 DSP"]
                cells = [
                    f"{k} x {n}",
                    f"{macs:,}",
                    f"{first.model_flash:,} B",
                    f"{first.arena:,} B",
                    f"{first.program_flash:,} / {first.program_ram:,} B",
                ]
                cells += [
                    f"{res[label].instructions:,} ({res[label].instructions / macs:.3f})"
                    for label, _, _ in CONFIGS
                ]
                cells.append(
                    f"{m7 / FC_ANCHOR[1]:.2f}-{m7 / FC_ANCHOR[0]:.2f}x "
                    f"({'meets' if m7 <= FC_TARGET else 'misses'} <= {FC_TARGET})"
                )
                print(_row(cells, md))
        if args.only in (None, "elementwise"):
            print(f"\nElement-wise ops, {ELEMENTS} int8 elements (tflm):")
            head = ["op"] + [f"{label} instr/elem" for label, _, _ in CONFIGS]
            head += ["M7 DSP vs CMSIS-NN anchor"]
            print(_row(head, md))
            if md:
                print("|" + "---|" * len(head))
            lowered = set(lowered_ops())
            for bench in ELEMENTWISE:
                if bench.op not in lowered:
                    print(_row([bench.op, "not lowered to C yet"] + [""] * (len(head) - 2), md))
                    continue
                res = measure(bench.make(ELEMENTS), root / f"ew-{bench.op}")
                per = {label: res[label].instructions / ELEMENTS for label, _, _ in CONFIGS}
                cells = [bench.op] + [f"{per[label]:.1f}" for label, _, _ in CONFIGS]
                m7 = per["M7 DSP"]
                cells.append(
                    f"{m7 / bench.anchor:.2f}x of ~{bench.anchor:.0f} "
                    f"({'meets' if m7 <= bench.target else 'misses'} <= {bench.target:.0f})"
                )
                print(_row(cells, md))
        if args.only in (None, "lm"):
            bench_lm(root / "lm", md)
    return 0


def bench_lm(workdir: Path, md: bool, clock_hz: int = 400_000_000) -> None:
    """The tiny LM per token on every configuration (module docstring); logits checked."""
    from codegen.emit import write_tree
    from codegen.lm import HARNESS_OUTPUTS, harness_inputs, render_lm
    from refq.demo import quantize_tiny_lm
    from refq.models.integer import IntegerLM
    from refq.models.tiny_lm import corpus

    qm = quantize_tiny_lm("w8a8")
    graph = qm.graph()
    lm = render_lm(graph, harness=True)
    src = write_tree(workdir / "src", lm.files)
    tokens = corpus("heldout")[: lm.context].astype(np.int64)
    want = IntegerLM(graph, qm.profile).prefill(tokens)
    m = lm.lowered
    print(
        f"\nTiny LM (w8a8, tflm), one token per step over {tokens.size} positions: constants "
        f"{m.weight_bytes:,} B, arena {m.arena_size:,} B (lower bound {m.plan.lower_bound:,}), "
        f"KV cache {m.state_size:,} B static"
    )
    head = [
        "config",
        "program flash",
        "flash - constants",
        "instr/token pos 0",
        "pos 63",
        f"pos {tokens.size - 1}",
        "mean",
        "tokens/s mean (worst) at 400 MHz",
    ]
    print(_row(head, md))
    if md:
        print("|" + "---|" * len(head))
    for label, target, flags in CONFIGS:
        b = build(
            src,
            target,
            build_dir=workdir / f"build-{label.replace(' ', '-')}",
            extra_cflags=flags,
            jobs=2,
        )
        r = run(b, harness_inputs(1, tokens), HARNESS_OUTPUTS, timeout=600)
        got = np.frombuffer(r.outputs["lm_logits.bin"], np.int8).reshape(want.shape)
        if not np.array_equal(got, want):
            raise SystemExit(f"tiny LM on {label}: logits differ from refq's integer engine")
        ticks = np.frombuffer(r.outputs["lm_ticks.bin"], "<u8").astype(np.float64)
        per = ticks * 5 / 16  # 3.2 ticks per instruction under -icount shift=7
        size = read_size(b.program)
        cells = [label, f"{size.flash:,} B", f"{size.flash - m.weight_bytes:,} B"]
        cells += [f"{per[i]:,.0f}" for i in (0, 63, tokens.size - 1)] + [f"{per.mean():,.0f}"]
        cells.append(f"{clock_hz / per.mean():,.0f} ({clock_hz / per.max():,.0f})")
        print(_row(cells, md))


if __name__ == "__main__":
    sys.exit(main())
