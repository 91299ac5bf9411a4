"""The run loop under `upscale`, `downscale` and `sample-degradation`: plan the files of this process, load the
model only when some file needs it, and for each file read it and draw its samples in order from the file's
generator (`sdtool.seeds`) through a `Sampler`, handing the ones to write to the command's writer.

A `Sampler` is one small class per model (`sdtool.infer.pipeline`: SDFlow upscale and downscale, deterministic
SR networks; `sdtool.infer.sample_degradation`: SDFlow, PDM, ReDeg, classic, bicubic, mixtures). The loop knows
nothing of their kinds.

Multi-GPU: under `torchrun` (env RANK / WORLD_SIZE) file i of the sorted list goes to rank i % WORLD_SIZE,
and device "auto" means cuda:LOCAL_RANK.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Generic, Optional, Protocol, TypeVar, Union

from sdtool.errors import UsageError
from sdtool.infer.batch import Job, StepCallback
from sdtool.infer.jobs import Naming, Task, plan_jobs
from sdtool.seeds import file_generator

if TYPE_CHECKING:  # pragma: no cover
    import torch

PathLike = Union[str, "os.PathLike[str]"]
T = TypeVar("T")


def distributed_rank() -> tuple[int, int]:
    """(RANK, WORLD_SIZE) from the environment torchrun sets; (0, 1) otherwise."""
    try:
        rank = int(os.environ.get("RANK", "0"))
        world = int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise UsageError("RANK / WORLD_SIZE must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise UsageError(f"invalid RANK={rank} / WORLD_SIZE={world}")
    return rank, world


@dataclass
class Plan:
    """The files this process runs (its share under torchrun) and the notices of planning."""

    jobs: list[Job]
    notices: list[str]
    rank: int = 0
    world_size: int = 1


def plan_run(input_path: PathLike, output: Optional[PathLike], *, task: Task, samples: int,
             temperature: Optional[float], component: Optional[int] = None, naming: Naming = Naming(),
             scale: Optional[float] = None) -> Plan:
    """`sdtool.infer.jobs.plan_jobs` for this process: a string OUT ending in "/" names a folder, and under
    torchrun each rank takes every WORLD_SIZE-th file."""
    out_is_dir = isinstance(output, str) and output.endswith(("/", os.sep))
    rank, world = distributed_rank()
    jobs, notices = plan_jobs(Path(input_path), Path(output) if output is not None else None, task=task,
                              samples=samples, temperature=temperature, component=component, out_is_dir=out_is_dir,
                              naming=naming, scale=scale)
    return Plan(jobs[rank::world], notices, rank, world)


class LazyModel(Generic[T]):
    """A model (or sampler) built on first use: a run whose outputs all exist loads nothing."""

    def __init__(self, load: Callable[[], T], value: Optional[T] = None) -> None:
        self._load, self.value = load, value

    def get(self) -> T:
        if self.value is None:
            self.value = self._load()
        return self.value

    def device(self) -> Optional[str]:
        """Where the model ran (None when it was never loaded), for the result."""
        return None if self.value is None else str(getattr(self.value, "device", "cpu"))


@dataclass
class Request:
    """What a sampler is asked for one sample. make: compute it (False: only draw its randomness, so that the
    later samples of the file stay the same); step(fraction of this sample done); depth: the bit depth the
    writer stores (8, 16, 32; None: float32 tensor), so a big image needs no float copy; notes: remarks for the
    file's outcome (a tile halved after an out-of-memory error)."""

    make: bool
    step: Callable[[float], None]
    depth: Optional[int] = None
    notes: list[str] = field(default_factory=list)


class Sampler(Protocol):
    """One model behind the run loop."""

    @property
    def device(self) -> "torch.device": ...

    def sample(self, x: "torch.Tensor", gen: "torch.Generator", req: Request) -> Any:
        """Draw one sample's randomness from `gen` (always, in a fixed order) and, when `req.make`, return the
        sample of x (1×3×h×w, [0, 1], CPU); else None (or the sample, when drawing means computing it)."""
        ...


# (sample index, output path, what the sampler returned, whether to store it: False for samples only collected)
Writer = Callable[[int, Path, Any, bool], None]


def _sample_step(step: StepCallback, k: int, n: int) -> Callable[[float], None]:
    """Progress within sample k: fraction f of it done is step k + f of n."""
    return lambda f: step(k + f, n)


def sample_file(sampler: Sampler, job: Job, todo: set, x: "torch.Tensor", seed: int, write: Writer,
                step: StepCallback, *, make_all: bool = False, depth: Optional[int] = None) -> list[str]:
    """Every sample of one file in order from the file's generator, writing those whose index is in `todo`
    (make_all: compute the others too, e.g. for a contact sheet, but do not write them). Returns notes."""
    gen = file_generator(seed, job.rel)
    n = len(job.outputs)
    notes: list[str] = []
    for k, out in enumerate(job.outputs):
        req = Request(make=k in todo or make_all, step=_sample_step(step, k, n), depth=depth, notes=notes)
        result = sampler.sample(x, gen, req)
        if result is not None and req.make:
            write(k, out, result, k in todo)
        del result  # a big output is freed before the next sample is made
        step(k + 1, n)
    return notes
