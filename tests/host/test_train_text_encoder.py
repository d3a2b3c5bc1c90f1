"""Text-encoder LoRA training, validation, EMA and samples in the real ComfyUI (issue 17): on the
SD1.5-layout micro model with the tiny real CLIP-L, a LoRA trained on the UNet and the text encoder
lowers the loss, saves kohya ``lora_te_`` modules that core's LoraLoader loads with no key dropped
and that change the CLIP's output as training did (SDXL's and Flux's encoders load under their kohya
numbers); the Train node trains the CLIP it is given, reports validation losses on the chart and
gives sampled images; the validation loss and the EMA are the same bit for bit after a save and
resume."""
from __future__ import annotations

import os

import pytest
import torch

from host import train_kit
from host.train_setup import (SMALL_DATASET, SMALL_RUN, VARIANTS, base_prompt,  # noqa: F401 (fixtures)
                              dataset_in_input, node_class, one_thread, settings, train_host)

#: loss after 40 steps must be below this fraction of the loss before
LOSS_MARGIN = 0.8
TE_LR = 1e-3


def _dataset(host, name, n, seed, arch="sd15"):
    """A dataset encoded by a tiny CLIP whose trained weights have their real shapes."""
    folder = os.path.join(host.folder_paths.get_input_directory(), name)
    train_kit.write_dataset(folder, n=n, seed=seed)
    node = node_class(host, "LoRALabDataset")
    kw = {**train_kit.schema_defaults(node), **SMALL_DATASET, "folder": name, "vae": train_kit.tiny_vae(arch),
          "clip": train_kit.tiny_clip(arch, real_widths=True)}
    return node.execute(**kw).args[0]


def test_text_encoder_lora_trains_and_core_loads_it_into_the_clip(train_host, tiny_models):
    import comfy.sd
    import comfy.utils
    host = train_host
    tr = host.module("nodes.train")
    th = host.module("nodes.host.training")
    run_mod = host.module("loralab.train.run")
    ckpt = host.module("loralab.train.checkpoint")
    validation = host.module("loralab.train.validation")
    ds = _dataset(host, "te_train", 4, seed=3)
    clip = ds.attachments["clip"]
    model = tiny_models.load_tiny_model(os.path.join(host.folder("diffusion_models"),
                                                     f"tiny_{VARIANTS['sd15']}.safetensors"))
    s = run_mod.TrainSettings(**{**SMALL_RUN, "targets": "all_linear_convs", "rank": 8, "alpha": 8.0,
                                 "learning_rate": 1e-2, "text_encoder_lr": TE_LR, "total_steps": 60,
                                 "batch_size": 2, "seed": 3, "name": "te"})
    run = tr.init_run(model, ds, s, "tiny_sd15_micro.safetensors", clip=clip)
    te_keys = [k for k in run.network.keys if k.startswith("clip_l.")]
    assert len(te_keys) == 3 * 6  # three layers of q, k, v, out_proj, fc1, fc2
    groups = run.optimizer.param_groups
    assert [g["text_encoder"] for g in groups] == [False, True]
    assert "18 of them in the text encoders at lr 0.001" in tr.run_info(run)

    def loss(r):
        with th.training_model(r) as tm:
            return validation.validation_loss(tm, ds, list(range(4)), seed=1, encode=tm.encode_text)

    def encoded(r, text):
        with torch.no_grad(), th.training_model(r) as tm:
            return tm.encode_text(text)

    before = loss(run)
    untrained = encoded(run, "sks, a photo")
    run = tr.advance(run, 60, None)
    after = loss(run)
    print(f"loss {before:.4f} -> {after:.4f} ({after / before:.3f})")
    assert after < LOSS_MARGIN * before
    trained = encoded(run, "sks, a photo")
    assert not torch.allclose(trained["cross_attn"], untrained["cross_attn"], atol=1e-4)

    path = ckpt.save_lora_file(run, os.path.join(host.folder("loras"), "te_trained.safetensors"), title="te")
    sd, meta = comfy.utils.load_torch_file(path, return_metadata=True)
    assert meta["ss_text_encoder_lr"] == str(TE_LR) and meta["ss_network_train_unet_only"] == "False"
    te_modules = {k.rsplit(".", 1)[0] for k in sd if k.startswith("lora_te_") and k.endswith(".alpha")}
    assert len(te_modules) == 18 and "lora_te_text_model_encoder_layers_2_mlp_fc2" in te_modules
    with train_kit.LoraKeyLog() as log:
        new_model, new_clip = comfy.sd.load_lora_for_models(model, clip, sd, 1.0, 1.0)
    assert log.messages == []
    assert len([k for k in new_clip.patcher.patches if k.startswith("clip_l.")]) == 18
    with torch.no_grad():
        from_core = th.text_conds(new_clip, "sks, a photo")
        plain = th.text_conds(clip, "sks, a photo")
    assert not torch.allclose(from_core["cross_attn"], plain["cross_attn"], atol=1e-4)
    assert torch.allclose(from_core["cross_attn"].float().cpu(), trained["cross_attn"].float().cpu(), atol=1e-4)


@pytest.mark.parametrize("arch,prefixes", [("sdxl", {"lora_te1_": 12, "lora_te2_": 12}),
                                            ("flux", {"lora_te1_": 12, "lora_te3_": 4})])
