"""Training memory modes in the real ComfyUI (issue 17): ComfyUI's SDXL and Flux models described
block by block for the estimator, block swap and offloaded checkpointing training bit for bit
what plain training does, fp8-stored base weights training exactly as weights rounded through fp8
do, the model's own weights put back after, a model in fp8 with swapped blocks placed on the device
only in part (as the estimate counts it), a run refused when its estimate does not fit, and the
estimate within 15 % of the peak memory two real training steps take on the CPU (measured in a
child process, ``train_rss.py``: the resident memory's high-water mark over a baseline after a
warm-up step, see ``loralab_testkit.rss``)."""
from __future__ import annotations

import json
import os

import pytest
import torch

from host import train_kit
from loralab_testkit.rss import run_child
from host.train_setup import SMALL_DATASET, VARIANTS, dataset_in_input, node_class, one_thread, train_host  # noqa: F401


HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def _model(host, tiny_models, arch):
    path = os.path.join(host.folder("diffusion_models"), f"tiny_{VARIANTS[arch]}.safetensors")
    return tiny_models.load_tiny_model(path)


def _dataset(host, arch):
    folder = dataset_in_input(host, f"ds_mem_{arch}", n=2)
    node = node_class(host, "LoRALabDataset")
    return node.execute(**{**train_kit.schema_defaults(node), **SMALL_DATASET, "folder": folder,
                           "vae": train_kit.tiny_vae(arch), "clip": train_kit.tiny_clip(arch)}).args[0]


def _train(host, model, ds, steps=2, **kw):
    tr = host.module("nodes.train")
    settings = host.module("loralab.train.run").TrainSettings(
        rank=4, alpha=4.0, targets="all_linear", total_steps=steps, learning_rate=1e-3, batch_size=2, seed=5,
        **{"fits_in": "manual", **kw})
    run = tr.init_run(model, ds, settings, None)
    return tr.advance(run, steps, None)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.model.diffusion_model.state_dict().items()}


@pytest.mark.parametrize("arch", ["sdxl", "flux"])
def test_blocks_and_estimate_of_comfy_models(train_host, tiny_models, arch):
    host = train_host
    mem = host.module("nodes.host.memory")
    model = _model(host, tiny_models, arch)
    dm = model.model.diffusion_model
    blocks = mem.model_blocks(dm)
    if arch == "flux":
        assert [n for n, _ in blocks] == ([f"double_blocks.{i}" for i in range(len(dm.double_blocks))]
                                          + [f"single_blocks.{i}" for i in range(len(dm.single_blocks))])
    else:
        kinds = [type(b).__name__ for _, b in blocks]
        assert blocks[0][0] == "input_blocks.0.0" and "middle_block.0" in [n for n, _ in blocks]
        assert kinds.count("Downsample") == kinds.count("Upsample") > 0
        assert {"ResBlock", "SpatialTransformer"} <= set(kinds)
    shapes = host.module("nodes.host.training").diffusion_shapes(model)
    targets = {k: 1.0 for k, s in shapes.items() if len(s) == 2}
    cost = mem.model_cost(model, targets, (8, 8), 77)
    in_blocks = {f"diffusion_model.{n}." for n, _ in blocks}
    block_weights = sum(p.numel() for k, p in dm.named_parameters() if p.dim() >= 2
                        and any(f"diffusion_model.{k}".startswith(b) for b in in_blocks))
    assert sum(b.weight_numel for b in cost.blocks) == block_weights
    total = sum(p.numel() * p.element_size() for p in dm.parameters())
    assert cost.other_bytes + sum(b.weight_bytes + b.other_bytes for b in cost.blocks) == total
    # patched copies are kept for the trained weights whose input needs a gradient: not the text's keys and values
    kept = [k for k in targets if any(k.startswith(b) for b in in_blocks) and not k.endswith(mem.TEXT_INPUT_WEIGHTS)]
    assert sum(b.target_numel for b in cost.blocks) == sum(shapes[k][0] * shapes[k][1] for k in kept)
    assert (len(kept) < len([k for k in targets if any(k.startswith(b) for b in in_blocks)])) == (arch == "sdxl")
    assert all(b.activations > 0 and b.boundary > 0 and b.scores == 0 for b in cost.blocks)
    scored = mem.model_cost(model, targets, (8, 8), 77, keeps_scores=True)
    if arch == "flux":  # joint attention over image patches and text: heads × tokens²
        assert all(b.scores == dm.num_heads * (16 + 77) ** 2 for b in scored.blocks)
    else:
        assert sum(b.scores > 0 for b in scored.blocks) == sum(type(b).__name__ == "SpatialTransformer" for _, b in blocks)


