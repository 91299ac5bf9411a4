"""File safety: umask, stale temporaries, claims, two processes on one folder, odd OUT paths, devices."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from sdtool.cli.app import app
from sdtool.errors import WriteError
from sdtool.files import (
    _host, claim_path, claimed, clean_stale_temporaries, temporary_path, try_claim, write_bytes_atomic,
)
from tests.helpers import sha256_of, write_image_file

runner = CliRunner()


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_atomic_write_follows_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        write_bytes_atomic(tmp_path / "a.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_stale_temporaries_and_claims_are_cleaned(tmp_path):
    dead = _dead_pid()
    stale = tmp_path / f".x.png.sdtool-{_host()}-{dead}-0123abcd.tmp"
    live = tmp_path / f".y.png.sdtool-{_host()}-{os.getpid()}-0123abcd.tmp"
    elsewhere = tmp_path / f".w.png.sdtool-other.host-{dead}-0123abcd.tmp"  # another machine: judged by age
    other = tmp_path / ".notes.tmp"  # not ours: left alone
    for p in (stale, live, other, elsewhere):
        p.write_bytes(b"partial")
    claim_path(tmp_path / "z.png").write_text(f"{dead} {_host()} 0\n")
    removed = clean_stale_temporaries(tmp_path)
    assert sorted(p.name for p in removed) == sorted([stale.name, ".z.png.sdtool-claim"])
    assert live.exists() and other.exists() and elsewhere.exists()
    os.utime(elsewhere, (0, 0))  # untouched for decades: its machine is gone
    assert clean_stale_temporaries(tmp_path) == [elsewhere]


def test_claims_are_exclusive_and_stale_ones_are_taken_over(tmp_path):
    out = tmp_path / "o.png"
    first = try_claim(out)
    assert first is not None and try_claim(out) is None  # held by a live process (us)
    first.write_text(f"{_dead_pid()} {_host()} 0\n")  # its process died
    assert try_claim(out) is not None


def test_a_file_is_claimed_once_through_its_first_output(tmp_path):
    out = tmp_path / "o_s0.png"
    claim_path(out).write_text(f"{os.getpid()} {_host()} {time.time()}\n")  # a live holder of the file
    with claimed(out) as ours:
        assert not ours
    claim_path(out).unlink()
    with claimed(out) as ours:
        assert ours and [p.name for p in tmp_path.iterdir()] == [".o_s0.png.sdtool-claim"]
    assert not list(tmp_path.iterdir())  # released on exit


def test_claims_and_temporaries_of_long_names_have_short_names(tmp_path):
    out = tmp_path / ("é" * 100 + "x" * 48 + ".png")  # 252 bytes: a legal name, too long for a prefix and suffix
    assert len(os.fsencode(out.name)) == 252
    with claimed(out) as ours:
        assert ours and len(os.fsencode(claim_path(out).name)) <= 130
    assert len(os.fsencode(temporary_path(out).name)) <= 200 and temporary_path(out).name.endswith(".tmp")
    write_bytes_atomic(out, b"x")
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
    with pytest.raises(WriteError, match="file name too long"):
        write_bytes_atomic(tmp_path / ("y" * 256), b"x")
    dead = _dead_pid()
    left = temporary_path(out).name.replace(f"-{os.getpid()}-", f"-{dead}-")  # a killed writer's temporary
    old = f".state.pt.sdtool-{dead}-0123abcd.tmp"  # the training state's temporary before one writer
    for name in (left, old):
        (tmp_path / name).write_bytes(b"partial")
    assert sorted(p.name for p in clean_stale_temporaries(tmp_path)) == sorted([left, old])


def test_writing_functions_that_hide_a_full_disk_raise_write_error(tmp_path, monkeypatch):
    real_fdopen = os.fdopen

    class Full:  # the temporary on a disk that is full
        def __init__(self, fd, mode):
            self.fh = real_fdopen(fd, mode)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    def library(fh):  # like torch.save: catches the OS error and raises its own
        try:
            fh.write(b"abc")
        except OSError:
            raise RuntimeError("unexpected pos") from None

    monkeypatch.setattr("sdtool.files.os.fdopen", Full)
    with pytest.raises(WriteError, match="No space left on device"):
        write_bytes_atomic(tmp_path / "s.pt", library)
    assert not list(tmp_path.iterdir())


def test_two_processes_share_one_output_folder(tmp_path, tiny_weights):
    rng = np.random.default_rng(0)
    for i in range(8):
        write_image_file(tmp_path / "in" / f"{i}.png", rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    args = ["upscale", str(tmp_path / "in"), str(tmp_path / "out"), "-w", str(tiny_weights), "--seed", "3",
            "--samples", "3", "--device", "cpu"]
    # The second process is this one: it joins once the other has written its first output, so both are at work
    # on the folder at the same time (~20 samples, ~0.1 s each, are left) and one torch import is saved.
    proc = subprocess.Popen([sys.executable, "-m", "sdtool", *args], env={**os.environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not any((tmp_path / "out").glob("*.png")):
        time.sleep(0.02)
    here = runner.invoke(app, args)
    outs = [proc.communicate(timeout=300), (here.output, "")]
    assert proc.returncode == 0 and here.exit_code == 0, outs
    done = [int(re.search(r"upscale: (\d+) done", o).group(1)) for o, _ in outs]
    assert sum(done) == 8, outs  # every file computed once, by one of them
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert len(files) == 24 and not any(f.startswith(".") for f in files)
    # the same files as one process alone would have written (nobody replaced a sample with another)
    single = runner.invoke(app, [*args[:2], str(tmp_path / "one"), *args[3:]])
    assert single.exit_code == 0, single.output
    for f in files:
        assert sha256_of(tmp_path / "out" / f) == sha256_of(tmp_path / "one" / f)


def test_out_rules(tmp_path, tiny_weights):
    src = write_image_file(tmp_path / "a.png", np.full((8, 8, 3), 90, np.uint8))
    w = ["-w", str(tiny_weights), "--device", "cpu"]
    res = runner.invoke(app, ["upscale", str(src), str(tmp_path / "dir.png") + "/", *w])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "dir.png" / "a.png").is_file()  # a trailing slash means a folder
    first = sha256_of(tmp_path / "dir.png" / "a.png")
    res = runner.invoke(app, ["upscale", str(src), str(tmp_path / "dir.png") + "/", *w, "--seed", "9"])
    assert res.exit_code == 0 and "exists" in res.output and sha256_of(tmp_path / "dir.png" / "a.png") == first
    res = runner.invoke(app, ["upscale", str(src), str(tmp_path / "dir.png") + "/", *w, "--seed", "9", "--overwrite"])
    assert res.exit_code == 0 and sha256_of(tmp_path / "dir.png" / "a.png") != first
    for out, needle in ((str(src), "input"), ("/proc/x.png", "virtual file system"),
                        (str(src / "sub.png"), "is a file, not a folder")):
        res = runner.invoke(app, ["upscale", str(src), out, *w])
        assert res.exit_code == 2 and needle in res.output, res.output
    for bad, needle in ((["--device", "mps"], "not supported"), (["--temperature", "nan"], "finite number")):
        res = runner.invoke(app, ["downscale", str(src), str(tmp_path / "d.png"), "-w", str(tiny_weights), *bad])
        assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output, res.output


def test_nan_weights_are_refused_before_any_work(tmp_path, tiny_weights):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    with safe_open(str(tiny_weights), "pt") as f:
        meta = f.metadata()
    tensors = load_file(str(tiny_weights))
    tensors = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v for k, v in tensors.items()}
    bad = tmp_path / "nan.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    src = write_image_file(tmp_path / "in" / "a.png", np.full((8, 8, 3), 90, np.uint8))
    write_image_file(tmp_path / "in" / "b.png", np.full((8, 8, 3), 90, np.uint8))
    res = runner.invoke(app, ["upscale", str(src.parent), str(tmp_path / "o"), "-w", str(bad), "--device", "cpu"])
    assert res.exit_code == 2 and res.output.count("NaN") == 1, res.output  # once, not once per file
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").iterdir())


def test_rgba_tiff_round_trip_keeps_straight_colours(tmp_path):
    from PIL import Image

    from sdtool.imageio import read_image, write_image

    a = np.zeros((6, 6, 4), np.uint8)
    a[..., :3] = (200, 100, 50)
    a[..., 3] = 128
    Image.fromarray(a, "RGBA").save(tmp_path / "in.tiff")
    img = read_image(tmp_path / "in.tiff")
    assert np.allclose(img.rgb[0, 0] * 255, (200, 100, 50), atol=0.5)  # not multiplied by alpha
    write_image(tmp_path / "out.tiff", img.rgb, img.alpha, img.info)
    with Image.open(tmp_path / "out.tiff") as im:
        assert im.mode == "RGBA" and im.tag_v2.get(338) == (2,)  # ExtraSamples: unassociated alpha
        assert tuple(np.asarray(im)[0, 0]) == (200, 100, 50, 128)
    img16 = read_image(tmp_path / "in.tiff")
    info16 = type(img16.info)(**{**img16.info.__dict__, "bit_depth": 16})
    write_image(tmp_path / "o16.tiff", img16.rgb, img16.alpha, info16)
    back = read_image(tmp_path / "o16.tiff")
    assert back.info.bit_depth == 16 and np.allclose(back.rgb, img16.rgb, atol=1e-4)
    assert np.allclose(back.alpha, img16.alpha, atol=1e-4)


@pytest.mark.parametrize("sig, code", [(9, -9), (15, 130)])
def test_killed_run_leaves_no_partial_file_and_the_next_run_finishes(tmp_path, tiny_weights, sig, code):
    import signal
    import time

    import cv2

    rng = np.random.default_rng(1)
    # 80² inputs: the signal goes within 20 ms of the first output, with 11 samples (~0.15 s each) still to do
    for i in range(6):
        write_image_file(tmp_path / "in" / f"{i}.png", rng.integers(0, 255, (80, 80, 3), dtype=np.uint8))
    out = tmp_path / "out"
    args = ["upscale", str(tmp_path / "in"), str(out), "-w", str(tiny_weights), "--seed", "1", "--samples", "2",
            "--device", "cpu"]
    cmd = [sys.executable, "-m", "sdtool", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out.is_dir() and any(p.suffix == ".png" for p in out.iterdir())):
        time.sleep(0.02)
    proc.send_signal(signal.Signals(sig))
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    for p in out.iterdir():
        if not p.name.startswith("."):
            assert cv2.imread(str(p)) is not None, f"partial file {p}"
    if sig == 15:  # a clean stop releases its claims and removes its temporaries at once
        assert not [p.name for p in out.iterdir() if p.name.startswith(".")]
    # the next run (in this process: the killed one's pid is as dead either way) cleans up and finishes
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 12 and not any(n.startswith(".") for n in names)  # stale temporaries/claims cleaned


def test_library_errors_name_parameters_and_the_cli_names_flags(tmp_path, tiny_weights):
    from sdtool.errors import OptionError
    from sdtool.infer.pipeline import process_images

    src = write_image_file(tmp_path / "a.png", np.full((8, 8, 3), 90, np.uint8))
    with pytest.raises(OptionError) as info:
        process_images(src, tmp_path / "o.png", tile_overlap=-1, weights=tiny_weights)
    assert info.value.option == "tile_overlap" and "--" not in str(info.value)
    with pytest.raises(OptionError, match="^temperature must be a finite number"):
        process_images(src, tmp_path / "o.png", temperature=float("inf"), weights=tiny_weights)
    res = runner.invoke(app, ["upscale", str(src), str(tmp_path / "o.png"), "-w", str(tiny_weights), "-t", "inf"])
    assert res.exit_code == 2 and "error: --temperature must be a finite number" in res.output


def test_many_samples_are_claimed_as_they_go_and_an_interrupt_leaves_nothing(tmp_path, tiny_weights):
    from sdtool.infer.pipeline import process_images

    write_image_file(tmp_path / "a.png", np.full((16, 16, 3), 90, np.uint8))
    out = tmp_path / "out"
    claims: list[int] = []

    def progress(event):
        if event.kind == "step":
            claims.append(len(list(out.glob(".*.sdtool-claim"))))
            if event.step >= 3:
                raise KeyboardInterrupt  # what SIGTERM raises in the CLI (sdtool.cli.app)

    with pytest.raises(KeyboardInterrupt):
        process_images(tmp_path / "a.png", str(out) + "/", samples=1000, weights=tiny_weights, device="cpu",
                       progress=progress)
    assert claims and max(claims) == 1  # one claim for the file, none per sample up front
    assert sorted(p.name for p in out.iterdir()) == ["a_s000.png", "a_s001.png"]  # stopped in the third: no trace
