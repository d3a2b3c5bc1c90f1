"""Text-encoder LoRA training: kohya's text-encoder modules chosen per architecture, their own
learning rate, captions encoded each step through the patched encoder (the dataset's cached
encodings are not read), kohya ``lora_te*`` names in the saved file, and exact resume."""
import os

import pytest
import torch

from loralab.errors import DatasetError, TrainingError
from loralab.formats.writer import kohya_module_name
from loralab.layouts import layout_for
from loralab.train.checkpoint import lora_tensors, restore_run, write_state
from loralab.train.metadata import training_metadata
from loralab.train.network import select_text_encoder_targets
from loralab.train.run import TrainRun, TrainSettings, batch_loss
from loralab.train.schedules import lr_factor
from loralab.train.validation import validation_loss
from loralab_testkit.train_toys import (TOY_KEYS, TOY_TE_KEY, FakeEncoders, ToyModel,  # noqa: F401 (fixture)
                                         make_dataset, make_run, one_thread, train)

TE_LR = 5e-4


@pytest.fixture
def setup(tmp_path):
    return make_dataset(str(tmp_path / "data"), str(tmp_path / "cache")), ToyModel(), tmp_path


def _te_factors(run):
    return {k: v.clone() for k, v in run.network.state_tensors().items() if k.startswith("network.clip_l.")}


@pytest.mark.parametrize("arch_id,preset,counts,prefixes", [
    ("sd1", "attention_mlp", {"clip_l": 72}, {"clip_l": "lora_te_"}),
    ("sd1", "attention", {"clip_l": 48}, {"clip_l": "lora_te_"}),
    ("sdxl", "attention_mlp", {"clip_l": 72, "clip_g": 192}, {"clip_l": "lora_te1_", "clip_g": "lora_te2_"}),
    ("flux", "all_linear", {"clip_l": 72, "t5xxl": 168}, {"clip_l": "lora_te1_", "t5xxl": "lora_te3_"}),
])
def test_text_encoder_targets_are_kohyas_modules_of_every_encoder(arch_id, preset, counts, prefixes):
    layout = layout_for(arch_id)
    targets = select_text_encoder_targets(layout.shapes, arch_id, preset)
    by_te = {}
    for key in targets:
        by_te[key.split(".", 1)[0]] = by_te.get(key.split(".", 1)[0], 0) + 1
    assert by_te == counts and set(targets.values()) == {1.0}
    for key in targets:
        name = kohya_module_name(key.rsplit(".", 1)[0], layout)
        assert name.startswith(prefixes[key.split(".", 1)[0]]), (key, name)
    if arch_id == "sdxl":  # kohya: te1 = CLIP-L, te2 = CLIP-G
        assert kohya_module_name("clip_g.transformer.text_model.encoder.layers.31.mlp.fc2", layout) == \
            "lora_te2_text_model_encoder_layers_31_mlp_fc2"
    if arch_id == "flux":
        assert "t5xxl.transformer.encoder.block.0.layer.1.DenseReluDense.wi_0.weight" in targets
    with pytest.raises(TrainingError, match="no SD1.x text-encoder weight"):
        select_text_encoder_targets({"diffusion_model.x.weight": (4, 4)}, "sd1", preset)


def test_text_encoder_trains_at_its_own_rate_from_captions_encoded_each_step(setup):
    ds, model, _ = setup
    run = make_run(ds, model, learning_rate=3e-3, text_encoder_lr=TE_LR, lr_scheduler="cosine", total_steps=30)
    groups = run.optimizer.param_groups
    assert [g["text_encoder"] for g in groups] == [False, True]
    assert sum(p.numel() for p in groups[1]["params"]) == 4 * 768 * 2
    before_te = _te_factors(run)
    indices = list(range(4))
    model.network = run.network
    before = sum(validation_loss(model, ds, [i], seed=1, encode=model.encode_text) for i in indices)
    rates = []
    train(run, model, 30, on_step=lambda r, _: rates.append([g["lr"] for g in r.optimizer.param_groups]))
    after = sum(validation_loss(model, ds, [i], seed=1, encode=model.encode_text) for i in indices)
    assert after < 0.8 * before, (before, after)
    for step, (unet_lr, te_lr) in enumerate(rates):
        factor = lr_factor("cosine", step, 30, 0)
        assert unet_lr == 3e-3 * factor and te_lr == TE_LR * factor
    changed = _te_factors(run)
    assert all(not torch.equal(changed[k], before_te[k]) for k in changed)
    up = changed[f"network.{TOY_TE_KEY}.up"]
    assert up.abs().max() > 0  # the up factor started at zero


