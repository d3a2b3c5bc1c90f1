"""Validation: held-out images chosen by seed and never trained on, or a validation folder; the loss
at fixed noise levels and noise (checked against the formula), the same whatever the run's random
state, not disturbing training, and identical bit for bit after a save and resume."""
import random

import pytest
import torch

from loralab.errors import CheckpointError, TrainingError
from loralab.train.checkpoint import restore_run, write_state
from loralab.train.checkpoint import lora_tensors
from loralab.train.metadata import training_metadata
from loralab.train.run import TrainSettings
from loralab.train.validation import NOISE_LEVELS, _draw_key, fixed_sigmas, held_out, validation_loss
from loralab_testkit.train_toys import ToyModel, make_dataset, make_run, one_thread, train  # noqa: F401 (fixture)


@pytest.fixture
def setup(tmp_path):
    return make_dataset(str(tmp_path / "data"), str(tmp_path / "cache")), ToyModel(), tmp_path


def _weights(run):
    return {k: v.clone() for k, v in run.network.state_tensors().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_held_out_images_are_chosen_by_seed_whatever_the_folder_order(setup):
    ds, _, _ = setup
    assert held_out(ds, 0.0, 1) == []
    picks = {seed: held_out(ds, 0.25, seed) for seed in range(8)}
    assert all(len(p) == 1 for p in picks.values()) and len({tuple(p) for p in picks.values()}) > 1
    assert held_out(ds, 0.5, 3) == held_out(ds, 0.5, 3) and len(held_out(ds, 0.5, 3)) == 2
    ids = [ds.items[i].id for i in held_out(ds, 0.5, 3)]
    ds.items.reverse()
    assert sorted(ds.items[i].id for i in held_out(ds, 0.5, 3)) == sorted(ids)
    with pytest.raises(TrainingError, match="holds out all 4 images"):
        held_out(ds, 0.9, 0)
    with pytest.raises(TrainingError, match="validation_split must be"):
        TrainSettings(validation_split=1.0).check("eps")


def test_held_out_images_are_never_trained_on(setup):
    ds, model, _ = setup
    run = make_run(ds, model, validation_split=0.25, validation_seed=5, batch_size=1)
    (out,) = run.held_out
    seen = []
    for _ in range(12):  # four epochs of the three training images
        seen += run.order.next_batch(ds, 1, run.train_indices)
    assert out not in seen and sorted(set(seen)) == sorted(set(range(4)) - {out})
    assert sorted(seen) == sorted([i for i in range(4) if i != out] * 4)
    meta = training_metadata(run, lora_tensors(run), title="v")
    assert meta["ss_num_train_images"] == "3" and meta["ss_num_batches_per_epoch"] == "3"
    assert meta["ss_validation_split"] == "0.25" and meta["ss_validation_seed"] == "5"


def test_validation_loss_is_the_unweighted_target_error_at_fixed_levels_and_noise(setup):
    ds, model, _ = setup
    sigmas = fixed_sigmas(model)
    steps = [int((i + 0.5) / NOISE_LEVELS * 1000) for i in range(NOISE_LEVELS)]
    assert steps == [125, 375, 625, 875] and torch.equal(sigmas, model.sigmas[steps])
    assert torch.equal(fixed_sigmas(type("Flow", (), {"kind": "flow"})()), torch.tensor([0.125, 0.375, 0.625, 0.875]))
    expected = []
    for idx in (1, 3):
        x0 = (ds.latent(idx) * 0.5)[None].expand(4, -1, -1, -1)
        noise = torch.randn(tuple(x0.shape), generator=torch.Generator().manual_seed(_draw_key(9, ds.items[idx].id)))
        s = sigmas.reshape(-1, 1, 1, 1)
        x = x0 + noise * s
        denoised = model.denoise(x, sigmas, [dict(ds.cond(idx, 0))] * 4)
        expected.append(float((((x - denoised) / s - noise) ** 2).mean()))
    got = validation_loss(model, ds, [1, 3], seed=9)
    assert got == pytest.approx(sum(expected) / 2, rel=1e-6)
    assert validation_loss(model, ds, [1, 3], seed=9) == got and validation_loss(model, ds, [1, 3], seed=10) != got


def test_validation_ignores_the_runs_random_state_and_leaves_it_alone(setup):
    ds, model, _ = setup
    run = make_run(ds, model, validation_split=0.5, validation_seed=2)
    train(run, model, 3)
    other = run.fork()
    other.generator.manual_seed(1234)
    other.global_rng = make_run(ds, model, seed=77).global_rng
    random.seed(5)
    torch.manual_seed(5)
    model.network = run.network
    a = run.validate(model)
    model.network = other.network
    assert other.validate(model) == a
    before = (run.generator.get_state().clone(), torch.get_rng_state().clone())
    model.network = run.network
    run.validate(model)
    assert torch.equal(run.generator.get_state(), before[0]) and torch.equal(torch.get_rng_state(), before[1])


def test_validating_does_not_change_training(setup):
    ds, model, _ = setup
    quiet = make_run(ds, model, validation_split=0.25)
    train(quiet, model, 6)
    checked = make_run(ds, model, validation_split=0.25, validation_every=2)
    train(checked, model, 6)
    assert _same(_weights(quiet), _weights(checked)) and quiet.losses == checked.losses
    assert quiet.val_losses == [] and [s for s, _ in checked.val_losses] == [2, 4, 6]
    model.network = checked.network
    assert checked.val_losses[-1][1] == checked.validate(model)


def test_validation_loss_is_identical_after_save_and_resume(setup):
    ds, model, tmp = setup
    kw = {"validation_split": 0.25, "validation_every": 2, "total_steps": 8}
    straight = make_run(ds, model, **kw)
    train(straight, model, 8)
    half = make_run(ds, model, **kw)
    train(half, model, 4)
    model.network = half.network
    at_save = half.validate(model)
    resumed = restore_run(make_run(ds, model, **kw), write_state(str(tmp / "v.loralab-state"), half))
    assert resumed.val_losses == half.val_losses and resumed.held_out == half.held_out
    model.network = resumed.network
    assert resumed.validate(model) == at_save
    train(resumed, model, 4)
    assert resumed.val_losses == straight.val_losses and _same(_weights(resumed), _weights(straight))
    # validation_every is not a training setting: a resume may change it
    other_every = restore_run(make_run(ds, model, **{**kw, "validation_every": 3}), str(tmp / "v.loralab-state"))
    assert other_every.val_losses == half.val_losses
    with pytest.raises(CheckpointError, match="validation_split"):
        restore_run(make_run(ds, model, **{**kw, "validation_split": 0.5}), str(tmp / "v.loralab-state"))


def test_a_validation_folder(setup):
    ds, model, tmp = setup
    val = make_dataset(str(tmp / "val"), str(tmp / "cache"), trigger="x")
    run = make_run(ds, model, validation=val, validation_every=1, total_steps=4)
    assert run.held_out == [] and run.train_indices is None
    train(run, model, 2)
    model.network = run.network
    assert run.val_losses[-1][1] == validation_loss(model, val, [0, 1, 2, 3], seed=0)
    path = write_state(str(tmp / "f.loralab-state"), run)
    assert restore_run(make_run(ds, model, validation=val, validation_every=1, total_steps=4), path).step == 2
    other = make_dataset(str(tmp / "val"), str(tmp / "cache"), trigger="y")
    with pytest.raises(CheckpointError, match="the validation dataset differs"):
        restore_run(make_run(ds, model, validation=other, validation_every=1, total_steps=4), path)
    with pytest.raises(TrainingError, match="both choose validation images"):
        make_run(ds, model, validation=val, validation_split=0.25)
    with pytest.raises(TrainingError, match="no validation images"):
        make_run(ds, model).validate(model)
