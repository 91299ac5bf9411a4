"""Benchmark library: dataset layouts and pairing, bicubic and model methods, report and files."""

import csv
import json
import math
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from sdtool import benchmark as bm
from sdtool.errors import DatasetError, UsageError
from sdtool.infer.sampling import draw
from sdtool.metrics import psnr
from sdtool.resize import imresize_np, quantize


def scene(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.zeros((h, w, 3))
    for c in range(3):
        img[..., c] = 90 + 60 * np.sin(2 * np.pi * (xx * rng.uniform(0.5, 2) + yy * rng.uniform(0.5, 2)) + c)
    for _ in range(10):
        cy, cx, r = rng.uniform(0, 1), rng.uniform(0, 1), rng.uniform(0.03, 0.2)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    img += rng.normal(0, 3, img.shape)
    return np.clip(np.floor(img + 0.5), 0, 255)


def _save(path: Path, img: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, img.astype(np.uint8))


def make_pair(seed: int, hr_side: int = 192) -> tuple[np.ndarray, np.ndarray]:
    hr = scene(hr_side, hr_side, seed)
    lr = quantize(imresize_np(hr, 0.25) + np.random.default_rng(seed + 100).normal(0, 4, (hr_side // 4, hr_side // 4,
                                                                                          3)))
    return hr, lr


def stablesr(root: Path, names: list[str], hr_side: int = 192) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    out = {}
    for i, n in enumerate(names):
        hr, lr = make_pair(i, hr_side)
        _save(root / "test_HR" / n, hr)
        _save(root / "test_LR" / n, lr)
        out[Path(n).stem] = (hr, lr)
    return out


# ----------------------------------------------------------------------------------------------- layouts
def test_stablesr_layout_pairs_by_name_not_position(tmp_path):
    stablesr(tmp_path, ["b.png", "c.png"], 64)
    _save(tmp_path / "test_HR" / "a.png", scene(64, 64, 9))  # extra HR without LR: must not shift pairs
    pairs, layout = bm.find_pairs(tmp_path)
    assert [p.name for p in pairs] == ["b", "c"]
    assert "same-name" in layout
    for p in pairs:
        assert p.hr.name == p.lr.name
        hr, lr, notes = bm.read_pair(p)
        assert hr.shape == (64, 64, 3) and lr.shape == (16, 16, 3) and not notes
    data = bm.load_dataset(str(tmp_path))
    assert data.notices == (f"{tmp_path / 'test_HR' / 'a.png'}: no LR image with a matching name; left out",)


def test_drealsr_original_tagged_names(tmp_path):
    for i, stem in enumerate(["Canon_3", "DSC_10", "P11"]):
        hr, lr = make_pair(i, 32)
        _save(tmp_path / "x4" / "Test_x4" / "test_HR" / f"{stem}_x1.png", hr)
        _save(tmp_path / "x4" / "Test_x4" / "test_LR" / f"{stem}_x4.png", lr)
    pairs, layout = bm.find_pairs(tmp_path)
    assert [p.name for p in pairs] == ["Canon_3", "DSC_10", "P11"]
    assert all(p.hr.name == f"{p.name}_x1.png" and p.lr.name == f"{p.name}_x4.png" for p in pairs)
    assert "tagged" in layout


def test_realsr_original_layout_uses_test_and_reduces_full_size_lr(tmp_path):
    hr = scene(66, 66, 1)  # not a multiple of 4: cropped to 64
    lr_full = quantize(imresize_np(quantize(imresize_np(hr, 0.25)), out_size=(66, 66)))
    for split in ("Train", "Test"):
        _save(tmp_path / "Canon" / split / "4" / "Canon_001_HR.png", hr)
        _save(tmp_path / "Canon" / split / "4" / "Canon_001_LR4.png", lr_full)
    pairs, layout = bm.find_pairs(tmp_path)
    assert len(pairs) == 1 and "Test" in pairs[0].hr.parts and pairs[0].name == "Canon_001"
    hr, lr, notes = bm.read_pair(pairs[0])
    assert hr.shape == (64, 64, 3) and lr.shape == (16, 16, 3) and notes


def test_mismatched_sizes_are_refused_with_the_name(tmp_path):
    _save(tmp_path / "test_HR" / "x.png", scene(64, 60, 0))
    _save(tmp_path / "test_LR" / "x.png", scene(16, 16, 0))
    pairs, _ = bm.find_pairs(tmp_path)
    with pytest.raises(DatasetError, match=r"x: HR 60×64 is not 4× LR 16×16"):
        bm.read_pair(pairs[0])


def test_missing_data_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SDTOOL_DATA", raising=False)
    with pytest.raises(DatasetError, match=r"data/drealsr.*test_HR/ and test_LR/.*`data_root`.*SDTOOL_DATA") as exc:
        bm.load_dataset("drealsr")
    assert "--data-root" in exc.value.render(lambda n: "--" + n.replace("_", "-"))  # what the CLI shows
    with pytest.raises(DatasetError, match="no x4 pairs"):
        (tmp_path / "empty").mkdir()
        bm.load_dataset(str(tmp_path / "empty"))


def test_data_root_env_and_realsr_split(tmp_path, monkeypatch):
    names = [f"{cam}_{n:03d}_LR4.png" for cam in ("Canon", "Nikon") for n in (1, 40, 41, 50)]
    stablesr(tmp_path / "realsr", names, 32)
    monkeypatch.setenv("SDTOOL_DATA", str(tmp_path))
    d = bm.load_dataset("realsr", split="val")
    assert d.name == "realsr" and d.root == tmp_path / "realsr"
    assert [p.name for p in d.pairs] == ["Canon_041_LR4", "Canon_050_LR4", "Nikon_041_LR4", "Nikon_050_LR4"]
    assert len(bm.load_dataset("realsr", split="train").pairs) == 4
    assert bm.load_dataset("realsr", split="validation").pairs == d.pairs
    assert len(bm.load_dataset("realsr", data_root=tmp_path / "realsr", limit=3).pairs) == 3
    with pytest.raises(UsageError):
        bm.load_dataset("realsr", split="test")
    stablesr(tmp_path / "other", ["img1.png"], 32)
    with pytest.raises(UsageError, match="Canon_NNN"):
        bm.load_dataset(str(tmp_path / "other"), split="val")


# ---------------------------------------------------------------------------------------------- running
class StandIn:
    """Object with the SDFlow inference API: bicubic SR plus temperature-scaled noise; bicubic downscaling."""

    device = torch.device("cpu")
    n_components = 3

    def __init__(self, noise_gain: float = 0.0) -> None:
        self.noise_gain = noise_gain

    @staticmethod
    def upscale_noise_shape(n, h, w):
        return (n, 3, h, w)

    @staticmethod
    def downscale_noise_shape(n, h, w):
        return (n, 3, math.ceil(h / 8), math.ceil(w / 8))

    def upscale(self, x, temperature=0.8, generator=None, noise=None, color_fix="none", delattice=True):
        from sdtool.resize import imresize

        if noise is None:
            noise = torch.randn(self.upscale_noise_shape(*x.shape[:1], *x.shape[2:]), generator=generator)
        up = imresize(x, 4) + self.noise_gain * temperature * noise.repeat_interleave(4, 2).repeat_interleave(4, 3)
        return up.clamp(0, 1)

    def downscale(self, y, temperature=0.8, component=None, generator=None, noise=None):
        from sdtool.resize import imresize

        return imresize(y, 0.25).clamp(0, 1)


def test_bicubic_report_matches_direct_metrics(tmp_path):
    truth = stablesr(tmp_path, ["p1.png", "p2.png"])
    data = bm.load_dataset(str(tmp_path))
    events = []
    report = bm.run_benchmark(data, [bm.Method("bicubic", "bicubic")], progress=events.append)
    s = report["summary"]["bicubic"]
    assert set(s) == {*bm.SR_KEYS, "down_psnr_real", "down_lpips_real"}
    want = np.mean([psnr(bm.bicubic_upscale(lr), hr, crop_border=4) for hr, lr in truth.values()])
    assert s["psnr_rgb"] == pytest.approx(want, abs=1e-9)
    assert [r["image"] for r in report["per_image"]["bicubic"]] == ["p1", "p2"]
    # The LR was made by bicubic /4 plus noise of sigma 4: PSNR ~ 20*log10(255/4) = 36.1 dB.
    assert 35.0 < s["down_psnr_real"] < 37.0
    assert s["lr_psnr"] > 35 and 0 < s["lpips"] < 1 and math.isfinite(s["niqe"])
    assert [(e.done, e.total) for e in events] == [(1, 2), (2, 2)]
    assert report["settings"]["pairs"] == 2 and report["settings"]["crop_border"] == 4
    assert {"sdtool", "torch", "numpy"} <= set(report["versions"])
    assert report["methods"]["bicubic"]["wall_time_s"] > 0 and report["methods"]["bicubic"]["peak_rss_mb"] > 0


def test_model_method_samples_diversity_and_downscaling(tmp_path):
    stablesr(tmp_path, ["p1.png"], 128)
    data = bm.load_dataset(str(tmp_path))
    still = bm.Method("still", "model", model=StandIn(0.0), temperature=0.8)
    noisy = bm.Method("noisy", "model", model=StandIn(0.05), temperature=0.8)
    report = bm.run_benchmark(data, [bm.Method("bicubic", "bicubic"), still, noisy], samples=2, seed=3)
    b, st, no = (report["summary"][k] for k in ("bicubic", "still", "noisy"))
    # The noiseless stand-in is bicubic in float32: the same numbers up to rounding on the uint8 grid.
    assert st["psnr_rgb"] == pytest.approx(b["psnr_rgb"], abs=0.02)
    assert st["diversity"] == 0.0 and st["lpips_best"] == pytest.approx(st["lpips"], abs=1e-9)
    # Two draws of N(0, (0.05·0.8·255)²): mean |a-b|/2 = 10.2 · E|Z1-Z2| / 2 ≈ 5.75 (clipping trims it a little).
    assert 4.5 < no["diversity"] < 6.5
    assert no["lpips_best"] <= no["lpips"] and no["psnr_rgb"] < b["psnr_rgb"] - 1.0
    # Generated LR = bicubic LR exactly (up to float rounding), so it scores like bicubic against the real LR.
    assert st["down_psnr_bicubic"] > 50
    assert st["down_psnr_real"] == pytest.approx(b["down_psnr_real"], abs=0.05)
    # Same seed, same numbers.
    again = bm.run_benchmark(data, [noisy], samples=2, seed=3)
    assert again["summary"]["noisy"]["psnr_rgb"] == no["psnr_rgb"]


def test_large_inputs_use_the_tiled_runner():
    class Pointwise(StandIn):
        def upscale(self, x, temperature=0.8, generator=None, noise=None, color_fix="none", delattice=True):
            return (x + 0.1 * temperature * noise).clamp(0, 1).repeat_interleave(4, 2).repeat_interleave(4, 3)

    m = Pointwise()
    lr = scene(150, 140, 2)
    tiled = bm.model_upscale(m, lr, 0.5, seed=1)
    _, field = draw(m, "upscale", 150, 140, torch.Generator().manual_seed(1))  # the noise model_upscale draws
    whole = bm.to_grid(m.upscale(bm.to_tensor(lr), 0.5, noise=field.full()))
    assert tiled.shape == (600, 560, 3)
    assert np.abs(tiled - whole).max() <= 1.0  # blending pointwise-identical tiles changes nothing but rounding


def test_resolve_methods_errors_and_names():
    with pytest.raises(UsageError, match="unknown method"):
        bm.resolve_methods([], ["nearest"], default_model=False)
    with pytest.raises(UsageError, match="nothing to benchmark"):
        bm.resolve_methods([], [], default_model=False)
    ms = bm.resolve_methods([], ["bicubic", "BICUBIC"], default_model=False)
    assert [m.name for m in ms] == ["bicubic"]


def test_tiny_checkpoint_side_by_side_with_bicubic(tmp_path, tiny_model):
    from sdtool.checkpoint import save_model

    save_model(tiny_model, tmp_path / "tiny.safetensors")
    stablesr(tmp_path / "data", ["a.png", "b.png"], 128)
    data = bm.load_dataset(str(tmp_path / "data"))
    two_t = bm.resolve_methods([tmp_path / "tiny.safetensors"], ["bicubic"], [0.0, 0.5], device="cpu")
    assert [m.name for m in two_t] == ["bicubic", "tiny@0", "tiny@0.5"]
    assert two_t[1].model is two_t[2].model  # one load per checkpoint
    methods = bm.resolve_methods([tmp_path / "tiny.safetensors"], ["bicubic"], [0.5], device="cpu")
    assert [m.name for m in methods] == ["bicubic", "tiny"]
    report = bm.run_benchmark(data, methods, samples=1)
    for name in ("tiny",):
        s = report["summary"][name]
        assert set(s) >= {*bm.SR_KEYS, *bm.DOWN_KEYS}
        assert all(math.isfinite(s[k]) for k in ("psnr_rgb", "ssim_y", "lpips", "lr_psnr", "down_psnr_real"))
        assert report["methods"][name]["temperature"] == 0.5
        assert report["methods"][name]["weights"].endswith("tiny.safetensors")
    assert report["device"].startswith("cpu")
    js, cs = bm.write_report(report, tmp_path / "out" / "r.json")
    loaded = json.loads(js.read_text())
    assert set(loaded["summary"]) == {"bicubic", "tiny"}
    assert loaded["summary"]["tiny"]["psnr_y"] == pytest.approx(report["summary"]["tiny"]["psnr_y"])
    assert loaded["summary"]["bicubic"]["niqe"] is None  # 128-px images: NIQE undefined, written as null
    rows = list(csv.reader(cs.open()))
    assert rows[0][:3] == ["method", "image", "psnr_rgb"] and len(rows) == 1 + 2 * 3
    assert rows[3][:2] == ["bicubic", "MEAN"]
