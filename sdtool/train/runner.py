"""The generic training loop: schedule, EMA, NaN guard, atomic checkpoints, exact resume, logs, validation."""

from __future__ import annotations

import copy
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from torch import Tensor, nn

from sdtool.checkpoint import load_state_strict
from sdtool.errors import CheckpointError, OptionError, UsageError, WriteError
from sdtool.files import clean_stale_temporaries, write_bytes_atomic
from sdtool.train.config import RunSettings, lr_at
from sdtool.train.dist import barrier, broadcast_module, world
from sdtool.train.task import NonFiniteLoss, TrainingDiverged, TrainTask

MODEL_FILE = "model.safetensors"  # EMA weights: what upscale/downscale load
STATE_FILE = "state.pt"  # everything else needed to resume exactly
LOG_FILE = "log.jsonl"
SNAPSHOT_DIR = "validated"  # EMA weights at each validation: validated/it_NNNNNN.safetensors

MAX_SKIPS_IN_A_ROW = 20  # non-finite steps in a row that end a run as diverged

Sampler = Callable[[int], tuple[Tensor, Tensor]]
Validator = Callable[[nn.Module], dict[str, float]]


@dataclass
class RunResult:
    iterations: int
    skipped: int
    seconds: float
    last: dict[str, float]
    validation: dict[str, float]


