"""codegen.plan: arena offsets from lifetimes, checked against brute-force interval arithmetic.

The checks here do not trust the planner: overlap is tested pair by pair in memory and time, the
lower bound is recomputed node by node with Python ints.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codegen.plan import MemoryPlan, TensorLife, lower_bound, plan_memory, verify_plan
from refq.errors import CodegenError


def ceil_to(n: int, a: int) -> int:
    return (n + a - 1) // a * a


def brute_lower_bound(tensors: list[TensorLife], align: int) -> int:
    nodes = [t for t in tensors if not t.persistent and t.size]
    if not nodes:
        return 0
    horizon = max(t.last for t in nodes)
    return max(
        sum(ceil_to(t.size, align) for t in nodes if t.first <= node <= t.last)
        for node in range(horizon + 1)
    )


def assert_valid(tensors: list[TensorLife], plan: MemoryPlan, align: int) -> None:
    transient = [t for t in tensors if not t.persistent and t.size]
    for t in transient:
        off = plan.offsets[t.name]
        assert off % align == 0 and off >= 0 and off + t.size <= plan.arena_size
    for i, x in enumerate(transient):
        for y in transient[i + 1 :]:
            live_together = x.first <= y.last and y.first <= x.last
            ox, oy = plan.offsets[x.name], plan.offsets[y.name]
            apart = ox + x.size <= oy or oy + y.size <= ox
            assert apart or not live_together, (x, y, ox, oy)
    persistent = [t for t in tensors if t.persistent]
    spans = sorted((plan.static_offsets[t.name], t.size) for t in persistent)
    for (a_off, a_size), (b_off, _) in itertools.pairwise(spans):
        assert a_off + a_size <= b_off
    assert plan.static_size == sum(ceil_to(t.size, align) for t in persistent)
    assert plan.arena_size % align == 0
    assert plan.lower_bound == brute_lower_bound(tensors, align)
    assert plan.arena_size >= plan.lower_bound


@st.composite
def lifetimes(draw, max_tensors: int = 24, max_node: int = 30) -> list[TensorLife]:
    n = draw(st.integers(1, max_tensors))
    out = []
    for i in range(n):
        first = draw(st.integers(0, max_node))
        last = draw(st.integers(first, min(max_node, first + draw(st.integers(0, 8)))))
        size = draw(st.one_of(st.integers(0, 64), st.integers(0, 5000)))
        out.append(TensorLife(f"t{i}", size, first, last, draw(st.booleans()) and i % 5 == 0))
    return out


@settings(max_examples=300)
@given(lifetimes(), st.sampled_from([1, 4, 16, 64]))
def test_random_lifetimes_never_overlap(tensors, align):
    plan = plan_memory(tensors, align)
    assert_valid(tensors, plan, align)
    assert plan.arena_size == min(plan.tried.values())


@settings(max_examples=300)
@given(st.lists(st.integers(1, 10_000), min_size=1, max_size=40))
def test_chains_reach_the_lower_bound(sizes):
    """t_i produced by node i, consumed by node i + 1: the plan is optimal."""
    tensors = [TensorLife(f"x{i}", s, i, i + 1) for i, s in enumerate(sizes)]
    plan = plan_memory(tensors)
    assert_valid(tensors, plan, 16)
    pairs = [ceil_to(a, 16) + ceil_to(b, 16) for a, b in itertools.pairwise(sizes)]
    assert plan.arena_size == plan.lower_bound == max([ceil_to(sizes[0], 16), *pairs])


@settings(max_examples=100)
@given(st.lists(st.integers(1, 4096), min_size=2, max_size=30), st.integers(2, 6))
def test_chains_with_random_skips_stay_valid(sizes, block):
    """Skip connections of random sizes: no overlap; the bound is not always reachable."""
    tensors = [TensorLife(f"x{i}", s, i, i + 1) for i, s in enumerate(sizes)]
    tensors += [
        TensorLife(f"res{j}", sizes[j], j, min(j + block, len(sizes)))
        for j in range(0, len(sizes), block)
    ]
    assert_valid(tensors, plan_memory(tensors), 16)


def transformer_lifetimes(d: int, layers: int, seq: int, ffn: int) -> list[TensorLife]:
    """Pre-norm decoder blocks (RMSNorm, q/k/v, scores, softmax, attention, output projection,
    residual add, gated FFN, residual add) as tensors with producer / last-consumer nodes."""
    lives: dict[str, list[int]] = {"emb": [0, 0]}
    sizes = {"emb": d}
    node = 0

    def op(name: str, size: int, *inputs: str) -> str:
        nonlocal node
        node += 1
        for i in inputs:
            lives[i][1] = node
        lives[name], sizes[name] = [node, node], size
        return name

    r = "emb"
    for n in range(layers):
        x = op(f"norm1_{n}", d, r)
        q, k, v = op(f"q{n}", d, x), op(f"k{n}", d, x), op(f"v{n}", d, x)
        p = op(f"probs{n}", seq * seq, op(f"scores{n}", 4 * seq * seq, q, k))
        r = op(f"res{n}a", d, r, op(f"o{n}", d, op(f"attn{n}", d, p, v)))
        x = op(f"norm2_{n}", d, r)
        act = op(f"act{n}", ffn * d, op(f"up{n}", ffn * d, x), op(f"gate{n}", ffn * d, x))
        r = op(f"res{n}b", d, r, op(f"down{n}", d, act))
    return [TensorLife(name, sizes[name], a, b) for name, (a, b) in lives.items()]


@settings(max_examples=100)
@given(st.integers(8, 1024), st.integers(1, 6), st.integers(1, 64), st.integers(1, 4))
def test_transformer_blocks_reach_the_target(d, layers, seq, ffn):
    """The issue's target on LM-shaped graphs: planned arena <= 1.05 x the lower bound."""
    tensors = transformer_lifetimes(d, layers, seq, ffn)
    plan = plan_memory(tensors)
    assert_valid(tensors, plan, 16)
    assert plan.arena_size <= 1.05 * plan.lower_bound, plan.report()


