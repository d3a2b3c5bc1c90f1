"""Training in the real ComfyUI (issue 5): SD1.5-, SDXL- and Flux-layout tiny models train from a
dataset folder through the nodes, the saved file loads in core's loader with no key dropped, core's
LoRA nodes take the LORA_MODEL output, progress events flow, and Cancel stops within one step with
the partial LoRA saved."""
from __future__ import annotations

import json
import os

import pytest

from host import train_kit
from host.train_setup import base_prompt, dataset_in_input, settings, one_thread, train_host  # noqa: F401 (fixtures)


def _lora_file(host, rel):
    import comfy.utils
    return comfy.utils.load_torch_file(os.path.join(host.folder("loras"), rel), return_metadata=True)


def _tiny_model(host, tiny_models, arch):
    from host.train_setup import VARIANTS
    return tiny_models.load_tiny_model(os.path.join(host.folder("diffusion_models"), f"tiny_{VARIANTS[arch]}.safetensors"))


@pytest.mark.parametrize("arch,algorithm", [("sd15", "lora"), ("sdxl", "loha"), ("flux", "lokr")])
def test_train_node_saves_a_lora_core_loads_without_dropping_keys(train_host, tiny_models, arch, algorithm):
    host = train_host
    folder = dataset_in_input(host, f"ds_{arch}", n=3)
    prompt = base_prompt(host, arch, folder)
    name = f"trained_{arch}"
    prompt["4"] = {"class_type": "LoRALabTrain",
                   "inputs": {**settings(host, "LoRALabTrain", steps=3, name=name, batch_size=2, algorithm=algorithm),
                              "model": ["1", 0], "dataset": ["3", 0]}}
    prompt["5"] = {"class_type": "LoraModelLoader",
                   "inputs": host.node_inputs("LoraModelLoader", {"model": ["1", 0], "lora": ["4", 1], "strength_model": 1.0})}
    prompt["6"] = {"class_type": "ModelWeightChecksum", "inputs": {"model": ["5", 0]}}
    prompt["7"] = {"class_type": host.node_type("SaveLoRA", "SaveLoRANode"),
                   "inputs": {"lora": ["4", 1], "prefix": f"loras/core_saved_{arch}"}}
    prompt["8"] = {"class_type": "ModelWeightChecksum", "inputs": {"model": ["4", 0]}}
    ok, history, messages = host.run_prompt(prompt)
    assert ok, messages
    sd, meta = _lora_file(host, f"{name}.safetensors")
    assert meta["ss_steps"] == "3" and meta["ss_base_model_version"] == {"sd15": "sd_v1", "sdxl": "sdxl_base_v1-0",
                                                                       "flux": "flux1"}[arch]
    assert all(isinstance(v, str) for v in meta.values())
    assert meta["modelspec.prediction_type"] == ("flow" if arch == "flux" else "epsilon")
    assert meta["ss_sd_model_name"] == f"tiny_{'_'.join([arch, 'micro'])}.safetensors"
    model = _tiny_model(host, tiny_models, arch)
    _, warnings, patches = train_kit.core_lora_patches(model, sd)
    assert warnings == []
    modules = {k.rsplit(".", 1)[0] for k in sd if k.endswith(".alpha")}
    assert len(patches) == len(modules) > 0
    # core's Load LoRA Model took the LORA_MODEL output, and so did Save LoRA Weights
    from_core = json.loads(history["outputs"]["6"]["text"][0])
    from_ours = json.loads(history["outputs"]["8"]["text"][0])
    assert from_core["num_patches"] == from_ours["num_patches"] == len(modules)
    assert from_core["sum"] == pytest.approx(from_ours["sum"], rel=1e-6)
    saved = [f for f in os.listdir(os.path.join(host.folder_paths.get_output_directory(), "loras"))
             if f.startswith(f"core_saved_{arch}")]
    assert saved


