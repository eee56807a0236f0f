"""Evaluation helpers against brute-force definitions written here: perplexity from logits,
teacher-forced top-1 agreement against :func:`refq.models.sampling.generate`, cosine
similarity, the sentence set, and the result report."""

from __future__ import annotations

import json
import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq.errors import InvalidDataError, ShapeError
from refq.evaluation.agreement import greedy_segments, top1_agreement
from refq.evaluation.embeddings import (
    SENTENCES,
    compare_embeddings,
    cosine_rows,
    derive_sentences,
    load_sentences,
)
from refq.evaluation.perplexity import eval_windows, evaluate_perplexity
from refq.evaluation.report import lm_table, read_json, render, write_json
from refq.models.sampling import generate

# --- perplexity ------------------------------------------------------------------------------


def table_model(vocab: int, seed: int):
    """A causal 'model': logits at position p = A[token p] + B[p] (small integers as floats),
    a pure function of the window, as perplexity requires."""
    rng = np.random.default_rng(seed)
    a = rng.integers(-6, 7, size=(vocab, vocab)).astype(np.float32)
    b = rng.integers(-3, 4, size=(512, vocab)).astype(np.float32)
    return lambda t: a[np.asarray(t)] + b[: np.asarray(t).size]


def brute_nll(logits_row: np.ndarray, target: int) -> float:
    """-log softmax(z)[y] = log(sum_j exp(z_j)) - z_y; the z are integers, so
    sum_j exp(z_j - z_y) = sum over the multiset of differences, added with exact counts."""
    z = [int(v) for v in logits_row]
    counts: dict[int, int] = {}
    for v in z:
        counts[v - z[target]] = counts.get(v - z[target], 0) + 1
    return math.log(math.fsum(c * math.exp(d) for d, c in counts.items()))


def test_perplexity_matches_brute_force(checked):
    counts = run_property(check_perplexity)
    checked("perplexity vs brute-force log-sum-exp", *counts)


def run_property(prop) -> tuple[int, int]:
    """Run a hypothesis property; returns (examples, elements) it reported."""
    tally = [0, 0]

    def record(elements: int) -> None:
        tally[0] += 1
        tally[1] += elements

    prop(record)
    return tally[0], tally[1]


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(2, 300),
    window=st.integers(2, 64),
    vocab=st.integers(2, 12),
    limit=st.one_of(st.none(), st.integers(1, 6)),
    seed=st.integers(0, 2**32 - 1),
)
def check_perplexity(record, n, window, vocab, limit, seed):
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, vocab, size=n)
    fn = table_model(vocab, seed)
    res = evaluate_perplexity(fn, tokens, window, limit)
    # The definition: consecutive windows [s, s + window), the last kept if >= 2 tokens, each
    # from an empty context; tokens 1..len-1 of each window are predicted.
    starts = [s for s in range(0, n, window) if n - s >= 2][:limit]
    nlls, preds = [], 0
    for s in starts:
        w = tokens[s : s + window]
        logits = fn(w[:-1])
        nlls += [brute_nll(logits[i], int(w[i + 1])) for i in range(w.size - 1)]
        preds += w.size - 1
    assert res.predictions == preds
    assert res.windows == len(starts)
    assert res.window_predictions == [min(window, n - s) - 1 for s in starts]
    total = math.fsum(nlls)
    assert res.nll == pytest.approx(total, rel=1e-12, abs=1e-12)
    assert res.perplexity == pytest.approx(math.exp(total / preds), rel=1e-12)
    assert res.bits_per_token == pytest.approx(total / preds / math.log(2), rel=1e-12)
    record(preds)


def test_perplexity_of_uniform_logits_is_the_vocabulary_size():
    res = evaluate_perplexity(lambda t: np.zeros((np.asarray(t).size, 37)), np.arange(100) % 37, 9)
    assert res.perplexity == pytest.approx(37.0, rel=1e-13)


def test_eval_windows_errors():
    with pytest.raises(ShapeError, match="window must be >= 2"):
        eval_windows(np.arange(10), 1)
    with pytest.raises(ShapeError, match="at least 2 tokens"):
        eval_windows(np.arange(1), 4)
    with pytest.raises(ShapeError, match=">= 1"):
        eval_windows(np.arange(10), 4, 0)


# --- agreement -------------------------------------------------------------------------------


