"""refq.models.autograd: every op's gradient against central finite differences (float64),
and fake_quant_ste against exact Fraction arithmetic."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refq.errors import QuantSpecError, ShapeError
from refq.models import autograd as ag
from refq.models import llama_trainable as lt
from refq.models.autograd import Tensor
from refq.models.config import LlamaConfig, init_llama_weights
from refq.models.llama import rope_tables


def numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() with respect to every element of x (in place)."""
    g = np.zeros_like(x)
    flat, gf = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        hi = f()
        flat[i] = old - eps
        lo = f()
        flat[i] = old
        gf[i] = (hi - lo) / (2 * eps)
    return g


def check_op(build, *arrays: np.ndarray, rtol: float = 1e-6, atol: float = 1e-8) -> None:
    """Compare the autograd gradient of sum(build(*tensors) * R) with finite differences."""
    rng = np.random.default_rng(123)
    ts = [Tensor(a, requires_grad=True) for a in arrays]
    out = build(*ts)
    r = rng.standard_normal(out.shape)
    loss = ag.sum(ag.mul(out, Tensor(r)))
    loss.backward()
    for t in ts:

        def f(t=t):
            return float(np.sum(build(*[Tensor(u.data) for u in ts]).data * r))

        num = numeric_grad(f, t.data)
        np.testing.assert_allclose(t.grad, num, rtol=rtol, atol=atol)


def rnd(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


def test_add_mul_broadcast():
    check_op(ag.add, rnd(3, 4), rnd(1, 4, seed=1))
    check_op(ag.add, rnd(2, 3, 4), rnd(4, seed=1))
    check_op(ag.mul, rnd(2, 3, 4), rnd(3, 1, seed=1))
    check_op(lambda a: ag.scale(a, -0.37), rnd(5))


def test_matmul_broadcast_batch():
    check_op(ag.matmul, rnd(2, 3, 4, 5), rnd(2, 1, 5, 3, seed=1))
    check_op(ag.matmul, rnd(4, 5), rnd(3, 5, 2, seed=1))


def test_linear_embedding():
    check_op(ag.linear, rnd(2, 3, 4), rnd(5, 4, seed=1))
    idx = np.array([[0, 2, 2], [1, 0, 2]])  # repeated rows must accumulate
    check_op(lambda w: ag.embedding(w, idx), rnd(4, 3))


def test_rmsnorm():
    check_op(lambda x, w: ag.rmsnorm(x, w, 1e-5), rnd(2, 3, 6), rnd(6, seed=1) + 1)


def test_rope_gradient_and_orthogonality():
    cos, sin = rope_tables(np.arange(5), 6, 10000.0)
    cos, sin = cos.astype(np.float64), sin.astype(np.float64)
    check_op(lambda x: ag.rope(x, cos, sin), rnd(2, 3, 5, 6))
    x = rnd(3, 5, 6)
    y = ag.rope(Tensor(x), cos, sin).data
    np.testing.assert_allclose(np.linalg.norm(y, axis=-1), np.linalg.norm(x, axis=-1), rtol=1e-6)


def test_causal_softmax():
    check_op(ag.causal_softmax, rnd(2, 3, 5, 5))
    p = ag.causal_softmax(Tensor(rnd(4, 4))).data
    assert np.all(np.triu(p, 1) == 0)
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-12)


def test_silu_reshape_transpose():
    check_op(ag.silu, rnd(3, 7) * 4)
    check_op(lambda x: ag.reshape(x, (6, 2)), rnd(3, 4))
    check_op(lambda x: ag.transpose(x, (2, 0, 1)), rnd(2, 3, 4))


def test_cross_entropy():
    t = np.array([[1, 0, 3], [2, 2, 0]])
    check_op(lambda z: ag.cross_entropy(z, t), rnd(2, 3, 4) * 3)
    z = rnd(6, 5)
    tt = np.array([0, 1, 2, 3, 4, 0])
    loss = float(ag.cross_entropy(Tensor(z), tt).data)
    ref = np.mean([math.log(np.exp(z[i]).sum()) - z[i, tt[i]] for i in range(6)])
    assert loss == pytest.approx(ref, rel=1e-12)
    with pytest.raises(ShapeError):
        ag.cross_entropy(Tensor(z), tt[:3])


