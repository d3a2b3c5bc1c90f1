"""Learning-rate schedules: a factor of the base rate for each optimizer step, from the step alone
(so a resumed run needs nothing but its step count).

A schedule spans a *horizon* of H steps (the setting ``decay_steps``, 0 meaning the run's
``total_steps``). Step k (0-based) with ``warmup`` warm-up steps uses

* warm-up (k < warmup): (k + 1) / warmup, so the first step already learns;
* after it, with p = (min(k, H − 1) − warmup) / (H − warmup) ∈ [0, 1):
  ``constant`` 1, ``linear`` 1 − p, ``cosine`` (1 + cos πp) / 2. No step runs at rate 0.

The factor of a step does not depend on the run's length, only on the horizon: steps past it keep
the factor of step H − 1. Extending a run (more total steps) keeps its horizon, so the extended run
is the same function of the step as a run started with the longer total and ``decay_steps`` H.
"""
from __future__ import annotations

import math

from ..errors import TrainingError

SCHEDULES = ("constant", "linear", "cosine")


def lr_factor(schedule: str, step: int, horizon: int, warmup: int = 0) -> float:
    """The factor of the base learning rate used by step ``step`` (0-based) of a schedule that
    spans ``horizon`` steps."""
    if schedule not in SCHEDULES:
        raise TrainingError(f"unknown learning-rate schedule {schedule!r} (known: {', '.join(SCHEDULES)})")
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    p = (min(step, horizon - 1) - warmup) / max(1, horizon - warmup)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - p
    return 0.5 * (1.0 + math.cos(math.pi * p))
