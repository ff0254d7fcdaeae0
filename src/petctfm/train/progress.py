"""Interactive side of a training run: a stop flag for SIGTERM / Ctrl-C and a rich progress bar.

:class:`StopFlag` turns the first SIGTERM or Ctrl-C into a request the trainer loop checks after each step
(it then checkpoints and returns ``stopped = "SIGTERM"`` / ``"SIGINT"``); long work inside a step's hooks (a
validation pass) asks :func:`stop_requested` between its parts and gives up, so a stop takes one step, not a
whole validation; :class:`Progress` shows steps,
steps/s, loss and ETA on rank 0 when ``train.progress`` is on.
"""

from __future__ import annotations

import signal
import threading
from typing import Any


_ACTIVE: list["StopFlag"] = []  # the flags of the training loops running in this process


def stop_requested() -> bool:
    """Whether a running training loop of this process was asked to stop (SIGTERM / Ctrl-C)."""
    return any(f.reason is not None for f in _ACTIVE)


class StopFlag:
    """SIGTERM / first Ctrl-C set a flag (the loop stops after the current step and checkpoints); a second
    Ctrl-C raises KeyboardInterrupt as usual."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._old: dict[int, Any] = {}

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.reason is not None:
            raise KeyboardInterrupt
        self.reason = signal.Signals(signum).name

    def __enter__(self) -> "StopFlag":
        _ACTIVE.append(self)
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGTERM, signal.SIGINT):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> bool:
        for s, h in self._old.items():
            signal.signal(s, h)
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        return False


class Progress:
    """A rich progress bar (steps, steps/s, loss, ETA) on rank 0, or nothing."""

    def __init__(self, enabled: bool, total: int, start: int):
        self.bar = None
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]} steps/s"), TextColumn("loss {task.fields[loss]}"),
                                TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
            self.task = self.bar.add_task("train", total=total, completed=start, rate="-", loss="-")

    def __enter__(self) -> "Progress":
        if self.bar is not None:
            self.bar.start()
        return self

    def update(self, step: int, rate: float | None = None, loss: float | None = None) -> None:
        if self.bar is None:
            return
        fields = {}
        if rate is not None:
            fields["rate"] = f"{rate:.2f}"
        if loss is not None:
            fields["loss"] = f"{loss:.4g}"
        self.bar.update(self.task, completed=step, **fields)

    def __exit__(self, *exc) -> bool:
        if self.bar is not None:
            self.bar.stop()
        return False