@pytest.mark.parametrize("tied", [False, True])
def test_whole_llama_loss_gradient(tied):
    """The composed model: analytic gradients of every parameter against finite differences
    on a sample of entries (float64, GQA with 2 query heads per KV head; a tied head sums the
    embedding's two gradient paths)."""
    cfg = LlamaConfig(
        vocab_size=11, dim=8, n_layers=2, n_heads=4, n_kv_heads=2, ffn_dim=12,
        max_seq_len=6, tied_embeddings=tied,
    )  # fmt: skip
    w = init_llama_weights(cfg, seed=3, std=0.3)
    rng = np.random.default_rng(0)
    for name in w:
        if w[name].ndim == 1:  # non-trivial norm weights
            w[name] = w[name] + rng.standard_normal(w[name].shape).astype(np.float32) * 0.2
    params = lt.as_params(w, dtype=np.float64)
    x = rng.integers(0, cfg.vocab_size, (2, 6))
    y = rng.integers(0, cfg.vocab_size, (2, 6))
    loss = lt.loss(params, cfg, x, y)
    loss.backward()
    for name, p in params.items():
        flat = p.data.reshape(-1)
        for i in rng.choice(flat.size, size=min(4, flat.size), replace=False):
            old = flat[i]
            flat[i] = old + 1e-6
            hi = float(lt.loss({n: Tensor(q.data) for n, q in params.items()}, cfg, x, y).data)
            flat[i] = old - 1e-6
            lo = float(lt.loss({n: Tensor(q.data) for n, q in params.items()}, cfg, x, y).data)
            flat[i] = old
            num = (hi - lo) / 2e-6
            assert p.grad.reshape(-1)[i] == pytest.approx(num, rel=1e-5, abs=1e-9), (name, i)


def test_backward_needs_scalar_or_grad():
    t = ag.mul(Tensor(rnd(3), requires_grad=True), Tensor(rnd(3)))
    with pytest.raises(ShapeError):
        t.backward()


# --- fake quantization with the straight-through estimator -----------------------------------


def _half_even(fr: Fraction) -> int:
    f = math.floor(fr)
    rem = fr - f
    if rem > Fraction(1, 2) or (rem == Fraction(1, 2) and f % 2):
        return f + 1
    return f


finite = st.floats(-1e4, 1e4, allow_nan=False, allow_infinity=False, width=64)


@settings(max_examples=300, deadline=None)
@given(
    xs=st.lists(finite, min_size=1, max_size=16),
    scale=st.floats(1e-3, 1e2, allow_nan=False, allow_infinity=False),
    bits=st.sampled_from([(-128, 127), (0, 255), (-8, 7), (-32768, 32767), (0, 15)]),
    zp_frac=st.floats(0, 1),
    gs=st.lists(st.floats(-3, 3, allow_nan=False), min_size=16, max_size=16),
)
def test_fake_quant_ste_forward_and_gradient_exact(xs, scale, bits, zp_frac, gs):
    qmin, qmax = bits
    zp = qmin + round(zp_frac * (qmax - qmin))
    x = np.array(xs, dtype=np.float64)
    g = np.array(gs[: x.size], dtype=np.float64)
    t = Tensor(x.copy(), requires_grad=True)
    y = ag.fake_quant_ste(t, scale, zp, qmin, qmax)
    y.backward(g)
    for i, xi in enumerate(xs):
        # ONNX QuantizeLinear: the float quotient (IEEE division), rounded half to even exactly.
        q = _half_even(Fraction(xi / scale)) + zp
        inside = qmin <= q <= qmax
        qc = min(max(q, qmin), qmax)
        assert y.data[i] == float(Fraction(qc - zp) * Fraction(scale))
        assert t.grad[i] == (g[i] if inside else 0.0)


def test_fake_quant_ste_per_channel_and_float32():
    x = rnd(3, 4).astype(np.float32) * 2
    s = np.array([[0.1], [0.02], [0.5]], dtype=np.float32)
    zp = np.array([[0], [3], [-2]])
    t = Tensor(x, requires_grad=True)
    y = ag.fake_quant_ste(t, s, zp, -8, 7)
    assert y.data.dtype == np.float32
    q = np.clip(np.round(x / s) + zp, -8, 7)
    np.testing.assert_array_equal(y.data, ((q - zp) * s).astype(np.float32))
    ag.sum(y).backward()
    inside = (np.round(x / s) + zp >= -8) & (np.round(x / s) + zp <= 7)
    np.testing.assert_array_equal(t.grad, inside.astype(np.float32))
    assert 0 < inside.sum() < inside.size  # both branches exercised


@pytest.mark.parametrize(
    ("scale", "zp", "qmin", "qmax"),
    [(0.0, 0, -128, 127), (-1.0, 0, -128, 127), (float("nan"), 0, -8, 7), (1.0, 200, -128, 127),
     (1.0, 0.5, -128, 127), (1.0, 0, 7, 7)],
)  # fmt: skip
def test_fake_quant_ste_rejects_bad_params(scale, zp, qmin, qmax):
    with pytest.raises(QuantSpecError):
        ag.fake_quant_ste(Tensor(rnd(3)), scale, zp, qmin, qmax)
