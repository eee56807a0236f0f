"""``refq demo``: the shipped tiny LM from float weights to C on an emulated Cortex-M7, checked.

With no arguments:

1. quantize the tiny byte-level LM (refq/data/tiny_lm.npz) with the shipped ``w8a8`` config
   (int8 per-channel weights, int8 activations, profile ``tflm``) through the PTQ pipeline,
   calibrated on 16 windows of the training text;
2. generate 64 tokens greedily after a prompt with refq's integer engine (the Python reference);
3. generate the C99 sources (codegen.lm: kernels, weights, static arena and KV cache, lm.h API)
   and check the memory plan against the STM32H743 budget;
4. build them for the host with the firmware test harness, run ``refq_lm_generate`` and compare
   the tokens and every step's logit bytes with the reference;
5. when ``arm-none-eabi-gcc`` and ``qemu-system-arm`` are installed: the same for Cortex-M7
   (QEMU ``mps2-an500``, ``-icount`` instruction counts), with flash / SRAM from
   ``arm-none-eabi-size`` and instructions per token; otherwise print what to install;
6. print the generated text.

Exit status 0 when every comparison is equal, 1 otherwise. Options (``--prompt``, ``--tokens``,
``--config``, ``--output``) exist for exploration; the defaults are the README's main job.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refq.errors import InvalidDataError

DEFAULT_PROMPT = "ROMEO:\n"
DEFAULT_TOKENS = 64
DEFAULT_CONFIG = "w8a8"
CLOCK_HZ = 400_000_000
"""Cortex-M7 clock of the STM32H743 for the tokens/s estimate (one instruction per cycle)."""
FLASH_CODE_ALLOWANCE = 64 * 1024
"""The issue's target: flash <= weight bytes + 64 KB."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Quantize the shipped tiny LM, generate C99 for Cortex-M, build and run it on the host "
        "and (with the Arm toolchain and QEMU) on an emulated Cortex-M7, and check that the "
        "tokens are identical to refq's integer reference."
    )
    parser.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt text (default: ROMEO:)")
    parser.add_argument(
        "--tokens", type=int, default=DEFAULT_TOKENS, help="tokens to generate (default: 64)"
    )
    parser.add_argument(
        "--config", default=DEFAULT_CONFIG, help="quantization config (default: w8a8)"
    )
    parser.add_argument(
        "--output", metavar="DIR", help="keep the generated sources and builds in DIR"
    )


@dataclass
class TargetResult:
    """One build + run of the generated LM."""

    target: str
    tokens_equal: bool
    logits_equal: bool
    seconds: float
    instructions: int | None = None
    steps: int = 0
    flash: int | None = None
    sram: int | None = None

    @property
    def equal(self) -> bool:
        return self.tokens_equal and self.logits_equal


@dataclass
class DemoResult:
    """What the demo measured (for tests and the report)."""

    prompt: np.ndarray
    tokens: np.ndarray
    text: str
    weight_bytes: int
    arena: int
    arena_lower_bound: int
    state: int
    targets: list[TargetResult] = field(default_factory=list)
    missing_tools: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(t.equal for t in self.targets) and any(t.target == "host" for t in self.targets)


_QUANTIZED: dict[str, Any] = {}


def quantize_tiny_lm(config: str = DEFAULT_CONFIG) -> Any:
    """The tiny LM quantized with ``config`` (a shipped config name or JSON path) through
    :func:`refq.ptq.quantize_model`; cached per config for the life of the process."""
    if config not in _QUANTIZED:
        from refq.calibration.readers import byte_windows
        from refq.models.tiny_lm import DATA_DIR, load_tiny_lm
        from refq.ptq import QuantConfig, quantize_model

        qcfg = QuantConfig.load(config)
        cfg, weights = load_tiny_lm()
        window = int(qcfg.calibration.get("window", 128))
        windows = int(qcfg.calibration.get("windows", 16))
        reader = byte_windows(DATA_DIR / "shakespeare_train.txt", window, windows)
        _QUANTIZED[config] = quantize_model(cfg, weights, qcfg, reader)
    return _QUANTIZED[config]


