"""EMA of the LoRA factors: e₀ = the initial factors, eₜ = d·eₜ₋₁ + (1 − d)·pₜ after every step; the
EMA is what is saved, training itself is unchanged, and a resumed run continues it bit for bit."""
import pytest
import torch

from loralab.errors import TrainingError
from loralab.formats.writer import kohya_module_name
from loralab.train.checkpoint import EMA_PREFIX, lora_tensors, read_state, restore_run, write_state
from loralab.train.run import TrainSettings
from loralab_testkit.train_toys import (TOY_KEYS, ToyModel, make_dataset, make_run, one_thread,  # noqa: F401
                                         toy_layout, train)

DECAY = 0.8


@pytest.fixture
def setup(tmp_path):
    return make_dataset(str(tmp_path / "data"), str(tmp_path / "cache")), ToyModel(), tmp_path


def _snapshot(run):
    return {k: v.clone() for k, v in run.network.state_tensors().items()}


def test_ema_is_the_hand_computed_average_of_the_factor_trajectory(setup):
    ds, model, _ = setup
    run = make_run(ds, model, ema_decay=DECAY, learning_rate=1e-2)
    trajectory = [_snapshot(run)]
    train(run, model, 3, on_step=lambda r, _: trajectory.append(_snapshot(r)))
    expected = {}
    for name in trajectory[0]:
        e = trajectory[0][name].double()
        for p in trajectory[1:]:
            e = DECAY * e + (1 - DECAY) * p[name].double()
        expected[name] = e
    for name, e in expected.items():
        assert torch.allclose(run.ema[name].double(), e, rtol=1e-6, atol=1e-9), name
    up = f"network.{TOY_KEYS['to_k']}.up"  # zero at the start: e₃ = (1-d)(d²p₁ + d·p₂ + p₃)
    p = [t[up].double() for t in trajectory[1:]]
    assert torch.allclose(run.ema[up].double(), (1 - DECAY) * (DECAY ** 2 * p[0] + DECAY * p[1] + p[2]), atol=1e-9)
    assert not torch.equal(run.ema[up], trajectory[-1][up])


def test_the_ema_is_saved_and_training_is_unchanged(setup):
    ds, model, _ = setup
    plain = make_run(ds, model)
    train(plain, model, 4)
    averaged = make_run(ds, model, ema_decay=DECAY)
    train(averaged, model, 4)
    a, b = _snapshot(plain), _snapshot(averaged)
    assert all(torch.equal(a[k], b[k]) for k in a) and plain.losses == averaged.losses
    saved = lora_tensors(averaged)
    key = kohya_module_name(TOY_KEYS["to_k"].rsplit(".", 1)[0], toy_layout())
    assert torch.equal(saved[f"{key}.lora_up.weight"], averaged.ema[f"network.{TOY_KEYS['to_k']}.up"])
    assert not torch.equal(saved[f"{key}.lora_up.weight"], lora_tensors(plain)[f"{key}.lora_up.weight"])


def test_ema_resumes_bit_exact(setup):
    ds, model, tmp = setup
    straight = make_run(ds, model, ema_decay=DECAY)
    train(straight, model, 6)
    half = make_run(ds, model, ema_decay=DECAY)
    train(half, model, 3)
    path = write_state(str(tmp / "e.loralab-state"), half)
    tensors, _ = read_state(path)
    assert sum(k.startswith(EMA_PREFIX) for k in tensors) == len(half.ema)
    resumed = restore_run(make_run(ds, model, ema_decay=DECAY), path)
    train(resumed, model, 3)
    assert straight.ema.keys() == resumed.ema.keys()
    assert all(torch.equal(straight.ema[k], resumed.ema[k]) for k in straight.ema)
    a, b = _snapshot(straight), _snapshot(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    fork = resumed.fork()
    assert all(torch.equal(fork.ema[k], resumed.ema[k]) and fork.ema[k] is not resumed.ema[k] for k in fork.ema)
    with pytest.raises(TrainingError, match="ema_decay must be"):
        TrainSettings(ema_decay=1.0).check("eps")
