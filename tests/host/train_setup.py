"""Shared set-up of the training host tests: tiny models on disk, the tiny-encoders test node,
dataset folders, and API prompts for the training nodes."""
from __future__ import annotations

import os
import shutil

import pytest

from host import train_kit
from host.dit_configs import host_dit_config

VARIANTS = {"sd15": "sd15_micro", "sdxl": "sdxl_micro", "flux": "flux_micro"}
#: architecture -> make_tiny_models variant of its tiny diffusion model, the DiT families' defined here
MODEL_VARIANTS = {**VARIANTS, "wan": "wan_t2v_micro", "qwen": "qwen_image_micro", "sd35m": "sd35m_micro",
                  "zimage": "z_image_micro", "chroma": "chroma_micro",
                  "klein": "flux2_klein_micro"}
_DIT_VARIANTS = {"wan_t2v_micro": train_kit.WAN_MICRO, "qwen_image_micro": train_kit.QWEN_MICRO,
                 "sd35m_micro": train_kit.SD35M_MICRO, "z_image_micro": train_kit.Z_IMAGE_MICRO,
                 "chroma_micro": train_kit.CHROMA_MICRO, "flux2_klein_micro": train_kit.KLEIN_MICRO}
SMALL_DATASET = {"resolution": 64, "min_side": 64, "max_side": 64, "trigger_word": "sks"}
SMALL_RUN = {"rank": 4, "alpha": 4.0, "learning_rate": 1e-3, "targets": "all_linear", "save_dtype": "fp32"}


@pytest.fixture(autouse=True)
def one_thread():
    """Training tests run torch single-threaded: on a shared 2-core machine OpenMP threads that
    wait for each other make micro-model steps ten times slower than one thread."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def train_host(host, tiny_models):
    """The host with the tiny-encoders node registered and fp32 micro models in diffusion_models."""
    host.nodes.NODE_CLASS_MAPPINGS["LoRALabTestTinyEncoders"] = train_kit.LoRALabTestTinyEncoders
    for variant in VARIANTS.values():
        path = os.path.join(host.folder("diffusion_models"), f"tiny_{variant}.safetensors")
        if not os.path.exists(path):
            tiny_models.write_model(variant, path, dtype="fp32")
    return host


def tiny_model_file(host, tiny_models, arch: str, seed: int = 0) -> str:
    """A tiny diffusion model of ``arch`` in diffusion_models, written once (the training tests'
    file for seed 0); its name."""
    for name, (config_class, cfg, *rest) in _DIT_VARIANTS.items():
        tiny_models.VARIANTS.setdefault(name, (config_class, host_dit_config(cfg), *rest))
    variant = MODEL_VARIANTS[arch]
    name = f"tiny_{variant}.safetensors" if seed == 0 else f"tiny_{variant}_seed{seed}.safetensors"
    path = os.path.join(host.folder("diffusion_models"), name)
    if not os.path.exists(path):
        tiny_models.write_model(variant, path, seed=seed, dtype="fp32")
    return name


def dataset_in_input(host, name: str, **kw) -> str:
    """A fresh synthetic dataset folder inside ComfyUI's input directory (relative name)."""
    folder = os.path.join(host.folder_paths.get_input_directory(), name)
    shutil.rmtree(folder, ignore_errors=True)
    train_kit.write_dataset(folder, **kw)
    return name


def node_class(host, node_id: str):
    return host.nodes.NODE_CLASS_MAPPINGS[node_id]


def base_prompt(host, arch: str, folder: str, seed: int = 0, **dataset) -> dict:
    """Model loader, tiny encoders and the dataset node (ids 1, 2, 3)."""
    ds_inputs = {**train_kit.schema_defaults(node_class(host, "LoRALabDataset")), **SMALL_DATASET, **dataset,
                 "folder": folder, "vae": ["2", 0], "clip": ["2", 1]}
    return {
        "1": {"class_type": "TinyDiffusionModelLoader", "inputs": {"unet_name": f"tiny_{MODEL_VARIANTS[arch]}.safetensors"}},
        "2": {"class_type": "LoRALabTestTinyEncoders", "inputs": {"arch": arch, "seed": seed}},
        "3": {"class_type": "LoRALabDataset", "inputs": ds_inputs},
    }


def settings(host, node_id: str, **kw) -> dict:
    """Widget values of a training node: defaults, then the small-run values, then ``kw``."""
    return {**train_kit.schema_defaults(node_class(host, node_id)), **SMALL_RUN, **kw}
