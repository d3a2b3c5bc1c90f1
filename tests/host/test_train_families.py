"""Training on the DiT families' MODELs in the real ComfyUI (issue 15): tiny Wan 2.1 T2V (the layout
of every Wan 2.2 A14B expert) and Qwen-Image models with the real Wan VAE (images as 1-frame video
latents), and an SD3.5 Medium one, train from an image folder through the Train node, with noise levels drawn through
the model's own sampling shift; the saved file loads in core's loader with no key dropped and
names its base model as Wan and Qwen-Image trainers do."""
from __future__ import annotations

import os

import pytest
import torch

from host import train_kit
from host.train_setup import base_prompt, dataset_in_input, settings, one_thread, tiny_model_file, train_host  # noqa: F401


@pytest.mark.parametrize("arch, arch_id", [("wan", "wan21_t2v_1_3b"), ("qwen", "qwen_image"), ("sd35m", "sd35m")])
def test_dit_family_trains_on_the_graphs_model_and_core_loads_the_file(train_host, tiny_models, arch, arch_id):
    import comfy.utils
    host = train_host
    unet = tiny_model_file(host, tiny_models, arch)
    folder = dataset_in_input(host, f"ds_{arch}", n=2)
    prompt = base_prompt(host, arch, folder)
    name = f"trained_family_{arch}"
    prompt["4"] = {"class_type": "LoRALabTrain",
                   "inputs": {**settings(host, "LoRALabTrain", steps=3, name=name, targets="attention_mlp",
                                         timestep_sampling="model_shift"),
                              "model": ["1", 0], "dataset": ["3", 0]}}
    ok, history, messages = host.run_prompt(prompt)
    assert ok, messages
    sd, meta = comfy.utils.load_torch_file(os.path.join(host.folder("loras"), f"{name}.safetensors"),
                                           return_metadata=True)
    assert meta["ss_steps"] == "3"
    model = tiny_models.load_tiny_model(os.path.join(host.folder("diffusion_models"), unet))
    # the attention and MLP weights of every block, as the preset names them for the family
    train_kit.assert_core_loads_trained_file(host, model, sd, meta, arch_id)
    ups = [v for k, v in sd.items() if k.endswith("lora_up.weight")]
    assert ups and all(torch.isfinite(u.float()).all() for u in ups) and any(u.abs().max() > 0 for u in ups)


def test_model_shift_reads_the_shift_of_the_graphs_model_sampling(train_host, tiny_models):
    """A ModelSamplingSD3 node in front of training sets the shift the noise levels are drawn with."""
    host = train_host
    unet = tiny_model_file(host, tiny_models, "wan")
    model = tiny_models.load_tiny_model(os.path.join(host.folder("diffusion_models"), unet))
    training = host.module("nodes.host.training")
    default = training.ComfyTrainModel(model, 1.0, torch.float32)
    (shifted,) = host.call_node("ModelSamplingSD3", model=model, shift=5.0)
    assert default.flow_shift == pytest.approx(float(model.get_model_object("model_sampling").shift))
    assert training.ComfyTrainModel(shifted, 1.0, torch.float32).flow_shift == pytest.approx(5.0)