@pytest.mark.parametrize("arch", ["sdxl", "flux"])
def test_block_swap_and_offloaded_checkpointing_train_bit_for_bit(train_host, tiny_models, arch):
    host = train_host
    model = _model(host, tiny_models, arch)
    ds = _dataset(host, arch)
    before = _weights(model)
    n = len(host.module("nodes.host.memory").model_blocks(model.model.diffusion_model))
    # block swap against plain training; swap and offloaded activations against checkpointing (which
    # sums some gradients in another order than plain training: equal to rounding, not bitwise)
    for base, more in (({}, {"swap_blocks": n - 1}),
                       ({"gradient_checkpointing": True}, {"swap_blocks": n // 2, "offload_activations": True})):
        plain = _train(host, model, ds, **base)
        swapped = _train(host, model, ds, **base, **more)
        assert swapped.attachments["memory_mode"].swap_blocks == more["swap_blocks"] > 0
        assert plain.losses == swapped.losses and all(v > 0 for v in plain.losses)
        assert all(torch.equal(a, b) for a, b in zip(plain.params(), swapped.params()))
    after = _weights(model)
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_fp8_base_trains_as_weights_rounded_through_fp8(train_host, tiny_models):
    host = train_host
    bw = host.module("loralab.train.base_weights")
    model = _model(host, tiny_models, "sdxl")
    ds = _dataset(host, "sdxl")
    before = _weights(model)
    stored = _train(host, model, ds, base_weights="fp8")
    assert stored.attachments["memory_mode"].base_dtype == "fp8"
    ckpt = host.module("loralab.train.checkpoint")
    meta = host.module("loralab.train.metadata").training_metadata(stored, ckpt.lora_tensors(stored), title="t")
    assert (meta["ss_fp8_base"], meta["ss_gradient_checkpointing"]) == ("True", "False")
    after = _weights(model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # the originals came back

    rounded_model = _model(host, tiny_models, "sdxl")
    with torch.no_grad():
        for m in rounded_model.model.diffusion_model.modules():
            if hasattr(m, "comfy_cast_weights"):
                for p in m._parameters.values():
                    if p is not None and bw.storable(p):
                        p.copy_(bw.fp8_round(p))
    rounded = _train(host, rounded_model, ds)
    plain = _train(host, _model(host, tiny_models, "sdxl"), ds)
    assert stored.losses == rounded.losses  # fp8 storage, upcast at use == rounding the weights once
    assert all(torch.equal(a, b) for a, b in zip(stored.params(), rounded.params()))
    assert stored.losses != plain.losses
    assert stored.losses[0] == pytest.approx(plain.losses[0], rel=2 ** -4)


def test_fp8_with_swapped_blocks_places_only_the_resident_part_as_the_estimate_counts_it(train_host, tiny_models):
    """ComfyUI loads the model on its offload device and the training device gets what lies outside
    the swapped blocks, ≥2-D weights in fp8; the estimate's base weights are that plus the two
    swapped blocks in flight; ComfyUI holds no entry of the training clone after. (On the CPU host both devices are the CPU: what is placed is checked,
    not where it goes; bench/gpu_train.py measures the VRAM.)"""
    host = train_host
    mem = host.module("nodes.host.memory")
    bw = host.module("loralab.train.base_weights")
    memory = host.module("loralab.train.memory")
    tr = host.module("nodes.train")
    model = _model(host, tiny_models, "flux")
    ds = _dataset(host, "flux")
    base = model.model
    blocks = mem.model_blocks(base.diffusion_model)
    count = len(blocks) // 2
    settings = host.module("loralab.train.run").TrainSettings(
        rank=4, alpha=4.0, targets="all_linear", total_steps=2, batch_size=2, fits_in="manual", base_weights="fp8",
        swap_blocks=count)
    run = tr.init_run(model, ds, settings, None)

    def stored(module, t, is_param):
        fp8 = is_param and hasattr(module, "comfy_cast_weights") and bw.storable(t)
        return t.numel() * (1 if fp8 else t.element_size())

    swapped_ids = {id(m) for _, b in blocks[:count] for m in b.modules()}
    resident = {"params": 0, "buffers": 0}
    for m in base.modules():
        if id(m) not in swapped_ids:
            resident["params"] += sum(stored(m, p, True) for p in m._parameters.values() if p is not None)
            resident["buffers"] += sum(b.numel() * b.element_size() for b in m._buffers.values() if b is not None)
    in_flight = sorted((sum(stored(m, p, True) for m in b.modules() for p in m._parameters.values() if p is not None)
                        for _, b in blocks[:count]), reverse=True)[:memory.SWAP_IN_FLIGHT]
    mode = run.attachments["memory_mode"]
    assert (mode.base_dtype, mode.swap_blocks) == ("fp8", count)
    with host.module("nodes.host.training").training_model(run) as tm:
        assert tm.memory["swap"].count == count and tm.memory["fp8"] > 0
        assert tm.memory["resident"] == resident["params"] + resident["buffers"]
        assert all(p.numel() == 0 for _, b in blocks[:count] for p in b.parameters())
        assert all(p.dtype == bw.FP8 for m in base.modules() if id(m) not in swapped_ids and hasattr(m, "comfy_cast_weights")
                   for p in m._parameters.values() if p is not None and p.dim() >= 2)
        assert tm.device == model.load_device
    # unloaded after: no entry left to pass to the MODEL with the offload device as its device
    import comfy.model_management
    assert not any(loaded.model is tm.patcher for loaded in comfy.model_management.current_loaded_models)
    assert tm.patcher.load_device == model.load_device
    # the estimate for a GPU (offload device apart from the training device) counts exactly that
    cost = mem.model_cost(model, run.network.lr_mults, (8, 8), 77)
    est = memory.estimate(cost, mode, batch=2, trained_params=1, optimizer="adamw", compute_itemsize=2)
    assert dict(est.parts)["base weights"] == resident["params"] + sum(in_flight)


def test_fits_in_picks_a_mode_and_refuses_what_does_not_fit(train_host, tiny_models, monkeypatch):
    host = train_host
    mem = host.module("nodes.host.memory")
    errors = host.module("loralab.errors")
    model = _model(host, tiny_models, "flux")
    ds = _dataset(host, "flux")
    tr = host.module("nodes.train")
    run_mod = host.module("loralab.train.run")
    settings = run_mod.TrainSettings(rank=4, alpha=4.0, targets="all_linear", total_steps=2)
    run = tr.init_run(model, ds, settings, None)
    assert run.attachments["memory_mode"] == host.module("loralab.train.memory").MemoryMode()  # a tiny model fits
    assert "memory: base weights as loaded, estimated peak" in tr.run_info(run)
    forced = tr.init_run(model, ds, run_mod.TrainSettings(**{**settings.to_json(), "swap_blocks": 2,
                                                            "gradient_checkpointing": True}), None)
    assert (forced.attachments["memory_mode"].swap_blocks, forced.attachments["memory_mode"].checkpointing) == (2, True)
    est = run.attachments["memory_estimate"].total
    monkeypatch.setattr(mem, "device_memory", lambda device: est // 2)
    with pytest.raises(errors.TrainingError) as e:
        tr.init_run(model, ds, run_mod.TrainSettings(**{**settings.to_json(), "fits_in": "manual"}), None)
    assert "would need about" in str(e.value) and "swapped blocks" in e.value.hint


@pytest.mark.parametrize("arch", ["sdxl", "flux"])
def test_estimate_is_within_15_percent_of_measured_peak_rss(train_host, arch):
    # 256 px, batch 2: latents of 32×32, tens of MB of activations and (ComfyUI's CPU attention is
    # its math path) attention scores, against a few MB of weights
    modes = [{}, {"gradient_checkpointing": True}]
    results = run_child([os.path.join(HERE, "train_rss.py"), train_host.base, arch, "256", "2",
                         *map(json.dumps, modes)], [REPO], timeout=300)
    assert len(results) == len(modes)
    for result in results:
        assert result["measured"] > 30 * 2 ** 20 and result["parts"]["attention scores"] > 0, result
        assert 0.85 <= result["estimate"] / result["measured"] <= 1.15, result
    plain, checkpointed = results
    assert checkpointed["measured"] < 0.7 * plain["measured"]  # what checkpointing saves shows in the measure


def test_a_resumed_run_keeps_computing_what_it_trained_in_where_the_device_allows(train_host, tiny_models,
                                                                                    monkeypatch, tmp_path):
    """fits_in picks the mode on the device a run starts or resumes on. A run checkpointed on a
    small device and resumed on a larger one stays checkpointed, bit for bit the uninterrupted
    run; one trained plain and resumed where plain no longer fits is checkpointed from there and
    its info says so."""
    host = train_host
    mem = host.module("nodes.host.memory")
    tr = host.module("nodes.train")
    ckpt = host.module("loralab.train.checkpoint")
    resume_run = host.module("nodes.host.training").resume_run
    MemoryMode = host.module("loralab.train.memory").MemoryMode
    model = _model(host, tiny_models, "sdxl")
    ds = _dataset(host, "sdxl")
    s = host.module("loralab.train.run").TrainSettings(rank=4, alpha=4.0, targets="all_linear", total_steps=4,
                                                        learning_rate=1e-3, batch_size=2, seed=5)
    plain = tr.init_run(model, ds, s, None)
    checkpointed = tr.init_run(model, ds, host.module("loralab.train.run").TrainSettings(
        **{**s.to_json(), "fits_in": "manual", "gradient_checkpointing": True}), None)
    assert plain.attachments["memory_mode"] == MemoryMode()
    small = (plain.attachments["memory_estimate"].total + checkpointed.attachments["memory_estimate"].total) // 2
    real = mem.device_memory

    monkeypatch.setattr(mem, "device_memory", lambda device: small)
    whole = tr.advance(tr.init_run(model, ds, s, None), 4, None)
    assert whole.attachments["memory_mode"] == MemoryMode(checkpointing=True)
    state = ckpt.write_state(str(tmp_path / "small.loralab-state"), tr.advance(tr.init_run(model, ds, s, None), 2, None))
    monkeypatch.setattr(mem, "device_memory", real)
    resumed = resume_run(tr.init_run(model, ds, s, None), state)
    assert resumed.attachments["memory_mode"] == MemoryMode(checkpointing=True)
    assert "memory_note" not in resumed.attachments
    done = tr.advance(resumed, 2, None)
    assert done.losses == whole.losses
    assert all(torch.equal(a, b) for a, b in zip(done.params(), whole.params()))
    unkept = tr.advance(ckpt.restore_run(tr.init_run(model, ds, s, None), state), 2, None)  # plain from step 2
    assert not all(torch.equal(a, b) for a, b in zip(unkept.params(), whole.params()))  # what keeping it saves

    state = ckpt.write_state(str(tmp_path / "large.loralab-state"), tr.advance(tr.init_run(model, ds, s, None), 2, None))
    monkeypatch.setattr(mem, "device_memory", lambda device: small)
    moved = resume_run(tr.init_run(model, ds, s, None), state)
    assert moved.attachments["memory_mode"] == MemoryMode(checkpointing=True)
    assert "trained so far with base weights as loaded, continued with base weights as loaded, gradient " \
           "checkpointing: the first does not fit this device" in tr.run_info(moved)
