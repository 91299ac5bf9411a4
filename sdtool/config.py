"""Model sizes as frozen dataclasses: SDFlow (`PRESETS`) and the PDM degradation model (`PDM_PRESETS`).

A config is stored as JSON in a checkpoint's metadata, so a checkpoint alone rebuilds its model; every field is
checked for type and range when a config is made (`JsonConfig`), so a file cannot ask for an absurd model.
`paper` reproduces the authors' SDFlow exactly (about 14.1 M parameters); `lite` is for CPU training
and fast inference; `tiny` is for tests.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import ClassVar, TypeVar

C = TypeVar("C", bound="JsonConfig")


def _check_field(name: str, kind: str, value: object, limits: tuple[float, float]) -> None:
    """ValueError unless `value` has the field's type (int, float, bool, str or tuple[int, …]) and lies in
    `limits`: a config read from a file must not ask for a model of absurd size or shape."""
    lo, hi = limits
    shown = repr(value)[:40]
    if kind == "bool":
        ok, want = type(value) is bool, "true or false"
    elif kind == "str":
        ok, want = isinstance(value, str) and len(value) <= 200, "a short text"
    elif kind == "int":
        ok, want = type(value) is int and lo <= value <= hi, f"an integer in {lo:g}..{hi:g}"
    elif kind == "float":
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        ok = number and math.isfinite(value) and lo <= value <= hi  # type: ignore[operator,arg-type]
        want = f"a number in {lo:g}..{hi:g}"
    else:  # tuple[int, int, …]
        n = kind.count("int")
        ok = (isinstance(value, tuple) and len(value) == n
              and all(type(v) is int and lo <= v <= hi for v in value))
        want = f"{n} integers in {lo:g}..{hi:g}"
    if not ok:
        raise ValueError(f"{name} must be {want}, got {shown}")


class JsonConfig:
    """JSON round trip for frozen config dataclasses (checkpoint metadata); unknown fields are refused, and every
    field is checked for its type and its range in LIMITS (default: integers 1..4096, numbers 0..1e6)."""

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {}

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            kind = str(f.type)
            default = (1, 4096) if "int" in kind else (0, 1e6)
            _check_field(f.name, kind, getattr(self, f.name), self.LIMITS.get(f.name, default))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)  # type: ignore[call-overload]

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError(f"expected a JSON object, got {type(data).__name__}")
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

    # Counts of steps and blocks: the paper uses at most 16; 256 is far past any useful model.
    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        name: (1, 256) for name in ("hr_steps", "lr_steps", "hf_steps", "hf_rrdb", "deg_steps", "deg_rrdb",
                                    "enc_blocks", "enc_mf_convs")
    }



# Sampling temperatures used when none is given (upscale, benchmark / downscale, sample-degradation), chosen
# on RealSR validation (README "Numbers": τ 0.4 had the lowest LPIPS with the colour guard, at a third of the
# diversity of τ 0.8); the authors' code uses 0.8 for both.
DEFAULT_SR_TEMPERATURE = 0.4
DEFAULT_DOWN_TEMPERATURE = 0.8

# Tiling defaults, in input pixels. Tiling is on by default when the input has more pixels than
# AUTO_TILE_PIXELS (CPU) or AUTO_TILE_PIXELS_CUDA (GPU); the tile side is DEFAULT_TILE[task].
AUTO_TILE_PIXELS = 512 * 512
AUTO_TILE_PIXELS_CUDA = 1024 * 1024
DEFAULT_TILE: dict[str, int] = {"upscale": 192, "downscale": 512}
DEFAULT_OVERLAP: dict[str, int] = {"upscale": 16, "downscale": 32}
DOWNSCALE_ALIGN = 8  # HR pixels per downscale-noise pixel: tile origins must sit on this grid
MIN_TILE: dict[str, int] = {"upscale": 16, "downscale": 64}

# Detail gain of upscale's wavelet colour guard (sdtool.infer.colorfix), chosen on RealSR validation (README "Numbers").
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


@dataclass(frozen=True)
class PDMConfig(JsonConfig):
    """Sizes of a PDM. kernel_size K (odd), scale s, spatial (per-pixel kernels), zk_dim (length of z_k or
    channels of the z_k map), k_hidden/k_layers (netK width/depth), n_hidden/n_layers (netN), init_sigma
    (std in HR pixels of the initial Gaussian kernel; start wide: in our runs the adversarial game
    shrinks a too-wide kernel steadily but overshoots when it has to widen a too-narrow one), init_noise (initial
    noise std, [0,1] units), logit_smooth
    (std, in kernel pixels, of a fixed Gaussian blur applied to netK's logits before the softmax; 0 = off)."""

    name: str = "default"
    scale: int = 4
    kernel_size: int = 21
    spatial: bool = False
    zk_dim: int = 64
    k_hidden: int = 64
    k_layers: int = 3
    n_hidden: int = 32
    n_layers: int = 3
    signal_dependent: bool = True
    init_sigma: float = 2.0
    init_noise: float = 0.01
    logit_smooth: float = 1.5

    LIMITS: ClassVar[dict[str, tuple[float, float]]] = {
        "scale": (1, 16), "kernel_size": (1, 63), "k_layers": (1, 64), "n_layers": (1, 64),
        "init_sigma": (0.01, 100), "init_noise": (0, 1), "logit_smooth": (0, 100),
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {self.kernel_size}")


PDM_PRESETS: dict[str, PDMConfig] = {
    "default": PDMConfig(),
    "variant": PDMConfig(name="variant", spatial=True, zk_dim=16),
    "tiny": PDMConfig(name="tiny", zk_dim=8, k_hidden=32, k_layers=2, n_hidden=8, n_layers=2, init_sigma=2.5),
}


def get_config(name: str) -> SDFlowConfig:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown model size {name!r}; choose one of {sorted(PRESETS)}") from None