def missing_arm_tools() -> list[str]:
    """The Cortex-M tools that are not on PATH."""
    return [
        t
        for t in ("arm-none-eabi-gcc", "arm-none-eabi-size", "qemu-system-arm")
        if shutil.which(t) is None
    ]


def _run_target(
    src: Path, target: str, work: Path, prompt: np.ndarray, n: int, ref_tokens, ref_logits, lm
) -> TargetResult:
    from codegen.build import build
    from codegen.lm import HARNESS_OUTPUTS, harness_inputs
    from codegen.run import run

    t0 = time.perf_counter()
    prog = build(src, target, build_dir=work / f"build-{target}", jobs=2)
    res = run(prog, harness_inputs(0, prompt, n), HARNESS_OUTPUTS, timeout=600)
    dtype = np.int8 if lm.logit_dtype == "int8" else np.dtype("<i2")
    tokens = np.frombuffer(res.outputs["lm_tokens.bin"], dtype="<i4").astype(np.int64)
    logits = np.frombuffer(res.outputs["lm_logits.bin"], dtype=dtype).reshape(-1, lm.vocab)
    steps = _count_steps(min(prompt.size, lm.context), n, lm.context)
    return TargetResult(
        target=target,
        tokens_equal=bool(np.array_equal(tokens, ref_tokens)),
        logits_equal=bool(np.array_equal(logits, ref_logits)),
        seconds=time.perf_counter() - t0,
        instructions=res.instructions,
        steps=steps,
        flash=prog.size.flash if prog.size else None,
        sram=prog.size.sram if prog.size else None,
    )


