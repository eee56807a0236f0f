"""Arithmetic profiles: which peer's integer arithmetic a kernel reproduces.

One kernel implementation serves several runtimes; a :class:`Profile` selects the places where
those runtimes differ. Every profile names the peer (and version) it was checked against and
what it cannot reproduce. The kernel x profile x verified-against table is in docs/profiles.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from refq.errors import UnsupportedError

Rounding = Literal["double", "single"]
"""``double``: gemmlowp SRDHM then RoundingDivideByPOT (two roundings, TFLM reference).
``single``: one round-half-up of x*M / 2^(31-shift) in int64 (TFLITE_SINGLE_ROUNDING)."""

Requant = Literal["fixedpoint", "float32"]
"""``fixedpoint``: int32 multiplier + shift.
``float32``: ONNX / ORT: float32(acc) * M, round half to even."""

Accumulate = Literal["exact", "u8s8_sat16"]
"""``exact``: int32 sums of products. ``u8s8_sat16``: ORT x86 AVX2 (no VNNI) pairwise int16
saturation of u8 x s8 products before the int32 sum."""

Nonlinear = Literal["tflm", "ibert", "ivit"]
"""Which integer algorithms softmax / GELU / LayerNorm use."""

Sqrt = Literal["exact", "newton10"]
"""``exact``: floor(sqrt(n)) exactly. ``newton10``: I-ViT's fixed 10 Newton steps from 2^16."""


FCRequant = Literal["fixedpoint", "float64"]
"""How FULLY_CONNECTED requantizes (see ``Profile.fc_requant``)."""

Family = Literal["tflm", "litert", "onnx"]
"""The runtime whose kernel variants a profile follows (see ``Profile.family``)."""


@dataclass(frozen=True)
class Profile:
    """A named set of arithmetic choices; see the module docstring."""

    name: str
    rounding: Rounding = "double"
    requant: Requant = "fixedpoint"
    accumulate: Accumulate = "exact"
    nonlinear: Nonlinear = "tflm"
    sqrt: Sqrt = "exact"
    # Per-tensor FULLY_CONNECTED multiplier: the tflite-micro wheel widens s_in and s_w to double
    # before multiplying; the TFLM C++ source multiplies them in float32 first (peer-facts 1).
    fc_product_float32: bool = False
    # BATCH_MATMUL multiplier, same choice (measured: the tflite-micro wheel uses the double
    # product, LiteRT 2.3's reference kernel the float32 product).
    bmm_product_float32: bool = False
    # FULLY_CONNECTED requantization: ``fixedpoint`` (M, shift) as TFLM / CMSIS-NN, or LiteRT
    # 2.3's reference kernel, measured: round_half_away(double(acc) * double(real)) for int8
    # and 16x8 alike (it agrees with single rounding except at exact ties and where the 31-bit
    # multiplier's error crosses a .5).
    fc_requant: FCRequant = "fixedpoint"
    # Which runtime's kernel variants to follow where TFLite-family peers differ beyond the
    # fields above (LiteRT: float32 tables for int8 TANH / LOGISTIC, float32 RSQRT multiplier,
    # int16 ADD / SUB power-of-two path, refusals of what it has no kernel for).
    family: Family = "tflm"
    peer: str = ""
    limitations: str = ""

    def with_(self, **changes: object) -> Profile:
        """A copy with some fields changed (e.g. ``cmsis-nn`` with single rounding)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "tflm",
            peer="TFLite Micro reference kernels, tflite-micro wheel 0.dev20261023",
            limitations=(
                "int16 softmax tables are filled with libm exp at prepare time in TFLM; refq ships "
                "its own tables, so int16 softmax matches only where libm agrees."
            ),
        ),
        Profile(
            "tflm-f32",
            fc_product_float32=True,
            bmm_product_float32=True,
            peer="TFLite Micro C++ source (FC / BATCH_MATMUL multipliers from a float32 product)",
        ),
        Profile(
            "cmsis-nn",
            peer="CMSIS-NN v7 (default build: double rounding, as TFLM)",
        ),
        Profile(
            "cmsis-nn-single",
            rounding="single",
            peer="CMSIS-NN v7 built with CMSIS_NN_USE_SINGLE_ROUNDING",
        ),
        Profile(
            "litert-ref",
            # Measured: every LiteRT reference kernel refq runs rounds twice, as TFLM, except
            # FULLY_CONNECTED (``fc_requant``); BATCH_MATMUL uses the float32 scale product.
            fc_requant="float64",
            bmm_product_float32=True,
            family="litert",
            peer="ai-edge-litert 2.3 reference kernels (BuiltinRefOpResolver)",
            limitations="LiteRT's optimized kernels match neither rounding exactly.",
        ),
        Profile(
            "onnx",
            requant="float32",
            family="onnx",
            peer="ONNX spec / onnx.reference and onnxruntime 1.32 exact integer paths",
        ),
        Profile(
            "ort-x86-u8s8",
            requant="float32",
            accumulate="u8s8_sat16",
            family="onnx",
            peer="onnxruntime 1.32 on x86-64 AVX2 without VNNI, u8 activations x s8 weights",
            limitations="Only reproduces ORT where it takes the AVX2 non-VNNI u8s8 kernel.",
        ),
        Profile(
            "ibert",
            nonlinear="ibert",
            peer="I-BERT (Kim et al. 2021) integer GELU / softmax / LayerNorm, exact integer form",
            limitations="The released code runs on float tensors; its float32 runs deviate.",
        ),
        Profile(
            "ivit",
            nonlinear="ivit",
            sqrt="newton10",
            peer="I-ViT (Li & Gu 2023) Shiftmax / ShiftGELU / I-LayerNorm, exact integer form",
            limitations="Fixed 10-step Newton sqrt from 2^16 as published (bad on small variances)",
        ),
        Profile(
            "ivit-exact",
            nonlinear="ivit",
            sqrt="exact",
            peer="I-ViT algorithms with an exact integer sqrt",
        ),
    )
}


def get_profile(profile: str | Profile) -> Profile:
    """Look a profile up by name (or pass a :class:`Profile` through)."""
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[profile]
    except KeyError:
        raise UnsupportedError(
            f"unknown profile {profile!r}; known profiles: {', '.join(sorted(PROFILES))}"
        ) from None
