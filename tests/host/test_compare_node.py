"""Compare Grid in the real ComfyUI on a tiny SD1.5-layout model: every cell equals, bit for bit,
what LoRA Loader (Block Weights) → CLIP Text Encode → KSampler → VAE Decode make for its settings
in their own prompt; a changed axis value or LoRA file renders only the cells it changes; Cancel
stops between cells and keeps what was rendered; the JSON describes each cell and the labels are
drawn; a training run's checkpoints make an axis, by name or from the connected run."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch

from host import train_kit
from host.train_setup import VARIANTS, one_thread, train_host  # noqa: F401 (fixtures)
from loralab_testkit.fitted import fitted_lora

NODE = "LoRALabCompare"
SUBDIR = "compare"
MODEL_FILE = f"tiny_{VARIANTS['sd15']}.safetensors"
#: what the capture node kept, by key
CAPTURED: dict = {}


class LoRALabTestCapture:
    """Test-only output node: keeps the IMAGE or STRING it gets under ``key``."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"key": ("STRING", {"default": ""})},
                "optional": {"image": ("IMAGE",), "text": ("STRING", {"forceInput": True})}}

    RETURN_TYPES = ()
    FUNCTION = "keep"
    OUTPUT_NODE = True
    CATEGORY = "testing/loralab"

    def keep(self, key, image=None, text=None):
        CAPTURED[key] = image if image is not None else text
        return {}


@pytest.fixture(scope="module", autouse=True)
def _setup(train_host, tiny_models):
    """The training host (tiny encoders) with the capture node, and two LoRAs fitted to the tiny model."""
    train_host.nodes.NODE_CLASS_MAPPINGS["LoRALabTestCapture"] = LoRALabTestCapture
    folder = os.path.join(train_host.folder("loras"), SUBDIR)
    os.makedirs(folder, exist_ok=True)
    for i, name in enumerate(("a", "b")):
        _write_lora(train_host, tiny_models, f"{SUBDIR}/{name}.safetensors", seed=i)


def _layout(host, tiny_models):
    model = tiny_models.load_tiny_model(os.path.join(host.folder("diffusion_models"), MODEL_FILE))
    return host.module("nodes.host.models").model_layout(model)


def _write_lora(host, tiny_models, name: str, seed: int) -> str:
    """A kohya LoRA fitted to the tiny model (written atomically: a reader never sees half a file)."""
    import comfy.utils
    path = os.path.join(host.folder("loras"), name)
    comfy.utils.save_torch_file(fitted_lora("kohya_sd15_lora", _layout(host, tiny_models), rank=4, seed=seed, std=0.2),
                                path + ".tmp")
    os.replace(path + ".tmp", path)
    return name


def _widgets(host, **values) -> dict:
    return {**train_kit.schema_defaults(host.nodes.NODE_CLASS_MAPPINGS[NODE]), "steps": 2, "cfg": 5.0,
            "sampler_name": "euler", "scheduler": "normal", "seed": 7, "prompt": "a photo", "negative_prompt": "blurry",
            **values}


def _sources(prompt: dict | None = None) -> dict:
    """Model, tiny encoders (VAE 0, CLIP 1), a 64×64 latent and random conditioning (ids 1, 2, 3, 4)."""
    return {**(prompt or {}),
            "1": {"class_type": "TinyDiffusionModelLoader", "inputs": {"unet_name": MODEL_FILE}},
            "2": {"class_type": "LoRALabTestTinyEncoders", "inputs": {"arch": "sd15", "seed": 0}},
            "3": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
            "4": {"class_type": "TinyRandomConditioning", "inputs": {"arch": "sd15", "seed": 1, "batch": 1, "scale": 1.0}},
            "5": {"class_type": "TinyRandomConditioning", "inputs": {"arch": "sd15", "seed": 2, "batch": 1, "scale": 1.0}}}


