"""refq's cross-compiler: integer models to C99 for Cortex-M, and the machinery to run that C.

Modules: ``names`` (model names to safe C identifiers and literals), ``plan`` (static memory
plan of the tensor arena), ``emit`` (Jinja2 environment and the atomic output-tree writer),
``budget`` (flash / SRAM budgets of target chips), ``build`` (host gcc and arm-none-eabi-gcc
builds through firmware/Makefile) and ``run`` (host runs and QEMU Cortex-M runs with
instruction counts).
"""
