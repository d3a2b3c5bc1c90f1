"""Extending a run: more total steps, same state. The schedule keeps its horizon, so an extended
run equals bit for bit a run started with the longer total (constant schedule) or with the longer
total and ``decay_steps`` = the old total (decaying schedule), also through a checkpoint."""
import pytest
import torch

from loralab.errors import CheckpointError, TrainingError
from loralab.train.checkpoint import restore_run, write_state
from loralab.train.schedules import lr_factor
from loralab_testkit.train_toys import ToyModel, make_dataset, make_run, train


@pytest.fixture
def setup(tmp_path):
    return make_dataset(str(tmp_path / "data"), str(tmp_path / "cache")), ToyModel(), tmp_path


def _same(a, b):
    x, y = a.network.state_tensors(), b.network.state_tensors()
    return x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x) and a.losses == b.losses


def _lrs(run, model, steps):
    out = []
    train(run, model, steps, on_step=lambda r, loss: out.append(r.optimizer.param_groups[0]["lr"]))
    return out


def test_extending_a_finished_constant_run_equals_the_longer_run(setup):
    ds, model, _ = setup
    short = make_run(ds, model, total_steps=4, warmup_steps=2)
    train(short, model, 10)
    assert short.complete
    longer = short.extend(8)
    assert short.settings.total_steps == 4 and longer.settings.total_steps == 8 and not longer.complete
    train(longer, model, 10)
    straight = make_run(ds, model, total_steps=8, warmup_steps=2)
    train(straight, model, 10)
    assert longer.step == straight.step == 8 and _same(longer, straight)
    assert longer.settings.changes(straight.settings) == []


def test_extending_a_decayed_run_keeps_its_last_rate(setup):
    ds, model, _ = setup
    short = make_run(ds, model, total_steps=4, lr_scheduler="cosine", warmup_steps=1)
    _lrs(short, model, 4)
    longer = short.extend(7)
    assert longer.settings.decay_steps == 4
    last = 1e-3 * lr_factor("cosine", 3, 4, 1)
    assert 0 < last < 1e-3 * 0.3 and _lrs(longer, model, 3) == [last] * 3  # steps past the horizon: step 3's rate
    straight = make_run(ds, model, total_steps=7, decay_steps=4, lr_scheduler="cosine", warmup_steps=1)
    _lrs(straight, model, 7)
    assert _same(longer, straight)
    plain = make_run(ds, model, total_steps=7, lr_scheduler="cosine", warmup_steps=1)
    assert plain.settings.changes(longer.settings) == ["schedule horizon (decay_steps): 7 → 4"]
    with pytest.raises(TrainingError, match="more steps than the run's 7"):
        longer.extend(7)


def test_a_checkpoint_of_an_extended_run_resumes_from_the_original_settings(setup):
    ds, model, tmp = setup
    run = make_run(ds, model, total_steps=3, lr_scheduler="linear")
    train(run, model, 3)
    longer = run.extend(6)
    train(longer, model, 1)
    path = write_state(str(tmp / "ext.loralab-state"), longer)
    resumed = restore_run(make_run(ds, model, total_steps=3, lr_scheduler="linear"), path)
    assert resumed.settings == longer.settings and resumed.step == 4
    train(resumed, model, 2)
    train(longer, model, 2)
    assert _same(resumed, longer)
    with pytest.raises(CheckpointError, match="schedule horizon"):
        restore_run(make_run(ds, model, total_steps=6, lr_scheduler="linear"), path)
