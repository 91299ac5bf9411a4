"""One seed rule (`sdtool.seeds`): `upscale --seed S` reproduces the samples `benchmark --seed S` drew, pixel for
pixel, so a bad sample seen in a benchmark can be looked at again with `upscale`."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import torch
from typer.testing import CliRunner

from sdtool.cli.app import app
from tests.helpers import perturb

runner = CliRunner()


def _weights(path: Path) -> Path:
    """The tiny SDFlow with its weights moved off their initial values (so samples differ by seed), saved."""
    from sdtool.checkpoint import save_model
    from sdtool.config import PRESETS
    from sdtool.model.sdflow import SDFlow

    torch.manual_seed(0)
    save_model(perturb(SDFlow(PRESETS["tiny"]).eval(), scale=0.05), path)
    return path


def _pair(root: Path) -> Path:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64] / 64
    hr = np.clip(128 + 80 * np.sin(9 * xx)[..., None] * np.cos(7 * yy)[..., None] + rng.normal(0, 6, (64, 64, 3)),
                 0, 255).astype(np.uint8)
    lr = hr.reshape(16, 4, 16, 4, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    for sub, img in (("test_HR", hr), ("test_LR", lr)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        iio.imwrite(root / sub / "a.png", img)
    return root / "test_LR" / "a.png"


def test_upscale_reproduces_the_benchmark_samples(tmp_path):
    w = _weights(tmp_path / "tiny.safetensors")
    lr = _pair(tmp_path / "d")
    res = runner.invoke(app, ["benchmark", "-d", str(tmp_path / "d"), "-w", str(w), "--samples", "2", "--seed", "3",
                              "--no-downscale", "--save-sr", str(tmp_path / "sr"), "-o", str(tmp_path / "r.json"),
                              "--device", "cpu"])
    assert res.exit_code == 0, res.output
    for seed in ("3", "4"):
        res = runner.invoke(app, ["upscale", str(lr), str(tmp_path / f"up{seed}" / "a.png"), "-w", str(w),
                                  "--samples", "2", "--seed", seed, "--device", "cpu"])
        assert res.exit_code == 0, res.output
    for k in (0, 1):
        bench = iio.imread(tmp_path / "sr" / "tiny" / f"a_s{k:02d}.png")
        same = iio.imread(tmp_path / "up3" / f"a_s{k:02d}.png")
        other = iio.imread(tmp_path / "up4" / f"a_s{k:02d}.png")
        assert bench.shape == (64, 64, 3)
        assert np.array_equal(bench, same), k  # the same seed: the same pixels
        assert not np.array_equal(bench, other), k  # another seed: another sample
    assert not np.array_equal(iio.imread(tmp_path / "up3" / "a_s00.png"), iio.imread(tmp_path / "up3" / "a_s01.png"))


def test_file_seed_depends_on_seed_and_name_only():
    from sdtool.seeds import file_generator, file_seed, stable_seed

    assert file_seed(1, Path("a/b.png")) == file_seed(1, Path("a") / "b.png")
    assert len({file_seed(1, Path("a.png")), file_seed(2, Path("a.png")), file_seed(1, Path("b.png"))}) == 3
    a, b = file_generator(5, Path("x.png")), file_generator(5, Path("x.png"))
    assert torch.equal(torch.rand(4, generator=a), torch.rand(4, generator=b))
    assert stable_seed("sdflow", 0, 3) == stable_seed("sdflow", 0, 3) != stable_seed("sdflow", 0, 4)
