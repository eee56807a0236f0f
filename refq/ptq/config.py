"""The quantization config: a JSON document saying how each weight and activation is quantized.

Schema (every key optional except where noted; unknown keys are errors naming the key)::

    {
      "name": "w8a8",                       label recorded in the manifest
      "description": "...",
      "profile": "tflm",                    arithmetic profile (refq.profiles), default "tflm"
      "weights": [RULE, ...],               weight rules, applied in order (later keys win)
      "activations": [RULE, ...],           activation-point rules, likewise
      "float_ops": ["layers.0.ffn.out"],    ops (by output point) left in float32
      "fuse_swiglu": true,                  silu followed by mul -> one SWIGLU op
      "bias_correction": false,             correct each linear's expected output error
      "smooth": {"alpha": 0.5, "match": ["layers.*.ffn.w2"]},   SmoothQuant migration
      "calibration": {"window": 128, "windows": 16}             defaults for `refq quantize`
    }

A weight RULE: ``match`` (required: a name pattern or a list of them, ``fnmatch`` syntax over
weight names such as ``layers.3.ffn.w2``; ``*`` also matches dots), ``bits`` (2..8),
``granularity`` (``per-tensor`` | ``per-channel`` | ``per-block``), ``block`` (block size along
the input axis, with ``per-block``), ``symmetric`` (bool), ``observer`` (``minmax`` | ``mse``:
per-channel / per-block clipping search on the exact weights), ``block_scale_bits`` (bits of the
integer block scales, ``per-block`` only, see :mod:`refq.ptq.weights`).

An activation RULE: ``match`` (patterns over activation points, refq.models.layout, e.g.
``layers.*.ffn.hidden``), ``bits`` (8 or 16, symmetric at 16; 32 for residual-stream points:
an int32 stream through refq's ADD32 / ROW_NORMALIZE, :mod:`refq.kernels.wide`),
``symmetric`` (bool), ``observer`` (a name or ``{"kind": ..., params}``, see
:mod:`refq.calibration.observers`).

Defaults, before any rule: weights 8-bit symmetric per-channel min-max; activations 8-bit
asymmetric min-max. Every pattern must match something in the model it is applied to (a typo
is an error, not a silent no-op; a rule's list of patterns needs one match among them).
Mixed precision is a list of rules, e.g.
``{"match": "layers.*.ffn.w*", "bits": 4, "granularity": "per-block", "block": 32}``.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from refq.calibration.observers import ObserverSpec
from refq.errors import QuantSpecError, UnsupportedError
from refq.profiles import get_profile

GRANULARITIES = ("per-tensor", "per-channel", "per-block")
CONFIG_DIR = Path(__file__).resolve().parent.parent / "data" / "configs"

_TOP_KEYS = {
    "name",
    "description",
    "profile",
    "weights",
    "activations",
    "float_ops",
    "fuse_swiglu",
    "bias_correction",
    "smooth",
    "calibration",
}
_WEIGHT_KEYS = {
    "match",
    "bits",
    "granularity",
    "block",
    "symmetric",
    "observer",
    "block_scale_bits",
}
_ACT_KEYS = {"match", "bits", "symmetric", "observer"}


@dataclass(frozen=True)
class WeightSpec:
    """How one weight is quantized (a resolved weight rule)."""

    bits: int = 8
    granularity: str = "per-channel"
    block: int | None = None
    symmetric: bool = True
    observer: str = "minmax"
    block_scale_bits: int = 4

    def to_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "bits": self.bits,
            "granularity": self.granularity,
            "symmetric": self.symmetric,
            "observer": self.observer,
        }
        if self.granularity == "per-block":
            d["block"] = self.block
            d["block_scale_bits"] = self.block_scale_bits
        return d


@dataclass(frozen=True)
class ActSpec:
    """How one activation point is quantized (a resolved activation rule)."""

    bits: int = 8
    symmetric: bool = False
    observer: ObserverSpec = field(default_factory=ObserverSpec)

    @property
    def dtype(self) -> str:
        return f"int{self.bits}"

    def to_json(self) -> dict[str, Any]:
        return {"bits": self.bits, "symmetric": self.symmetric, "observer": self.observer.to_json()}


@dataclass(frozen=True)
class SmoothSpec:
    """SmoothQuant migration strength ``alpha`` and the linear weights it applies to."""

    alpha: float
    match: tuple[str, ...]


def _where(key: str) -> str:
    return f"config key {key!r}"


def _bool(v: Any, key: str) -> bool:
    if not isinstance(v, bool):
        raise QuantSpecError(f"{_where(key)}: must be true or false, got {v!r}")
    return v


def _int(v: Any, key: str, lo: int, hi: int) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise QuantSpecError(f"{_where(key)}: must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _patterns(v: Any, key: str) -> tuple[str, ...]:
    items = [v] if isinstance(v, str) else v
    if not isinstance(items, list | tuple) or not items:
        raise QuantSpecError(f"{_where(key)}: must be a pattern or a non-empty list of patterns")
    for p in items:
        if not isinstance(p, str) or not p:
            raise QuantSpecError(f"{_where(key)}: patterns must be non-empty strings, got {p!r}")
    return tuple(items)


def _check_keys(d: Any, allowed: set[str], key: str) -> Mapping[str, Any]:
    if not isinstance(d, Mapping):
        raise QuantSpecError(f"{_where(key)}: must be a JSON object, got {type(d).__name__}")
    extra = sorted(set(d) - allowed)
    if extra:
        raise QuantSpecError(
            f"{_where(key)}: unknown keys {extra}; allowed keys: {sorted(allowed)}"
        )
    return d


def _rules(v: Any, key: str, allowed: set[str]) -> list[dict[str, Any]]:
    if not isinstance(v, list):
        raise QuantSpecError(f"{_where(key)}: must be a list of rules")
    out = []
    for i, rule in enumerate(v):
        k = f"{key}[{i}]"
        _check_keys(rule, allowed, k)
        if "match" not in rule:
            raise QuantSpecError(f"{_where(k)}: a rule needs a 'match' pattern")
        r = dict(rule)
        r["match"] = _patterns(rule["match"], f"{k}.match")
        out.append(r)
    return out


def _merge_weight(spec: dict[str, Any], rule: Mapping[str, Any], key: str) -> None:
    for name, v in rule.items():
        k = f"{key}.{name}"
        if name == "bits":
            spec["bits"] = _int(v, k, 2, 8)
        elif name == "granularity":
            if v not in GRANULARITIES:
                raise QuantSpecError(f"{_where(k)}: {v!r} is not one of {list(GRANULARITIES)}")
            spec["granularity"] = v
        elif name == "block":
            spec["block"] = _int(v, k, 2, 1 << 16)
        elif name == "symmetric":
            spec["symmetric"] = _bool(v, k)
        elif name == "observer":
            if v not in ("minmax", "mse"):
                raise QuantSpecError(f"{_where(k)}: weight observer must be 'minmax' or 'mse'")
            spec["observer"] = v
        elif name == "block_scale_bits":
            spec["block_scale_bits"] = _int(v, k, 1, 8)


def _merge_act(spec: dict[str, Any], rule: Mapping[str, Any], key: str) -> None:
    for name, v in rule.items():
        k = f"{key}.{name}"
        if name == "bits":
            if v not in (8, 16, 32) or isinstance(v, bool):
                raise QuantSpecError(f"{_where(k)}: activation bits must be 8, 16 or 32, got {v!r}")
            spec["bits"] = v
        elif name == "symmetric":
            spec["symmetric"] = _bool(v, k)
        elif name == "observer":
            spec["observer"] = ObserverSpec.parse(v, _where(k))


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


@dataclass
class QuantConfig:
    """A parsed, validated quantization config (see the module docstring for the schema)."""

    name: str = "custom"
    description: str = ""
    profile: str = "tflm"
    weights: list[dict[str, Any]] = field(default_factory=list)
    activations: list[dict[str, Any]] = field(default_factory=list)
    float_ops: tuple[str, ...] = ()
    fuse_swiglu: bool = True
    bias_correction: bool = False
    smooth: SmoothSpec | None = None
    calibration: dict[str, int] = field(default_factory=dict)
    source: str = ""

    # -- parsing ----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: Any, source: str = "") -> QuantConfig:
        """Validate a config dict; errors are :class:`QuantSpecError` naming the key."""
        _check_keys(d, _TOP_KEYS, "<config>")
        cfg = cls(source=source)
        if "name" in d:
            if not isinstance(d["name"], str):
                raise QuantSpecError(f"{_where('name')}: must be a string")
            cfg.name = d["name"]
        if "description" in d:
            if not isinstance(d["description"], str):
                raise QuantSpecError(f"{_where('description')}: must be a string")
            cfg.description = d["description"]
        if "profile" in d:
            try:
                cfg.profile = get_profile(d["profile"]).name
            except (UnsupportedError, TypeError) as exc:
                raise QuantSpecError(f"{_where('profile')}: {exc}") from None
        cfg.weights = _rules(d.get("weights", []), "weights", _WEIGHT_KEYS)
        cfg.activations = _rules(d.get("activations", []), "activations", _ACT_KEYS)
        for i, r in enumerate(cfg.weights):  # value checks now, not at resolve time
            _merge_weight({}, {k: v for k, v in r.items() if k != "match"}, f"weights[{i}]")
        for i, r in enumerate(cfg.activations):
            _merge_act({}, {k: v for k, v in r.items() if k != "match"}, f"activations[{i}]")
        if "float_ops" in d:
            fo = d["float_ops"]
            cfg.float_ops = () if fo == [] else _patterns(fo, "float_ops")
        if "fuse_swiglu" in d:
            cfg.fuse_swiglu = _bool(d["fuse_swiglu"], "fuse_swiglu")
        if "bias_correction" in d:
            cfg.bias_correction = _bool(d["bias_correction"], "bias_correction")
        if d.get("smooth") is not None:
            s = _check_keys(d["smooth"], {"alpha", "match"}, "smooth")
            alpha = s.get("alpha", 0.5)
            if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
                raise QuantSpecError(f"{_where('smooth.alpha')}: must be a number in [0, 1]")
            if "match" not in s:
                raise QuantSpecError(f"{_where('smooth.match')}: list the linear weights to smooth")
            cfg.smooth = SmoothSpec(float(alpha), _patterns(s["match"], "smooth.match"))
        if "calibration" in d:
            c = _check_keys(d["calibration"], {"window", "windows"}, "calibration")
            cfg.calibration = {k: _int(v, f"calibration.{k}", 1, 1 << 20) for k, v in c.items()}
        return cfg

    @classmethod
    def load(cls, path_or_name: str | os.PathLike) -> QuantConfig:
        """Read a JSON config file, or a shipped one by name (``w8a8``, ``w4g32a8``...)."""
        p = Path(path_or_name)
        if not p.exists() and isinstance(path_or_name, str) and "/" not in path_or_name:
            shipped = CONFIG_DIR / f"{path_or_name.removesuffix('.json')}.json"
            if shipped.exists():
                p = shipped
        if not p.exists():
            known = ", ".join(sorted(f.stem for f in CONFIG_DIR.glob("*.json")))
            raise QuantSpecError(
                f"quantization config {str(path_or_name)!r} not found (shipped configs: {known})"
            )
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise QuantSpecError(f"quantization config {str(p)!r}: invalid JSON ({exc})") from None
        return cls.from_dict(d, source=str(p))

    def to_dict(self) -> dict[str, Any]:
        """The config as JSON data (round-trips through :meth:`from_dict`)."""

        def rule(r: Mapping[str, Any]) -> dict[str, Any]:
            out = dict(r)
            out["match"] = list(r["match"])
            if isinstance(out.get("observer"), ObserverSpec):
                out["observer"] = out["observer"].to_json()
            return out

        d: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "profile": self.profile,
            "weights": [rule(r) for r in self.weights],
            "activations": [rule(r) for r in self.activations],
            "float_ops": list(self.float_ops),
            "fuse_swiglu": self.fuse_swiglu,
            "bias_correction": self.bias_correction,
            "smooth": None
            if self.smooth is None
            else {"alpha": self.smooth.alpha, "match": list(self.smooth.match)},
        }
        if self.calibration:
            d["calibration"] = dict(self.calibration)
        return d

    # -- resolution against a model -------------------------------------------------------
    def check_patterns(
        self,
        weight_names: Sequence[str],
        points: Sequence[str],
        linear_weights: Sequence[str],
        op_outputs: Sequence[str],
        model: str,
    ) -> None:
        """Every rule (and every ``float_ops`` / ``smooth`` pattern) must match something of the
        model: a typo is an error. A rule's pattern list matches collectively, so one config can
        serve several architectures (``layers.*.ffn.w3`` exists in Llama only)."""
        groups = (
            ("weights", self.weights, weight_names, "weight"),
            ("activations", self.activations, points, "activation point"),
        )
        for key, rules, names, what in groups:
            for i, r in enumerate(rules):
                if not any(_matches(n, r["match"]) for n in names):
                    raise QuantSpecError(
                        f"{_where(f'{key}[{i}].match')}: {list(r['match'])} matches no {what} "
                        f"of this {model} model"
                    )
        for p in self.float_ops:
            if not any(fnmatch.fnmatchcase(n, p) for n in op_outputs):
                raise QuantSpecError(
                    f"{_where('float_ops')}: pattern {p!r} matches no op output of this {model} "
                    "model"
                )
        if self.smooth is not None:
            for p in self.smooth.match:
                if not any(fnmatch.fnmatchcase(n, p) for n in linear_weights):
                    raise QuantSpecError(
                        f"{_where('smooth.match')}: pattern {p!r} matches no linear weight of "
                        f"this {model} model"
                    )

    def weight_spec(self, name: str) -> WeightSpec:
        """The merged weight rules matching ``name`` (over the defaults)."""
        spec: dict[str, Any] = {}
        for i, r in enumerate(self.weights):
            if _matches(name, r["match"]):
                _merge_weight(spec, {k: v for k, v in r.items() if k != "match"}, f"weights[{i}]")
        ws = WeightSpec(**spec)
        if ws.granularity == "per-block":
            if ws.block is None:
                raise QuantSpecError(f"weight {name!r}: per-block granularity needs a 'block' size")
            if not ws.symmetric:
                raise QuantSpecError(
                    f"weight {name!r}: per-block weights must be symmetric (their integer block "
                    "scales multiply the codes)"
                )
            if (1 << (ws.bits - 1)) * ((1 << ws.block_scale_bits) - 1) > 128:
                raise QuantSpecError(
                    f"weight {name!r}: {ws.bits}-bit codes times {ws.block_scale_bits}-bit block "
                    "scales leave int8 (need 2^(bits-1) * (2^block_scale_bits - 1) <= 128)"
                )
        return ws

    def act_spec(self, point: str) -> ActSpec:
        """The merged activation rules matching ``point`` (over the defaults)."""
        spec: dict[str, Any] = {}
        for i, r in enumerate(self.activations):
            if _matches(point, r["match"]):
                _merge_act(spec, {k: v for k, v in r.items() if k != "match"}, f"activations[{i}]")
        a = ActSpec(**spec)
        if a.bits >= 16 and not a.symmetric:
            a = ActSpec(a.bits, True, a.observer)  # int16 kernels (and int32) take zero point 0
        return a

    def is_float(self, op_output: str) -> bool:
        return _matches(op_output, self.float_ops)

    def smooths(self, weight: str) -> bool:
        return self.smooth is not None and _matches(weight, self.smooth.match)
