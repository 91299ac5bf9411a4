"""LPIPS(alex) of sampled LR vs real LR on realsr-crops validation (Canon/Nikon 041-050, 20 pairs).

Usage: python scripts/eval_degradation_lpips.py classic|pdm|sdflow WEIGHTS|- [TEMPERATURE]
The RealSR crops folder (test_HR/, test_LR/) is $SDTOOL_DATA/realsr-crops, else ./data/realsr-crops.
"""
import os, sys, torch
from pathlib import Path
from sdtool.imageio import read_image
from sdtool.metrics.lpips import lpips_distance
from sdtool.sample_degradation import DegradeOptions, load_sampler
root = Path(os.environ.get("SDTOOL_DATA", "data")) / "realsr-crops"
kind = sys.argv[1]; weights = Path(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] != "-" else None
opts = DegradeOptions(model=kind, temperature=float(sys.argv[3]) if len(sys.argv) > 3 else (1.0 if kind == "pdm" else 0.8))
s = load_sampler(kind, weights, "cpu", opts)
vals = []; bic = []
for cam in ("Canon", "Nikon"):
    for i in range(41, 51):
        name = f"{cam}_{i:03d}_LR4.png"
        hr = torch.from_numpy(read_image(root / "test_HR" / name).rgb).permute(2, 0, 1)[None]
        lr = torch.from_numpy(read_image(root / "test_LR" / name).rgb).permute(2, 0, 1)[None]
        g = torch.Generator().manual_seed(i)
        fake = s.sample(hr, g, lambda f: None).lr.cpu()
        vals.append(float(lpips_distance(fake, lr)[0]))
        bic.append(float(lpips_distance(torch.nn.functional.interpolate(hr, scale_factor=0.25, mode="bicubic", antialias=True).clamp(0, 1), lr)[0]))
print(f"{kind} {weights} T={opts.temperature}: LPIPS sampled-vs-real mean {sum(vals)/len(vals):.4f} (n={len(vals)}); bicubic-vs-real {sum(bic)/len(bic):.4f}")
