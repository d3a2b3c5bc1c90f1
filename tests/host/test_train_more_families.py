"""Training on more families' MODELs in the real ComfyUI (issue 15): a tiny Z-Image, Chroma and
Flux.2 Klein 4B built with ComfyUI's own classes (Z-Image and Flux.2 on 0.33 and later; 0.3.64 has
neither class and skips), with Flux's VAE (Flux.2's packed 128-channel latent for Klein) and the
tiny Flux encoders (standing in for the Qwen3 text encoders; Chroma's T5), train a few steps with
noise levels drawn through the model's own sampling shift (Chroma's and Flux.2's, as Flux's, an
exponential one); the loss on a fixed evaluation set falls, and the saved file
names its base model and loads in core's LoraLoader with no key dropped, every block's attention and
MLP weights patched."""
from __future__ import annotations

import math
import os

import pytest
import torch

from host import train_kit
from host.train_setup import SMALL_DATASET, SMALL_RUN, node_class, one_thread, tiny_model_file, train_host  # noqa: F401

#: arch -> (LoRA Lab arch id, ComfyUI model_config class, the linear shift its sampling draws with (Flux's μ
#: 1.15 is e^1.15), the block groups its targets lie in, steps, learning rate)
FAMILIES = {"zimage": ("z_image", "ZImage", 3.0, {"layers", "noise_refiner", "context_refiner"}, 12, 1e-2),
            "chroma": ("chroma", "Chroma", math.exp(1.15), {"double_blocks", "single_blocks"}, 12, 1e-2),
            "klein": ("flux2_klein_4b", "Flux2", math.exp(2.02), {"double_blocks", "single_blocks"}, 12, 1e-2)}
#: the evaluation loss after training must be below this fraction of the loss before
LOSS_MARGIN = 0.9


def _dataset(host, arch, name):
    folder = os.path.join(host.folder_paths.get_input_directory(), name)
    train_kit.write_dataset(folder, n=2, seed=1)
    node = node_class(host, "LoRALabDataset")
    kw = {**train_kit.schema_defaults(node), **SMALL_DATASET, "folder": name,
          "vae": train_kit.tiny_vae(arch), "clip": train_kit.tiny_clip(arch)}
    return node.execute(**kw).args[0]


@pytest.mark.parametrize("arch", sorted(FAMILIES))
def test_family_trains_its_loss_falls_and_core_loads_the_file(train_host, tiny_models, arch):
    import comfy.supported_models
    import comfy.utils
    host = train_host
    arch_id, config_class, shift, groups, steps, lr = FAMILIES[arch]
    if not hasattr(comfy.supported_models, config_class):
        pytest.skip(f"ComfyUI {host.version} has no {config_class} model config (comfy.supported_models.{config_class})")
    tr = host.module("nodes.train")
    th = host.module("nodes.host.training")
    run_mod = host.module("loralab.train.run")
    unet = tiny_model_file(host, tiny_models, arch)
    model = tiny_models.load_tiny_model(os.path.join(host.folder("diffusion_models"), unet))
    ds = _dataset(host, arch, f"more_{arch}")
    settings = run_mod.TrainSettings(**{**SMALL_RUN, "rank": 8, "alpha": 8.0, "learning_rate": lr,
                                        "targets": "attention_mlp", "timestep_sampling": "model_shift",
                                        "total_steps": steps, "seed": 3, "name": f"trained_more_{arch}"})
    run = tr.init_run(model, ds, settings, unet)
    assert run.model_info["arch"] == arch_id
    assert th.ComfyTrainModel(model, 1.0, torch.float32).flow_shift == pytest.approx(shift)  # what model_shift draws with

    def eval_loss(r):
        with th.training_model(r) as tm:
            return run_mod.eval_loss(tm, ds, r.settings, [0, 1], seed=5, draws=4)

    before = eval_loss(run)
    run = tr.advance(run, steps, None)
    after = eval_loss(run)
    print(f"{arch_id}: evaluation loss {before:.4f} -> {after:.4f} ({after / before:.3f})")
    assert after < LOSS_MARGIN * before

    path = host.module("loralab.train.checkpoint").save_lora_file(
        run, os.path.join(host.folder("loras"), f"trained_more_{arch}.safetensors"), title=arch)
    sd, meta = comfy.utils.load_torch_file(path, return_metadata=True)
    expected = train_kit.assert_core_loads_trained_file(host, model, sd, meta, arch_id)
    assert {k.split(".")[1] for k in expected} == groups
