"""``refq eval`` / ``refq generate`` end to end on the tiny LM (and on small GGUF / BERT files
written here), and their errors: unknown architectures, missing extras, corrupt / truncated
files, hash mismatches, wrong arguments."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from refq.cli import main
from refq.evaluation.agreement import top1_agreement
from refq.models import tiny_lm
from refq.ptq.model import load_quantized
from tests.conftest import require_module

QUANT = ["--windows", "2", "--no-progress"]


@pytest.fixture(scope="module")
def tiny_refq(tmp_path_factory):
    """The tiny LM quantized W8A8 by ``refq quantize`` (2 calibration windows)."""
    path = tmp_path_factory.mktemp("tiny") / "tiny-w8a8.refq"
    assert main(["quantize", "tiny", "--config", "w8a8", "-o", str(path), *QUANT]) == 0
    return path


def run_cli(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_eval_tiny_float_sim_int(tmp_path, tiny_refq, capsys, checked):
    out_json = tmp_path / "r.json"
    argv = ["eval", str(tiny_refq), "--windows", "2", "--agree", "48", "--prompt-tokens", "100",
            "--json", str(out_json), "--no-progress"]  # fmt: skip
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    rec = json.loads(out_json.read_text())
    assert rec["model"] == "tiny" and rec["command"].startswith("refq eval ")
    assert rec["command"] in out
    (q,) = rec["quantized"]
    fl = rec["float"]["perplexity"]
    for engine in ("sim", "int"):
        ppl = q[engine]["perplexity"]
        assert ppl["windows"] == 2 and ppl["predictions"] == fl["predictions"] == 2 * 127
        assert q[engine]["agreement"]["total"] == 48
        assert 1.0 < ppl["perplexity"] < 1.5 * fl["perplexity"]
    assert q["file_bytes"] == tiny_refq.stat().st_size
    assert q["file_bytes"] < rec["float"]["size_bytes"] / 3
    # The float greedy text in the record is what the float model generates (prompt 100 bytes
    # + 48 > 128: the window is re-encoded once).
    from refq.models.sampling import llama_generate

    cfg, w = tiny_lm.load_tiny_lm()
    prompt = tiny_lm.corpus("heldout")[:100].astype(np.int64)
    assert rec["setup"]["agreement"]["float_greedy_text"] == tiny_lm.decode(
        llama_generate(w, cfg, prompt, 48)
    )
    checked("refq eval tiny: perplexity windows x engines", 2 * 3, 3 * 2 * 127)


def test_integer_engine_agrees_with_its_own_greedy_decoding(tiny_refq, checked):
    """Teacher-forced prefill segments reproduce decode-with-cache bit for bit: the integer
    model's own greedy tokens (with one context re-encoding) agree 100%, ties included."""
    qm = load_quantized(tiny_refq)
    runner = qm.runner(128)
    prompt = tiny_lm.corpus("heldout")[200:300].astype(np.int64)
    greedy = runner.generate(prompt, 60)
    res = top1_agreement(runner.prefill, prompt, greedy, 128)
    assert (res.matches, res.total, res.first_mismatch) == (60, 60, 60)
    checked("integer greedy decode vs teacher-forced prefill", 1, 60)


def test_generate_prints_the_integer_engine_text(tiny_refq, capsys):
    code, out, err = run_cli(["generate", str(tiny_refq), "--prompt", "ROMEO:\n", "-n", "40"],
                             capsys)  # fmt: skip
    assert code == 0, err
    runner = load_quantized(tiny_refq).runner(128)
    want = runner.generate(tiny_lm.encode("ROMEO:\n"), 40)
    assert out == "ROMEO:\n" + tiny_lm.decode(want) + "\n"
    assert "tokens/s" in err


def test_generate_with_config_quantizes_first(capsys):
    code, out, err = run_cli(
        ["generate", "tiny", "--config", "w8a8", "--prompt", "KING:", "-n", "5", "--no-progress"],
        capsys,
    )
    assert code == 0, err
    assert out.startswith("KING:") and len(out.encode()) >= len("KING:") + 1


# --- errors ----------------------------------------------------------------------------------


def _corrupt(src, dst, at: int) -> None:
    data = bytearray(src.read_bytes())
    data[at] ^= 0x01
    dst.write_bytes(bytes(data))


@pytest.mark.parametrize("command", ["eval", "generate"])
def test_hash_mismatch_names_the_tensor(tiny_refq, tmp_path, capsys, command):
    bad = tmp_path / "bad.refq"
    _corrupt(tiny_refq, bad, tiny_refq.stat().st_size - 3)
    argv = ["eval", "tiny", "-q", str(bad)] if command == "eval" else [
        "generate", str(bad), "--prompt", "A"]  # fmt: skip
    code, _, err = run_cli(argv, capsys)
    assert code == 1
    assert "SHA-256" in err and "tensor '" in err and str(bad) in err


def test_truncated_and_garbage_files(tiny_refq, tmp_path, capsys):
    cut = tmp_path / "cut.refq"
    cut.write_bytes(tiny_refq.read_bytes()[:-100])
    code, _, err = run_cli(["eval", "tiny", "-q", str(cut)], capsys)
    assert code == 1 and "truncated" in err
    junk = tmp_path / "junk.refq"
    junk.write_bytes(b"not a model at all")
    code, _, err = run_cli(["generate", str(junk), "--prompt", "A"], capsys)
    assert code == 1 and str(junk) in err


