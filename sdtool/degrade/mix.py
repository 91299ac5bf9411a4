"""Mixtures of degradations: which degrader makes each LR image, in given proportions, optionally followed by
the classic model's JPEG or noise (so that pairs from a learned degrader also teach an SR net about internet
JPEGs). Used by `sample-degradation --model mix` / `--pairs` and by `train --model sr`.

A mix is written `KIND[+EXTRA…]=WEIGHT,…`, e.g. `sdflow=0.6,sdflow+jpeg=0.3,classic=0.1`: KIND one of
sdflow, pdm, redeg, classic, bicubic; EXTRA jpeg (quality uniform in the classic --jpeg-quality range) or noise
(Gaussian, std uniform in the classic --noise range, /255). Weights are normalised to sum to 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sdtool.degrade.classic import ClassicConfig
from sdtool.errors import OptionError

if TYPE_CHECKING:  # pragma: no cover
    from torch import Generator, Tensor

BASE_KINDS = ("sdflow", "pdm", "redeg", "classic", "bicubic")
LEARNED_KINDS = ("sdflow", "pdm", "redeg")  # those with weights
EXTRAS = ("jpeg", "noise")


@dataclass(frozen=True)
class MixPart:
    kind: str
    extras: tuple[str, ...]
    weight: float

    @property
    def label(self) -> str:
        return "+".join((self.kind, *self.extras))


@dataclass(frozen=True)
class Mix:
    """Parts with weights summing to 1; `choose` draws one part per image from a generator."""

    parts: tuple[MixPart, ...]

    @property
    def kinds(self) -> tuple[str, ...]:
        """The base degraders the mix needs, in BASE_KINDS order."""
        used = {p.kind for p in self.parts}
        return tuple(k for k in BASE_KINDS if k in used)

    def describe(self) -> str:
        return ",".join(f"{p.label}={p.weight:g}" for p in self.parts)

    def choose(self, n: int, gen: "Generator") -> list[int]:
        """Index of the part for each of n images (always one draw per image, even for a single part, so that
        what follows in the generator does not depend on the mix's length)."""
        import torch

        probs = torch.tensor([p.weight for p in self.parts], dtype=torch.float64)
        return torch.multinomial(probs, n, replacement=True, generator=gen).tolist()


def single(kind: str) -> Mix:
    """The mix of one degrader (`--degradation sdflow` is `sdflow=1`)."""
    return parse_mix(f"{kind}=1")


def parse_mix(text: str, option: str = "mix") -> Mix:
    """`sdflow=0.6,sdflow+jpeg=0.4` → Mix; OptionError (naming `option`) for a malformed item."""
    parts = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        label, sep, value = item.partition("=")
        names = [n.strip() for n in label.split("+")]
        try:
            weight = float(value) if sep else 1.0
        except ValueError:
            raise OptionError(option, f"'{item}': '{value}' is not a number") from None
        if names[0] not in BASE_KINDS:
            raise OptionError(option, f"'{item}': {names[0]!r} is not one of {', '.join(BASE_KINDS)}")
        bad = [n for n in names[1:] if n not in EXTRAS]
        if bad:
            raise OptionError(option, f"'{item}': {bad[0]!r} is not one of {', '.join(EXTRAS)} (added after +)")
        if not weight >= 0 or weight == float("inf"):
            raise OptionError(option, f"'{item}': the weight must be a finite number >= 0")
        parts.append(MixPart(names[0], tuple(names[1:]), weight))
    total = sum(p.weight for p in parts)
    if not parts or total <= 0:
        raise OptionError(option, f"{text!r}: give KIND=WEIGHT items with a positive sum, e.g. sdflow=0.7,classic=0.3")
    return Mix(tuple(MixPart(p.kind, p.extras, p.weight / total) for p in parts))


def apply_extras(lr: "Tensor", extras: tuple[str, ...], classic: ClassicConfig, gen: "Generator") -> "Tensor":
    """The classic model's noise then JPEG on LR images N×3×h×w in [0, 1] (order as in the classic model:
    noise at the sensor, compression last). Every draw comes from `gen`."""
    import torch

    from sdtool.degrade.ops import jpeg

    n = lr.shape[0]
    if "noise" in extras:
        lo, hi = classic.noise
        sigma = (lo + (hi - lo) * torch.rand(n, generator=gen)) / 255.0
        noise = torch.randn(lr.shape, generator=gen) * sigma.reshape(-1, 1, 1, 1)
        lr = (lr + noise.to(lr.device)).clamp(0, 1)
    if "jpeg" in extras:
        q = torch.randint(classic.jpeg_quality[0], classic.jpeg_quality[1] + 1, (n,), generator=gen)
        lr = jpeg(lr, [int(v) for v in q])
    return lr
