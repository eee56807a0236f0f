"""The ``ort-x86-u8s8`` profile against onnxruntime's real x86 AVX2 u8 x s8 kernel.

On a CPU without VNNI, onnxruntime's MLAS multiplies u8 x s8 with ``vpmaddubsw``, which
saturates each pair of products to int16 (peer-facts 3); refq's ``ort-x86-u8s8`` profile
(``int_matmul_u8s8_sat16``) reproduces that. Machines with VNNI (such as the one this project is
developed on) take an exact kernel instead, so the native tests in test_peer_ort_kernels.py can
only check whichever path the host takes. Here onnxruntime itself runs under QEMU user-mode
emulation (``qemu-x86_64``, Debian ``qemu-user`` >= 7.2) with a Haswell CPU model: AVX2 and no
AVX-512 / VNNI, so MLAS dispatches to the saturating kernel whatever the host. The models and
refq's results are built natively; only onnxruntime runs emulated, all models in one process.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from onnx import helper

from refq.graph import Program
from refq.intmatmul import int_matmul, int_matmul_u8s8_sat16
from refq.kernels.fully_connected import fc_accumulators
from tests.conftest import require_module, require_tool
from tests.test_peer_ort_kernels import (
    draw,
    fc_graph,
    matmul_integer_model,
    model,
    qlinear_model,
)

# Haswell without the features QEMU's TCG cannot emulate (the plain model prints warnings).
CPU = "Haswell-noTSX,-pcid,-x2apic,-tsc-deadline,-invpcid"
RUNNER = Path(__file__).with_name("ort_under_qemu.py")


def run_emulated(models: list, tmp: Path) -> tuple[list[list[np.ndarray]], set[str]]:
    """Outputs of each (ModelProto, feeds) in onnxruntime under qemu-x86_64 -cpu CPU."""
    qemu = require_tool("qemu-x86_64")
    require_module("onnxruntime")
    data: dict[str, np.ndarray] = {}
    for i, (m, feeds) in enumerate(models):
        data[f"{i}:model"] = np.frombuffer(m.SerializeToString(), np.uint8)
        data.update({f"{i}:in:{k}": np.asarray(v) for k, v in feeds.items()})
    src, dst = tmp / "in.npz", tmp / "out.npz"
    np.savez(src, **data)
    cmd = [qemu, "-cpu", CPU, sys.executable, str(RUNNER), str(src), str(dst)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, f"{' '.join(cmd)} failed:\n{r.stderr}"
    with np.load(dst, allow_pickle=False) as o:
        n_out = [sum(k.startswith(f"{i}:out:") for k in o.files) for i in range(len(models))]
        outs = [[o[f"{i}:out:{j}"] for j in range(n)] for i, n in enumerate(n_out)]
        return outs, set(o["cpu_features"].tolist())


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """One emulated onnxruntime run: a probe, 80 QLinearMatMul and 60 MatMulInteger u8 x s8
    models (the native tests' generators and seeds, so the same cases on the other path)."""
    rng = np.random.default_rng(5)
    pa = rng.integers(0, 256, (16, 256)).astype(np.uint8)
    pb = rng.integers(-128, 128, (256, 16)).astype(np.int8)
    probe = model(
        [helper.make_node("MatMulInteger", ["a", "b"], ["y"])],
        {"a": ("uint8", [16, 256])},
        {"b": pb},
        {"y": ("int32", [16, 16])},
    )
    models, cases = [(probe, {"a": pa})], [("probe", pa, pb, None)]
    rng = np.random.default_rng(91)
    for i in range(80):
        a, b, q = draw(rng, "uint8", "int8", per_column=i % 2 == 1)
        models.append((qlinear_model(a, b, q, "uint8"), {"a": a}))
        cases.append(("QLinearMatMul", a, b, q))
    rng = np.random.default_rng(103)
    for i in range(60):
        a, b, q = draw(rng, "uint8", "int8", per_column=i % 2 == 1)
        models.append((matmul_integer_model(a, b, q, "uint8"), {"a": a}))
        cases.append(("MatMulInteger", a, b, q))
    outs, features = run_emulated(models, tmp_path_factory.mktemp("ort_qemu"))
    return cases, [o[0] for o in outs], features


def test_emulated_cpu_is_avx2_without_vnni(emulated) -> None:
    _, _, features = emulated
    assert "AVX2" in features
    assert not {f for f in features if f.startswith("AVX512") or "VNNI" in f}, features


def test_emulated_onnxruntime_saturates(emulated, checked) -> None:
    """The probe: full-range u8 x s8 data, where the exact and saturating products differ."""
    (_, a, b, _), *_ = emulated[0]
    y = emulated[1][0]
    sat, exact = int_matmul_u8s8_sat16(a, b), int_matmul(a, b)
    assert not np.array_equal(sat, exact)
    assert np.array_equal(y, sat), f"{np.count_nonzero(y != sat)} of {y.size} differ from sat16"
    checked("emulated ORT (AVX2) u8s8 MatMulInteger probe == int_matmul_u8s8_sat16", 1, y.size)


@pytest.mark.parametrize("op", ["QLinearMatMul", "MatMulInteger"])
def test_ort_x86_u8s8_profile_matches_emulated_onnxruntime(emulated, op, checked) -> None:
    configs = elements = differ_exact = 0
    for (kind, a, b, q), want in zip(*emulated[:2], strict=True):
        if kind != op:
            continue
        g = fc_graph(a, b, q, "uint8", "int8")
        if op == "QLinearMatMul":
            got, exact = (Program(g, p).run([a])[0] for p in ("ort-x86-u8s8", "onnx"))
        else:
            want = want.astype(np.int64)
            got, exact = (
                fc_accumulators(a, Program(g, p).steps[0][2]) for p in ("ort-x86-u8s8", "onnx")
            )
        assert np.array_equal(got, want), (
            f"{op} case {configs}: {np.count_nonzero(got != want)} differ"
        )
        configs += 1
        elements += want.size
        differ_exact += int(np.count_nonzero(exact != want))
    assert differ_exact > 0, "the cases never reach the saturating range: the test could not fail"
    checked(
        f"emulated ORT (AVX2) u8s8 {op} == ort-x86-u8s8 (exact onnx profile differs on "
        f"{differ_exact} elements)",
        configs,
        elements,
    )