class EMA:
    """Exponential moving average of a model's parameters; buffers (ActNorm flags …) are copied.

    The decay warms up as min(decay, (1 + t) / (10 + t)): early averages would otherwise be dominated
    by the random initial weights (with 0.999, still 37 % of them after 1000 steps)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for e, p in zip(self.model.parameters(), model.parameters()):
            e.lerp_(p.detach(), 1 - decay)
        for e, b in zip(self.model.buffers(), model.buffers()):
            e.copy_(b)


STATE_KEYS = frozenset({"it", "skipped", "kind", "modules", "ema", "optimizers", "settings"})


def read_state(path: Path, device: torch.device) -> dict:
    """The training state in `path` (tensors only, no pickled code); CheckpointError in one line when the file is
    truncated or is not a state that `sdtool train` wrote."""
    import warnings

    try:
        with warnings.catch_warnings():  # torch warns about foreign pickles before refusing them
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location=device, weights_only=True)
    except Exception:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError, OSError, … here
        raise CheckpointError(f"{path}: cannot resume from it: truncated, damaged or not written by `sdtool train` "
                              f"({path.stat().st_size} bytes)") from None
    if not isinstance(state, dict) or not STATE_KEYS <= state.keys():
        raise CheckpointError(f"{path}: cannot resume from it: not a training state written by `sdtool train`")
    return state


def _made_with(state: dict) -> Optional[str]:
    """The model size (config name) the run in `state` was started with, when it says."""
    try:
        return json.loads(state["settings"]).get("extra", {}).get("config")
    except (TypeError, ValueError, AttributeError):
        return None


class Runner:
    """Drives a TrainTask. Rank 0 writes `model.safetensors` (EMA), `state.pt`, `log.jsonl` and, at each
    validation, `validated/it_NNNNNN.safetensors` (the EMA weights it scored) in out_dir."""

    def __init__(self, task: TrainTask, sampler: Sampler, settings: RunSettings,
                 validator: Optional[Validator] = None, on_log: Optional[Callable[[dict], None]] = None):
        self.task, self.sampler, self.s = task, sampler, settings
        self.validator, self.on_log = validator, on_log
        self.out = Path(settings.out_dir)
        self.rank, self.world_size = world()
        for module in task.modules().values():
            broadcast_module(module)
        self.ema = EMA(task.model, settings.ema_decay)
        # Each param group's rate relative to the run's: taken as the task built them, before a resume
        # overwrites the groups, so that a discriminator built at 4× the rate stays at 4× under the schedule.
        self.rate_scale = {name: [g["lr"] / settings.lr for g in opt.param_groups]
                           for name, opt in task.optimizers().items()}
        self.it = 0
        self.skipped = 0
        self.saved_it = 0  # the iteration of the checkpoint on disk

    # ---------------------------------------------------------------- state
    def state_dict(self) -> dict:
        return {
            "it": self.it,
            "skipped": self.skipped,
            "kind": self.task.kind,
            "modules": {k: m.state_dict() for k, m in self.task.modules().items()},
            "ema": self.ema.model.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in self.task.optimizers().items()},
            "settings": self.s.to_json(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a state from `state_dict`; UsageError / CheckpointError in one line when it belongs to another
        kind of run, another model size, or does not fit this run's model."""
        path = self.out / STATE_FILE
        if state.get("kind") != self.task.kind:
            raise UsageError(f"{path}: a '{state.get('kind')}' run cannot resume as '{self.task.kind}'")
        made_with, asked = _made_with(state), self.s.extra.get("config")
        if made_with and asked and made_with != asked:
            raise OptionError("", f"{self.out}: the run was made with config {made_with}, not {asked}; resume it "
                              f"with {{config}} {made_with}", ("config",))
        try:
            for k, m in self.task.modules().items():
                load_state_strict(m, state["modules"][k], path)
            load_state_strict(self.ema.model, state["ema"], path)
            for k, o in self.task.optimizers().items():
                o.load_state_dict(state["optimizers"][k])
            self.it, self.skipped = int(state["it"]), int(state["skipped"])
        except (KeyError, TypeError, ValueError, RuntimeError) as exc:
            why = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
            raise CheckpointError(f"{path}: does not fit the model of this run ({why})") from None

    def save(self) -> None:
        """state.pt, then model.safetensors, each through the one atomic writer: state.pt is never older than the
        weights, and a failed write (a full disk) leaves both files as they were."""
        if self.rank != 0:
            return
        state = self.state_dict()
        with self._writing():
            write_bytes_atomic(self.out / STATE_FILE, lambda fh: torch.save(state, fh))
            self._export(self.out / MODEL_FILE)
        self.saved_it = self.it

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """A file the run cannot write (a full disk) stops it with one line that says what was kept."""
        try:
            yield
        except WriteError as exc:
            raise WriteError(f"{exc.message}; {self._stopped()}", exc.errno) from None

    def _stopped(self) -> str:
        kept = (f"the checkpoint of iteration {self.saved_it} in {self.out} is kept" if self.saved_it
                else "no checkpoint was written yet")
        return f"training stopped at iteration {self.it}, {kept}"

    def _export(self, path: Path) -> None:
        """The EMA weights as a loadable checkpoint (config and provenance in the metadata)."""
        from sdtool.checkpoint import FORMAT, FORMAT_VERSION, atomic_save_tensors

        meta = {"format": FORMAT if self.task.kind == "sdflow" else f"sdtool-{self.task.kind}",
                "format_version": FORMAT_VERSION,
                "provenance": json.dumps({"iterations": self.it, "run": self.s.extra}, sort_keys=True),
                **self.task.export_metadata()}
        atomic_save_tensors(dict(self.ema.model.state_dict()), path, meta)

    def resume(self) -> bool:
        path = self.out / STATE_FILE
        if not path.is_file():
            return False
        self.load_state_dict(read_state(path, self.task.model.device))
        self.saved_it = self.it
        self._truncate_log()
        return True

    def _truncate_log(self) -> None:
        """Drop log records past the checkpoint (on a fresh start, all: they belong to a run that never saved):
        the run writes them again."""
        log = self.out / LOG_FILE
        if self.rank != 0 or not log.is_file():
            return
        kept, lines = [], log.read_text().splitlines()
        for line in lines:
            try:
                if int(json.loads(line).get("it", 0)) <= self.it:
                    kept.append(line)
            except (ValueError, AttributeError):
                continue  # a line cut by a kill
        if len(kept) == len(lines):
            return
        with self._writing():
            write_bytes_atomic(log, "".join(k + "\n" for k in kept).encode())

    def _clean_temporaries(self) -> None:
        """Remove the temporaries of a killed run (kill -9 during a checkpoint write), with a notice."""
        if self.rank != 0:
            return
        for folder in (self.out, self.out / SNAPSHOT_DIR):
            for stale in clean_stale_temporaries(folder):
                if self.on_log:
                    self.on_log({"type": "notice", "message": f"{stale}: removed, left by an interrupted run"})

    # ---------------------------------------------------------------- loop
    def _log(self, record: dict) -> None:
        if self.rank != 0:
            return
        try:  # appended, not rewritten: a line cut by a kill is dropped on resume (`_truncate_log`)
            with open(self.out / LOG_FILE, "a") as f:
                f.write(json.dumps(record) + "\n")
        except OSError as exc:
            raise WriteError(f"{self.out / LOG_FILE}: cannot write: {exc.strerror or exc}; {self._stopped()}",
                             exc.errno or 0) from None
        if self.on_log:
            self.on_log(record)

    def validate(self) -> dict[str, float]:
        if self.validator is None or self.rank != 0:
            return {}
        metrics = self.validator(self.ema.model)
        # Every validated state is kept, so a run can be cut at its best point by any metric afterwards
        # (validation curves of this model rise and fall; the last weights are not always the best).
        with self._writing():
            self._export(self.out / SNAPSHOT_DIR / f"it_{self.it:06d}.safetensors")
        self._log({"type": "val", "it": self.it, **metrics})
        return metrics

    def run(self, resume: bool = False) -> RunResult:
        """Train to `iters`. SIGINT/SIGTERM finish the current iteration, write a checkpoint and raise
        KeyboardInterrupt; MAX_SKIPS_IN_A_ROW non-finite steps raise TrainingDiverged (checkpoint untouched)."""
        self.out.mkdir(parents=True, exist_ok=True)
        if (self.out / STATE_FILE).exists() and not resume:
            raise OptionError("", f"{self.out}: holds a training run already; resume it ({{resume}}) or give another "
                              "{out}", ("resume", "out"))
        self._clean_temporaries()
        if resume and not self.resume():
            raise OptionError("resume", f"{self.out}: no run to resume (no {STATE_FILE}); leave it out to start one")
        if not resume and self.rank == 0:  # a fresh start: what a run that never saved left is not this run's
            self._truncate_log()
            with self._writing():
                write_bytes_atomic(self.out / "settings.json", self.s.to_json().encode())
        with _deferred_interrupts() as stop:
            return self._loop(stop)

    def _loop(self, stop: list) -> RunResult:
        t0, last, val = time.time(), {}, {}
        in_a_row = 0
        while self.it < self.s.iters:
            it = self.it + 1
            for name, opt in self.task.optimizers().items():
                for group, scale in zip(opt.param_groups, self.rate_scale[name]):
                    group["lr"] = scale * lr_at(it, self.s)
            lr_batch, hr_batch = self.sampler(it)
            t_step = time.time()
            try:
                last = self.task.train_step(lr_batch, hr_batch, it)
                self.ema.update(self.task.model, it)
                in_a_row = 0
            except (NonFiniteLoss, torch.linalg.LinAlgError) as exc:  # a singular 1×1 conv is divergence too
                self.skipped += 1
                in_a_row += 1
                self._log({"type": "skip", "it": it, "reason": str(exc).splitlines()[0]})
                if in_a_row >= MAX_SKIPS_IN_A_ROW:
                    raise TrainingDiverged(
                        f"training diverged: {in_a_row} non-finite steps in a row up to iteration {it} (lower {{lr}}); "
                        f"the last checkpoint in {self.out} is kept as it was", ("lr",)) from None
            self.it = it
            if it % self.s.log_every == 0 or it == self.s.iters:
                self._log({"type": "train", "it": it, "lr": lr_at(it, self.s), "sec_per_it": time.time() - t_step,
                           "skipped": self.skipped, **last})
            if it % self.s.ckpt_every == 0 or it == self.s.iters:
                if self.s.val_every == 0:
                    val = self.validate() or val
                self.save()
                barrier()
            if self.s.val_every and it % self.s.val_every == 0:
                val = self.validate() or val
            if stop:
                self.save()
                self._log({"type": "stop", "it": self.it, "reason": stop[0]})
                raise KeyboardInterrupt
        return RunResult(self.it, self.skipped, time.time() - t0, last, val)


@contextmanager
def _deferred_interrupts() -> Iterator[list]:
    """SIGINT/SIGTERM only mark the run to stop after the current iteration (so the checkpoint is a whole
    iteration and resume stays exact); a second signal interrupts at once."""
    import signal
    import threading

    stop: list = []
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handler(signum: int, frame: object) -> None:
        if stop:
            raise KeyboardInterrupt
        stop.append(signal.Signals(signum).name)

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
