"""The result of PTQ: :class:`QuantizedModel` (quantized weights + activation quantization).

It holds everything the integer graph is built from, and nothing that depends on a context
length: :meth:`QuantizedModel.graph` lowers it (:mod:`refq.ptq.lower`) for a given number of
positions, :meth:`QuantizedModel.runner` wraps the graph in the integer engine
(:mod:`refq.models.integer`), :meth:`QuantizedModel.simulate` runs the fake-quantized float
model (:mod:`refq.ptq.simulate`), :meth:`QuantizedModel.save` / :func:`load_quantized` write /
read a ``.refq`` model file (:mod:`refq.models.modelfile`) whose manifest records the config,
the quantization of every tensor and activation point, the profile and (by the file format)
the SHA-256 of every tensor.

Activation quantization (:class:`PointQuant`): the calibrated range ``[lo, hi]`` of a point
and its rule; scale / zero point follow TFLite's conventions (:func:`refq.qparams.choose_qparams`
``"tflite"``): asymmetric ``b``-bit with the nudged zero point, or symmetric with
``s = absmax / (2^(b-1) - 1)`` and zero point 0; 32-bit (residual stream) ``s = absmax / 2^24``
(headroom for values 128 times the calibrated range).

Stored tensors (model file): ``<w>`` int8 codes (``<w>`` packed two per byte as uint8 when the
weight has <= 4 bits, shape in the manifest), ``<w>.scale`` float32, ``<w>.zero_point`` int32
(asymmetric only), ``<w>.block_scales`` uint8 (per-block); ``<table>.lookup`` likewise for
embedding tables read by EMBEDDING_LOOKUP; norm weights / float-op weights and linear biases
as float32 under their weight names (``<w>.bias`` for biases, which the lowering rounds to
int32 ``round(b / (s_in s_w))``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from refq.errors import ModelFormatError, QuantSpecError
from refq.models.config import ModelConfig
from refq.packing import pack_int4, unpack_int4
from refq.ptq.config import ActSpec, QuantConfig, WeightSpec
from refq.ptq.weights import QuantizedWeight
from refq.qparams import choose_qparams
from refq.spec import PerTensor, QDType, QuantSpec

DEFAULT_CONTEXT = 2048
"""Positions of the KV cache when neither the caller nor the model asks for fewer."""


@dataclass(frozen=True)
class PointQuant:
    """Calibrated range and rule of one activation point (module docstring)."""

    point: str
    lo: float
    hi: float
    spec: ActSpec

    def params(self, bits: int | None = None) -> tuple[str, float, int]:
        """``(dtype, scale, zero_point)`` at ``bits`` (default: the rule's bits). 16-bit
        quantization is symmetric whatever the rule says (TFLM's int16 kernels)."""
        b = self.spec.bits if bits is None else bits
        if b == 32:  # int32 residual stream: symmetric, 7 bits of headroom over the range
            absmax = max(abs(self.lo), abs(self.hi))
            return "int32", float(np.float32(absmax / 2.0**24 if absmax > 0 else 1.0)), 0
        sym = self.spec.symmetric or b == 16
        qs = QuantSpec(QDType.int(b), symmetric=sym, granularity=PerTensor())
        p = choose_qparams(
            (np.float32(self.lo), np.float32(self.hi)), qs, "tflite", name=self.point
        )
        return f"int{b}", float(np.float32(p.scale)), int(p.zero_point)

    def to_json(self) -> dict[str, Any]:
        _, s, z = self.params()
        return {"range": [self.lo, self.hi], **self.spec.to_json(), "scale": s, "zero_point": z}


@dataclass
class QuantizedModel:
    """PTQ output: see the module docstring.

    ``weights``: quantized linear weights by weight name; ``tables``: per-tensor quantized
    embedding tables by weight name (EMBEDDING_LOOKUP); ``floats``: float32 tensors the graph
    keeps as real numbers (norm weights, biases ``<linear>.bias``, weights of ``float_ops``);
    ``points``: activation quantization by point.
    """

    config: ModelConfig
    qconfig: QuantConfig
    weights: dict[str, QuantizedWeight]
    tables: dict[str, QuantizedWeight]
    floats: dict[str, np.ndarray]
    points: dict[str, PointQuant]
    metadata: dict[str, Any] = field(default_factory=dict)
    _graphs: dict[tuple[int, int | None], Any] = field(default_factory=dict, repr=False)
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def profile(self) -> str:
        return self.qconfig.profile

    def default_context(self) -> int:
        mx = getattr(self.config, "max_seq_len", None) or getattr(self.config, "max_pos", 512)
        return int(min(mx, DEFAULT_CONTEXT))

    def graph(self, context: int | None = None, tokens: int | None = None):
        """The integer :class:`~refq.graph.Graph` with a KV cache of ``context`` positions
        (decoders; for encoders ``context`` is the fixed sequence length). ``tokens=1`` gives
        the static-shape decode graph (C generation); ``None`` any tokens per call. Cached."""
        from refq.ptq.lower import lower

        n = int(context or self.default_context())
        key = (n, tokens)
        if key not in self._graphs:
            self._graphs[key] = lower(self, n, tokens)
        return self._graphs[key]

    def runner(self, context: int | None = None, profile: str | None = None):
        """The integer engine (:class:`refq.models.integer.IntegerLM`) over :meth:`graph`."""
        from refq.models.integer import IntegerLM

        return IntegerLM(self.graph(context), profile or self.profile)

    def simulate(self, tokens: np.ndarray, context: int | None = None) -> np.ndarray:
        """Float logits of the fake-quantized model for ``tokens`` (one window from an empty
        cache); see :mod:`refq.ptq.simulate`."""
        from refq.ptq.simulate import simulate

        return simulate(self, tokens, context)

    # -- size -------------------------------------------------------------------------------
    def weight_bytes(self) -> dict[str, int]:
        """Bytes of the stored integer weights, tables and float tensors."""
        w = sum(q.storage_bytes() for q in self.weights.values())
        t = sum(q.storage_bytes() for q in self.tables.values())
        f = sum(int(a.nbytes) for a in self.floats.values())
        return {"weights": w, "tables": t, "floats": f, "total": w + t + f}

    # -- manifest / file --------------------------------------------------------------------
    def manifest(self) -> dict[str, Any]:
        """The ``quantization`` section of the model file's manifest."""
        return {
            "config": self.qconfig.to_dict(),
            "weights": {n: q.describe() for n, q in self.weights.items()},
            "tables": {n: q.describe() for n, q in self.tables.items()},
            "floats": sorted(self.floats),
            "activations": {p: q.to_json() for p, q in self.points.items()},
            "sizes": self.weight_bytes(),
        }

    def tensors(self) -> dict[str, np.ndarray]:
        """The arrays of the model file (module docstring)."""
        out: dict[str, np.ndarray] = {}
        for group, prefix in ((self.weights, ""), (self.tables, ".lookup")):
            for name, q in group.items():
                key = name + prefix
                out[key] = pack_int4(q.codes) if q.spec.bits <= 4 else q.codes.astype(np.int8)
                out[f"{key}.scale"] = q.scale.astype(np.float32)
                if not q.spec.symmetric:
                    out[f"{key}.zero_point"] = q.zero_point.astype(np.int32)
                if q.block_scales is not None:
                    out[f"{key}.block_scales"] = q.block_scales.astype(np.uint8)
        for name, a in self.floats.items():
            out[f"{name}.float"] = np.asarray(a, np.float32)
        return out

    def save(self, path: str | os.PathLike, metadata: dict[str, Any] | None = None):
        """Write the model file atomically (refq.models.modelfile); returns its path."""
        from refq.models import modelfile

        meta = {**self.metadata, **(metadata or {})}
        return modelfile.save(
            path,
            self.config,
            self.tensors(),
            quantization=self.manifest(),
            profile=self.profile,
            metadata=meta,
        )


def _weight_from_file(
    name: str, key: str, info: dict[str, Any], t: dict[str, np.ndarray], src: str
) -> QuantizedWeight:
    try:
        spec = WeightSpec(
            bits=int(info["bits"]),
            granularity=str(info["granularity"]),
            block=info.get("block"),
            symmetric=bool(info["symmetric"]),
            observer=str(info.get("observer", "minmax")),
            block_scale_bits=int(info.get("block_scale_bits", 4)),
        )
        shape = tuple(int(s) for s in info["shape"])
        raw = t[key]
        codes = unpack_int4(raw, shape) if spec.bits <= 4 else raw.reshape(shape)
        scale = t[f"{key}.scale"]
        zp = t.get(f"{key}.zero_point", np.zeros(scale.shape, np.int32))
        bs = t.get(f"{key}.block_scales")
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFormatError(f"{src}: quantized tensor {key!r} is incomplete ({exc})") from None
    return QuantizedWeight(name, spec, np.asarray(codes, np.int8), scale, zp, bs)


def load_quantized(path: str | os.PathLike, verify: bool = True) -> QuantizedModel:
    """Read a model file written by :meth:`QuantizedModel.save` (hashes verified)."""
    from refq.calibration.observers import ObserverSpec
    from refq.models import modelfile

    mf = modelfile.load(path, expected=None, verify=verify)
    q = mf.quantization
    src = str(path)
    if not q or "config" not in q or "activations" not in q:
        raise ModelFormatError(f"{src}: not a quantized refq model (no quantization manifest)")
    try:
        qconfig = QuantConfig.from_dict(q["config"], source=src)
    except QuantSpecError as exc:
        raise ModelFormatError(f"{src}: stored quantization config is invalid: {exc}") from None
    t = mf.tensors
    weights = {n: _weight_from_file(n, n, i, t, src) for n, i in q.get("weights", {}).items()}
    tables = {
        n: _weight_from_file(n, f"{n}.lookup", i, t, src) for n, i in q.get("tables", {}).items()
    }
    floats = {}
    for n in q.get("floats", []):
        if f"{n}.float" not in t:
            raise ModelFormatError(f"{src}: float tensor {n!r} is missing")
        floats[n] = np.asarray(t[f"{n}.float"], np.float32)
    points = {}
    for p, e in q["activations"].items():
        try:
            spec = ActSpec(int(e["bits"]), bool(e["symmetric"]), ObserverSpec.parse(e["observer"]))
            points[p] = PointQuant(p, float(e["range"][0]), float(e["range"][1]), spec)
        except (KeyError, TypeError, ValueError, QuantSpecError) as exc:
            raise ModelFormatError(f"{src}: activation entry {p!r} is malformed ({exc})") from None
    return QuantizedModel(mf.config, qconfig, weights, tables, floats, points, dict(mf.metadata))