def test_unknown_architecture_in_a_model_file(tiny_refq, tmp_path, capsys):
    raw = tiny_refq.read_bytes()
    assert raw.count(b'"arch": "llama"') == 1
    odd = tmp_path / "odd.refq"
    odd.write_bytes(raw.replace(b'"arch": "llama"', b'"arch": "gpt2x"'))
    for argv in (["eval", "tiny", "-q", str(odd)], ["generate", str(odd), "--prompt", "A"]):
        code, _, err = run_cli(argv, capsys)
        assert code == 1 and "unknown architecture 'gpt2x'" in err


def test_unknown_gguf_architecture_and_missing_extra(tmp_path, capsys, monkeypatch):
    from tests.test_loaders import write_gguf

    write_gguf(tmp_path / "g.gguf", arch="gpt2")
    code, _, err = run_cli(["eval", str(tmp_path / "g.gguf"), "--engines", "float"], capsys)
    assert code == 1 and "GGUF architecture 'gpt2' is not supported" in err
    write_gguf(tmp_path / "m.gguf")
    monkeypatch.setitem(sys.modules, "gguf", None)
    code, _, err = run_cli(["eval", str(tmp_path / "m.gguf"), "--engines", "float"], capsys)
    assert code == 1 and "pip install 'refq[models]'" in err


def test_generate_tokenizer_errors(tiny_refq, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["generate", str(tiny_refq), "--prompt", "A", "--tokenizer",
                            str(tmp_path / "none.json")], capsys)  # fmt: skip
    assert code == 1 and "no such file" in err
    (tmp_path / "tok.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    code, _, err = run_cli(["generate", str(tiny_refq), "--prompt", "A", "--tokenizer",
                            str(tmp_path / "tok.json")], capsys)  # fmt: skip
    assert code == 1 and "pip install 'refq[models]'" in err


def test_argument_errors(tiny_refq, capsys):
    cases = [
        (["eval", "tiny", "--engines", "float,gpu"], "unknown engine"),
        (["eval", "tiny", "--engines", "int"], "nothing to evaluate"),
        (["eval", "tiny", "--engines", "float", "--window", "4096"], "exceeds the model's"),
        (["eval", "no-such-model"], "no such file"),
        (["generate", "tiny", "--prompt", "A"], "give a quantized .refq"),
        (["generate", str(tiny_refq), "--prompt", "A", "-n", "0"], "-n must be >= 1"),
        (["eval", "tiny", "-c", "no-such-config"], "not found"),
    ]
    for argv, msg in cases:
        code, _, err = run_cli(argv, capsys)
        assert code == 1 and msg in err, (argv, err)


def test_gguf_model_with_tokenizer_end_to_end(tmp_path, capsys):
    """A tokenizer model (small GGUF written by the loader tests): quantize, eval on the default
    pydoc text, generate with the tokenizer found from the recorded source model."""
    require_module("gguf")
    require_module("tokenizers")
    from tests.test_loaders import write_gguf

    g = tmp_path / "m.gguf"
    write_gguf(g)
    out = tmp_path / "m.refq"
    assert main(["quantize", str(g), "-c", "w8a8", "-o", str(out), "--windows", "2",
                 "--window", "32", "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    code, _, err = run_cli(["eval", str(out), "--windows", "1", "--agree", "8",
                            "--prompt-tokens", "8", "--json", str(tmp_path / "r.json"),
                            "--no-progress"], capsys)  # fmt: skip
    assert code == 0, err
    rec = json.loads((tmp_path / "r.json").read_text())
    assert rec["setup"]["text"].endswith("pydoc_topics_3.11.7.txt")
    assert rec["quantized"][0]["int"]["perplexity"]["predictions"] == 63
    code, text, err = run_cli(["generate", str(out), "--prompt", "the cat", "-n", "4"], capsys)
    assert code == 0, err
    assert text.startswith("the cat") and len(text) > len("the cat\n")
    # Another architecture's quantized model cannot be compared with the tiny LM.
    code, _, err = run_cli(["eval", "tiny", "-q", str(out), "--engines", "int"], capsys)
    assert code == 1 and "is not the float model's" in err


def test_encoder_embeddings_end_to_end(tmp_path, capsys):
    require_module("safetensors")
    require_module("tokenizers")
    from tests.test_loaders import write_bert_dir

    d = tmp_path / "bert"
    write_bert_dir(d)
    sents = tmp_path / "s.txt"
    sents.write_text("the cat sat on the mat .\na dog sat .\nthe dogs sat on a cat .\n")
    out = tmp_path / "b.refq"
    assert main(["quantize", str(d), "-c", "w8a8", "-o", str(out), "--calib", str(sents),
                 "--no-progress"]) == 0  # fmt: skip
    capsys.readouterr()
    argv = ["eval", str(d), "-q", str(out), "--sentences", str(sents),
            "--json", str(tmp_path / "r.json"), "--no-progress"]  # fmt: skip
    code, text, err = run_cli(argv, capsys)
    assert code == 0, err
    rec = json.loads((tmp_path / "r.json").read_text())
    for engine in ("sim", "int"):
        e = rec["quantized"][0][engine]["embeddings"]
        assert e["n"] == 3 and 0.5 < e["mean"] <= 1.0 + 1e-6
    assert "mean cosine" in text
    code, _, err = run_cli(["generate", str(out), "--prompt", "the", "--tokenizer",
                            str(d)], capsys)  # fmt: skip
    assert code == 1 and "needs a decoder" in err
