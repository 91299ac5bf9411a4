"""Which files a run reads and which it writes: input discovery, output naming and the
checks on OUT that must pass before any work (library behind the naming rules of upscale, downscale and
sample-degradation).

Naming:
  * folder IN, folder OUT: OUT mirrors IN; `a/b.png` → `OUT/a/b.png` (1 sample) or `OUT/a/b_s00.png`,
    `OUT/a/b_s01.png`, … (N > 1 samples; zero-padded to at least two digits so names sort).
  * file IN, OUT a file with an image suffix: that file (`…_sKK` inserted before the suffix when N > 1);
    OUT an existing folder, a path without suffix or one written with a trailing slash: the folder, file
    named as IN.
  * file IN, no OUT: beside IN, `photo_x4_t0.8.png` / `hr_x0.25_t0.8.png` (`_x2` for an output scale of 2,
    `_c3` added for `--component 3`, `_sKK` for N > 1).
  * `Naming` changes names made from input names (not an OUT that names a file): `suffix` adds `_SUFFIX` to
    the stem (beside IN it replaces the tag above), `ext` sets the output format (`jpg`, `webp`, …).
An existing output is never replaced unless the run overwrites: the batch engine skips it (one rule for
files, folders and names beside the input: a rerun resumes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

from sdtool.infer.batch import Job
from sdtool.errors import ImageError, OptionError, UsageError

Task = Literal["upscale", "downscale"]


@dataclass(frozen=True)
class Naming:
    """Names of outputs made from input names. suffix: added to the stem as `_SUFFIX` (None: nothing, or
    the default tag beside the input; "" nothing at all); ext: output format as a file extension without the
    dot ("png", "jpg", "webp", "tif", "bmp"; None keeps the input's)."""

    suffix: Optional[str] = None
    ext: Optional[str] = None

    def check(self) -> None:
        """OptionError for a suffix that is not a plain name part or an extension we cannot write."""
        from sdtool.imageio import IMAGE_SUFFIXES

        if self.suffix is not None and any(c in self.suffix for c in ("/", "\\", "\0", os.sep)):
            raise OptionError("suffix", f"must be part of a file name, got {self.suffix!r}")
        if self.ext is not None and f".{self.ext.lower()}" not in IMAGE_SUFFIXES:
            kinds = ", ".join(sorted({k[1:] for k in IMAGE_SUFFIXES}))
            raise OptionError("ext", f"must be one of {kinds}, got {self.ext!r}")

    def apply(self, base: Path, tag: str = "") -> Path:
        """`base` (an output path named as its input) with the suffix, or `tag` when none is set, and the
        extension."""
        extra = tag if self.suffix is None else (f"_{self.suffix}" if self.suffix else "")
        ext = f".{self.ext.lower()}" if self.ext else base.suffix
        return base.with_name(f"{base.stem}{extra}{ext}")

    @property
    def is_set(self) -> bool:
        return self.suffix is not None or self.ext is not None


def sample_suffixes(samples: int) -> list[str]:
    """"" for one sample; "_s00", "_s01", … (at least two digits, enough for N) otherwise."""
    if samples == 1:
        return [""]
    width = max(2, len(str(samples - 1)))
    return [f"_s{k:0{width}d}" for k in range(samples)]


def _with_suffix_tag(path: Path, tag: str) -> Path:
    return path.with_name(f"{path.stem}{tag}{path.suffix}")


def default_tag(task: Task, temperature: Optional[float], component: Optional[int],
                scale: Optional[float] = None) -> str:
    """What was done, for names written beside the input: "_x4_t0.8" (scale: the output scale, default 4) /
    "_x0.25_t0.8[_cK]"; "_x4" for a deterministic model (temperature None)."""
    if temperature is None:
        return f"_x{scale or 4:g}" if task == "upscale" else "_x0.25"
    tag = f"_x{scale or 4:g}_t{temperature:g}" if task == "upscale" else f"_x0.25_t{temperature:g}"
    if component is not None:
        tag += f"_c{component}"
    return tag


def _is_within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def plan_jobs(
    input_path: Path,
    output: Optional[Path],
    *,
    task: Task,
    samples: int,
    temperature: Optional[float],
    component: Optional[int],
    out_is_dir: bool = False,
    naming: Naming = Naming(),
    scale: Optional[float] = None,
) -> tuple[list[Job], list[str]]:
    """Discover input files and name their outputs. Returns (jobs, notices). Raises UsageError for
    an impossible request (missing input, folder without OUT, OUT a file for a folder, OUT equal to IN,
    OUT not writable, `naming` with an OUT that names a file). out_is_dir: OUT was written with a trailing
    slash, so it names a folder. scale: the upscale's output scale, for names beside the input."""
    naming.check()
    try:
        return _plan(input_path, output, sample_suffixes(samples), task, temperature, component, out_is_dir, naming,
                     scale)
    except OSError as exc:  # a path the file system refuses to look at (a name too long, a loop of links)
        raise UsageError(f"{exc.filename or input_path}: {exc.strerror or exc}") from None


def _plan(input_path: Path, output: Optional[Path], suffixes: list[str], task: Task, temperature: Optional[float],
          component: Optional[int], out_is_dir: bool, naming: Naming,
          scale: Optional[float]) -> tuple[list[Job], list[str]]:
    if not input_path.exists():
        raise UsageError(f"{input_path}: no such file or folder")
    if output is not None:
        check_writable_target(output, input_path)
    if input_path.is_dir():
        if output is None:
            raise UsageError("OUT is required when IN is a folder")
        return _plan_folder(input_path, output, suffixes, naming)
    tag = default_tag(task, temperature, component, scale)
    return [_plan_file(input_path, output, suffixes, tag, out_is_dir, naming)], []


def _plan_folder(input_path: Path, output: Path, suffixes: list[str], naming: Naming) -> tuple[list[Job], list[str]]:
    """OUT mirrors IN's tree; files that are not images are reported and left alone."""
    from sdtool.imageio import is_image_path

    if output.exists() and not output.is_dir():
        raise UsageError(f"{output}: exists and is not a folder (IN is a folder)")
    out_inside = _is_within(output, input_path)
    jobs: list[Job] = []
    notices: list[str] = []
    for path in sorted(input_path.rglob("*"), key=lambda p: p.relative_to(input_path).as_posix()):
        if not path.is_file():
            continue
        if out_inside and _is_within(path, output):
            continue  # our own outputs from an earlier run, when OUT lies inside IN
        rel = path.relative_to(input_path)
        if not is_image_path(path):
            notices.append(f"{path}: not an image file, skipped")
            continue
        base = naming.apply(output / rel)
        jobs.append(Job(path, rel, tuple(_with_suffix_tag(base, s) for s in suffixes)))
    return jobs, notices


def _plan_file(input_path: Path, output: Optional[Path], suffixes: list[str], tag: str, out_is_dir: bool,
               naming: Naming) -> Job:
    """One input file: OUT a file, a folder, or nothing (then named beside the input with `tag`)."""
    from sdtool.imageio import format_of, is_image_path

    if not input_path.is_file():
        raise UsageError(f"{input_path}: not a regular file")
    if not is_image_path(input_path):
        raise UsageError(f"{input_path}: not an image file (PNG, JPEG, WebP, TIFF or BMP)")
    rel = Path(input_path.name)
    if output is None:
        base = naming.apply(input_path, tag)
    elif out_is_dir or output.is_dir() or (not output.exists() and output.suffix == ""):
        base = naming.apply(output / input_path.name)
    else:
        try:
            format_of(output)
        except ImageError as exc:
            raise UsageError(str(exc)) from None
        if naming.is_set:
            raise OptionError("", f"{output}: OUT names a file; {{suffix}} and {{ext}} apply to names made from "
                              "input names (give a folder, or no OUT)", ("suffix", "ext"))
        base = output
    outs = tuple(_with_suffix_tag(base, s) for s in suffixes)
    if any(o.resolve() == input_path.resolve() for o in outs):
        raise UsageError(f"{input_path}: the output would replace the input; choose another OUT")
    return Job(input_path, rel, outs)


_VIRTUAL_FS = (Path("/proc"), Path("/sys"), Path("/dev"))


def check_writable_target(output: Path, input_path: Path) -> None:
    """UsageError, before any work, when OUT cannot hold our outputs: it is IN, it lies in a virtual file
    system, a file stands where a folder is needed, or the nearest existing folder is not writable."""
    resolved = output.resolve()
    if resolved == input_path.resolve():
        raise UsageError(f"{output}: OUT is the input itself; choose another OUT")
    if any(resolved == v or v in resolved.parents for v in _VIRTUAL_FS):
        raise UsageError(f"{output}: is inside a virtual file system; choose another OUT")
    probe = resolved if resolved.is_dir() else resolved.parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise UsageError(f"{output}: {probe} is a file, not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UsageError(f"{output}: {probe} is not writable")
