"""Learning-rate schedules with warm-up: factors at known steps."""
import math

import pytest

from loralab.errors import TrainingError
from loralab.train.schedules import lr_factor


def test_warmup_then_constant():
    assert [lr_factor("constant", k, 10, 4) for k in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_factor("constant", 0, 10) == 1.0


def test_linear_decays_without_a_zero_step():
    f = [lr_factor("linear", k, 10, 0) for k in range(10)]
    assert f == pytest.approx([1 - k / 10 for k in range(10)])
    assert min(f) > 0
    assert lr_factor("linear", 2, 10, 2) == 1.0 and lr_factor("linear", 6, 10, 2) == pytest.approx(0.5)


def test_cosine():
    assert lr_factor("cosine", 0, 100) == 1.0
    assert lr_factor("cosine", 50, 100) == pytest.approx(0.5)
    assert lr_factor("cosine", 75, 100) == pytest.approx(0.5 * (1 + math.cos(0.75 * math.pi)))
    assert lr_factor("cosine", 1, 100, 10) == pytest.approx(0.2)


def test_unknown_schedule():
    with pytest.raises(TrainingError, match="unknown learning-rate schedule"):
        lr_factor("step", 0, 10)