def test_exact_small_cases():
    # Hand-computed: x0 [0,1] 100 -> 112 bytes, x1 [1,2] 300 -> 304, x2 [2,3] 50 -> 64.
    tensors = [TensorLife("x0", 100, 0, 1), TensorLife("x1", 300, 1, 2), TensorLife("x2", 50, 2, 3)]
    plan = plan_memory(tensors)
    assert plan.lower_bound == 112 + 304 and plan.arena_size == 416
    # Two-ended fill of the 416-byte bound: x0 at the bottom, x1 against the top, x2 back down.
    assert plan.offsets == {"x0": 0, "x1": 112, "x2": 0}

    # Disjoint lifetimes share offset 0; sizes round up to the alignment.
    apart = plan_memory([TensorLife("a", 1, 0, 0), TensorLife("b", 17, 1, 1)])
    assert apart.offsets == {"a": 0, "b": 0} and apart.arena_size == 32
    together = plan_memory([TensorLife("a", 1, 0, 1), TensorLife("b", 1, 1, 2)])
    assert sorted(together.offsets.values()) == [0, 16] and together.arena_size == 32

    # Persistent tensors go to the static region, in order, aligned; empty ones take nothing.
    mixed = plan_memory(
        [
            TensorLife("kv", 1000, persistent=True),
            TensorLife("state", 8, persistent=True),
            TensorLife("x", 64, 0, 3),
            TensorLife("empty", 0, 1, 2),
        ]
    )
    assert mixed.static_offsets == {"kv": 0, "state": 1008} and mixed.static_size == 1024
    assert mixed.arena_size == 64 and mixed.offsets["empty"] == 0
    assert mixed.total_size == 1088
    assert "lower bound 64" in mixed.report() and "static 1,024 bytes" in mixed.report()

    assert plan_memory([]).arena_size == 0
    assert lower_bound([TensorLife("a", 5, 0, 0)], 4) == 8


def test_bad_input_names_the_tensor():
    with pytest.raises(CodegenError, match="'q' appears twice"):
        plan_memory([TensorLife("q", 1, 0, 0), TensorLife("q", 2, 1, 1)])
    with pytest.raises(CodegenError, match="'w' has size -1"):
        plan_memory([TensorLife("w", -1, 0, 0)])
    with pytest.raises(CodegenError, match="'z' is last used at node 1 before its first use 2"):
        plan_memory([TensorLife("z", 4, 2, 1)])
    with pytest.raises(CodegenError, match="alignment 12"):
        plan_memory([TensorLife("a", 4, 0, 0)], alignment=12)


def test_verify_rejects_overlapping_plans():
    tensors = [TensorLife("a", 32, 0, 1), TensorLife("b", 32, 1, 2)]
    good = plan_memory(tensors)
    bad = MemoryPlan({"a": 0, "b": 16}, 64, 64, {}, 0, 16, "hand-made")
    with pytest.raises(CodegenError, match=r"overlaps tensors 'a'.*'b'"):
        verify_plan(tensors, bad)
    misaligned = MemoryPlan({"a": 0, "b": 40}, 80, 64, {}, 0, 16, "hand-made")
    with pytest.raises(CodegenError, match="'b' at offset 40"):
        verify_plan(tensors, misaligned)
    verify_plan(tensors, good)
