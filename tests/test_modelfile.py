"""refq's model file: round trip, atomic save, and every failure (hash, truncation, corrupt
manifest, missing / extra tensors, unknown architecture or profile)."""

from __future__ import annotations

import hashlib
import json
import os
import struct

import numpy as np
import pytest

from refq.errors import IntegrityError, ModelFormatError, UnsupportedError
from refq.models import modelfile
from refq.models.config import LlamaConfig, init_llama_weights

CFG = LlamaConfig(
    vocab_size=20, dim=8, n_layers=1, n_heads=2, n_kv_heads=1, ffn_dim=12, max_seq_len=16
)


def header(path) -> tuple[dict, int]:
    raw = path.read_bytes()
    n = struct.unpack("<Q", raw[8:16])[0]
    return json.loads(raw[16 : 16 + n]), 16 + n


def test_roundtrip_float_model_and_manifest_contents(tmp_path):
    w = init_llama_weights(CFG, seed=1)
    p = modelfile.save(tmp_path / "m.refq", CFG, w, profile="tflm", metadata={"note": "x"})
    mf = modelfile.load(p)
    assert mf.config == CFG and mf.profile == "tflm" and mf.metadata == {"note": "x"}
    assert list(mf.tensors) == list(w)
    for n in w:
        np.testing.assert_array_equal(mf.tensors[n], w[n])
        assert mf.tensors[n].dtype == np.float32
    manifest, start = header(p)
    assert start % modelfile.ALIGN == 0
    from refq import __version__

    assert manifest["refq_version"] == __version__
    assert manifest["architecture"]["arch"] == "llama"
    raw = p.read_bytes()
    for n, e in manifest["tensors"].items():
        assert e["offset"] % modelfile.ALIGN == 0
        blob = raw[start + e["offset"] : start + e["offset"] + e["nbytes"]]
        assert (
            hashlib.sha256(blob).hexdigest()
            == e["sha256"]
            == hashlib.sha256(w[n].tobytes()).hexdigest()
        )
        assert e["dtype"] == "<f4" and e["shape"] == list(w[n].shape)


def test_quantized_tensors_and_expected_names(tmp_path):
    rng = np.random.default_rng(0)
    t = {
        "layers.0.attn.wq": rng.integers(-128, 128, (8, 8)).astype(np.int8),
        "layers.0.attn.wq.scale": rng.random(8).astype(np.float32),
        "bias": rng.integers(-(2**31), 2**31 - 1, 8).astype(np.int32),
        "packed": rng.integers(0, 256, 5).astype(np.uint8),
        "big_endian": np.arange(4, dtype=">i2"),
        "empty": np.zeros((0, 3), np.int16),
    }
    q = {"layers.0.attn.wq": {"dtype": "int8", "granularity": "per-channel", "axis": 0}}
    p = modelfile.save(tmp_path / "q.refq", CFG, t, quantization=q, profile="cmsis-nn")
    mf = modelfile.load(p, expected=list(t))
    assert mf.quantization == q
    for n, a in t.items():
        assert np.array_equal(mf.tensors[n], a) and mf.tensors[n].shape == a.shape
    assert mf.tensors["big_endian"].dtype == np.dtype("<i2")
    with pytest.raises(ModelFormatError, match="missing tensors"):
        modelfile.load(p, expected=[*t, "layers.0.attn.wk"])
    with pytest.raises(ModelFormatError, match="unexpected tensors"):
        modelfile.load(p, expected=list(t)[1:])


def test_hash_mismatch_names_the_tensor(tmp_path):
    w = init_llama_weights(CFG, seed=2)
    p = modelfile.save(tmp_path / "m.refq", CFG, w)
    manifest, start = header(p)
    e = manifest["tensors"]["layers.0.ffn.w3"]
    raw = bytearray(p.read_bytes())
    raw[start + e["offset"] + 5] ^= 0x01  # one flipped bit
    p.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match=r"layers\.0\.ffn\.w3"):
        modelfile.load(p)
    mf = modelfile.load(p, verify=False)
    assert not np.array_equal(mf.tensors["layers.0.ffn.w3"], w["layers.0.ffn.w3"])