class CausalTable:
    """A causal toy LM with position-dependent logits (so re-encoding changes them):
    z[p] = A[t_p] + B[p] + C[(t_0 + ... + t_p) % 7], integers, with a KV-cache-like step."""

    def __init__(self, vocab: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.a = rng.integers(-4, 5, size=(vocab, vocab)).astype(np.float32)
        self.b = rng.integers(-2, 3, size=(256, vocab)).astype(np.float32)
        self.c = rng.integers(-2, 3, size=(7, vocab)).astype(np.float32)

    def logits(self, tokens) -> np.ndarray:
        t = np.asarray(tokens, np.int64)
        return self.a[t] + self.b[: t.size] + self.c[np.cumsum(t) % 7]

    def make_step(self, record: list | None = None):
        ctx: list[int] = []

        def step(tokens, start_pos):
            assert start_pos == len(ctx)
            ctx.extend(int(x) for x in np.asarray(tokens))
            if record is not None:
                record.append(tuple(ctx))
            return self.logits(ctx)[start_pos:]

        return step


@settings(max_examples=200, deadline=None)
@given(
    vocab=st.integers(2, 9),
    prompt_len=st.integers(1, 20),
    n=st.integers(1, 60),
    max_seq_len=st.integers(2, 24),
    seed=st.integers(0, 2**32 - 1),
)
def check_agreement(record, vocab, prompt_len, n, max_seq_len, seed):
    rng = np.random.default_rng(seed)
    prompt = rng.integers(0, vocab, size=prompt_len)
    ref = CausalTable(vocab, seed)
    contexts: list[tuple[int, ...]] = []
    greedy = generate(lambda: ref.make_step(contexts), prompt, n, max_seq_len)
    # The reference agrees with itself everywhere: the segments rebuild its contexts exactly.
    same = top1_agreement(ref.logits, prompt, greedy, max_seq_len)
    assert (same.matches, same.total, same.first_mismatch) == (n, n, n)
    # Another model, brute force: its greedy pick in each context generate() used.
    other = CausalTable(vocab, seed ^ 0x5A5A)
    want = [int(greedy[i]) for i in range(n)]
    picks, rows = [], []
    for ctx in contexts[:n]:  # call i's last row predicts token i; the final call is unused
        row = other.logits(ctx)[-1]
        rows.append(row)
        picks.append(int(np.argmax(row)))
    res = top1_agreement(other.logits, prompt, greedy, max_seq_len)
    hits = [p == w for p, w in zip(picks, want, strict=True)]
    assert res.matches == sum(hits)
    assert res.first_mismatch == (hits.index(False) if False in hits else n)
    assert res.tied == sum(int(np.sum(r == r.max()) > 1) for r in rows)
    assert res.tie_hits == sum(int(r[w] == r.max()) for r, w in zip(rows, want, strict=True))
    assert Fraction(res.matches, res.total) == Fraction(sum(hits), n)
    segs = greedy_segments(prompt, greedy, max_seq_len)
    assert sorted(t for s in segs for t in s.targets) == list(range(n))
    assert all(s.tokens.size <= max_seq_len for s in segs)
    record(n)


def test_agreement_matches_lockstep_generation(checked):
    checked("top-1 agreement vs lockstep generate()", *run_property(check_agreement))


def test_agreement_errors():
    with pytest.raises(ShapeError, match="prompt"):
        greedy_segments(np.zeros(0), np.zeros(3), 8)
    with pytest.raises(ShapeError, match="generated"):
        greedy_segments(np.zeros(2), np.zeros(0), 8)
    with pytest.raises(ShapeError, match="logits"):
        top1_agreement(lambda t: np.zeros((1, 4)), np.arange(3), np.arange(2), 8)


# --- cosine / sentences ----------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 6), d=st.integers(1, 12), seed=st.integers(0, 2**32 - 1))
def check_cosine(record, n, d, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(-50, 51, size=(n, d)).astype(np.float32)
    b = rng.integers(-50, 51, size=(n, d)).astype(np.float32)
    a[:, 0] = np.where(a[:, 0] == 0, 1, a[:, 0])
    b[:, 0] = np.where(b[:, 0] == 0, 1, b[:, 0])
    got = cosine_rows(a, b)
    for i in range(n):
        # integer rows: the dot product and squared norms are exact integers
        dot = sum(int(x) * int(y) for x, y in zip(a[i], b[i], strict=True))
        na = sum(int(x) ** 2 for x in a[i])
        nb = sum(int(y) ** 2 for y in b[i])
        assert got[i] == pytest.approx(dot / math.sqrt(na * nb), rel=1e-14, abs=1e-15)
    record(n * d)


def test_cosine_matches_brute_force(checked):
    checked("cosine vs exact integer dot products", *run_property(check_cosine))


def test_cosine_errors_and_compare():
    with pytest.raises(InvalidDataError, match="row 1"):
        cosine_rows(np.ones((2, 3)), np.array([[1.0, 0, 0], [0, 0, 0]]))
    with pytest.raises(ShapeError):
        cosine_rows(np.ones((2, 3)), np.ones((3, 3)))
    ref = np.array([[1.0, 0.0], [0.0, 2.0]])
    res, cand = compare_embeddings(ref, lambda s: np.array([1.0, 1.0]), ["x", "y"])
    assert res.n == 2 and np.array_equal(cand, np.ones((2, 2), np.float32))
    assert res.summary()["mean"] == pytest.approx(1 / math.sqrt(2), rel=1e-12)


def test_sentence_set_is_derived_from_the_corpora():
    s = load_sentences()
    assert s == derive_sentences()
    assert len(s) >= 100 and len(set(s)) == len(s)
    assert SENTENCES.read_text(encoding="utf-8") == "".join(x + "\n" for x in s)


def test_load_sentences_errors(tmp_path):
    with pytest.raises(InvalidDataError, match="cannot be read"):
        load_sentences(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("\n  \n")
    with pytest.raises(InvalidDataError, match="no sentence"):
        load_sentences(tmp_path / "empty.txt")


# --- report ----------------------------------------------------------------------------------


def test_report_json_is_atomic_and_tables_compute_deltas(tmp_path):
    rec = {
        "kind": "lm",
        "command": "refq eval tiny -c w8a8",
        "setup": {"window": 128, "agreement": {"new_tokens": 4, "prompt_tokens": 2}},
        "float": {"perplexity": {"perplexity": 4.0}, "size_bytes": 1000},
        "quantized": [
            {
                "name": "w8a8",
                "file_bytes": 300,
                "int": {
                    "perplexity": {"perplexity": 4.1},
                    "agreement": {"matches": 3, "total": 4, "agreement": 0.75,
                                  "first_mismatch": 2},
                },
            }
        ],
    }  # fmt: skip
    path = write_json(tmp_path / "sub" / "r.json", rec)
    assert read_json(path) == json.loads(json.dumps(rec))
    assert [p.name for p in path.parent.iterdir()] == ["r.json"]
    table = lm_table(rec)
    assert "| w8a8 | integer-only | 4.100 | +2.50% | 3/4 (75.0%), first miss 2 | 300 |" in table
    assert "refq eval tiny -c w8a8" in render(rec)
    with pytest.raises(InvalidDataError):
        read_json(tmp_path / "nope.json")


# --- sensitivity sweep -----------------------------------------------------------------------


def test_mixed_points_takes_each_chain_from_one_side():
    from refq.evaluation.sensitivity import mixed_points

    base = {"a": [1], "b": [2], "c": [3]}
    probe = {"a": [10], "b": [20], "d": [40]}
    got = mixed_points(base, probe, lambda p: p in ("b", "d"))
    assert got == {"a": [1], "b": [20], "c": [3], "d": [40]}


def test_sensitivity_sweep_rows_on_the_tiny_lm(capsys):
    """The 'a8 everywhere' row is the all-int8 config's own simulation (same weights, same
    calibration), the 'a16 everywhere' row the all-int16 one's."""
    import argparse

    from refq.evaluation import sensitivity
    from refq.models.tiny_lm import corpus, load_tiny_lm

    argv = ["tiny", "--window", "128", "--windows", "2", "--calib-windows", "2", "layers.1.*"]
    assert sensitivity.run(argv) == 0
    rows = {}
    for line in capsys.readouterr().out.splitlines():
        if not line.startswith("#"):
            name, value = line[:40].strip(), float(line[40:].split()[0])
            rows[name] = value
    cfg, w = load_tiny_lm()
    ns = argparse.Namespace(calib_window=None, calib_windows=2)
    text = corpus("heldout")
    for bits in (8, 16):
        qm = sensitivity._quantize("tiny", cfg, w, None, bits, ns)
        ppl = evaluate_perplexity(lambda t, qm=qm: qm.simulate(t, 128), text, 128, 2).perplexity
        assert rows[f"a{bits} everywhere"] == pytest.approx(ppl, abs=6e-5)
    assert set(rows) == {
        "float",
        "weights only (activations not rounded)",
        "a16 everywhere",
        "a8 everywhere",
        "a8 only at layers.1.*",
    }