def test_progress_events_and_cancel_within_one_step(train_host, tiny_models, monkeypatch):
    import comfy.model_management
    host = train_host
    folder = dataset_in_input(host, "ds_cancel", n=2)
    prompt = base_prompt(host, "sd15", folder)
    prompt["4"] = {"class_type": "LoRALabTrain",
                   "inputs": {**settings(host, "LoRALabTrain", steps=50, name="cancelled"),
                              "model": ["1", 0], "dataset": ["3", 0]}}
    events = []
    original = host.server.send_sync

    def spy(event, data, sid=None):
        if event == "loralab.train.progress":
            events.append(dict(data))
            if data["step"] == 4:
                comfy.model_management.interrupt_current_processing()
        return original(event, data, sid)
    monkeypatch.setattr(host.server, "send_sync", spy)
    ok, _, messages = host.run_prompt(prompt)
    assert not ok and any(m[0] == "execution_interrupted" for m in messages)
    saved = [e for e in events if "saved" in e]  # the cancelled run's checkpoint, told to the chart
    events = [e for e in events if "saved" not in e]
    assert [e["step"] for e in events] == [1, 2, 3, 4]  # stopped before step 5
    assert [(e["step"], e["saved"]) for e in saved] == [(4, "cancelled_step000004.safetensors")]
    first = events[0]
    assert set(first) == {"node", "run", "step", "total", "loss", "loss_avg", "lr", "t"}
    assert all(a["t"] <= b["t"] for a, b in zip(events, events[1:]))  # the server's clock, for it/s and ETA
    assert first["node"] == "4" and first["total"] == 50 and first["lr"] == pytest.approx(1e-3)
    assert len({e["run"] for e in events}) == 1 and all(e["loss"] > 0 for e in events)
    assert events[1]["loss_avg"] == pytest.approx((events[0]["loss"] + events[1]["loss"]) / 2)
    history = host.module("nodes.host.training").train_progress("4")  # for a reloaded page
    assert [e["step"] for e in history["events"]] == [1, 2, 3, 4] and history["run"] == first["run"]
    assert history["saved"]["saved"] == "cancelled_step000004.safetensors"
    sd, meta = _lora_file(host, "cancelled_step000004.safetensors")
    assert meta["ss_steps"] == "4"
    assert os.path.exists(os.path.join(host.folder("loras"), "cancelled_step000004.loralab-state"))
    _, warnings, patches = train_kit.core_lora_patches(_tiny_model(host, tiny_models, "sd15"), sd)
    assert warnings == [] and patches


@pytest.mark.parametrize("dtype", ["bf16", "fp8_e4m3fn"])
def test_low_precision_base_weights_train_with_fp32_factors(train_host, tiny_models, dtype):
    import torch
    host = train_host
    torch_dtype = {"bf16": torch.bfloat16, "fp8_e4m3fn": torch.float8_e4m3fn}[dtype]
    from host.train_setup import SMALL_DATASET, VARIANTS, node_class
    path = os.path.join(host.folder("diffusion_models"), f"tiny_{VARIANTS['sd15']}.safetensors")
    model = tiny_models.load_tiny_model(path, model_options={"dtype": torch_dtype})
    weight = model.model.diffusion_model.input_blocks[0][0].weight
    assert weight.dtype == torch_dtype
    folder = dataset_in_input(host, f"ds_{dtype}", n=2)
    node = node_class(host, "LoRALabDataset")
    ds = node.execute(**{**train_kit.schema_defaults(node), **SMALL_DATASET, "folder": folder,
                         "vae": train_kit.tiny_vae("sd15"), "clip": train_kit.tiny_clip("sd15")}).args[0]
    tr = host.module("nodes.train")
    run_mod = host.module("loralab.train.run")
    run = tr.init_run(model, ds, run_mod.TrainSettings(rank=4, alpha=4.0, targets="all_linear", total_steps=2,
                                                       learning_rate=1e-3), None)
    run = tr.advance(run, 2, None)
    assert run.step == 2 and all(torch.isfinite(torch.tensor(run.losses)))
    assert all(p.dtype == torch.float32 for p in run.network.parameters())
    assert model.model.diffusion_model.input_blocks[0][0].weight.dtype == torch_dtype
    assert any(m.up.abs().sum() > 0 for _, m in run.network.items())
    assert run.model_info["weight_dtype"] == str(torch_dtype)
    ckpt = host.module("loralab.train.checkpoint")
    meta = host.module("loralab.train.metadata").training_metadata(run, ckpt.lora_tensors(run), title="t")
    assert meta["ss_fp8_base"] == str(dtype.startswith("fp8"))


def test_v_prediction_model_trains_with_the_v_objective(train_host, tiny_models):
    host = train_host
    folder = dataset_in_input(host, "ds_vpred", n=2)
    prompt = base_prompt(host, "sd15", folder)
    prompt["9"] = {"class_type": "ModelSamplingDiscrete", "inputs": {"model": ["1", 0], "sampling": "v_prediction",
                                                                      "zsnr": True}}
    prompt["4"] = {"class_type": "LoRALabTrain",
                   "inputs": {**settings(host, "LoRALabTrain", steps=2, name="vpred", min_snr_gamma=5.0),
                              "model": ["9", 0], "dataset": ["3", 0]}}
    ok, _, messages = host.run_prompt(prompt)
    assert ok, messages
    _, meta = _lora_file(host, "vpred.safetensors")
    assert meta["modelspec.prediction_type"] == "v" and meta["ss_zero_terminal_snr"] == "True"
    assert meta["ss_min_snr_gamma"] == "5.0"
