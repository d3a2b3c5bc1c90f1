"""Short clips in a training dataset (issue 15): animated GIFs of 5 frames beside a still image,
encoded by ComfyUI's real Wan 2.1 VAE into 2 latent frames (the image into 1) through the LoRA
Dataset node, train a tiny Wan 2.1 model on the graph's MODEL (the memory plan sized for the clips'
2 latent frames): the loss on fixed draws over the dataset falls, and core's loader takes the saved
LoRA with no key dropped."""
from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch

from host import train_kit
from host.train_setup import SMALL_DATASET, SMALL_RUN, node_class, one_thread, tiny_model_file, train_host  # noqa: F401


def write_clip(path: str, frames: int, seed: int) -> None:
    """A 64×64 animated GIF: a yellow ring sliding right over a seeded background colour."""
    from PIL import Image
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(3, generator=g)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 64), torch.linspace(0, 1, 64), indexing="ij")
    out = []
    for t in range(frames):
        ring = ((xx - 0.3 - 0.1 * t) ** 2 + (yy - 0.5) ** 2 < 0.04).float()[..., None]
        img = base * (1 - ring) + torch.tensor([1.0, 0.9, 0.2]) * ring
        out.append(Image.fromarray((img.numpy() * 255).astype(np.uint8)))
    out[0].save(path, save_all=True, append_images=out[1:], duration=40, loop=0)
    with open(os.path.splitext(path)[0] + ".txt", "w", encoding="utf-8") as f:
        f.write(f"[trigger], a yellow ring sliding right, clip {seed}")


def test_gif_clips_and_an_image_train_a_wan_model_and_core_loads_the_file(train_host, tiny_models, monkeypatch):
    host = train_host
    tr = host.module("nodes.train")
    th = host.module("nodes.host.training")
    run_mod = host.module("loralab.train.run")
    ckpt = host.module("loralab.train.checkpoint")
    folder = os.path.join(host.folder_paths.get_input_directory(), "clips_wan")
    shutil.rmtree(folder, ignore_errors=True)
    train_kit.write_dataset(folder, n=1)
    for n in range(2):
        write_clip(os.path.join(folder, f"clip{n}.gif"), 5, seed=n + 1)
    node = node_class(host, "LoRALabDataset")
    vae = train_kit.tiny_vae("wan")
    assert th.temporal_compression(vae) == 4
    kw = {**train_kit.schema_defaults(node), **SMALL_DATASET, "folder": "clips_wan", "vae": vae,
          "clip": train_kit.tiny_clip("wan"), "frames": 5, "frame_extraction": "head"}
    ds = node.execute(**kw).args[0]
    assert sorted(i.id for i in ds.items) == ["clip0.gif", "clip1.gif", "img0.png"] and ds.skipped == []
    # Wan's VAE: 1 + (5 - 1) / 4 = 2 latent frames for a clip, 1 for the image
    shapes = {i.id: tuple(ds.latent(n).shape) for n, i in enumerate(ds.items)}
    assert shapes == {"clip0.gif": (16, 2, 8, 8), "clip1.gif": (16, 2, 8, 8), "img0.png": (16, 1, 8, 8)}
    assert "clips: 2 of 5 frames (head)" in ds.summary()
    # a frame count the VAE cannot take is refused with the counts it can
    with pytest.raises(host.module("loralab.errors").DatasetError) as e:
        node.execute(**{**kw, "frames": 4})
    assert "frames = 4 cannot be encoded" in str(e.value) and "1, 5, 9, 13" in str(e.value)

    unet = tiny_model_file(host, tiny_models, "wan")
    model = tiny_models.load_tiny_model(os.path.join(host.folder("diffusion_models"), unet))
    settings = run_mod.TrainSettings(**{**SMALL_RUN, "rank": 8, "alpha": 8.0, "learning_rate": 5e-3,
                                        "targets": "attention_mlp", "total_steps": 24, "batch_size": 2, "seed": 3,
                                        "name": "clips_wan"})
    # the memory plan sizes activations for the largest sample: a clip's 2 latent frames of 8×8
    mem = host.module("nodes.host.memory")
    sizes = []
    real_cost = mem.model_cost
    monkeypatch.setattr(mem, "model_cost", lambda m, t, size, *rest: sizes.append(size) or real_cost(m, t, size, *rest))
    run = tr.init_run(model, ds, settings, unet)
    stills = node.execute(**{**kw, "frames": 1}).args[0]
    assert {i.frames for i in stills.items} == {1}
    tr.init_run(model, stills, settings, unet)
    assert sizes == [(16, 8), (8, 8)]
    monkeypatch.undo()

    def fixed_loss(r):
        with th.training_model(r) as tm:
            return run_mod.eval_loss(tm, ds, r.settings, list(range(len(ds.items))), seed=11, draws=6)

    before = fixed_loss(run)
    run = tr.advance(run, 24, None)
    after = fixed_loss(run)
    print(f"loss on fixed draws {before:.4f} -> {after:.4f} ({after / before:.3f})")
    assert all(len({ds.items[i].frames for i in b}) == 1 for b in run.order.batches)
    assert after < 0.9 * before  # measured 0.585 on both hosts

    path = ckpt.save_lora_file(run, os.path.join(host.folder("loras"), "clips_wan.safetensors"), title="clips_wan")
    import comfy.utils
    sd = comfy.utils.load_torch_file(path)
    _, warnings, patches = train_kit.core_lora_patches(model, sd)
    modules = {k.rsplit(".", 1)[0] for k in sd if k.endswith(".alpha")}
    assert warnings == [] and len(patches) == len(modules) > 0
