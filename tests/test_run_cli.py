"""``refq run``: golden outputs of a .tflite model from the command line.

Outputs are compared with the tflite-micro interpreter on the same files (not with refq's own
API); errors must exit with status 1 and a message naming what is wrong.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from refq.cli import main
from tests.conftest import require_module
from tests.peers import run_tflm
from tests.tflite_models import available_kinds, bmm_graph, chain_graph, fc_graph, random_inputs


@pytest.fixture(autouse=True)
def _needs_schema():
    require_module("tflite_micro.tensorflow.lite.micro.python.schema_py_generated")


def tflm(model: bytes, inputs, n_outputs: int) -> list[np.ndarray]:
    return run_tflm(model, inputs, n_outputs, arena_size=1 << 21)


def _need(kind: str) -> None:
    assert kind in available_kinds(), f"kernels for {kind!r} graphs are not registered"


def _model(tmp_path, builder, seed: int, name: str = "m.tflite"):
    from refq.tflite.writer import write_tflite

    rng = np.random.default_rng(seed)
    while True:
        g = builder(rng)
        if all(t.dtype != "int4" for t in g.tensors.values()):
            break
    data = write_tflite(g)
    path = tmp_path / name
    path.write_bytes(data)
    return g, data, path, random_inputs(g, rng)


def run_cli(*args: object) -> int:
    return main(["run", *(str(a) for a in args)])


@pytest.mark.peer("tflite-micro")
def test_npy_in_npy_out(tmp_path):
    _need("fc")
    _, data, path, (x,) = _model(tmp_path, fc_graph, 1)
    np.save(tmp_path / "x.npy", x)
    assert run_cli(path, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy") == 0
    y = np.load(tmp_path / "y.npy")
    want = tflm(data, [x], 1)[0]
    assert y.dtype == want.dtype and np.array_equal(y, want)
    assert not list(tmp_path.glob(".refq-*"))  # no temp files left behind


@pytest.mark.peer("tflite-micro")
def test_two_inputs_npz_and_several_outputs(tmp_path):
    _need("bmm")
    _, data, path, (a, b) = _model(tmp_path, bmm_graph, 2)
    want = tflm(data, [a, b], 1)[0]
    # .npy per input, in order
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    assert (
        run_cli(path, "-i", tmp_path / "a.npy", "-i", tmp_path / "b.npy", "-o", tmp_path / "y.npz")
        == 0
    )
    with np.load(tmp_path / "y.npz") as z:
        assert list(z.files) == ["y"] and np.array_equal(z["y"], want)
    # one .npz keyed by input tensor names, and one keyed positionally (numpy.savez(*arrays))
    np.savez(tmp_path / "named.npz", b=b, a=a)
    np.savez(tmp_path / "positional.npz", a, b)
    for src in ("named.npz", "positional.npz"):
        assert run_cli(path, "--input", tmp_path / src, "-o", tmp_path / "y2.npy") == 0
        assert np.array_equal(np.load(tmp_path / "y2.npy"), want)


@pytest.mark.peer("tflite-micro")
def test_float_model_and_print(tmp_path, capsys):
    _need("chain")
    _, data, path, (x,) = _model(tmp_path, chain_graph, 3)
    np.save(tmp_path / "x.npy", x)
    assert run_cli(path, "--input", tmp_path / "x.npy") == 0
    out = capsys.readouterr().out
    want = tflm(data, [x], 1)[0]
    assert out.startswith(f"y: float32 {want.shape}")
    assert run_cli(path, "--input", tmp_path / "x.npy", "-o", tmp_path / "y.npy") == 0
    y = np.load(tmp_path / "y.npy")
    assert y.dtype == np.float32 and np.array_equal(y.view(np.uint32), want.view(np.uint32))
    assert run_cli(path, "--info") == 0
    info = capsys.readouterr().out
    assert "input  'x' float32" in info and "QUANTIZE" in info and "FULLY_CONNECTED" in info


def _error(capsys, *args) -> str:
    assert run_cli(*args) == 1
    err = capsys.readouterr().err
    assert err.startswith("refq run: error: ")
    return err


def test_errors_exit_1_with_a_message(tmp_path, capsys):
    _need("fc")
    _, data, path, (x,) = _model(tmp_path, fc_graph, 4)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "x64.npy", x.astype(np.float64))
    np.save(tmp_path / "short.npy", x[..., :-1])
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    (tmp_path / "trunc.tflite").write_bytes(data[: len(data) // 2])
    x_in = ("--input", tmp_path / "x.npy")

    assert "missing.tflite" in _error(capsys, tmp_path / "missing.tflite", *x_in)
    assert "malformed" in _error(capsys, tmp_path / "trunc.tflite", *x_in)
    assert "nope.npy" in _error(capsys, path, "--input", tmp_path / "nope.npy")
    assert "junk.npy" in _error(capsys, path, "--input", tmp_path / "junk.npy")
    err = _error(capsys, path, "--input", tmp_path / "x64.npy")
    assert "'x' must be int8" in err and "float64" in err
    err = _error(capsys, path, "--input", tmp_path / "short.npy")
    assert f"'x' must be int8 {x.shape}, got int8 {x[..., :-1].shape}" in err
    err = _error(capsys, path)
    assert "takes 1 input(s)" in err and "got 0" in err
    err = _error(capsys, path, *x_in, *x_in)
    assert "got 2 file(s)" in err
    err = _error(capsys, path, *x_in, "-o", tmp_path / "a.npy", "-o", tmp_path / "b.npy")
    assert "1 output(s)" in err and "got 2" in err
    assert "unknown profile 'nope'" in _error(capsys, path, *x_in, "--profile", "nope")
    assert not (tmp_path / "a.npy").exists()
    np.savez(tmp_path / "wrong.npz", q=x)
    assert "holds ['q']" in _error(capsys, path, "--input", tmp_path / "wrong.npz")
    err = _error(capsys, path, *x_in, "-o", tmp_path / "no" / "dir" / "y.npy")
    assert "cannot write output" in err


def test_unsupported_op_error(tmp_path, capsys):
    from refq.tflite.schema import model_editor, schema

    s, me = schema(), model_editor()
    sg = me.Subgraph()
    q = me.Quantization(0.5, 0)
    x = sg.add_tensor(shape=(1, 4), dtype=s.TensorType.INT8, quantization=q, name="x")
    y = sg.add_tensor(shape=(1, 4), dtype=s.TensorType.INT8, quantization=q, name="y")
    sg.add_operator(opcode=s.BuiltinOperator.CONV_2D, inputs=[x], outputs=[y])
    sg.inputs, sg.outputs = [x], [y]
    (tmp_path / "conv.tflite").write_bytes(bytes(me.Model(subgraphs=[sg]).build()))
    np.save(tmp_path / "x.npy", np.zeros((1, 4), np.int8))
    err = _error(capsys, tmp_path / "conv.tflite", "--input", tmp_path / "x.npy")
    assert "operator 0 is CONV_2D" in err


def test_console_entry_point(tmp_path):
    """``python -m refq.cli run`` in a fresh process: exit status and stderr."""
    _need("fc")
    _, _, path, (x,) = _model(tmp_path, fc_graph, 5)
    np.save(tmp_path / "x.npy", x.astype(np.int16))
    proc = subprocess.run(
        [sys.executable, "-m", "refq.cli", "run", str(path), "--input", str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    assert "refq run: error: input 'x' must be int8" in proc.stderr
