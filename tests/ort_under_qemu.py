"""Run ONNX models in onnxruntime (CPU, one thread) and save their outputs: the half of
tests/test_peer_ort_emulated.py that runs inside ``qemu-x86_64`` with a CPU model lacking VNNI.

    qemu-x86_64 -cpu MODEL PYTHON tests/ort_under_qemu.py in.npz out.npz

in.npz (no pickles): ``<i>:model`` (uint8, the serialized ModelProto of model i) and
``<i>:in:<name>`` (its feeds). out.npz: ``<i>:out:<j>`` (output j of model i),
``cpu_features`` (what NumPy's CPU dispatch sees, so the caller can check the emulated CPU)
and ``ort_version``. One process for all models: start-up under emulation costs ~1.6 s.
"""

from __future__ import annotations

import sys
from collections import defaultdict

import numpy as np
import onnxruntime as ort
from numpy._core._multiarray_umath import __cpu_features__


def main(src: str, dst: str) -> None:
    models: dict[int, bytes] = {}
    feeds: dict[int, dict[str, np.ndarray]] = defaultdict(dict)
    with np.load(src, allow_pickle=False) as d:
        for key in d.files:
            i, kind, *name = key.split(":", 2)
            if kind == "model":
                models[int(i)] = d[key].tobytes()
            else:
                feeds[int(i)][name[0]] = d[key]
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    out: dict[str, np.ndarray] = {}
    for i in sorted(models):
        sess = ort.InferenceSession(models[i], opts, providers=["CPUExecutionProvider"])
        for j, y in enumerate(sess.run(None, feeds[i])):
            out[f"{i}:out:{j}"] = np.asarray(y)
    out["cpu_features"] = np.asarray(sorted(k for k, v in __cpu_features__.items() if v))
    out["ort_version"] = np.asarray(ort.__version__)
    np.savez(dst, **out)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: ort_under_qemu.py in.npz out.npz")
    main(sys.argv[1], sys.argv[2])
