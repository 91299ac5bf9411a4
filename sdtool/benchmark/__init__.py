"""`sdtool benchmark`: SR and downscaling metrics on paired x4 datasets, comparable to published numbers.

Data: a folder of x4 pairs, found by layout (see `find_pairs`):
- StableSR-protocol crops: `test_HR/` and `test_LR/` holding the same file names (RealSR crops name both
  `*_LR4.png`, DRealSR crops `*_x1.png`);
- original DRealSR x4 test set: `test_HR/*_x1.png` with `test_LR/*_x4.png` (searched a few levels down);
- original RealSR (V3): `Canon|Nikon/Test/4/*_HR.png` beside `*_LR4.png` (LR stored at HR size is reduced
  by MATLAB bicubic /4 first, as the RealSR protocol does);
- any folder with `HR|GT|hr` and `LR|LQ|lr` subfolders.
Pairs are matched by name, never by position; the HR must be exactly 4× the LR.

Metrics (images on the uint8 grid, 0..255, float64; see sdtool.metrics):
psnr_rgb/psnr_y/ssim_rgb/ssim_y (crop border 4), lpips (alex v0.1), niqe (whole SR image),
lr_psnr (MATLAB-bicubic /4 of the SR vs the LR input, RGB, no crop), color_err (mean over R, G, B of
|mean(SR channel) − mean(HR channel)|, 0..255, crop border 4: a colour drift LPIPS does not show). With N > 1
samples the per-image value is the mean over samples, plus lpips_best (best-of-N LPIPS) and diversity (mean
per-pixel std across the samples, 0..255 scale). Downscaling: down_psnr_real/down_lpips_real (generated LR vs
the dataset's real LR) and down_psnr_bicubic/down_lpips_bicubic (generated LR vs the MATLAB-bicubic LR of the HR).
"""

from pathlib import Path

from sdtool.benchmark.data import (
    KNOWN_DATASETS, SCALE, SPLITS, Dataset, Pair, find_pairs, load_dataset, read_pair, realsr_split,
)
from sdtool.benchmark.methods import (
    Method, baseline_method, baseline_upscale, bicubic_downscale, bicubic_upscale, folder_method, model_downscale,
    model_upscale, resolve_methods, to_grid, to_tensor, unique_names,
)
from sdtool.benchmark.report import write_report, write_sheet
from sdtool.errors import UsageError
from sdtool.benchmark.run import (
    DOWN_KEYS, SAMPLE_KEYS, SR_KEYS, BenchmarkProgress, run_benchmark, run_method, sr_metrics,
)

__all__ = [
    "KNOWN_DATASETS", "SCALE", "SPLITS", "Dataset", "Pair", "find_pairs", "load_dataset", "read_pair", "realsr_split",
    "Method", "bicubic_downscale", "bicubic_upscale", "folder_method", "model_downscale", "model_upscale",
    "resolve_methods", "to_grid", "to_tensor", "unique_names", "write_report", "DOWN_KEYS", "SAMPLE_KEYS",
    "SR_KEYS", "BenchmarkProgress", "run_benchmark", "run_method", "sr_metrics", "baseline_method", "baseline_upscale",
    "write_sheet", "cache_dir", "UsageError",
]


def cache_dir(report_path: Path) -> Path:
    """Where per-image results of a report are kept: beside it, <stem>.cache/."""
    report_path = Path(report_path)
    return report_path.with_name(report_path.stem + ".cache")
