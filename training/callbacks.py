"""How a training run talks to the outside: metrics, progress, cancellation.

The loop knows nothing about Django or Celery. The Celery task passes
callables that write `MetricPoint` rows, update `TrainingRun.progress` and
read `TrainingRun.cancel_requested`; the `train` command passes a progress bar.
No torch here.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

MetricsCallback = Callable[[int, Mapping[str, float]], None]  # (step, {name: value})
ProgressCallback = Callable[[int, int], None]  # (step, total_steps)
StopCheck = Callable[[], bool]  # True: stop cooperatively after this step


@dataclass(frozen=True)
class RunHooks:
    """Optional callables the loop calls; every one may be None.

    - on_metrics(step, metrics): after each logged step and each evaluation.
      Names are "train/<metric>" and "eval/<metric>" (DESIGN.md vocabulary).
    - on_progress(step, total): after every optimizer step.
    - should_stop(): checked after every optimizer step; True makes the loop
      write a checkpoint and return with status "cancelled".
    """

    on_metrics: MetricsCallback | None = None
    on_progress: ProgressCallback | None = None
    should_stop: StopCheck | None = None


class MetricsSink:
    """Appends one JSON object per log call to `metrics.jsonl` and forwards to a callback.

    Each line is ``{"step": int, "time": unix seconds, <name>: float, ...}``.
    Non-finite values are written as null (JSON has no NaN) and not forwarded.
    """

    def __init__(self, path: Path, callback: MetricsCallback | None = None) -> None:
        self.path = path
        self.callback = callback
        self._fh: TextIO | None = None

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after `step` (a resumed run re-logs them)."""
        if not self.path.exists():
            return
        kept = [
            line
            for line in self.path.read_text().splitlines()
            if line and json.loads(line)["step"] <= step
        ]
        self.path.write_text("".join(line + "\n" for line in kept))

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        finite = {k: float(v) for k, v in metrics.items() if math.isfinite(v)}
        record = {
            "step": step,
            "time": round(time.time(), 3),
            **{k: finite.get(k) for k in metrics},
        }
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()  # a reader (the web page, a crash post-mortem) sees every line
        if self.callback is not None:
            self.callback(step, finite)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class NullSink(MetricsSink):
    """Records nothing: ranks > 0 of a multi-process run log here (rank 0 logs global figures)."""

    def __init__(self) -> None:
        super().__init__(Path("/dev/null"))

    def truncate_after(self, step: int) -> None:
        return None

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        return None


def read_metrics(path: Path) -> list[dict[str, float | None]]:
    """Every record of a metrics.jsonl file, in order."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