def test_truncated_corrupt_and_trailing(tmp_path):
    w = init_llama_weights(CFG, seed=3)
    p = modelfile.save(tmp_path / "m.refq", CFG, w)
    raw = p.read_bytes()
    for cut in (0, 10, 40, len(raw) // 2, len(raw) - 1):
        bad = tmp_path / f"cut{cut}.refq"
        bad.write_bytes(raw[:cut])
        with pytest.raises(ModelFormatError):
            modelfile.load(bad)
    (tmp_path / "trail.refq").write_bytes(raw + b"\0")
    with pytest.raises(ModelFormatError, match="trailing"):
        modelfile.load(tmp_path / "trail.refq")
    (tmp_path / "magic.refq").write_bytes(b"NOTREFQ" + raw[7:])
    with pytest.raises(ModelFormatError, match="magic"):
        modelfile.load(tmp_path / "magic.refq")
    (tmp_path / "ver.refq").write_bytes(raw[:7] + b"\x09" + raw[8:])
    with pytest.raises(ModelFormatError, match="version"):
        modelfile.load(tmp_path / "ver.refq")
    bad_json = bytearray(raw)
    bad_json[16] = ord("]")
    (tmp_path / "json.refq").write_bytes(bytes(bad_json))
    with pytest.raises(ModelFormatError, match="JSON"):
        modelfile.load(tmp_path / "json.refq")
    with pytest.raises(ModelFormatError, match="no such"):
        modelfile.load(tmp_path / "absent.refq")


def rewrite_manifest(p, edit) -> None:
    """Re-encode the manifest in place (same length, padded with spaces) after ``edit``."""
    raw = p.read_bytes()
    n = struct.unpack("<Q", raw[8:16])[0]
    m = json.loads(raw[16 : 16 + n])
    edit(m)
    text = json.dumps(m).encode()
    assert len(text) <= n
    p.write_bytes(raw[:16] + text + b" " * (n - len(text)) + raw[16 + n :])


def test_manifest_inconsistencies(tmp_path):
    w = init_llama_weights(CFG, seed=4)
    base = modelfile.save(tmp_path / "base.refq", CFG, w).read_bytes()

    def case(name, edit, exc=ModelFormatError, match=None):
        p = tmp_path / f"{name}.refq"
        p.write_bytes(base)
        rewrite_manifest(p, edit)
        with pytest.raises(exc, match=match):
            modelfile.load(p)

    case(
        "missing",
        lambda m: m["tensors"].pop("layers.0.attn.wk"),
        match=r"missing tensors.*attn\.wk",
    )
    case("extra", lambda m: m["tensors"].__setitem__("zz", dict(m["tensors"]["norm"])), match="zz")
    case("arch", lambda m: m["architecture"].__setitem__("arch", "rwkv"), match="rwkv")
    case("shape", lambda m: m["tensors"]["norm"].__setitem__("shape", [9]), match="norm")
    case("dtype", lambda m: m["tensors"]["norm"].__setitem__("dtype", "object"), match="norm")
    case("offset", lambda m: m["tensors"]["norm"].__setitem__("offset", 10**9), match="outside")
    case("nokey", lambda m: m.pop("tensors"), match="tensors")
    case("size", lambda m: m.__setitem__("data_bytes", m["data_bytes"] + 64), match="truncated")


def test_save_is_atomic_and_validates(tmp_path, monkeypatch):
    w = init_llama_weights(CFG, seed=5)
    p = modelfile.save(tmp_path / "m.refq", CFG, w)
    before = p.read_bytes()
    with pytest.raises(UnsupportedError, match="no-such-profile"):
        modelfile.save(p, CFG, w, profile="no-such-profile")
    with pytest.raises(ModelFormatError, match="complex"):
        modelfile.save(p, CFG, {"complex": np.zeros(2, np.complex64)})
    with pytest.raises(ModelFormatError, match="JSON"):
        modelfile.save(p, CFG, w, quantization={"x": object()})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        modelfile.save(p, CFG, {n: a + 1 for n, a in w.items()})
    assert p.read_bytes() == before  # the old file is intact
    assert [f.name for f in tmp_path.iterdir()] == ["m.refq"]  # no temp file left behind
