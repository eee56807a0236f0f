"""Many generated models in one firmware image per configuration, checked against refq.

A :class:`Image` renders every :class:`Case` (a graph, a profile, input sets) with its own API
prefix into one tree (kernels shared), adds a harness entry that runs each model on every input
set of its files, builds the tree once per configuration (host, host with UBSan + ASan,
Cortex-M7 / M4 with hard and soft float ABI, DSP and plain-C paths) and compares the output
files byte for byte with ``refq.graph.Program(graph, profile).run``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from codegen.build import Build, build
from codegen.emit import write_tree
from codegen.generate import GeneratedModel, render_model, tree_files
from codegen.run import RunResult, run
from refq.graph import Graph, Program
from tests.conftest import require_tool

CONFIGS: dict[str, tuple[str, bool, tuple[str, ...]]] = {
    "host": ("host", False, ()),
    "host-ubsan-asan": ("host", True, ()),
    "m7": ("m7", False, ()),
    "m7-plain-c": ("m7", False, ("-DREFQ_NO_DSP",)),
    "m7-soft": ("m7-soft", False, ()),
    "m4": ("m4", False, ()),
    "m4-soft": ("m4-soft", False, ()),
    "m4-plain-c": ("m4-softfp", False, ("-DREFQ_NO_DSP",)),
}
"""name -> (codegen.build target, sanitizers, extra C flags)."""


def require_target(target: str) -> None:
    """Skip (locally) / fail (CI) when the tools to build and run for ``target`` (a
    :mod:`codegen.build` target) are missing."""
    require_tool("make")
    if target == "host":
        require_tool("cc")
    else:
        require_tool("arm-none-eabi-gcc")
        require_tool("qemu-system-arm")


def require_config(config: str) -> None:
    """Skip (locally) / fail (CI) when the tools of ``config`` are missing."""
    require_target(CONFIGS[config][0])


@dataclass
class Case:
    """A graph under a profile and the input sets to run it on (one list of arrays per set)."""

    graph: Graph
    profile: str
    sets: list[list[np.ndarray]]
    what: str = ""
    expected: list[list[np.ndarray]] = field(default_factory=list)

    def reference(self) -> list[list[np.ndarray]]:
        """Outputs of refq's NumPy reference, set after set on one Program (state persists)."""
        if not self.expected:
            prog = Program(self.graph, self.profile)
            self.expected = [prog.run(list(s)) for s in self.sets]
        return self.expected


class Image:
    """``cases`` rendered into one tree under ``root`` (see the module docstring)."""

    def __init__(self, root: Path, cases: Sequence[Case]) -> None:
        self.root = root
        self.cases = list(cases)
        self.models: list[GeneratedModel] = [
            render_model(c.graph, c.profile, api=f"refq_c{i}", subdir=f"c{i}")
            for i, c in enumerate(self.cases)
        ]
        self.sets = max(len(c.sets) for c in self.cases)
        self.src = write_tree(root / "src", tree_files(self.models, harness=True, sets=self.sets))
        self._builds: dict[str, Build] = {}

    def build(self, config: str) -> Build:
        if config not in self._builds:
            target, sanitize, flags = CONFIGS[config]
            self._builds[config] = build(
                self.src,
                target,
                build_dir=self.root / f"build-{config}",
                sanitize=sanitize,
                extra_cflags=flags,
            )
        return self._builds[config]

    def input_files(self) -> dict[str, bytes]:
        files = {}
        for g, c in zip(self.models, self.cases, strict=True):
            for i in range(len(c.graph.inputs)):
                files[f"{g.api}_in{i}.bin"] = b"".join(
                    np.ascontiguousarray(s[i]).tobytes() for s in c.sets
                )
        return files

    def output_files(self) -> list[str]:
        return [
            f"{g.api}_out{i}.bin" for g in self.models for i in range(len(g.lowered.outputs))
        ] + [f"{g.api}_name.bin" for g in self.models]

    def run(self, config: str, timeout: float = 300.0) -> RunResult:
        return run(self.build(config), self.input_files(), self.output_files(), timeout=timeout)

    def mismatches(self, result: RunResult) -> list[str]:
        """Descriptions of every output that differs from the reference (empty: all equal)."""
        problems = []
        for g, c in zip(self.models, self.cases, strict=True):
            expected = c.reference()
            for i, t in enumerate(g.lowered.outputs):
                want = b"".join(np.ascontiguousarray(e[i]).tobytes() for e in expected)
                got = result.outputs[f"{g.api}_out{i}.bin"]
                if got != want:
                    problems.append(_describe(c, i, t.dtype, got, want))
            name = result.outputs[f"{g.api}_name.bin"]
            if name != c.graph.name.encode("utf-8", "surrogatepass"):
                problems.append(f"{c.what}: model name read back as {name!r}")
        return problems

    def elements(self) -> int:
        """Output elements compared per run."""
        return sum(int(o.size) for c in self.cases for e in c.reference() for o in e)


def _describe(case: Case, index: int, dtype: str, got: bytes, want: bytes) -> str:
    dt = np.dtype({"int4": "int8"}.get(dtype, dtype))
    if len(got) != len(want):
        return f"{case.what}: output {index} has {len(got)} bytes, expected {len(want)}"
    g = np.frombuffer(got, dt)
    w = np.frombuffer(want, dt)
    bad = np.flatnonzero(g != w)
    return (
        f"{case.what} ({case.profile}): output {index} differs in {bad.size} of {w.size} "
        f"elements, first at {bad[:5].tolist()}: C {g[bad[:5]].tolist()}, "
        f"reference {w[bad[:5]].tolist()}"
    )
