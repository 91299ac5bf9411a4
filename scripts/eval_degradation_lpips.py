"""Degradation realism: LPIPS(alex) of LR images synthesised from an HR image against the real LR image of the
same scene (lower = more like the camera).

Usage:
  python scripts/eval_degradation_lpips.py classic|pdm|sdflow WEIGHTS|- [TEMPERATURE]
      one sampler on RealSR validation (Canon/Nikon 041-050, 20 pairs), beside bicubic.
  python scripts/eval_degradation_lpips.py table [--sets realsr,drealsr] [--methods M,...] [--redeg W]
                                                 [--cache FILE]
      the degradation-transfer table on RealSR validation and drealsr-crops-dev (14 pairs):
      bicubic           torch bicubic /4 with antialiasing
      sdflow, pdm       plain sampling (shipped weights, τ 0.8 and 1.0)
      sdflow-like-a/b, pdm-like-a/b, redeg-a/b
                        `--like`: (a) the scene's own real LR image, (b) the real LR image of another scene of
                        the same camera (the next one by name within the camera); ReDeg's Ω comes from the
                        real LR and its pseudo-HR made by the shipped SDFlow (`--pseudo-hr sdflow`)
      redeg             Ω drawn from the model's own pool (plain sampling)
      Every method is run through the same code as `sdtool sample-degradation`. Results per image are kept
      in --cache (JSON), so a method is computed once.
Cameras: RealSR names say Canon_ / Nikon_. DRealSR dev names are grouped by their letter prefix (Canon_,
DSC_, IMG_, P, panasonic_, sony_); IMG_ (Canon's default file name) joins Canon_ so that Canon_10 has a partner.
Data: $SDTOOL_DATA/realsr-crops and $SDTOOL_DATA/drealsr-crops-dev (else ./data/...).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from sdtool.imageio import read_image
from sdtool.metrics.lpips import lpips_distance
from sdtool.infer.run import Request
from sdtool.infer.sample_degradation import DegradeOptions, load_sampler

DATA = Path(os.environ.get("SDTOOL_DATA", "data"))
METHODS = ("bicubic", "sdflow", "sdflow-like-a", "sdflow-like-b", "pdm", "pdm-like-a", "pdm-like-b",
           "redeg", "redeg-a", "redeg-b")


def tensor(path: Path) -> torch.Tensor:
    return torch.from_numpy(read_image(path).rgb).permute(2, 0, 1)[None].contiguous()


def pairs(set_name: str) -> list[str]:
    if set_name == "realsr":
        return [f"{cam}_{i:03d}_LR4.png" for cam in ("Canon", "Nikon") for i in range(41, 51)]
    return sorted(p.name for p in (DATA / "drealsr-crops-dev" / "test_LR").glob("*.png"))


def root(set_name: str) -> Path:
    return DATA / ("realsr-crops" if set_name == "realsr" else "drealsr-crops-dev")


def camera(name: str) -> str:
    prefix = re.match(r"[A-Za-z]+", name).group(0).lower()
    return "canon" if prefix in ("canon", "img") else prefix


def partner(name: str, names: list[str]) -> str:
    """The next image of the same camera by name (cyclic), never the image itself."""
    group = sorted(n for n in names if camera(n) == camera(name))
    if len(group) < 2:
        raise SystemExit(f"{name}: no other image of its camera")
    return group[(group.index(name) + 1) % len(group)]


def legacy(argv: list[str]) -> None:
    kind = argv[0]
    weights = Path(argv[1]) if len(argv) > 1 and argv[1] != "-" else None
    opts = DegradeOptions(model=kind, temperature=float(argv[2]) if len(argv) > 2 else (1.0 if kind == "pdm" else 0.8))
    s = load_sampler(kind, weights, "cpu", opts)
    vals, bic = [], []
    for i, name in enumerate(pairs("realsr")):
        hr, lr = tensor(root("realsr") / "test_HR" / name), tensor(root("realsr") / "test_LR" / name)
        g = torch.Generator().manual_seed(41 + i % 10)
        vals.append(float(lpips_distance(s.sample(hr, g, Request(True, lambda f: None)).lr.cpu(), lr)[0]))
        bic.append(float(lpips_distance(bicubic(hr), lr)[0]))
    print(f"{kind} {weights} T={opts.temperature}: LPIPS sampled-vs-real mean {sum(vals)/len(vals):.4f} (n={len(vals)}); "
          f"bicubic-vs-real {sum(bic)/len(bic):.4f}")


def bicubic(hr: torch.Tensor) -> torch.Tensor:
    return F.interpolate(hr, scale_factor=0.25, mode="bicubic", antialias=True).clamp(0, 1)


class Method:
    """One column: make(set, name, hr, lr) → synthesised LR 1×3×h×w."""

    def __init__(self, method: str, redeg_weights: "Path | None") -> None:
        self.method = method
        kind = method.split("-")[0]
        if kind == "bicubic":
            return
        temperature = {"pdm": 1.0, "redeg": 1.0}.get(kind, 0.8)
        self.opts = DegradeOptions(model=kind, temperature=temperature, pseudo_hr="sdflow")
        self.sampler = load_sampler(kind, redeg_weights if kind == "redeg" else None, "cpu", self.opts)
        self.omega_cache: dict[str, torch.Tensor] = {}

    def like_source(self, set_name: str, name: str, names: list[str]) -> str:
        return name if self.method.endswith("-a") else partner(name, names)

    def make(self, set_name: str, name: str, names: list[str], hr: torch.Tensor, seed: int) -> torch.Tensor:
        if self.method == "bicubic":
            return bicubic(hr)
        s, g = self.sampler, torch.Generator().manual_seed(seed)
        s.transfer = None
        if self.method.endswith(("-a", "-b")):
            src = self.like_source(set_name, name, names)
            real = tensor(root(set_name) / "test_LR" / src)
            if s.kind == "redeg":
                key = f"{set_name}/{src}"
                if key not in self.omega_cache:
                    s.prepare_pool([real], [src])
                    self.omega_cache[key] = s.transfer["pool"]
                s.transfer = {"pool": self.omega_cache[key], "names": [src]}
            else:
                s.prepare_transfer(real, hr)
        return s.sample(hr, g, Request(True, lambda f: None)).lr.cpu()


def table(args: argparse.Namespace) -> None:
    cache_path = Path(args.cache)
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    sets = args.sets.split(",")
    methods = args.methods.split(",")
    for method in methods:
        todo = [(st, n) for st in sets for n in pairs(st) if f"{method}|{st}|{n}" not in cache]
        if not todo:
            continue
        m = Method(method, Path(args.redeg) if args.redeg else None)
        for st, name in todo:
            names = pairs(st)
            hr, lr = tensor(root(st) / "test_HR" / name), tensor(root(st) / "test_LR" / name)
            fake = m.make(st, name, names, hr, seed=names.index(name))
            cache[f"{method}|{st}|{name}"] = float(lpips_distance(fake, lr)[0])
            cache_path.write_text(json.dumps(cache, indent=0, sort_keys=True))
            print(f"{method} {st} {name}: {cache[f'{method}|{st}|{name}']:.4f}", file=sys.stderr, flush=True)
    print("| method | " + " | ".join(f"{st} LPIPS ↓ | lower than bicubic by" for st in sets) + " |")
    print("|---|" + "---|---|" * len(sets))
    for method in methods:
        cells = []
        for st in sets:
            vals = [cache[f"{method}|{st}|{n}"] for n in pairs(st)]
            base = [cache.get(f"bicubic|{st}|{n}") for n in pairs(st)]
            mean = sum(vals) / len(vals)
            rel = f"{100 * (1 - mean / (sum(base) / len(base))):+.1f} %" if None not in base else "-"
            cells += [f"{mean:.4f}", rel]
        print(f"| {method} | " + " | ".join(cells) + " |")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("classic", "pdm", "sdflow"):
        legacy(sys.argv[1:])
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["table"])
    ap.add_argument("--sets", default="realsr,drealsr")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--redeg", default=None, help="ReDeg weights (default: the shipped ones)")
    ap.add_argument("--cache", default="eval_degradation_lpips.json")
    table(ap.parse_args())


if __name__ == "__main__":
    main()
