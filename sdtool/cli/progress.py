"""Progress of long commands (upscale, downscale, sample-degradation, benchmark, train): live bars when stderr
is a terminal; otherwise (nohup, a batch job, CI) plain lines with the elapsed time and an ETA, since live bars
would show nothing readable in a log until the end.

A plain line is printed at each tenth of the work (when MIN_GAP_S have passed since the last line, so a short
run prints none) and at least every EVERY_S seconds while work goes on, e.g.
``train: 300/1000 it (30%), 2m05s elapsed, ETA 4m52s, loss 0.123``.
"""

from __future__ import annotations

import math
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Optional

from sdtool.cli.common import failure_text

if TYPE_CHECKING:  # pragma: no cover
    from sdtool.infer.batch import ProgressEvent

EVERY_S = 60.0  # the longest silence between two lines while work goes on
MIN_GAP_S = 10.0  # the shortest time between two lines
STEPS = 10  # lines at each tenth of the work


def live_terminal() -> bool:
    """True when progress goes to a terminal (live bars); False for logs (plain lines)."""
    return sys.stderr.isatty()


def _duration(seconds: float) -> str:
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class PlainProgress:
    """Counts work towards `total` (files, pairs, iterations) and prints a line now and then.

    update(done, detail): `done` may be fractional (a file half done). The rate, and so the ETA, is
    measured from the first update, so the time before the work starts (a model load, a resumed run's
    earlier iterations) does not count."""

    def __init__(self, label: str, total: float, unit: str, *, every_s: Optional[float] = None,
                 min_gap_s: Optional[float] = None, write: Callable[[str], None] = _to_stderr,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.label, self.total, self.unit = label, max(float(total), 1e-9), unit
        self.every_s = EVERY_S if every_s is None else every_s
        self.min_gap_s = MIN_GAP_S if min_gap_s is None else min_gap_s
        self.write, self.clock = write, clock
        self.first: Optional[tuple[float, float]] = None  # (time, done) of the first update
        self.last_line = clock()
        self.next_mark = 0.0

    def update(self, done: float, detail: str = "") -> None:
        now = self.clock()
        if self.first is None:
            self.first = (now, done)
            self.next_mark = self._mark_after(done)
        at_mark = done >= self.next_mark
        if at_mark:
            self.next_mark = self._mark_after(done)
        quiet = now - self.last_line
        if not (quiet >= self.every_s or (at_mark and quiet >= self.min_gap_s)):
            return
        self.last_line = now
        self.write(self.line(done, now, detail))

    def _mark_after(self, done: float) -> float:
        if done >= self.total:
            return math.inf  # no mark after the end
        step = self.total / STEPS
        return min(self.total, (math.floor(done / step + 1e-9) + 1) * step)

    def line(self, done: float, now: float, detail: str = "") -> str:
        t0, d0 = self.first if self.first is not None else (now, done)
        elapsed = now - t0
        rate = (done - d0) / elapsed if elapsed > 0 else 0.0
        eta = _duration((self.total - done) / rate) if rate > 0 else "?"
        count = f"{done:.0f}" if float(done).is_integer() else f"{done:.1f}"
        text = (f"{self.label}: {count}/{self.total:.0f} {self.unit} ({100 * done / self.total:.0f}%), "
                f"{_duration(elapsed)} elapsed, ETA {eta if done < self.total else '0s'}")
        return f"{text}, {detail}" if detail else text


class CountBar:
    """One count of work (iterations, images, files): a live bar when stderr is a terminal, plain lines with an ETA
    otherwise (`PlainProgress`). The one renderer of every command: `update(done, detail)` moves it, `line(text)`
    prints a message above it, and `sub`/`sub_update` show a second bar for the part in hand (live only)."""

    def __init__(self, label: str, total: float, unit: str, *, transient: bool = True) -> None:
        from rich.console import Console

        self.label, self.total, self.unit, self.transient = label, total, unit, transient
        self.console = Console(stderr=True, highlight=False)
        self.live = live_terminal()
        self.bar: Any = None
        self.plain: Optional[PlainProgress] = None
        self.task: Any = None
        self.part: Any = None

    def __enter__(self) -> "CountBar":
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), TextColumn("{task.fields[info]}"), console=self.console,
                                transient=self.transient)
            self.bar.__enter__()
            self.task = self.bar.add_task(self.label, total=max(self.total, 1), info="")
        else:
            self.plain = PlainProgress(self.label, self.total, self.unit, write=self.line)
            self.plain.update(0)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)

    def update(self, done: float, detail: str = "") -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, info=detail)
        elif self.plain is not None:
            self.plain.update(done, detail)

    def line(self, text: str) -> None:
        # Console.print goes above the live bar when it is shown; plain stderr otherwise.
        self.console.print(text, markup=False, soft_wrap=True)

    def sub(self, name: str, total: int) -> None:
        if self.bar is not None:
            if self.part is not None:
                self.bar.remove_task(self.part)
            self.part = self.bar.add_task(f"  {name}", total=max(total, 1), info="")

    def sub_update(self, done: float) -> None:
        if self.bar is not None and self.part is not None:
            self.bar.update(self.part, completed=done)


class BatchReporter:
    """Turns pipeline progress events into a `CountBar` over the files (and one over the current file's tiles or
    samples, live), and error and notice lines."""

    def __init__(self, task: str) -> None:
        self.task = task
        self.count: Optional[CountBar] = None

    def __enter__(self) -> "BatchReporter":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.count is not None:
            self.count.__exit__(*exc)

    def line(self, text: str) -> None:
        if self.count is not None:
            self.count.line(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def __call__(self, event: "ProgressEvent") -> None:
        if event.kind == "notice":
            self.line(f"notice: {event.message}")
        elif event.kind == "start":
            self.count = CountBar(self.task if not live_terminal() else f"{self.task} (files)", event.total,
                                  "files").__enter__()
        elif event.kind == "file_start" and self.count is not None:
            self.count.sub(event.path.name if event.path is not None else "", event.steps)
        elif event.kind == "step" and self.count is not None:
            self.count.sub_update(event.step)
            if not self.count.live:
                name = event.path.name if event.path is not None else ""
                self.count.update(event.index + event.step / max(event.steps, 1), name)
        elif event.kind == "file_end":
            self._file_end(event)

    def _file_end(self, event: "ProgressEvent") -> None:
        outcome = event.outcome
        if outcome is not None and outcome.status == "failed":
            self.line(f"error: {failure_text(outcome)}")
        if outcome is not None:
            for note in outcome.notes:
                self.line(f"notice: {outcome.source}: {note}")
        if self.count is not None:
            self.count.update(event.index + 1, event.path.name if event.path is not None else "")