def _count_steps(length: int, n: int, context: int) -> int:
    """Model invocations of ``<api>_generate`` (lm.c.j2): the prompt, then one per token, a
    re-encode of ``max(1, context // 2)`` tokens instead whenever the context is full."""
    keep = max(1, context // 2)
    steps, pos = length, length
    for _ in range(n):
        if pos >= context:
            steps += keep
            pos = keep
        else:
            steps += 1
            pos += 1
    return steps


def run_demo(
    *,
    prompt: str = DEFAULT_PROMPT,
    tokens: int = DEFAULT_TOKENS,
    config: str = DEFAULT_CONFIG,
    output: str | Path | None = None,
    arm: bool | None = None,
    echo: Callable[[str], None] = print,
) -> DemoResult:
    """The demo (module docstring). ``arm``: force the Cortex-M7 part on / off (default: when
    the tools are present). ``echo`` receives the report line by line."""
    from codegen.emit import write_tree
    from codegen.lm import reference_generate, render_lm
    from refq.models.integer import IntegerLM
    from refq.models.tiny_lm import TINY_LM, decode, encode

    if tokens < 1 or tokens > 256:
        raise InvalidDataError(f"--tokens {tokens}: generate between 1 and 256 tokens")
    prompt_ids = encode(prompt)
    if prompt_ids.size == 0:
        raise InvalidDataError("--prompt is empty; give at least one character")
    lines: list[str] = []

    def say(text: str = "") -> None:
        lines.append(text)
        echo(text)

    cfg = TINY_LM
    say(
        f"refq demo: the shipped tiny LM (byte-level Llama, {cfg.n_layers} layers, dim "
        f"{cfg.dim}, {cfg.n_heads} heads / {cfg.n_kv_heads} KV heads, vocab {cfg.vocab_size}) "
        "-> integer model -> C99 -> Cortex-M7"
    )
    t0 = time.perf_counter()
    qm = quantize_tiny_lm(config)
    graph = qm.graph()
    say(
        f"1. quantize   config {qm.qconfig.name!r}, profile {qm.profile!r}: {len(graph.nodes)} "
        f"integer ops, context {graph.metadata.get('context')} ({time.perf_counter() - t0:.1f} s)"
    )

    t0 = time.perf_counter()
    ref = IntegerLM(graph, qm.profile)
    ref_tokens, ref_logits = reference_generate(ref, prompt_ids, tokens)
    say(
        f"2. reference  {tokens} greedy tokens after {prompt!r} with refq's integer engine "
        f"({time.perf_counter() - t0:.1f} s)"
    )

    t0 = time.perf_counter()
    lm = render_lm(graph, qm.profile, harness=True)
    m = lm.lowered
    work = Path(output) if output else Path(tempfile.mkdtemp(prefix="refq-demo-"))
    src = write_tree(work / "src", lm.files, force=False)
    say(
        f"3. C99 tree   {src}: {len(m.kernels)} kernels ({', '.join(k.name for k in m.kernels)}) "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    say(
        f"   memory     constants {m.weight_bytes:,} bytes (flash); arena {m.arena_size:,} bytes "
        f"(lower bound {m.plan.lower_bound:,}, {m.plan.ratio:.2f}x); KV cache {m.state_size:,} "
        "bytes, static; no malloc"
    )
    say(f"   budget     {m.budget_use.report()}")

    result = DemoResult(
        prompt=prompt_ids,
        tokens=ref_tokens,
        text=decode(ref_tokens),
        weight_bytes=m.weight_bytes,
        arena=m.arena_size,
        arena_lower_bound=m.plan.lower_bound,
        state=m.state_size,
        lines=lines,
    )
    try:
        host = _run_target(src, "host", work, prompt_ids, tokens, ref_tokens, ref_logits, lm)
        result.targets.append(host)
        say(f"4. host       {_verdict(host, tokens)} ({host.seconds:.1f} s)")

        missing = missing_arm_tools()
        result.missing_tools = missing
        if arm is None:
            arm = not missing
        if arm:
            m7 = _run_target(src, "m7", work, prompt_ids, tokens, ref_tokens, ref_logits, lm)
            result.targets.append(m7)
            say(f"5. Cortex-M7  QEMU mps2-an500: {_verdict(m7, tokens)} ({m7.seconds:.1f} s)")
            if m7.flash is not None:
                code = m7.flash - m.weight_bytes
                within = "within" if code <= FLASH_CODE_ALLOWANCE else "OVER"
                say(
                    f"   size       flash {m7.flash:,} bytes = constants {m.weight_bytes:,} + "
                    f"{code:,} code and data ({within} the 64 KB allowance); SRAM "
                    f"{m7.sram:,} bytes with the test harness's buffers"
                )
            if m7.instructions and m7.steps:
                per = m7.instructions / m7.steps
                say(
                    f"   speed      {per:,.0f} instructions per token (average of {m7.steps} "
                    f"steps at positions 0-{min(m7.steps, lm.context) - 1}, QEMU -icount) = "
                    f"{CLOCK_HZ / per:,.0f} tokens/s at 400 MHz if one instruction took one "
                    "cycle (no wait states or stalls; an estimate, not a measurement)"
                )
        else:
            from codegen.build import ARM_PACKAGES

            say(
                f"5. Cortex-M7  skipped: {', '.join(missing)} not found. Install with: "
                f"apt-get install {ARM_PACKAGES}"
            )
    finally:
        if not output:
            shutil.rmtree(work, ignore_errors=True)
    say("text:")
    for line in (prompt + result.text).splitlines() or [""]:
        say(f"   | {line}")
    say("OK: the generated C reproduces the reference" if result.ok else "FAILED: see above")
    return result


def _verdict(r: TargetResult, n: int) -> str:
    if r.equal:
        return f"{n} of {n} tokens identical to the reference, logits identical at every step"
    parts = []
    if not r.tokens_equal:
        parts.append("tokens DIFFER from the reference")
    if not r.logits_equal:
        parts.append("logits DIFFER from the reference")
    return ", ".join(parts)


def run(args: argparse.Namespace) -> int:
    result = run_demo(
        prompt=args.prompt, tokens=args.tokens, config=args.config, output=args.output
    )
    return 0 if result.ok else 1