def test_a_text_encoder_run_reads_no_cached_caption_encoding(setup):
    ds, model, _ = setup
    for item in ds.items:
        for key in item.conds:
            os.remove(ds.cache.path(key))
    te_run = make_run(ds, model, text_encoder_lr=TE_LR)
    train(te_run, model, 2)
    assert te_run.step == 2
    with pytest.raises(DatasetError, match="cached encoding disappeared"):
        train(make_run(ds, model), model, 1)


def test_the_step_loss_is_the_loss_of_the_encoders_output(setup):
    ds, model, _ = setup
    run = make_run(ds, model, text_encoder_lr=TE_LR)
    model.network = run.network
    with torch.no_grad():
        run.network.state_tensors()[f"network.{TOY_TE_KEY}.up"].normal_(generator=torch.Generator().manual_seed(2))
    gen = lambda: torch.Generator().manual_seed(7)  # noqa: E731
    through_te = batch_loss(model, ds, run.settings, [0, 1], gen(), encode=model.encode_text)
    cached_like = batch_loss(model, ds, run.settings, [0, 1], gen(), encode=FakeEncoders().encode_text)
    cached = batch_loss(model, ds, run.settings, [0, 1], gen())
    assert torch.equal(cached_like, cached)  # the cache holds what the unpatched stand-in encoder gives
    assert not torch.equal(through_te, cached)


def test_saved_file_has_kohya_te_names_and_metadata(setup):
    ds, model, _ = setup
    run = make_run(ds, model, text_encoder_lr=TE_LR)
    train(run, model, 2)
    tensors = lora_tensors(run)
    te = "lora_te_text_model_encoder_layers_0_self_attn_q_proj"
    assert torch.equal(tensors[f"{te}.lora_up.weight"], run.network.state_tensors()[f"network.{TOY_TE_KEY}.up"])
    assert torch.equal(tensors[f"{te}.lora_down.weight"], run.network.state_tensors()[f"network.{TOY_TE_KEY}.down"])
    assert float(tensors[f"{te}.alpha"]) == 4.0
    meta = training_metadata(run, tensors, title="te")
    assert meta["ss_text_encoder_lr"] == str(TE_LR) and meta["ss_network_train_unet_only"] == "False"
    plain = make_run(ds, model)
    meta = training_metadata(plain, lora_tensors(plain), title="unet")
    assert meta["ss_text_encoder_lr"] == "None" and meta["ss_network_train_unet_only"] == "True"


def test_text_encoder_run_resumes_exactly(setup):
    ds, model, tmp = setup
    straight = make_run(ds, model, text_encoder_lr=TE_LR)
    train(straight, model, 4)
    half = make_run(ds, model, text_encoder_lr=TE_LR)
    train(half, model, 2)
    resumed = restore_run(make_run(ds, model, text_encoder_lr=TE_LR), write_state(str(tmp / "te.loralab-state"), half))
    train(resumed, model, 2)
    a, b = straight.network.state_tensors(), resumed.network.state_tensors()
    assert all(torch.equal(a[k], b[k]) for k in a) and straight.losses == resumed.losses
    with pytest.raises(Exception, match="text_encoder_lr"):
        restore_run(make_run(ds, model, text_encoder_lr=1e-5), write_state(str(tmp / "te2.loralab-state"), half))


def test_text_encoder_rate_and_targets_must_agree(setup):
    ds, model, _ = setup
    with pytest.raises(TrainingError, match="text-encoder weights are targets but text_encoder_lr is 0"):
        shapes = {k: tuple(v.shape) for k, v in model.weights.items()}
        TrainRun.create(TrainSettings(), ds, shapes, {TOY_TE_KEY: 1.0}, {"arch": "sd1", "kind": "eps"})
    with pytest.raises(TrainingError, match="no text-encoder weight is among the targets"):
        shapes = {k: tuple(v.shape) for k, v in model.weights.items()}
        TrainRun.create(TrainSettings(text_encoder_lr=1e-4), ds, shapes,
                        {"diffusion_model.out.2.weight": 1.0}, {"arch": "sd1", "kind": "eps"})
    with pytest.raises(TrainingError, match="text_encoder_lr and validation_every cannot be negative"):
        TrainSettings(text_encoder_lr=-1.0).check("eps")


def test_text_encoders_get_their_weight_in_their_own_dtype(setup):
    ds, model, _ = setup
    run = make_run(ds, model, text_encoder_lr=TE_LR)
    run.network.set_output_dtype(torch.bfloat16)
    modules = dict(run.network.items())
    assert modules[TOY_TE_KEY](torch.zeros(768, 768, dtype=torch.float16)).dtype == torch.float16
    assert modules[TOY_KEYS["to_k"]](torch.zeros(32, 768, dtype=torch.float16)).dtype == torch.bfloat16