def test_sdxl_and_flux_text_encoders_load_in_core_with_their_kohya_numbers(train_host, tiny_models, arch, prefixes):
    """SDXL: te1 = CLIP-L, te2 = CLIP-G; Flux: te1 = CLIP-L, te3 = T5-XXL (attention, one layer)."""
    import comfy.sd
    import comfy.utils
    host = train_host
    tr = host.module("nodes.train")
    run_mod = host.module("loralab.train.run")
    ckpt = host.module("loralab.train.checkpoint")
    ds = _dataset(host, f"te_{arch}", 2, seed=4, arch=arch)
    clip = ds.attachments["clip"]
    model = tiny_models.load_tiny_model(os.path.join(host.folder("diffusion_models"),
                                                     f"tiny_{VARIANTS[arch]}.safetensors"))
    s = run_mod.TrainSettings(**{**SMALL_RUN, "targets": "attention", "text_encoder_lr": TE_LR, "total_steps": 2,
                                 "min_snr_gamma": 0.0})
    run = tr.advance(tr.init_run(model, ds, s, None, clip=clip), 2, None)
    moved = {k.split(".", 1)[0] for k, m in run.network.items() if m.up.abs().sum() > 0}
    assert moved == {"diffusion_model", *{"sdxl": ("clip_l", "clip_g"), "flux": ("clip_l", "t5xxl")}[arch]}
    path = ckpt.save_lora_file(run, os.path.join(host.folder("loras"), f"te_{arch}.safetensors"), title="te")
    sd = comfy.utils.load_torch_file(path)
    modules = [k.rsplit(".", 1)[0] for k in sd if k.endswith(".alpha") and k.startswith("lora_te")]
    assert {p: sum(m.startswith(p) for m in modules) for p in prefixes} == prefixes
    assert len(modules) == sum(prefixes.values())
    with train_kit.LoraKeyLog() as log:
        _, new_clip = comfy.sd.load_lora_for_models(model, clip, sd, 1.0, 1.0)
    assert log.messages == []
    assert len(new_clip.patcher.patches) == len(modules)


def test_train_node_trains_the_clip_validates_and_samples(train_host, monkeypatch):
    import comfy.utils
    host = train_host
    folder = dataset_in_input(host, "ds_te_node", n=4)
    prompt = base_prompt(host, "sd15", folder)
    prompt["4"] = {"class_type": "LoRALabTrain",
                   "inputs": {**settings(host, "LoRALabTrain", steps=3, name="te_node", targets="attention",
                                         text_encoder_lr=TE_LR, validation_split=0.25, validation_every=1,
                                         ema_decay=0.9, sample_prompts="sks, a photo\nsks, a drawing",
                                         sample_every=2, sample_steps=2, sample_cfg=1.0),
                              "model": ["1", 0], "dataset": ["3", 0], "clip": ["2", 1]}}
    prompt["5"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": ["4", 4], "text": "sks"}}
    prompt["6"] = {"class_type": "SaveImage", "inputs": {"images": ["4", 5], "filename_prefix": "te_samples"}}
    events = []
    original = host.server.send_sync

    def spy(event, data, sid=None):
        if event == "loralab.train.progress":
            events.append(dict(data))
        return original(event, data, sid)
    monkeypatch.setattr(host.server, "send_sync", spy)
    ok, history, messages = host.run_prompt(prompt)
    assert ok, messages
    steps = [e for e in events if "saved" not in e]
    assert [e["step"] for e in steps] == [1, 2, 3]
    assert all(e["val_loss"] > 0 for e in steps)
    assert len(history["outputs"]["6"]["images"]) == 4  # two prompts at step 2 and at the end (step 3)
    assert len(history["outputs"]["4"]["images"]) == 4
    sd, meta = comfy.utils.load_torch_file(os.path.join(host.folder("loras"), "te_node.safetensors"),
                                           return_metadata=True)
    assert meta["ss_validation_split"] == "0.25" and meta["ss_num_train_images"] == "3"
    assert sum(k.startswith("lora_te_") and k.endswith(".alpha") for k in sd) == 12


def test_validation_loss_and_ema_are_identical_after_save_and_resume(train_host, tiny_models):
    host = train_host
    tr = host.module("nodes.train")
    th = host.module("nodes.host.training")
    run_mod = host.module("loralab.train.run")
    ckpt = host.module("loralab.train.checkpoint")
    ds = _dataset(host, "val_resume", 4, seed=6)
    model = tiny_models.load_tiny_model(os.path.join(host.folder("diffusion_models"),
                                                     f"tiny_{VARIANTS['sd15']}.safetensors"))
    s = run_mod.TrainSettings(**{**SMALL_RUN, "total_steps": 4, "validation_split": 0.5, "validation_every": 1,
                                 "ema_decay": 0.9, "name": "val_resume"})
    straight = tr.advance(tr.init_run(model, ds, s, None), 4, None)
    half = tr.advance(tr.init_run(model, ds, s, None), 2, None)
    _, state = ckpt.save_checkpoint(half, host.folder("loras"), periodic=False)
    resumed = ckpt.restore_run(tr.init_run(model, ds, s, None), state)
    assert resumed.val_losses == half.val_losses and len(half.val_losses) == 2

    def validate(r):
        with th.training_model(r) as tm:
            return r.validate(tm)
    assert validate(resumed) == validate(half) == half.val_losses[-1][1]
    resumed = tr.advance(resumed, 2, None)
    assert resumed.val_losses == straight.val_losses
    assert all(torch.equal(straight.ema[k], resumed.ema[k]) for k in straight.ema)
    a, b = straight.network.state_tensors(), resumed.network.state_tensors()
    assert all(torch.equal(a[k], b[k]) for k in a)
