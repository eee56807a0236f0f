"""``refq codegen MODEL.tflite -o OUT_DIR [--profile tflm] [--budget stm32h743] [--force]``

Generates the C99 sources of an integer .tflite model (codegen.generate): model.h / model.c /
weights.c and the kernels it uses, byte-identical to ``refq run`` under the same profile.
Prints the memory plan and the flash / SRAM estimate against the target's budget. Refuses to
replace a directory refq did not generate unless ``--force``; the tree is written atomically.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from codegen.budget import BUDGETS
    from refq.profiles import PROFILES

    parser.description = (
        "Generate the C99 sources (CMSIS-NN style kernels, static memory plan) of an integer "
        ".tflite model for Cortex-M microcontrollers."
    )
    parser.add_argument("model", help="the .tflite model file")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="output directory")
    parser.add_argument(
        "--profile",
        default="tflm",
        help=f"arithmetic profile, one of {', '.join(PROFILES)} (default: tflm)",
    )
    parser.add_argument(
        "--budget",
        default="stm32h743",
        help=f"target chip budget, one of {', '.join(BUDGETS)} (default: stm32h743)",
    )
    parser.add_argument("--flash", type=int, metavar="BYTES", help="custom flash budget")
    parser.add_argument("--sram", type=int, metavar="BYTES", help="custom SRAM budget")
    parser.add_argument(
        "--api",
        default="refq_model",
        metavar="PREFIX",
        help="prefix of the generated API (default: refq_model -> refq_model_invoke)",
    )
    parser.add_argument(
        "--harness",
        action="store_true",
        help="also write harness_entry.c for firmware/harness.c (host and QEMU test runs)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an existing output directory that refq did not generate",
    )


def run(args: argparse.Namespace) -> int:
    from codegen.budget import Budget, get_budget
    from codegen.generate import generate
    from refq.errors import BudgetError
    from refq.tflite.run import load_tflite

    budget = get_budget(args.budget)
    if args.flash is not None or args.sram is not None:
        if args.flash is None or args.sram is None:
            raise BudgetError("--flash and --sram go together")
        budget = Budget("custom", args.flash, args.sram)
    graph = load_tflite(args.model)
    result = generate(
        graph,
        args.output,
        profile=args.profile,
        target_budget=budget,
        force=args.force,
        api=args.api,
        harness=args.harness,
    )
    print(f"wrote {args.output}")
    print(result.report())
    return 0