def _grid(host, typed: bool = True, **values) -> tuple[torch.Tensor, torch.Tensor, dict, dict]:
    """Run the grid node in a prompt: (grid, cells, JSON, history)."""
    inputs = {**_widgets(host, **values), "model": ["1", 0], "vae": ["2", 0], "latent_image": ["3", 0]}
    inputs.update({"clip": ["2", 1]} if typed else {"positive": ["4", 0], "negative": ["5", 0]})
    prompt = _sources({
        "10": {"class_type": NODE, "inputs": inputs},
        "11": {"class_type": "LoRALabTestCapture", "inputs": {"key": "grid", "image": ["10", 0]}},
        "12": {"class_type": "LoRALabTestCapture", "inputs": {"key": "cells", "image": ["10", 1]}},
        "13": {"class_type": "LoRALabTestCapture", "inputs": {"key": "json", "text": ["10", 2]}},
    })
    CAPTURED.clear()
    ok, history, messages = host.run_prompt(prompt)
    assert ok, (history, messages)
    return CAPTURED["grid"], CAPTURED["cells"], json.loads(CAPTURED["json"]), history


def _alone(host, settings: dict, typed: bool, negative_prompt: str = "blurry", steps: int = 2, cfg: float = 5.0):
    """One cell made by the core nodes in their own prompt (no LoRA Lab node but the loader)."""
    model, clip = ["1", 0], ["2", 1]
    prompt = _sources()
    if settings["lora_name"] != "None":
        prompt["20"] = {"class_type": "LoRALabLoader", "inputs": {
            "model": model, "lora_name": settings["lora_name"], "strength_model": settings["strength_model"],
            "strength_clip": settings["strength_clip"], "block_weights": settings["block_weights"],
            "a": 1.0, "b": 1.0, "seed": 0, **({"clip": clip} if typed else {})}}
        model, clip = ["20", 0], ["20", 1]
    if typed:
        prompt["21"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": settings["prompt"]}}
        prompt["22"] = {"class_type": "CLIPTextEncode", "inputs": {"clip": clip, "text": negative_prompt}}
        positive, negative = ["21", 0], ["22", 0]
    else:
        positive, negative = ["4", 0], ["5", 0]
    prompt["23"] = {"class_type": "KSampler", "inputs": {
        "model": model, "seed": settings["seed"], "steps": steps, "cfg": cfg, "sampler_name": "euler",
        "scheduler": "normal", "positive": positive, "negative": negative, "latent_image": ["3", 0], "denoise": 1.0}}
    prompt["24"] = {"class_type": "VAEDecode", "inputs": {"samples": ["23", 0], "vae": ["2", 0]}}
    prompt["25"] = {"class_type": "LoRALabTestCapture", "inputs": {"key": "alone", "image": ["24", 0]}}
    ok, history, messages = host.run_prompt(prompt)
    assert ok, (history, messages)
    return CAPTURED["alone"]


@pytest.fixture
def sampler_calls(monkeypatch):
    """How many times ComfyUI's sampler ran (every cell rendered samples once)."""
    import comfy.sample
    calls = []
    real = comfy.sample.sample

    def counted(*args, **kwargs):
        calls.append(kwargs.get("seed"))
        return real(*args, **kwargs)
    monkeypatch.setattr(comfy.sample, "sample", counted)
    return calls


def _clear_cache(host):
    host.module("nodes.compare").CELLS.clear()


A, B = f"{SUBDIR}/a.safetensors", f"{SUBDIR}/b.safetensors"


def _assert_cells_are_in_the_grid(grid, cells, data):
    assert grid.shape == (1, data["size"][1], data["size"][0], 3)
    for i, entry in enumerate(data["cells"]):
        x, y, w, h = entry["box"]
        assert torch.equal(grid[0, y:y + h, x:x + w], cells[i]), f"cell {i} is not copied into the grid unchanged"


def test_every_cell_equals_the_core_nodes_run_alone_bit_for_bit(host, sampler_calls):
    _clear_cache(host)
    grid, cells, data, history = _grid(host, x_axis="strength", x_values="0.5, 1", y_axis="lora",
                                       y_values=f"{A}\nNone\n{B}", lora_name=A, block_weights="OUT=0.5")
    assert cells.shape == (6, 64, 64, 3) and len(sampler_calls) == 6
    assert data["x"] == {"kind": "strength", "values": [0.5, 1.0], "labels": ["strength 0.5", "strength 1"]}
    assert data["y"]["labels"] == ["a", "no LoRA", "b"] and data["prompts"] == "typed"
    assert (data["rendered"], data["from_cache"]) == (6, 0)
    assert data["sampler"] == {"steps": 2, "cfg": 5.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}
    settings = [c["settings"] for c in data["cells"]]
    assert [(s["lora_name"], s["strength_model"], s["strength_clip"]) for s in settings] == [
        (A, 0.5, 0.5), (A, 1.0, 1.0), ("None", 0.5, 0.5), ("None", 1.0, 1.0), (B, 0.5, 0.5), (B, 1.0, 1.0)]
    assert all(s["block_weights"] == "OUT=0.5" and s["seed"] == 7 and s["prompt"] == "a photo" for s in settings)
    assert [(c["row"], c["col"], c["x"], c["y"]) for c in data["cells"]][:2] == [(0, 0, "strength 0.5", "a"),
                                                                               (0, 1, "strength 1", "a")]
    for i, s in enumerate(settings):
        assert torch.equal(_alone(host, s, typed=True)[0], cells[i]), f"cell {i} ({s}) differs from its own prompt"
    _assert_cells_are_in_the_grid(grid, cells, data)
    assert not torch.equal(cells[0], cells[1]) and not torch.equal(cells[0], cells[4])  # strength and file matter
    assert len(history["outputs"]["10"]["images"]) == 1  # the grid shows on the node
    # the LoRA's text-encoder part is applied to the CLIP that encodes each cell's prompts
    _, cells, data, _ = _grid(host, x_axis="strength_clip", x_values="0, 1", lora_name=A)
    assert not torch.equal(cells[0], cells[1])
    for i, entry in enumerate(data["cells"]):
        assert torch.equal(_alone(host, entry["settings"], typed=True)[0], cells[i]), entry


def test_connected_conditioning_seed_and_blocks_axes_equal_their_own_prompts(host, sampler_calls):
    grid, cells, data, _ = _grid(host, typed=False, x_axis="seed", x_values="1, 2", y_axis="blocks",
                                 y_values="ALL | OUT=0, default=1 | IN=0.5", lora_name=B, strength_model=0.8)
    assert data["prompts"] == "connected" and data["y"]["labels"] == ["ALL", "OUT=0, default=1", "IN=0.5"]
    assert sorted(set(sampler_calls)) == [1, 2] and cells.shape[0] == 6
    for i, entry in enumerate(data["cells"]):
        assert "prompt" not in entry["settings"]
        assert torch.equal(_alone(host, entry["settings"], typed=False)[0], cells[i]), entry
    _assert_cells_are_in_the_grid(grid, cells, data)


def test_a_changed_axis_value_or_file_renders_only_the_cells_it_changes(host, tiny_models, sampler_calls):
    _clear_cache(host)
    _write_lora(host, tiny_models, f"{SUBDIR}/changing.safetensors", seed=5)
    files = f"{A}, {SUBDIR}/changing.safetensors"
    _, first, data, _ = _grid(host, x_axis="strength", x_values="0.5, 1", y_axis="lora", y_values=files)
    assert len(sampler_calls) == 4 and not any(c["cached"] for c in data["cells"])
    sampler_calls.clear()
    _, second, data, _ = _grid(host, x_axis="strength", x_values="0.5, 0.75", y_axis="lora", y_values=files)
    assert len(sampler_calls) == 2 and (data["rendered"], data["from_cache"]) == (2, 2)
    assert [c["cached"] for c in data["cells"]] == [True, False, True, False]
    assert torch.equal(second[0], first[0]) and torch.equal(second[2], first[2])
    sampler_calls.clear()
    _write_lora(host, tiny_models, f"{SUBDIR}/changing.safetensors", seed=6)  # retrained under the same name
    _, third, data, _ = _grid(host, x_axis="strength", x_values="0.5, 0.75", y_axis="lora", y_values=files)
    assert len(sampler_calls) == 2 and [c["cached"] for c in data["cells"]] == [True, True, False, False]
    assert not torch.equal(third[2], second[2])
    sampler_calls.clear()
    _, _, data, _ = _grid(host, x_axis="strength", x_values="0.5, 0.75", y_axis="lora", y_values=files, steps=3)
    assert len(sampler_calls) == 4 and data["from_cache"] == 0  # a sampler setting changes every cell


@pytest.fixture
def interrupt():
    import comfy.model_management
    yield comfy.model_management
    comfy.model_management.interrupt_current_processing(False)


def _objects(host, tiny_models):
    model = tiny_models.load_tiny_model(os.path.join(host.folder("diffusion_models"), MODEL_FILE))
    return model, train_kit.tiny_clip("sd15"), train_kit.tiny_vae("sd15"), {"samples": torch.zeros(1, 4, 8, 8)}


def _execute(node, **inputs):
    """The node's execute as ComfyUI's executor calls it (in inference mode)."""
    with torch.inference_mode():
        return node.execute(**inputs)


def test_cancel_stops_between_cells_and_keeps_the_cells_rendered(host, tiny_models, monkeypatch, interrupt,
                                                                 sampler_calls):
    import comfy.utils
    _clear_cache(host)
    node = host.nodes.NODE_CLASS_MAPPINGS[NODE]
    model, clip, vae, latent = _objects(host, tiny_models)
    inputs = _widgets(host, x_axis="seed", x_values="1, 2, 3, 4", lora_name=A)
    sampling = host.module("nodes.host.sampling")
    real_decode, cancel, bars = sampling.decode, [True], []

    def decode_then_cancel(vae, samples):
        out = real_decode(vae, samples)
        if cancel and cancel.pop():
            interrupt.interrupt_current_processing(True)  # the user presses Cancel as the first cell is done
        return out
    real_update = comfy.utils.ProgressBar.update_absolute

    def update(self, value, total=None, preview=None):
        if total == 4:
            bars.append(value)
        return real_update(self, value, total, preview)
    monkeypatch.setattr(sampling, "decode", decode_then_cancel)
    monkeypatch.setattr(comfy.utils.ProgressBar, "update_absolute", update)
    with pytest.raises(interrupt.InterruptProcessingException):
        _execute(node, model=model, clip=clip, vae=vae, latent_image=latent, **inputs)
    assert sampler_calls == [1] and bars == [0]
    sampler_calls.clear()
    bars.clear()
    out = _execute(node, model=model, clip=clip, vae=vae, latent_image=latent, **inputs)
    data = json.loads(out.args[2])
    assert sampler_calls == [2, 3, 4] and [c["cached"] for c in data["cells"]] == [True, False, False, False]
    assert bars == [0, 1, 2, 3, 4]  # one step per cell, ending full


def test_labels_are_drawn_readably_in_their_bands(host, tiny_models):
    node = host.nodes.NODE_CLASS_MAPPINGS[NODE]
    model, clip, vae, latent = _objects(host, tiny_models)
    out = _execute(node, model=model, clip=clip, vae=vae, latent_image=latent,
                       **_widgets(host, x_axis="prompt", x_values="a cat | a dog", y_axis="strength",
                                  y_values="0\n1", lora_name=A))
    grid, data = out.args[0][0], json.loads(out.args[2])
    left, top = data["cells"][0]["box"][:2]
    assert left >= 40 and top >= 16  # bands for the y and x labels
    for band in (grid[:top, left:], grid[top:, :left]):
        background = band[0, 0]
        text = (band - background).abs().amax(-1) > 0.5
        assert 0.005 < text.float().mean() < 0.5, "a label band is blank or filled"
    for entry in data["cells"]:  # each column label sits over its own column
        x, _, w, _ = entry["box"]
        assert ((grid[:top, x:x + w] - grid[0, 0]).abs().amax(-1) > 0.5).any()
    assert [c["settings"]["prompt"] for c in data["cells"]] == ["a cat", "a dog", "a cat", "a dog"]


def test_prompting_and_latent_are_checked_before_any_cell(host, tiny_models, sampler_calls):
    LoRALabError = host.module("loralab.errors").LoRALabError
    node = host.nodes.NODE_CLASS_MAPPINGS[NODE]
    model, clip, vae, latent = _objects(host, tiny_models)
    cond = [[torch.zeros(1, 77, 768), {}]]
    cases = [
        ({"clip": clip, "positive": cond, "negative": cond}, {}, "not both"),
        ({}, {}, "both positive and negative"),
        ({"positive": cond, "negative": cond}, {"x_axis": "prompt", "x_values": "a | b"}, "needs clip"),
        ({"clip": clip, "latent_image": {"samples": torch.zeros(2, 4, 8, 8)}}, {}, "holds 2 images"),
        ({"clip": clip}, {"lora_name": A, "block_weights": "IN99=1"}, "IN99"),
        ({"clip": clip}, {"x_axis": "strength", "y_axis": "strength_clip", "y_values": "1"}, "both set strength_clip"),
    ]
    for connected, values, message in cases:
        inputs = {"model": model, "vae": vae, "latent_image": latent, **connected}
        with pytest.raises(LoRALabError, match=message):
            _execute(node, **inputs, **_widgets(host, **values))
    assert sampler_calls == []


def test_file_names_in_axes_are_checked_against_the_loras_list(host):
    node = host.nodes.NODE_CLASS_MAPPINGS[NODE]
    ok = dict(x_axis="lora", y_axis="none", y_values="", lora_name="None")
    assert node.validate_inputs(x_values=f"{A}, None", **ok) is True
    for hostile in ("../outside.safetensors", "/etc/passwd.safetensors", "compare/missing.safetensors",
                    "model.ckpt", "C:\\x.safetensors"):
        answer = node.validate_inputs(x_values=f"{A}, {hostile}", **ok)
        assert isinstance(answer, str) and "not a LoRA in the loras folder list" in answer, (hostile, answer)
    assert "no values" in node.validate_inputs(x_values="", **ok)
    assert "is not a number" in node.validate_inputs(**{**ok, "x_axis": "strength", "x_values": "0.5, strong"})
    assert "not a LoRA" in node.validate_inputs(**{**ok, "x_values": A, "lora_name": "../x.safetensors"})
    assert node.validate_inputs(**{**ok, "x_axis": "run", "x_values": ""}) is True  # waits for a connected run


def test_a_runs_checkpoints_by_name_in_step_order(host, tiny_models):
    folder = os.path.join(host.folder("loras"), SUBDIR)
    for step, seed in ((10, 1), (2, 2), (30, 3)):
        _write_lora(host, tiny_models, f"{SUBDIR}/myrun_step{step:06d}.safetensors", seed=seed)
    shutil.copyfile(os.path.join(folder, "myrun_step000002.safetensors"),
                    os.path.join(folder, "myrun_step000002_00001.safetensors"))  # Save Training Run at the same step
    _write_lora(host, tiny_models, f"{SUBDIR}/myrun_other_step000005.safetensors", seed=4)  # another run
    node = host.nodes.NODE_CLASS_MAPPINGS[NODE]
    model, clip, vae, latent = _objects(host, tiny_models)
    out = _execute(node, model=model, clip=clip, vae=vae, latent_image=latent,
                       **_widgets(host, x_axis="run", x_values=f"{SUBDIR}/myrun", y_axis="strength", y_values="1"))
    data = json.loads(out.args[2])
    assert data["x"]["labels"] == ["step 2", "step 10", "step 30"]
    assert data["x"]["values"] == [f"{SUBDIR}/myrun_step{s:06d}.safetensors" for s in (2, 10, 30)]
    stamps = node.fingerprint_inputs(lora_name="None", x_axis="run", x_values=f"{SUBDIR}/myrun")
    assert [n for n, _ in stamps[1]][1:] == data["x"]["values"]
    with pytest.raises(host.module("loralab.errors").SpecError, match="no checkpoints of the run"):
        _execute(node, model=model, clip=clip, vae=vae, latent_image=latent,
                     **_widgets(host, x_axis="run", x_values=f"{SUBDIR}/nosuchrun"))


def test_the_connected_runs_checkpoints_make_the_axis(host):
    from host.train_setup import base_prompt, dataset_in_input, settings
    folder = dataset_in_input(host, "compare_ds", n=2)
    prompt = base_prompt(host, "sd15", folder)
    prompt["6"] = {"class_type": "LoRALabTrainInit", "inputs": {
        **settings(host, "LoRALabTrainInit", total_steps=3, save_every=1, keep_last=2, name=f"{SUBDIR}/connected"),
        "model": ["1", 0], "dataset": ["3", 0]}}
    prompt["7"] = {"class_type": "LoRALabTrainSteps", "inputs": {"run": ["6", 0], "steps": 3}}
    prompt["8"] = {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}}
    prompt["10"] = {"class_type": NODE, "inputs": {
        **_widgets(host, x_axis="run", x_values="", y_axis="strength", y_values="0.5, 1"),
        "model": ["1", 0], "clip": ["2", 1], "vae": ["2", 0], "latent_image": ["8", 0], "run": ["7", 0]}}
    prompt["13"] = {"class_type": "LoRALabTestCapture", "inputs": {"key": "json", "text": ["10", 2]}}
    ok, history, messages = host.run_prompt(prompt)
    assert ok, (history, messages)
    data = json.loads(CAPTURED["json"])
    assert data["x"]["labels"] == ["step 2", "step 3"]  # keep_last 2: step 1 was deleted
    assert data["x"]["values"] == [f"{SUBDIR}/connected_step{s:06d}.safetensors" for s in (2, 3)]
    assert len(data["cells"]) == 4
