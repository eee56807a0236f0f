"""``refq run MODEL.tflite --input x.npy [--input y.npy] [--profile tflm] -o y.npy``

Golden outputs of an integer .tflite model. Inputs are .npy files (one per model input, in
order) or one .npz holding every input under its tensor name (or ``arr_0``, ``arr_1``... in
order, as ``numpy.savez`` names positional arrays). Outputs go to one .npy per model output
(``-o`` repeated) or to a single .npz keyed by output tensor name; without ``-o`` they are
printed. Files are written atomically. Bad input (missing files, wrong dtype or shape,
unsupported ops, malformed models) exits with status 1 and a message naming what is wrong.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping

import numpy as np

from refq.atomicfile import write_atomic
from refq.errors import InvalidDataError, ShapeError
from refq.graph import Graph


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from refq.profiles import PROFILES

    parser.description = (
        "Golden outputs of an integer .tflite model: what the profile's runtime (tflm: the "
        "TFLite Micro reference kernels) computes on the same bytes."
    )
    parser.add_argument("model", help="the .tflite model file")
    parser.add_argument(
        "-i",
        "--input",
        action="append",
        default=[],
        metavar="FILE",
        help=".npy file per model input, in order; or one .npz with the inputs by tensor name",
    )
    parser.add_argument(
        "--profile",
        default="tflm",
        help=f"arithmetic profile, one of {', '.join(PROFILES)} (default: tflm)",
    )
    parser.add_argument(
        "-o",
        "--output",
        action="append",
        default=[],
        metavar="FILE",
        help=".npy file per model output, in order; or one .npz for all outputs",
    )
    parser.add_argument(
        "--info", action="store_true", help="print the model's inputs, outputs and ops, then exit"
    )


def run(args: argparse.Namespace) -> int:
    from refq.profiles import get_profile
    from refq.tflite.run import load_tflite, prepare_tflite

    profile = get_profile(args.profile)
    graph = load_tflite(args.model)
    if args.info:
        print(describe(graph))
        return 0
    prog = prepare_tflite(graph, profile)
    inputs = load_inputs(args.input, graph)
    outputs = prog.run(inputs)
    if args.output:
        save_outputs(args.output, graph, outputs)
    else:
        for name, value in zip(graph.outputs, outputs, strict=True):
            print(f"{name}: {value.dtype} {value.shape}")
            print(np.array2string(value, threshold=200))
    return 0


def _signature(graph: Graph, names: list[str]) -> str:
    return ", ".join(
        f"{n!r} {graph.tensors[n].dtype} {tuple(graph.tensors[n].shape)}" for n in names
    )


def describe(graph: Graph) -> str:
    """Inputs, outputs and operators of a loaded model, one line each."""
    lines = [f"model {graph.name!r}"]
    lines += [f"input  {_signature(graph, [n])}" for n in graph.inputs]
    lines += [f"output {_signature(graph, [n])}" for n in graph.outputs]
    for node in graph.nodes:
        ins = ", ".join("-" if i is None else i for i in node.inputs)
        lines.append(
            f"op     {node.op} ({node.name}): {ins} -> {', '.join(node.outputs)}"
            + (f" {node.attrs}" if node.attrs else "")
        )
    return "\n".join(lines)


def _load(path: str) -> np.ndarray | Mapping[str, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except OSError as exc:
        raise InvalidDataError(f"cannot read input file {path!r}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise InvalidDataError(
            f"input file {path!r} is not a .npy / .npz array file: {exc}"
        ) from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            return {k: loaded[k] for k in loaded.files}
    return loaded


def load_inputs(paths: list[str], graph: Graph) -> list[np.ndarray]:
    """The model's inputs, in order, from .npy files or one .npz (see the module docstring)."""
    want = len(graph.inputs)
    loaded = [_load(p) for p in paths]
    if len(loaded) == 1 and isinstance(loaded[0], Mapping):
        arrays = loaded[0]
        if all(n in arrays for n in graph.inputs):
            chosen = [arrays[n] for n in graph.inputs]
        elif sorted(arrays) == sorted(f"arr_{i}" for i in range(want)):
            chosen = [arrays[f"arr_{i}"] for i in range(want)]
        else:
            raise ShapeError(
                f"{paths[0]!r} holds {sorted(arrays)}; the model's inputs are "
                f"{_signature(graph, graph.inputs)}"
            )
    else:
        if any(isinstance(x, Mapping) for x in loaded):
            raise InvalidDataError("give either one .npz with all inputs or one .npy per input")
        chosen = list(loaded)  # type: ignore[arg-type]
        if len(chosen) != want:
            raise ShapeError(
                f"the model takes {want} input(s): {_signature(graph, graph.inputs)}; "
                f"got {len(chosen)} file(s)"
            )
    sources = paths if len(paths) == want else paths[:1] * want
    for name, value, src in zip(graph.inputs, chosen, sources, strict=True):
        info = graph.tensors[name]
        if value.dtype != info.np_dtype or tuple(value.shape) != tuple(info.shape):
            raise ShapeError(
                f"input {name!r} must be {info.dtype} {tuple(info.shape)}, "
                f"got {value.dtype} {tuple(value.shape)} from {src!r} "
                "(quantize float data first, e.g. with refq.quantize)"
            )
    return chosen


def save_outputs(paths: list[str], graph: Graph, outputs: list[np.ndarray]) -> None:
    """One .npy per output, or a single .npz keyed by output tensor name; atomic writes."""
    if len(paths) == 1 and paths[0].endswith(".npz"):
        _atomic(paths[0], lambda f: np.savez(f, **dict(zip(graph.outputs, outputs, strict=True))))
        return
    if len(paths) != len(outputs):
        raise ShapeError(
            f"the model has {len(outputs)} output(s) ({', '.join(map(repr, graph.outputs))}); "
            f"give as many -o .npy files or one .npz, got {len(paths)}"
        )
    for path, value in zip(paths, outputs, strict=True):
        _atomic(path, lambda f, v=value: np.save(f, v))


def _atomic(path: str, write) -> None:
    try:
        write_atomic(os.path.abspath(path), write)
    except OSError as exc:
        raise InvalidDataError(f"cannot write output {path!r}: {exc.strerror or exc}") from None


if __name__ == "__main__":  # pragma: no cover
    from refq.cli import main

    sys.exit(main(["run", *sys.argv[1:]]))
