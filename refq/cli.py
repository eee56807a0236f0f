"""The ``refq`` command.

Each subcommand lives in its own module, which exposes ``add_arguments(parser)`` and
``run(args) -> int``. Command modules import optional extras inside ``run`` only, so a missing
extra affects just the command that needs it (and names the pip extra to install).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from refq import __version__
from refq.errors import RefqError

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "conformance": ("refq.onnx.conformance", "ONNX node conformance and property self-checks"),
    "train-tiny": ("refq.models.train_cmd", "train the tiny byte-level Shakespeare LM (NumPy)"),
    "run": ("refq.tflite.run_cmd", "golden outputs of an integer .tflite model under a profile"),
    "quantize": ("refq.ptq.quantize_cmd", "post-training quantization of a model to a .refq file"),
    "codegen": ("codegen.generate_cmd", "C99 sources of an integer .tflite model for Cortex-M"),
    "eval": ("refq.evaluation.eval_cmd", "perplexity / agreement / embedding cosine of models"),
    "generate": ("refq.evaluation.generate_cmd", "generate text with the integer engine"),
    "demo": ("refq.demo", "the main job: tiny LM -> integer model -> C99 -> Cortex-M7, checked"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="refq", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"refq {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except RefqError as exc:
        print(f"refq {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
