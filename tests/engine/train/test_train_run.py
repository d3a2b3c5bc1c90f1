"""Training runs on the toy model: learning, determinism, forks, checkpoints, exact resume (also in
a fresh process), and refusal of states that do not belong to the run."""
import json
import os
import subprocess
import sys

import pytest
import torch

from loralab.errors import CheckpointError, TrainingError
from loralab.lora import Lora
from loralab.files.hashes import file_hashes
from loralab.files.safetensors import SafetensorsFile, load_tensors, save_tensors
from loralab.train.checkpoint import (STATE_KEY, read_state, restore_run, save_checkpoint, state_path_for,
                                      write_state)
from loralab.train.memory import MemoryMode
from loralab.train.run import TrainSettings, eval_loss
from loralab_testkit import REPO
from loralab_testkit.train_toys import (TOY_KEYS, ToyModel, make_dataset, make_run, toy_layout, train, write_caption,
                                         write_image)

TESTS = os.path.join(REPO, "tests")
@pytest.fixture
def setup(tmp_path):
    ds = make_dataset(str(tmp_path / "data"), str(tmp_path / "cache"))
    return ds, ToyModel(), tmp_path


def _weights(run):
    return {k: v.clone() for k, v in run.network.state_tensors().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_lowers_the_loss(setup):
    ds, model, _ = setup
    run = make_run(ds, model, learning_rate=3e-3)
    model.network = run.network
    before = eval_loss(model, ds, run.settings, list(range(4)), seed=11)
    train(run, model, 40)
    after = eval_loss(model, ds, run.settings, list(range(4)), seed=11)
    assert run.step == 40 and len(run.losses) == 40
    assert after < 0.8 * before, (before, after)


def test_runs_are_reproducible_and_isolated_from_the_process_rng(setup):
    ds, model, _ = setup
    torch.manual_seed(123)
    process_state = torch.get_rng_state()
    a = make_run(ds, model)
    train(a, model, 5)
    assert torch.equal(torch.get_rng_state(), process_state)
    torch.manual_seed(999)  # the process's RNG does not reach the run
    b = make_run(ds, model)
    train(b, model, 5)
    assert _same(_weights(a), _weights(b)) and a.losses == b.losses


def test_fork_is_independent(setup):
    ds, model, _ = setup
    run = make_run(ds, model)
    train(run, model, 3)
    frozen = _weights(run)
    fork = run.fork()
    train(fork, model, 3)
    assert run.step == 3 and _same(_weights(run), frozen)
    train(run, model, 3)
    assert _same(_weights(run), _weights(fork)) and run.losses == fork.losses
    with pytest.raises(TrainingError, match="learning_rate"):
        run.fork(TrainSettings(**{**run.settings.to_json(), "learning_rate": 1.0}))
    renamed = run.fork(TrainSettings(**{**run.settings.to_json(), "name": "other", "keep_last": 9}), device="cpu")
    assert renamed.settings.name == "other" and _same(_weights(renamed), _weights(run))
    assert run.to("cpu") is run and _same(_weights(run), _weights(renamed))


@pytest.mark.parametrize("extra", [{}, {"grad_accumulation": 2, "max_grad_norm": 0.01, "lr_scheduler": "cosine",
                                        "warmup_steps": 2, "algorithm": "lokr"},
                                   {"algorithm": "dora", "noise_offset": 0.05, "min_snr_gamma": 5.0}],
                         ids=["lora", "lokr-accum-clip-cosine", "dora-offset-minsnr"])
def test_resume_from_state_file_is_exact(setup, extra):
    ds, model, tmp = setup
    one_go = make_run(ds, model, **extra)
    train(one_go, model, 6)
    half = make_run(ds, model, **extra)
    train(half, model, 3)
    path = write_state(str(tmp / "half.loralab-state"), half)
    template = make_run(ds, model, **extra)  # a new Init with the same settings
    resumed = restore_run(template, path)
    assert resumed.step == 3 and template.step == 0
    train(resumed, model, 3)
    assert _same(_weights(one_go), _weights(resumed))
    assert one_go.losses == resumed.losses


def test_resume_in_a_fresh_process_is_exact(setup):
    ds, model, tmp = setup
    one_go = make_run(ds, model)
    train(one_go, model, 8)
    half = make_run(ds, model)
    train(half, model, 4)
    state = write_state(str(tmp / "half.loralab-state"), half)
    out = str(tmp / "resumed.safetensors")
    script = f"""
import sys
sys.path[:0] = [{REPO!r}, {TESTS!r}]
from loralab_testkit.train_toys import ToyModel, make_dataset, make_run, train
from loralab.train.checkpoint import restore_run
from loralab.files.safetensors import save_tensors
ds = make_dataset({str(tmp / 'data')!r}, {str(tmp / 'cache')!r})
model = ToyModel()
run = restore_run(make_run(ds, model), {state!r})
train(run, model, 4)
save_tensors({out!r}, run.network.state_tensors())
"""
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    assert _same(load_tensors(out), _weights(one_go))


def test_resume_refuses_other_settings_dataset_or_model(setup):
    ds, model, tmp = setup
    run = make_run(ds, model)
    train(run, model, 2)
    path = write_state(str(tmp / "s.loralab-state"), run)
    with pytest.raises(CheckpointError, match=r"setting rank: 4 → 8; setting learning_rate: 0\.001 → 0\.002"):
        restore_run(make_run(ds, model, learning_rate=2e-3, rank=8), path)
    restore_run(make_run(ds, model, name="renamed", save_every=5), path)  # output settings may change
    write_caption(os.path.join(ds.folder, "2.png"), "green, short")
    write_image(os.path.join(ds.folder, "9.png"), 64, 64, seed=9)
    changed = make_dataset(ds.folder, str(tmp / "cache"))
    with pytest.raises(CheckpointError, match=r"1 images added: 9.png; 1 images or captions changed: 2.png"):
        restore_run(make_run(changed, model), path)
    other = make_run(ds, model)
    other.model_info["fingerprint"] = "another-model"
    with pytest.raises(CheckpointError, match="base model's weights differ"):
        restore_run(other, path)


def test_a_state_from_before_a_dataset_setting_existed_reads_it_as_its_default(setup):
    ds, model, tmp = setup
    run = make_run(ds, model)
    path = write_state(str(tmp / "old.loralab-state"), run)
    tensors, meta = read_state(path)
    for key in ("frames", "frame_extraction"):
        del meta["dataset"]["settings"][key]
    old = str(tmp / "older.loralab-state")
    save_tensors(old, tensors, {STATE_KEY: json.dumps(meta)})
    restore_run(make_run(ds, model), old)  # the same dataset resumes
    write_caption(os.path.join(ds.folder, "2.png"), "blue, long")
    with pytest.raises(CheckpointError) as e:
        restore_run(make_run(make_dataset(ds.folder, str(tmp / "cache")), model), old)
    assert "1 images or captions changed: 2.png" in str(e.value) and "frames" not in str(e.value)


def test_a_state_records_the_memory_mode_its_run_trained_in(setup):
    ds, model, tmp = setup
    run = make_run(ds, model)
    assert read_state(write_state(str(tmp / "none.loralab-state"), run))[1]["memory_mode"] is None  # no host: none
    assert restore_run(make_run(ds, model), str(tmp / "none.loralab-state")).attachments["trained_memory_mode"] is None
    run.attachments["memory_mode"] = MemoryMode("fp8", 3, True)
    path = write_state(str(tmp / "fp8.loralab-state"), run)
    template = make_run(ds, model)
    template.attachments["memory_mode"] = MemoryMode()
    resumed = restore_run(template, path)
    assert resumed.attachments["trained_memory_mode"] == MemoryMode("fp8", 3, True)
    assert resumed.attachments["memory_mode"] == MemoryMode()  # keeping it is the host's (it plans for its device)


def _corrupt_variants(path, tmp):
    good = open(path, "rb").read()
    tensors, meta = read_state(path)
    yield "truncated", good[: len(good) // 2], "cannot be read"
    yield "garbage", b"\x00" * 64, "cannot be read"
    lora = str(tmp / "plain.safetensors")
    save_tensors(lora, {"x": torch.zeros(2)}, {"ss_network_dim": "4"})
    yield "a LoRA file", open(lora, "rb").read(), "not a LoRA Lab training state"

    def with_meta(change):
        m = json.loads(json.dumps(meta))
        change(m)
        p = str(tmp / "edited.loralab-state")
        if os.path.exists(p):
            os.unlink(p)
        save_tensors(p, tensors, {STATE_KEY: json.dumps(m)})
        return open(p, "rb").read()
    yield "version", with_meta(lambda m: m.update(version=99)), "version 99 is not supported"
    yield "steps vs losses", with_meta(lambda m: m.update(step=7)), "loss history has 2 entries for 7 steps"
    yield "order", with_meta(lambda m: m["order"].update(batches=[[0, 99]])), "malformed"
    yield "missing optimizer", with_meta(lambda m: m.pop("optimizer")), "incomplete|malformed|optimizer"
    yield "memory mode", with_meta(lambda m: m.update(memory_mode={"base_dtype": "fp4"})), "malformed.*memory mode"
    p = str(tmp / "edited2.loralab-state")
    t2 = dict(tensors)
    t2.pop(next(k for k in t2 if k.startswith("network.")))
    save_tensors(p, t2, {STATE_KEY: json.dumps(meta)})
    yield "missing factor", open(p, "rb").read(), "network factors do not fit"


def test_corrupt_state_gives_a_clear_error_and_changes_nothing(setup):
    ds, model, tmp = setup
    run = make_run(ds, model)
    train(run, model, 2)
    path = write_state(str(tmp / "s.loralab-state"), run)
    template = make_run(ds, model)
    before = _weights(template)
    for label, data, message in list(_corrupt_variants(path, tmp)):
        bad = str(tmp / f"bad-{label}.loralab-state")
        with open(bad, "wb") as f:
            f.write(data)
        with pytest.raises(CheckpointError, match=message) as err:
            restore_run(template, bad)
        assert bad in str(err.value), label
        assert template.step == 0 and _same(_weights(template), before), label


def test_periodic_checkpoints_keep_the_last_k_and_load_as_loras(setup):
    ds, model, tmp = setup
    run = make_run(ds, model, save_every=2, keep_last=2, name="sub/my lora", save_dtype="fp32")
    folder = str(tmp / "loras")
    saved = []

    def on_step(r, loss):
        if r.step % r.settings.save_every == 0:
            saved.append(save_checkpoint(r, folder))
    train(run, model, 7, on_step=on_step)
    assert len(saved) == 3
    for lora_path, state_path in saved[:1]:
        assert not os.path.exists(lora_path) and not os.path.exists(state_path)
    for lora_path, state_path in saved[1:]:
        assert os.path.exists(lora_path) and state_path == state_path_for(lora_path)
    assert [os.path.basename(p) for p, _ in saved] == [f"my lora_step{n:06d}.safetensors" for n in (2, 4, 6)]
    assert os.path.dirname(saved[0][0]) == os.path.join(folder, "sub")
    lora = Lora.open(saved[-1][0], toy_layout())
    assert not list(lora.unmapped()) and len(list(lora.mapped())) == 3
    meta = SafetensorsFile(saved[-1][0]).metadata
    assert meta["ss_steps"] == "6" and meta["modelspec.title"] == "my lora_step000006"
    hashes = file_hashes(saved[-1][0])
    assert hashes.addnet_matches and hashes.legacy_matches and meta["sshs_model_hash"] == hashes.addnet
    assert read_state(saved[-1][1])[1]["lora_sha256"] == hashes.sha256  # AutoV2 = its first 10 digits
    final, final_state = save_checkpoint(run, folder, periodic=False)
    assert os.path.basename(final) == "my lora_step000007.safetensors" and len(run.checkpoints) == 2
    again, _ = save_checkpoint(run, folder, periodic=False)
    assert os.path.basename(again) == "my lora_step000007_00001.safetensors"  # never overwrites
    resumed = restore_run(make_run(ds, model, save_every=2, keep_last=2, name="sub/my lora", save_dtype="fp32"),
                          final_state)
    assert resumed.checkpoints == [[p, s] for p, s in saved[1:]]


def test_stop_request_and_non_finite_loss(setup):
    ds, model, _ = setup
    run = make_run(ds, model)
    calls = []
    assert train(run, model, 10, should_stop=lambda: len(calls) >= 3, on_step=lambda r, l: calls.append(r.step))
    assert run.step == 3
    bad = make_run(ds, model, learning_rate=1e-3)
    before = _weights(bad)
    broken = ToyModel()
    broken.weights[TOY_KEYS["conv_out"]] = broken.weights[TOY_KEYS["conv_out"]] * float("nan")
    broken.network = bad.network
    with pytest.raises(TrainingError, match="not finite at step 1"):
        bad.train(broken, 2)
    assert _same(_weights(bad), before)


def test_runs_stop_at_their_total(setup):
    ds, model, _ = setup
    run = make_run(ds, model, total_steps=5)
    train(run, model, 100)
    assert run.step == 5 and run.complete and run.order.epoch == 3  # 4 images / batch 2 = 2 batches an epoch
