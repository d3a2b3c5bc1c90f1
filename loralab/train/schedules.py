"""Learning-rate schedules: a factor of the base rate for each optimizer step, from the step alone
(so a resumed run needs nothing but its step count).

Step k (0-based) of a run of ``total`` steps with ``warmup`` warm-up steps uses

* warm-up (k < warmup): (k + 1) / warmup, so the first step already learns;
* after it, with p = (k − warmup) / (total − warmup) ∈ [0, 1):
  ``constant`` 1, ``linear`` 1 − p, ``cosine`` (1 + cos πp) / 2. No step runs at rate 0.
"""
from __future__ import annotations

import math

from ..errors import TrainingError

SCHEDULES = ("constant", "linear", "cosine")


def lr_factor(schedule: str, step: int, total: int, warmup: int = 0) -> float:
    """The factor of the base learning rate used by step ``step`` (0-based)."""
    if schedule not in SCHEDULES:
        raise TrainingError(f"unknown learning-rate schedule {schedule!r} (known: {', '.join(SCHEDULES)})")
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    p = min(max(step - warmup, 0) / span, 1.0)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - p
    return 0.5 * (1.0 + math.cos(math.pi * p))
