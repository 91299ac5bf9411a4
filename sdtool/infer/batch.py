"""The batch engine under `upscale`, `downscale` and `sample-degradation`: one loop over planned jobs that
skips finished outputs, claims each file as its work starts (so several processes share a folder), runs the
work for each file, and turns what happened into outcomes and progress events. It never prints. A file whose
outputs the file system refuses (a name too long, a read-only folder, a full disk) fails alone.

An output counts as finished when it exists (with its side files); it is then skipped unless `overwrite`.
A file's work function gets the indices of the samples it must write and computes the others only as far
as the random draws need (sample k never depends on which other samples exist).
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

from sdtool.errors import CheckpointError, SdtoolError, UsageError
from sdtool.files import check_name, claimed, clean_stale_temporaries


@dataclass
class FileOutcome:
    """One input file: its outputs, what happened ("done" / "skipped" / "failed"), why it failed,
    seconds spent and notes (for example a tile halved after an out-of-memory error)."""

    source: Path
    outputs: list[Path]
    status: str
    error: Optional[str] = None
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)
    exception: Optional[SdtoolError] = None  # the typed error behind `error`, for callers that render options


@dataclass
class ProcessResult:
    """The outcome of a run. seed: the base seed used (random when none was given);
    notices: files that were not images and were left alone, and similar remarks."""

    done: list[FileOutcome] = field(default_factory=list)
    skipped: list[FileOutcome] = field(default_factory=list)
    failed: list[FileOutcome] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    seed: int = 0
    seconds: float = 0.0
    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class ProgressEvent:
    """kind: "start" (total = files of this process), "file_start" (index, path, steps = samples),
    "step" (step/steps within the current file; fractional while tiles of a sample complete),
    "file_end" (outcome), "notice" (message)."""

    kind: str
    index: int = 0
    total: int = 0
    path: Optional[Path] = None
    step: float = 0.0
    steps: int = 0
    outcome: Optional[FileOutcome] = None
    message: str = ""


ProgressCallback = Callable[[ProgressEvent], None]
StepCallback = Callable[[float, int], None]


@dataclass(frozen=True)
class Job:
    """An input file, its path relative to the input root (seeds and naming), and its outputs."""

    source: Path
    rel: Path
    outputs: tuple[Path, ...]


# work(job, indices of outputs to write, step callback) -> notes
Work = Callable[[Job, set, StepCallback], list]


def _names(outputs: Sequence[Path]) -> str:
    """The outputs a notice is about: the one, or the first and how many more."""
    return str(outputs[0]) if len(outputs) == 1 else f"{outputs[0]} and {len(outputs) - 1} more"


def _finished(out: Path, side_files: Callable[[Path], list[Path]]) -> bool:
    return all(os.path.exists(p) for p in [out, *side_files(out)])  # False, not OSError, for a name too long


def pending(jobs: Sequence[Job], overwrite: bool = False,
            side_files: Callable[[Path], list[Path]] = lambda _p: []) -> bool:
    """Whether `run_jobs` will have any output to write (a model is needed), judged as it judges each file."""
    return any(overwrite or not _finished(out, side_files) for job in jobs for out in job.outputs)


def run_jobs(
    jobs: Sequence[Job], work: Work, result: ProcessResult, *, overwrite: bool = False,
    side_files: Callable[[Path], list[Path]] = lambda _p: [], progress: Optional[ProgressCallback] = None,
    run_finished: bool = False,
) -> None:
    """Run `work` for every job, filling `result`. run_finished: also call `work` (with nothing to write) for
    files whose outputs all exist, when it collects something else (a contact sheet). UsageError,
    CheckpointError and KeyboardInterrupt stop the run (claims are released); any other failure (a WriteError
    too) is recorded for its file and the others go on."""
    emit = progress or (lambda _e: None)
    for message in result.notices:  # from planning (files that are not images, …)
        emit(ProgressEvent("notice", message=message))
    for folder in sorted({out.parent for job in jobs for out in job.outputs}):
        for stale in clean_stale_temporaries(folder):
            result.notices.append(f"{stale}: removed, left by an interrupted run")
            emit(ProgressEvent("notice", message=result.notices[-1]))
    emit(ProgressEvent("start", total=len(jobs)))
    for index, job in enumerate(jobs):
        emit(ProgressEvent("file_start", index=index, total=len(jobs), path=job.source, steps=len(job.outputs)))
        outcome = _run_one(job, work, overwrite, side_files, index, len(jobs), emit, run_finished)
        {"done": result.done, "skipped": result.skipped, "failed": result.failed}[outcome.status].append(outcome)
        emit(ProgressEvent("file_end", index=index, total=len(jobs), path=job.source, outcome=outcome))


def _run_one(job: Job, work: Work, overwrite: bool, side_files: Callable[[Path], list[Path]], index: int,
             total: int, emit: ProgressCallback, run_finished: bool = False) -> FileOutcome:
    todo = [k for k, out in enumerate(job.outputs) if overwrite or not _finished(out, side_files)]
    verb = "exists" if len(job.outputs) == 1 else "exist"
    exists_note = f"skipped, {_names(job.outputs)} {verb} (use --overwrite to replace)"
    if not todo and not run_finished:
        return FileOutcome(job.source, list(job.outputs), "skipped", notes=[exists_note])
    t0 = time.perf_counter()

    def step(done: float, steps: int) -> None:
        emit(ProgressEvent("step", index=index, total=total, path=job.source, step=done, steps=steps))

    try:
        for k in todo:  # names the file system cannot store fail the file before any work
            for path in (job.outputs[k], *side_files(job.outputs[k])):
                check_name(path)
        # One claim per file, taken when its work starts (none when it only collects finished outputs).
        with claimed(job.outputs[0]) if todo else nullcontext(True) as ours:
            # Claimed by another process, or finished by one between our look and our claim: theirs.
            mine = {k for k in todo if ours and (overwrite or not _finished(job.outputs[k], side_files))}
            if not mine and not run_finished:
                note = f"skipped, {_names(job.outputs)} being written by another process" if not ours else exists_note
                return FileOutcome(job.source, list(job.outputs), "skipped", notes=[note])
            notes = work(job, mine, step)
    except (UsageError, CheckpointError, KeyboardInterrupt, SystemExit):
        raise
    except SdtoolError as exc:
        return FileOutcome(job.source, list(job.outputs), "failed", str(exc), time.perf_counter() - t0, exception=exc)
    except MemoryError:
        return FileOutcome(job.source, list(job.outputs), "failed", f"{job.source}: out of memory",
                           time.perf_counter() - t0)
    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the run
        return FileOutcome(job.source, list(job.outputs), "failed", f"{job.source}: {type(exc).__name__}: {exc}",
                           time.perf_counter() - t0)
    if not mine:
        return FileOutcome(job.source, list(job.outputs), "skipped", seconds=time.perf_counter() - t0,
                           notes=[exists_note])
    if len(mine) < len(job.outputs):
        notes = [*notes, f"{len(job.outputs) - len(mine)} of {len(job.outputs)} outputs existed; kept"]
    return FileOutcome(job.source, [job.outputs[k] for k in sorted(mine)], "done", seconds=time.perf_counter() - t0,
                       notes=notes)
