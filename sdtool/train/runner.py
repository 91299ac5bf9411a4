"""The generic training loop: schedule, EMA, NaN guard, atomic checkpoints, exact resume, logs, validation."""

from __future__ import annotations

import copy
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from torch import Tensor, nn

from sdtool.errors import OptionError, UsageError
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


def _atomic_torch_save(obj: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.sdtool-{os.getpid()}-{os.urandom(4).hex()}.tmp")  # never shared
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
        if state.get("kind") != self.task.kind:
            raise UsageError(f"{self.out / STATE_FILE}: a '{state.get('kind')}' run cannot resume as '{self.task.kind}'")
        for k, m in self.task.modules().items():
            m.load_state_dict(state["modules"][k])
        self.ema.model.load_state_dict(state["ema"])
        for k, o in self.task.optimizers().items():
            o.load_state_dict(state["optimizers"][k])
        self.it, self.skipped = int(state["it"]), int(state["skipped"])

    def save(self) -> None:
        if self.rank != 0:
            return
        self._export(self.out / MODEL_FILE)
        _atomic_torch_save(self.state_dict(), self.out / STATE_FILE)

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
        self.load_state_dict(torch.load(path, map_location=self.task.model.device, weights_only=True))
        self._truncate_log()
        return True

    def _truncate_log(self) -> None:
        """Drop log records past the checkpoint: the resumed run writes them again."""
        log = self.out / LOG_FILE
        if self.rank != 0 or not log.is_file():
            return
        kept = []
        for line in log.read_text().splitlines():
            try:
                if int(json.loads(line).get("it", 0)) <= self.it:
                    kept.append(line)
            except (ValueError, AttributeError):
                continue  # a line cut by a kill
        log.write_text("".join(k + "\n" for k in kept))

    # ---------------------------------------------------------------- loop
    def _log(self, record: dict) -> None:
        if self.rank != 0:
            return
        with open(self.out / LOG_FILE, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.on_log:
            self.on_log(record)

    def validate(self) -> dict[str, float]:
        if self.validator is None or self.rank != 0:
            return {}
        metrics = self.validator(self.ema.model)
        # Every validated state is kept, so a run can be cut at its best point by any metric afterwards
        # (validation curves of this model rise and fall; the last weights are not always the best).
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
        if resume and not self.resume():
            raise OptionError("resume", f"{self.out}: no run to resume (no {STATE_FILE}); leave it out to start one")
        if self.rank == 0 and not (self.out / "settings.json").exists():
            (self.out / "settings.json").write_text(self.s.to_json())
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
