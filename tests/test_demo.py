"""``refq demo``: the main job end to end (quantize, reference, C, host, Cortex-M7 under QEMU)."""

from __future__ import annotations

import numpy as np
import pytest

import refq.demo as demo
from refq.cli import build_parser, main
from refq.models.tiny_lm import decode
from tests.conftest import require_tool


def test_demo_end_to_end(checked):
    for tool in ("make", "cc", "arm-none-eabi-gcc", "qemu-system-arm"):
        require_tool(tool)
    lines: list[str] = []
    result = demo.run_demo(echo=lines.append)
    report = "\n".join(lines)
    assert result.ok, report
    assert [t.target for t in result.targets] == ["host", "m7"]
    m7 = result.targets[1]
    assert m7.tokens_equal and m7.logits_equal
    assert m7.instructions and m7.steps == len(demo.DEFAULT_PROMPT) + demo.DEFAULT_TOKENS
    assert m7.flash <= result.weight_bytes + demo.FLASH_CODE_ALLOWANCE
    assert result.arena <= 1.05 * result.arena_lower_bound
    assert result.text == decode(result.tokens) and result.tokens.size == demo.DEFAULT_TOKENS
    for text in (
        "64 of 64 tokens identical to the reference, logits identical at every step",
        "instructions per token",
        "tokens/s at 400 MHz",
        "stm32h743: flash",
        "OK: the generated C reproduces the reference",
    ):
        assert text in report, text
    checked("refq demo: tiny LM C on host and Cortex-M7 vs IntegerLM", 2 * result.tokens.size)


def test_demo_without_the_arm_toolchain(monkeypatch):
    """Without arm-none-eabi-gcc / QEMU the demo says what to install and runs the host part."""
    require_tool("make")
    require_tool("cc")
    monkeypatch.setattr(demo, "missing_arm_tools", lambda: ["arm-none-eabi-gcc"])
    lines: list[str] = []
    result = demo.run_demo(tokens=12, echo=lines.append)
    report = "\n".join(lines)
    assert result.ok, report
    assert [t.target for t in result.targets] == ["host"]
    assert "apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm" in report


def test_demo_reports_a_mismatch(monkeypatch):
    """A reference that disagrees with the C makes the demo fail (exit status 1)."""
    require_tool("make")
    require_tool("cc")
    from codegen import lm

    right = lm.reference_generate

    def wrong(model, prompt, n):
        tokens, logits = right(model, prompt, n)
        return (tokens + 1) % 256, logits

    monkeypatch.setattr(demo, "missing_arm_tools", lambda: ["qemu-system-arm"])
    monkeypatch.setattr(lm, "reference_generate", wrong)
    lines: list[str] = []
    result = demo.run_demo(tokens=4, echo=lines.append)
    assert not result.ok
    assert not result.targets[0].tokens_equal and result.targets[0].logits_equal
    assert "tokens DIFFER" in "\n".join(lines) and lines[-1].startswith("FAILED")


def test_demo_command(capsys):
    """``refq demo`` is registered; bad options fail with a message naming them."""
    parser = build_parser()
    args = parser.parse_args(["demo"])
    assert args._module == "refq.demo"
    assert (args.prompt, args.tokens, args.config) == (
        demo.DEFAULT_PROMPT,
        demo.DEFAULT_TOKENS,
        demo.DEFAULT_CONFIG,
    )
    assert main(["demo", "--tokens", "0"]) == 1
    assert "--tokens 0" in capsys.readouterr().err
    assert main(["demo", "--prompt", ""]) == 1
    assert "--prompt is empty" in capsys.readouterr().err


class _CountingLM:
    """A stand-in for IntegerLM that counts the tokens refq.models.sampling.generate feeds."""

    def __init__(self, context: int) -> None:
        self.context, self.vocab_size, self.fed = context, 5, 0

    def reset(self) -> None:
        pass

    def step(self, tokens: np.ndarray, pos: int) -> np.ndarray:
        self.fed += int(np.asarray(tokens).size)
        return np.zeros((np.asarray(tokens).size, self.vocab_size), np.int8)


def test_step_count_matches_the_generation_rule():
    """The model invocations the demo divides the instructions by (lm.c's generate) equal the
    tokens refq.models.sampling.generate feeds: the prompt, one per new token (the last one
    included), re-encodes whenever the context is full."""
    from codegen.lm import reference_generate

    for length, n, context in ((7, 64, 128), (100, 64, 128), (128, 5, 128), (3, 20, 4)):
        model = _CountingLM(context)
        reference_generate(model, np.arange(length) % 5, n)
        assert demo._count_steps(length, n, context) == model.fed
    with pytest.raises(Exception, match="tokens"):
        demo.run_demo(tokens=1000, echo=lambda s: None)
