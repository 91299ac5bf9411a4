"""Model sizes as frozen dataclasses.

A config is stored as JSON in a checkpoint's metadata, so a checkpoint alone rebuilds its model.
`paper` reproduces the authors' SDFlow exactly (about 14.1 M parameters); `lite` is for CPU training
and fast inference; `tiny` is for tests.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import TypeVar

C = TypeVar("C", bound="JsonConfig")


class JsonConfig:
    """JSON round trip for frozen config dataclasses (checkpoint metadata); unknown fields are refused."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)  # type: ignore[call-overload]

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        data = json.loads(text)
        fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = set(data) - set(fields)
        if unknown:
            raise ValueError(f"unknown config fields: {sorted(unknown)}")
        for name, value in data.items():
            if isinstance(value, list) and str(fields[name].type).startswith("tuple"):
                data[name] = tuple(value)  # JSON has no tuples
        return cls(**data)


@dataclass(frozen=True)
class SDFlowConfig(JsonConfig):
    """Sizes of every SDFlow network (see docs: HR, HF, LR, content extractor, degradation flows)."""

    name: str = "paper"
    hidden: int = 64  # width of coupling / injector sub-networks
    hr_steps: tuple[int, int] = (16, 16)  # flow steps after the first and second squeeze of the HR flow
    lr_steps: int = 16  # flow steps of the LR flow
    hf_steps: int = 8  # conditional steps of the high-frequency flow
    hf_rrdb: int = 8  # RRDBs in the HF condition extractor
    deg_steps: int = 8  # conditional steps of the degradation flow
    deg_rrdb: int = 4  # RRDBs in the degradation condition extractor
    rrdb_nf: int = 64  # RRDB feature width
    rrdb_gc: int = 32  # RRDB growth channels
    cond_channels: int = 64  # condition features fed to injectors and couplings
    enc_nc: int = 64  # LR content extractor width
    enc_blocks: int = 16  # feature-modulated residual blocks
    enc_mf_convs: int = 8  # convolutions of the degradation-modulation branch
    n_gaussian: int = 16  # mixture components of the degradation prior



# Sampling temperatures used when none is given (upscale, benchmark / downscale, sample-degradation), chosen
# on RealSR validation (README "Numbers": τ 0.4 had the lowest LPIPS with the colour guard, at a third of the
# diversity of τ 0.8); the authors' code uses 0.8 for both.
DEFAULT_SR_TEMPERATURE = 0.4
DEFAULT_DOWN_TEMPERATURE = 0.8
# Detail gain of upscale's wavelet colour guard (sdtool.colorfix), chosen on RealSR validation (README "Numbers").
DEFAULT_DETAIL = 0.75
# Deterministic SR networks (`train --model sr`): the wavelet guard at detail 1 by default. On RealSR validation it
# raised the SDFlow-pairs network from 25.29 dB / LPIPS 0.275 (raw) to 25.58 / 0.271 (README "SR networks").
SR_NET_DETAIL = 1.0

PRESETS: dict[str, SDFlowConfig] = {
    "paper": SDFlowConfig(),
    "lite": SDFlowConfig(
        name="lite", hidden=32, hr_steps=(8, 8), lr_steps=8, hf_steps=4, hf_rrdb=2, deg_steps=4,
        deg_rrdb=1, rrdb_nf=32, rrdb_gc=16, cond_channels=32, enc_nc=32, enc_blocks=8, enc_mf_convs=4,
    ),
    "tiny": SDFlowConfig(
        name="tiny", hidden=8, hr_steps=(2, 2), lr_steps=2, hf_steps=2, hf_rrdb=1, deg_steps=2,
        deg_rrdb=1, rrdb_nf=8, rrdb_gc=4, cond_channels=8, enc_nc=8, enc_blocks=2, enc_mf_convs=2,
        n_gaussian=4,
    ),
}


def get_config(name: str) -> SDFlowConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model size {name!r}; choose one of {sorted(PRESETS)}") from None
