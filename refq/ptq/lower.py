"""Lowering: a :class:`~refq.ptq.model.QuantizedModel` to an integer refq :class:`Graph`.

Generic over the layout op list (:func:`refq.models.layout.model_graph`): each op kind has one
lowering rule, and a point's graph tensor is named after the point. The same graph runs a whole
sequence (prefill, ``T`` tokens) and one token at a time (decode): per-token tensors have shape
``(None, features)`` (``lower(..., tokens=1)`` fixes ``T = 1``: the static decode graph the C
generator takes, which also prefills token by token); graph inputs are ``tokens`` (int32
``(None,)``) and ``position`` (int32 scalar: tokens already in the KV cache); KV caches are
state tensors. Encoders (BERT) have no
cache and use RESHAPE, so their graph is built for a fixed sequence length (``context``).

Rules (op kind -> graph ops):

=============  ====================================================================================
embedding      EMBEDDING_LOOKUP(tokens, table) (int8 table, per-tensor; its output keeps the
               table's quantization). BERT: one lookup per table (word / position / token type)
               and ADDs in the quantization of ``embed``.
rmsnorm        RMS_NORM(x, gamma) (attr ``epsilon``); layernorm: LAYER_NORM(x, gamma, beta)
linear         FULLY_CONNECTED(x, W[, bias]): int8 or int16 input (16x8: int16 output, 8-bit
               weights), int8 / int4 weights per channel (per-block: the int8 products
               ``sc * q``), int32 bias (int64 for 16x8) ``round(b / (s_in s_w[n]))``
rope           ROPE(x, position): attrs head_dim, max_positions = context, theta,
               convention = interleaved (refq's float Llama)
attn_scores,   one ATTENTION(q, k, v, position, k_cache, v_cache) for a causal decoder (attrs
softmax,       num_heads, num_kv_heads, score_scale = the calibrated score range / 127 (int8) or
attn_context   / 32767 (``bits: 16`` on ``*.attn.scores``), long_rows = safe past 512 positions);
               an encoder: RESHAPE / TRANSPOSE, BATCH_MATMUL(q, k, adj_y) with the score scale
               times sqrt(head_dim), SOFTMAX(beta = 1/sqrt(head_dim)), BATCH_MATMUL(p, v)
add, mul       ADD / MUL, all operands in the output's dtype; an add whose rule says
               ``bits: 32`` (residual stream) is ADD32, and norms read such int32 points
               through ROW_NORMALIZE (refq.kernels.wide)
silu + mul     SWIGLU(gate, up) when the silu output feeds only that mul and gate / up are int8
               (``fuse_swiglu``); else SILU (int8 input) or, for an int16 gate, the int16
               ``gate * LOGISTIC(gate)`` (TFLM's int16 LOGISTIC, scale 2^-15), then MUL
gelu           GELU
pool           not lowered: sentence pooling and L2 normalization are post-processing of the
               encoder's output (refq.models.integer)
=============  ====================================================================================

**Dtype adaptation.** A point is stored in its rule's dtype unless the producing kernel fixes it
(EMBEDDING_LOOKUP: the table's; ROPE / ATTENTION / SWIGLU inputs: int8; 16x8 FULLY_CONNECTED:
int16). A consumer that needs another dtype reads a converted copy named ``<point>@<dtype>``,
made once by QUANTIZE (int -> int requantization, or float -> int) or DEQUANTIZE, in the point's
calibrated range at that width. Ops listed in ``float_ops`` become ``FLOAT_OP`` nodes on float32
tensors (comparison runs only).

``graph.metadata["points"][point]`` lists, in order, every quantization the point's value goes
through in the graph (``{"dtype", "scale", "zero_point", "qmin", "qmax"}``; for ATTENTION the
scores and probabilities inside the op), which :mod:`refq.ptq.simulate` replays in float.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import numpy as np

from refq.errors import QuantSpecError, UnsupportedError
from refq.graph import Graph, Node, TensorInfo
from refq.models.config import BertConfig, LlamaConfig
from refq.models.layout import Op, model_graph
from refq.ptq import float_ops
from refq.ptq.model import PointQuant, QuantizedModel

_REGISTERED = (float_ops,)  # importing it registers FLOAT_OP

_RANGES = {"int8": (-128, 127), "int16": (-32768, 32767), "int32": (-(1 << 31), (1 << 31) - 1)}


def _bits(dtype: str) -> int:
    return int(dtype[3:])


def bias_codes(bias: np.ndarray, s_in: float, s_w: np.ndarray) -> list[int]:
    """``round_half_even(b[n] / (s_in * s_w[n]))`` exactly (Fractions of the float32 values)."""
    b = np.asarray(bias, np.float32).reshape(-1)
    sw = np.broadcast_to(np.asarray(s_w, np.float32).reshape(-1), b.shape)
    si = Fraction(float(np.float32(s_in)))
    return [
        round(Fraction(float(v)) / (si * Fraction(float(w)))) for v, w in zip(b, sw, strict=True)
    ]


class _Lowering:
    def __init__(self, qm: QuantizedModel, context: int, tokens: int | None = None) -> None:
        self.qm = qm
        self.cfg = qm.config
        self.qc = qm.qconfig
        self.context = int(context)
        self.decoder = isinstance(self.cfg, LlamaConfig)
        self.ops = model_graph(self.cfg)
        self.g = Graph({}, [], [], [], name=f"refq-{self.cfg.arch}-{self.qc.name}")
        self.primary: dict[str, str] = {}
        self.copies: dict[tuple[str, str], str] = {}
        self.meta: dict[str, list[dict[str, Any]]] = {}
        self.consumers: dict[str, list[Op]] = {}
        for op in self.ops:
            for i in op.inputs:
                self.consumers.setdefault(i, []).append(op)
        self.fused: set[str] = set()
        self.tok_rows: int | None = tokens if self.decoder else self.context

    # -- helpers ----------------------------------------------------------------------------
    def point_quant(self, point: str) -> PointQuant:
        try:
            return self.qm.points[point]
        except KeyError:
            raise QuantSpecError(f"activation point {point!r} was not calibrated") from None

    def shape(self, features: int | None) -> tuple[int | None, ...]:
        return (self.tok_rows, features)

    def tensor(self, name: str, dtype: str, shape, quant=None, data=None, state=False, axis=None):
        scale = zp = None
        if quant is not None:
            scale, zp = quant
        info = TensorInfo(name, dtype, tuple(shape), scale, zp, axis, data, state)
        return self.g.add_tensor(info).name

    def node(self, op: str, inputs, outputs, attrs=None, name: str = "") -> None:
        self.g.nodes.append(Node(op, tuple(inputs), tuple(outputs), dict(attrs or {}), name))

    def record(self, point: str, dtype: str, scale: float, zp: int, qmin=None, qmax=None) -> None:
        lo, hi = _RANGES.get(dtype, (qmin, qmax))
        self.meta.setdefault(point, []).append(
            {
                "dtype": dtype,
                "scale": float(scale),
                "zero_point": int(zp),
                "qmin": int(lo if qmin is None else qmin),
                "qmax": int(hi if qmax is None else qmax),
            }
        )

    def new_point(
        self,
        point: str,
        dtype: str,
        features: int | None,
        bits: int | None = None,
        quant: tuple[float, int] | None = None,
    ) -> str:
        """Create the primary tensor of ``point`` in ``dtype`` (float32: unquantized)."""
        shape = self.shape(features)
        if dtype == "float32":
            name = self.tensor(point, "float32", shape)
        else:
            if quant is None:
                _, s, z = self.point_quant(point).params(bits or _bits(dtype))
            else:
                s, z = quant
            name = self.tensor(point, dtype, shape, (s, z))
            self.record(point, dtype, s, z)
        self.primary[point] = name
        return name

    def act_dtype(self, point: str) -> str:
        return self.qc.act_spec(point).dtype

    def get(self, point: str, accept: tuple[str, ...], widen: bool = False) -> str:
        """The tensor of ``point`` in one of ``accept`` (the stored one if it fits, else a copy
        in ``accept[0]``, made once).

        ``widen``: read the point in its rule's dtype when the consumer takes it and the stored
        tensor is narrower (an int8 embedding output whose rule says 16 bits, read by an
        RMS_NORM: the integer norm's arithmetic is finer on int16 codes, whose variance does
        not sit at a few hundred where ``floor(sqrt)`` costs up to 1/std)."""
        cur = self.primary[point]
        info = self.g.tensors[cur]
        want = self.act_dtype(point)
        if info.dtype in accept and not (
            widen and want in accept and info.dtype != "float32" and _bits(want) > _bits(info.dtype)
        ):
            return cur
        target = want if (widen and want in accept) else accept[0]
        if info.dtype == target:
            return cur
        if (point, target) in self.copies:
            return self.copies[(point, target)]
        name = f"{point}@{target}"
        if target == "float32":
            if info.dtype == "int32":
                raise UnsupportedError(f"float_ops: cannot read the int32 point {point!r}")
            self.tensor(name, "float32", info.shape)
            self.node("DEQUANTIZE", [cur], [name])
        else:
            _, s, z = self.point_quant(point).params(_bits(target))
            self.tensor(name, target, info.shape, (s, z))
            self.node("REQUANTIZE" if info.dtype == "int32" else "QUANTIZE", [cur], [name])
            self.record(point, target, s, z)
        self.copies[(point, target)] = name
        return name

    def is_float(self, op: Op) -> bool:
        return self.qc.is_float(op.output)

    def const(self, name: str, data: np.ndarray, dtype: str, quant=None, axis=None) -> str:
        if name in self.g.tensors:
            return name
        return self.tensor(name, dtype, data.shape, quant, data=data, axis=axis)

    def float_weight(self, wname: str) -> str:
        try:
            data = self.qm.floats[wname]
        except KeyError:
            raise QuantSpecError(f"float tensor {wname!r} is missing from the model") from None
        return self.const(wname, np.asarray(data, np.float32), "float32")

    # -- the walk ---------------------------------------------------------------------------
    def run(self) -> Graph:
        g = self.g
        self.tensor("tokens", "int32", (self.tok_rows,))
        g.inputs.append("tokens")
        if self.decoder:
            self.tensor("position", "int32", ())
            g.inputs.append("position")
        else:
            for extra in ("positions", "token_types"):
                self.tensor(extra, "int32", (self.tok_rows,))
                g.inputs.append(extra)
        self.plan_fusions()
        for op in self.ops:
            if op.output in self.fused:
                continue
            getattr(self, f"lower_{op.kind}")(op)
        out = "logits" if self.decoder else self.ops[-2].output  # encoder: before pooling
        g.outputs.append(self.primary[out])
        g.metadata.update(
            {
                "points": self.meta,
                "arch": self.cfg.arch,
                "config": self.qc.name,
                "profile": self.qc.profile,
                "context": self.context,
                "output_point": out,
                "block_weights": {
                    n: {
                        "bits": q.spec.bits,
                        "block": q.spec.block,
                        "block_scale_bits": q.spec.block_scale_bits,
                    }
                    for n, q in self.qm.weights.items()
                    if q.per_block
                },
            }
        )
        g.validate()
        return g

    def plan_fusions(self) -> None:
        """Attention (scores -> softmax -> context); SWIGLU is decided in :meth:`lower_silu`."""
        by_out = {op.output: op for op in self.ops}
        self.attn_parts: dict[str, tuple[Op, Op]] = {}
        for op in self.ops:
            if op.kind == "attn_context":
                probs = by_out[op.inputs[0]]
                scores = by_out[probs.inputs[0]]
                self.attn_parts[op.output] = (scores, probs)
                self.fused.update({probs.output, scores.output})

    # -- op kinds ---------------------------------------------------------------------------
    def lower_embedding(self, op: Op) -> None:
        if self.decoder:
            (wname,) = op.weights
            self._lookup(op, "tokens", wname, op.output, final=True)
            return
        # BERT: word + position + token type, summed in the quantization of `embed`
        parts = []
        for ids, wname in zip(op.inputs, op.weights, strict=True):
            parts.append(self._lookup(op, ids, wname, f"{op.output}/{wname}", final=False))
        if self.is_float(op):
            acc = parts[0]
            for i, p in enumerate(parts[1:]):
                out = op.output if i == len(parts) - 2 else f"{op.output}/sum{i}"
                if out == op.output:
                    self.new_point(out, "float32", op.features)
                else:
                    self.tensor(out, "float32", self.shape(op.features))
                self.node("FLOAT_OP", [acc, p], [out], {"kind": "add"})
                acc = out
            return
        _, s, z = self.point_quant(op.output).params(8)
        acc = parts[0]
        for i, p in enumerate(parts[1:]):
            last = i == len(parts) - 2
            out = op.output if last else f"{op.output}/sum{i}"
            if last:
                self.new_point(out, "int8", op.features, quant=(s, z))
            else:
                self.tensor(out, "int8", self.shape(op.features), (s, z))
            self.node("ADD", [acc, p], [out])
            acc = out

    def _lookup(self, op: Op, ids: str, wname: str, out: str, final: bool) -> str:
        if self.is_float(op):
            table = self.float_weight(wname)
            if final:
                self.new_point(out, "float32", op.features)
            else:
                self.tensor(out, "float32", self.shape(op.features))
            self.node("FLOAT_OP", [ids, table], [out], {"kind": "embedding"})
            return out
        t = self.qm.tables[wname]
        s = float(t.scale.reshape(-1)[0])
        table = self.const(f"{wname}.lookup", t.codes, "int8", (s, 0))
        if final:
            self.new_point(out, "int8", op.features, quant=(s, 0))
        else:
            self.tensor(out, "int8", self.shape(op.features), (s, 0))
        self.node("EMBEDDING_LOOKUP", [ids, table], [out])
        return out

    def _norm(self, op: Op, graph_op: str) -> None:
        eps = float(self.cfg.norm_eps)
        if self.is_float(op):
            x = self.get(op.inputs[0], ("float32",))
            ws = [self.float_weight(w) for w in op.weights]
            out = self.new_point(op.output, "float32", op.features)
            kind = "rmsnorm" if graph_op == "RMS_NORM" else "layernorm"
            self.node("FLOAT_OP", [x, *ws], [out], {"kind": kind, "epsilon": eps})
            return
        src = self.primary[op.inputs[0]]
        if self.g.tensors[src].dtype == "int32":
            eps = 0.0  # rows arrive scaled by 2^-e_t: a fixed epsilon would not scale with them
            # int32 residual: per-row shift to int16 (the norm is invariant to a row's scale)
            x = f"{op.inputs[0]}@rows16"
            if x not in self.g.tensors:
                info = self.g.tensors[src]
                self.tensor(x, "int16", info.shape, (float(info.scale), 0))
                self.node("ROW_NORMALIZE", [src], [x])
        else:
            x = self.get(op.inputs[0], ("int8", "int16"), widen=True)
        ws = [self.float_weight(w) for w in op.weights]
        out = self.new_point(op.output, self.act_dtype(op.output), op.features)
        self.node(graph_op, [x, *ws], [out], {"epsilon": eps})

    def lower_rmsnorm(self, op: Op) -> None:
        self._norm(op, "RMS_NORM")

    def lower_layernorm(self, op: Op) -> None:
        self._norm(op, "LAYER_NORM")

    def lower_linear(self, op: Op) -> None:
        wname = op.weights[0]
        bias_name = f"{wname}.bias"
        has_bias = bias_name in self.qm.floats
        if self.is_float(op):
            x = self.get(op.inputs[0], ("float32",))
            ins = [x, self.float_weight(wname)]
            if has_bias:
                ins.append(self.float_weight(bias_name))
            out = self.new_point(op.output, "float32", op.features)
            self.node("FLOAT_OP", ins, [out], {"kind": "linear"})
            return
        q = self.qm.weights[wname]
        x = self.get(op.inputs[0], ("int8", "int16"))
        xin = self.g.tensors[x]
        if xin.dtype == "int16" and q.graph_dtype != "int8":
            raise QuantSpecError(
                f"weight {wname!r} has {q.spec.bits}-bit codes but its input "
                f"{op.inputs[0]!r} is int16: 16x8 FULLY_CONNECTED needs 8-bit weights (set "
                "bits 8 for the weight or 8-bit activations for the point)"
            )
        wq = (q.scale, q.zero_point)
        w = self.const(wname, q.graph_codes, q.graph_dtype, wq, axis=q.axis)
        ins = [x, w]
        wide = xin.dtype == "int16"
        if has_bias:
            codes = bias_codes(self.qm.floats[bias_name], float(xin.scale), q.scale)
            lim = 1 << (63 if wide else 31)
            if any(not -lim <= c < lim for c in codes):
                raise QuantSpecError(
                    f"bias of {wname!r} does not fit int{64 if wide else 32} at input scale "
                    f"{float(xin.scale)!r}"
                )
            arr = np.array(codes, dtype=np.int64 if wide else np.int32)
            ins.append(self.const(bias_name, arr, "int64" if wide else "int32"))
        out_dtype = "int16" if wide else self.act_dtype(op.output)
        out = self.new_point(op.output, out_dtype, op.features)
        self.node("FULLY_CONNECTED", ins, [out], name=op.output)

    def lower_rope(self, op: Op) -> None:
        cfg = self.cfg
        attrs = {
            "head_dim": cfg.head_dim,
            "max_positions": self.context,
            "theta": float(cfg.rope_theta),
            "convention": "interleaved",
        }
        if self.is_float(op):
            x = self.get(op.inputs[0], ("float32",))
            out = self.new_point(op.output, "float32", op.features)
            self.node("FLOAT_OP", [x, "position"], [out], {"kind": "rope", **attrs})
            return
        x = self.get(op.inputs[0], ("int8",))
        out = self.new_point(op.output, "int8", op.features, bits=8)
        self.node("ROPE", [x, "position"], [out], attrs)

    def lower_attn_scores(self, op: Op) -> None:  # fused into attn_context
        raise AssertionError("attention scores are lowered with attn_context")

    lower_softmax = lower_attn_scores

    def lower_attn_context(self, op: Op) -> None:
        scores, probs = self.attn_parts[op.output]
        if self.decoder:
            self._decoder_attention(op, scores, probs)
        else:
            self._encoder_attention(op, scores, probs)

    def _layer(self, point: str) -> str:
        return point.rsplit(".attn.", 1)[0]

    def _decoder_attention(self, op: Op, scores: Op, probs: Op) -> None:
        cfg = self.cfg
        q_pt, k_pt = scores.inputs
        v_pt = op.inputs[1]
        hkv, d = cfg.n_kv_heads, cfg.head_dim
        layer = self._layer(op.output)
        attrs = {"num_heads": cfg.n_heads, "num_kv_heads": hkv}
        if any(self.is_float(o) for o in (op, scores, probs)):
            ins = [self.get(p, ("float32",)) for p in (q_pt, k_pt, v_pt)]
            kc = self.tensor(f"{layer}.attn.k_cache", "float32", (hkv, self.context, d), state=True)
            vc = self.tensor(f"{layer}.attn.v_cache", "float32", (hkv, self.context, d), state=True)
            out = self.new_point(op.output, "float32", op.features)
            self.node("FLOAT_OP", [*ins, "position", kc, vc], [out], {"kind": "attention", **attrs})
            return
        q, k, v = (self.get(p, ("int8",)) for p in (q_pt, k_pt, v_pt))
        tk, tv = self.g.tensors[k], self.g.tensors[v]
        kq = (float(tk.scale), int(tk.zero_point))
        vq = (float(tv.scale), int(tv.zero_point))
        kc = self.tensor(f"{layer}.attn.k_cache", "int8", (hkv, self.context, d), kq, state=True)
        vc = self.tensor(f"{layer}.attn.v_cache", "int8", (hkv, self.context, d), vq, state=True)
        spq = self.point_quant(scores.output)
        sdt = spq.spec.dtype
        qmax = (1 << (_bits(sdt) - 1)) - 1
        absmax = max(abs(spq.lo), abs(spq.hi))
        score_scale = float(np.float32(absmax / qmax if absmax > 0 else 1.0))
        self.record(scores.output, sdt, score_scale, 0, -qmax - 1, qmax)
        if sdt == "int8":
            self.record(probs.output, "uint8", 1.0 / 256, 0, 0, 255)
        else:
            self.record(probs.output, "int16", 1.0 / 32768, 0, 0, 32767)
        out = self.new_point(op.output, "int8", op.features, bits=8)
        attrs.update(score_scale=score_scale, score_dtype=sdt)
        if self.context >= 512:
            attrs["long_rows"] = "safe"
        self.node("ATTENTION", [q, k, v, "position", kc, vc], [out], attrs)

    def _encoder_attention(self, op: Op, scores: Op, probs: Op) -> None:
        cfg = self.cfg
        h, d, t = cfg.n_heads, cfg.head_dim, self.context
        q_pt, k_pt = scores.inputs
        v_pt = op.inputs[1]
        if any(self.is_float(o) for o in (op, scores, probs)):
            raise UnsupportedError(
                f"float_ops: encoder attention {op.output!r} cannot be left float"
            )
        base = op.output.rsplit(".", 1)[0]

        def heads(point: str, tag: str) -> str:
            x = self.get(point, ("int8",))
            info = self.g.tensors[x]
            qz = (float(info.scale), int(info.zero_point))
            r = self.tensor(f"{base}.{tag}_heads", "int8", (t, h, d), qz)
            self.node("RESHAPE", [x], [r], {"new_shape": [t, h, d]})
            perm = self.const(f"{base}.perm102", np.array([1, 0, 2], np.int32), "int32")
            o = self.tensor(f"{base}.{tag}_hT", "int8", (h, t, d), qz)
            self.node("TRANSPOSE", [r, perm], [o])
            return o

        qh, kh, vh = heads(q_pt, "q"), heads(k_pt, "k"), heads(v_pt, "v")
        _, s_sc, z_sc = self.point_quant(scores.output).params(8)
        root = math.sqrt(d)
        raw_scale = float(np.float32(s_sc * root))
        sc = self.tensor(scores.output, "int8", (h, t, t), (raw_scale, z_sc))
        self.record(scores.output, "int8", raw_scale / root, z_sc)
        self.node("BATCH_MATMUL", [qh, kh], [sc], {"adj_x": False, "adj_y": True})
        pr = self.tensor(probs.output, "int8", (h, t, t), (1.0 / 256, -128))
        self.record(probs.output, "int8", 1.0 / 256, -128)
        self.node("SOFTMAX", [sc], [pr], {"beta": float(np.float32(1.0 / root))})
        _, s_c, z_c = self.point_quant(op.output).params(8)
        ch = self.tensor(f"{base}.ctx_heads", "int8", (h, t, d), (s_c, z_c))
        self.node("BATCH_MATMUL", [pr, vh], [ch])
        perm = self.const(f"{base}.perm102", np.array([1, 0, 2], np.int32), "int32")
        ct = self.tensor(f"{base}.ctx_t", "int8", (t, h, d), (s_c, z_c))
        self.node("TRANSPOSE", [ch, perm], [ct])
        out = self.new_point(op.output, "int8", op.features, quant=(s_c, z_c))
        self.node("RESHAPE", [ct], [out], {"new_shape": [t, h * d]})

    def _binary(self, op: Op, graph_op: str, kind: str) -> None:
        if self.is_float(op):
            ins = [self.get(p, ("float32",)) for p in op.inputs]
            out = self.new_point(op.output, "float32", op.features)
            self.node("FLOAT_OP", ins, [out], {"kind": kind})
            return
        dt = self.act_dtype(op.output)
        if dt == "int32" and graph_op == "ADD":
            ins = [self.get(p, ("int32", "int16", "int8")) for p in op.inputs]
            out = self.new_point(op.output, "int32", op.features)
            self.node("ADD32", ins, [out])
            return
        if dt == "int32":
            raise UnsupportedError(f"point {op.output!r}: 32 bits only for residual ADD outputs")
        ins = [self.get(p, (dt,)) for p in op.inputs]
        out = self.new_point(op.output, dt, op.features)
        self.node(graph_op, ins, [out])

    def lower_add(self, op: Op) -> None:
        self._binary(op, "ADD", "add")

    def lower_mul(self, op: Op) -> None:
        fused = [p for p in op.inputs if p in self.fused]
        if not fused:
            self._binary(op, "MUL", "mul")
            return
        silu_op = next(o for o in self.ops if o.output == fused[0])
        up_pt = op.inputs[1] if op.inputs[0] == fused[0] else op.inputs[0]
        gate = self.get(silu_op.inputs[0], ("int8",))
        up = self.get(up_pt, ("int8",))
        out = self.new_point(op.output, self.act_dtype(op.output), op.features)
        self.node("SWIGLU", [gate, up], [out])

    def _unary(self, op: Op, graph_op: str, kind: str, out_dtype: str) -> None:
        if self.is_float(op):
            x = self.get(op.inputs[0], ("float32",))
            out = self.new_point(op.output, "float32", op.features)
            self.node("FLOAT_OP", [x], [out], {"kind": kind})
            return
        x = self.get(op.inputs[0], ("int8",))
        out = self.new_point(op.output, out_dtype, op.features)
        self.node(graph_op, [x], [out])

    def lower_silu(self, op: Op) -> None:
        """SWIGLU when the silu output feeds only a mul and both of that mul's operands are int8
        (``fuse_swiglu``); SILU on an int8 input; on an int16 input (SWIGLU / SILU are int8
        kernels) ``x * LOGISTIC(x)``: int16 LOGISTIC (output scale 2^-15) then int16 MUL."""
        users = self.consumers.get(op.output, [])
        if (
            self.qc.fuse_swiglu
            and len(users) == 1
            and users[0].kind == "mul"
            and not self.is_float(op)
            and not self.is_float(users[0])
        ):
            other = [p for p in users[0].inputs if p != op.output]
            operands = [op.inputs[0], *other]
            if all(self.g.tensors[self.primary[p]].dtype == "int8" for p in operands):
                self.fused.add(op.output)
                return
        if self.is_float(op) or self.g.tensors[self.primary[op.inputs[0]]].dtype != "int16":
            self._unary(op, "SILU", "silu", self.act_dtype(op.output))
            return
        x = self.primary[op.inputs[0]]
        sig = self.tensor(f"{op.output}/sigmoid", "int16", self.shape(op.features), (2.0**-15, 0))
        self.node("LOGISTIC", [x], [sig])
        out = self.new_point(op.output, "int16", op.features, bits=16)
        self.node("MUL", [x, sig], [out])

    def lower_gelu(self, op: Op) -> None:
        from refq.profiles import get_profile

        tflm = get_profile(self.qc.profile).nonlinear == "tflm"
        self._unary(op, "GELU", "gelu", "int8" if tflm else self.act_dtype(op.output))

    def lower_pool(self, op: Op) -> None:
        """Pooling is post-processing (module docstring)."""


def lower(qm: QuantizedModel, context: int, tokens: int | None = None) -> Graph:
    """The integer graph of ``qm`` for ``context`` positions (see the module docstring).

    ``tokens``: a fixed number of tokens per call for decoders (``1``: the decode-only graph
    with static shapes that the C generator needs); ``None``: any number (prefill and decode).
    """
    if context < 1:
        raise QuantSpecError(f"context must be >= 1 position, got {context}")
    if tokens is not None and not 1 <= tokens <= context:
        raise QuantSpecError(f"tokens per call must be in [1, {context}], got {tokens}")
    if isinstance(qm.config, LlamaConfig) and context > qm.config.max_seq_len:
        raise QuantSpecError(
            f"context {context} exceeds the model's max_seq_len {qm.config.max_seq_len}"
        )
    if isinstance(qm.config, BertConfig) and context > qm.config.max_pos:
        raise QuantSpecError(f"sequence length {context} exceeds max_pos {qm.config.max_pos}")
    return _Lowering(qm, context, tokens).run()


__all__ = ["lower"]
