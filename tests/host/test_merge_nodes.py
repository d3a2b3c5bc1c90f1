"""The merge nodes in the real ComfyUI: results go through core's own LoRA loader and must patch
the model exactly as core patches it with the original LoRAs at their weights."""
import os

import pytest
import torch

from loralab_testkit.fitted import fitted_lora

SUBDIR = "mergetest"


def weights_as_used(model, keys):
    """Each weight with the patches on the MODEL applied, by ComfyUI's own calculate_weight."""
    import comfy.lora
    table = model.get_key_patches()
    out = {}
    for key in keys:
        (w, convert), *patches = table[key]
        w = convert(w.detach().to(torch.float32, copy=True), inplace=True)
        out[key] = comfy.lora.calculate_weight(patches, w, key) if patches else w
    return out


def core_apply(model, lora_sd, strength):
    from comfy_extras.nodes_train import LoraModelLoader
    (patched,) = LoraModelLoader().load_lora_model(model, lora_sd, strength)
    return patched


def assert_patched_alike(a, b, keys, rtol=1e-5):
    wa, wb = weights_as_used(a, keys), weights_as_used(b, keys)
    for k in keys:
        diff = float((wa[k] - wb[k]).norm())
        assert diff <= rtol * float(wb[k].norm()), (k, diff)


@pytest.fixture(scope="module")
def flux(host, tiny_models):
    """A flux_micro model file (fp32) in diffusion_models/, the MODEL loaded from it, and two LoRA
    files fitted to it: kohya names (alpha 16 at rank 3, so scale 16/3) and ai-toolkit names (split q/k/v)."""
    import comfy.utils
    from loralab.layouts import ModelLayout
    tiny_models.setup_comfy()
    path = os.path.join(host.folder("diffusion_models"), "flux_micro_merge.safetensors")
    if not os.path.exists(path):
        tiny_models.write_model("flux_micro", path, dtype="fp32")
    model = tiny_models.load_tiny_model(path)
    layout = ModelLayout.from_config("flux", model.model.model_config.unet_config)
    loras = os.path.join(host.folder("loras"), SUBDIR)
    os.makedirs(loras, exist_ok=True)
    files = {}
    for name, fixture, rank, seed in (("kohya", "kohya_flux_lora", 3, 1), ("ait", "aitoolkit_flux_lora", 2, 2)):
        files[name] = os.path.join(loras, f"{name}.safetensors")
        if not os.path.exists(files[name]):
            comfy.utils.save_torch_file(fitted_lora(fixture, layout, rank=rank, seed=seed), files[name])
    patched_keys = sorted(core_apply(core_apply(model, comfy.utils.load_torch_file(files["kohya"]), 1.0),
                                     comfy.utils.load_torch_file(files["ait"]), 1.0).patches)
    assert len(patched_keys) > 20
    return model, files, patched_keys


def merge_inputs(**over):
    base = {"lora_name_1": f"{SUBDIR}/kohya.safetensors", "weight_1": 0.7, "block_weights_1": "",
            "lora_name_2": f"{SUBDIR}/ait.safetensors", "weight_2": -0.4, "block_weights_2": "",
            "method": "concat", "rank_mode": "fixed", "rank": 64, "threshold": 0.95, "density": 0.5, "seed": 0,
            "output_name": "", "dtype": "fp32"}
    base.update(over)
    return base


def test_merged_file_loads_in_core_like_its_inputs(host, flux):
    """Two LoRAs merged by a prompt (ComfyUI's executor, our node), saved to loras/, then applied
    by core's LoraModelLoader and by LoRA Lab's loader: same patched weights as core applying both
    originals at 0.7 and −0.4."""
    import comfy.utils
    model, files, keys = flux
    prompt = {
        "1": {"class_type": "TinyDiffusionModelLoader", "inputs": {"unet_name": "flux_micro_merge.safetensors"}},
        "2": {"class_type": "LoRALabMerge", "inputs": {**merge_inputs(output_name=f"{SUBDIR}/merged"),
                                                       "model": ["1", 0]}},
    }
    ok, info, _ = host.run_prompt(prompt)
    assert ok, info
    saved = os.path.join(host.folder("loras"), SUBDIR, "merged.safetensors")
    assert os.path.exists(saved)
    sd, meta = comfy.utils.load_torch_file(saved, return_metadata=True)
    assert meta["ss_network_module"] == "networks.lora_flux" and "loralab.recipe" in meta
    ours = core_apply(model, sd, 1.0)
    theirs = core_apply(core_apply(model, comfy.utils.load_torch_file(files["kohya"]), 0.7),
                        comfy.utils.load_torch_file(files["ait"]), -0.4)
    assert sorted(ours.patches) == keys
    assert_patched_alike(ours, theirs, keys)
    apply_lora = host.module("nodes.loader").apply_lora  # LoRA Lab's own loader, at all-1 block weights
    ours_by_loralab, _, _ = apply_lora(model, None, f"{SUBDIR}/merged.safetensors", 1.0, 1.0, "", 1.0, 1.0, 0,
                                       ("merge-test", 0))
    assert_patched_alike(ours_by_loralab, theirs, keys)

    prompt["2"]["inputs"]["weight_1"] = 0.5  # the same output name again: a new file, never an overwrite
    before = os.path.getmtime(saved)
    ok, info, _ = host.run_prompt(prompt)
    assert ok, info
    assert os.path.exists(os.path.join(host.folder("loras"), SUBDIR, "merged_00001.safetensors"))
    assert os.path.getmtime(saved) == before


def test_svd_merge_lora_model_output_and_merge_list(host, flux):
    """LORA_MODEL output straight into core's loader; a third LoRA through the chained merge list."""
    import comfy.utils
    model, files, keys = flux
    nodes = host.module("nodes.merge")
    (lst,) = nodes.LoRALabMergeInput.execute(f"{SUBDIR}/kohya.safetensors", 0.25, "").args
    out = nodes.LoRALabMerge.execute(**merge_inputs(method="svd", rank=64), merge_list=lst, model=model)
    lora_sd, name, report = out.args
    assert name == "" and "rank histogram" in report and "kept energy" in report
    ours = core_apply(model, lora_sd, 1.0)
    k = comfy.utils.load_torch_file(files["kohya"])
    theirs = core_apply(core_apply(core_apply(model, k, 0.7), comfy.utils.load_torch_file(files["ait"]), -0.4), k, 0.25)
    assert_patched_alike(ours, theirs, keys)


def test_a_cancelled_merge_leaves_no_file(host, flux, monkeypatch):
    import comfy.model_management
    import comfy.utils
    model, _, _ = flux
    nodes = host.module("nodes.merge")
    calls = []
    real = comfy.utils.ProgressBar.update_absolute

    def update(self, value, total=None, preview=None):
        calls.append(value)
        if len(calls) == 3:
            comfy.model_management.interrupt_current_processing(True)  # what the Cancel button does
        return real(self, value, total, preview)

    monkeypatch.setattr(comfy.utils.ProgressBar, "update_absolute", update)
    folder = os.path.join(host.folder("loras"), SUBDIR)
    before = set(os.listdir(folder))
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        nodes.LoRALabMerge.execute(**merge_inputs(method="svd", rank=4, output_name=f"{SUBDIR}/cancelled"), model=model)
    assert len(calls) == 3
    assert set(os.listdir(folder)) == before


def test_resize_node(host, flux):
    import comfy.utils
    model, files, _ = flux
    nodes = host.module("nodes.merge")
    lora_sd, name, report = nodes.LoRALabResize.execute(f"{SUBDIR}/kohya.safetensors", "fixed", 3, 0.95,
                                                        f"{SUBDIR}/resized", "fp32", model=model).args
    assert name == f"{SUBDIR}/resized.safetensors" and "rank histogram: 3 ×" in report
    src = comfy.utils.load_torch_file(files["kohya"])
    keys = sorted(core_apply(model, src, 1.0).patches)
    assert_patched_alike(core_apply(model, lora_sd, 0.5), core_apply(model, src, 0.5), keys)


def test_extract_node_recovers_a_lora_applied_to_the_model(host, flux):
    """tuned = base + a rank-3 LoRA (as patches on the MODEL); extracting at rank 3 gives it back."""
    import comfy.utils
    model, files, _ = flux
    src = comfy.utils.load_torch_file(files["kohya"])
    tuned = core_apply(model, src, 1.0)
    nodes = host.module("nodes.merge")
    lora_sd, _, report = nodes.LoRALabExtract.execute(tuned, model, "fixed", 3, 0.95, 0.0001, False, "", "fp32").args
    keys = sorted(tuned.patches)
    assert f"{len(keys)} modules written" in report
    assert_patched_alike(core_apply(model, lora_sd, 1.0), tuned, keys, rtol=1e-4)


def test_save_node_writes_core_trainer_output_in_kohya_names(host, tiny_models):
    """A LORA_MODEL as core's TrainLoraNode makes it (diffusion_model.* names, lora_up/down, alpha,
    diff, diff_b) saved with our metadata; core loads the file to the same patches."""
    import comfy.utils
    from loralab.layouts import ModelLayout
    model = tiny_models.build_patcher("sd15_micro")
    layout = ModelLayout.from_config("sd1", model.model.model_config.unet_config)
    trainer = fitted_lora("comfyui_trainer_sd15_lora", layout, rank=2, seed=4)
    assert any(k.endswith(".diff_b") for k in trainer) and all(k.startswith("diffusion_model.") for k in trainer)
    nodes = host.module("nodes.merge")
    name, report = nodes.LoRALabSave.execute(trainer, f"{SUBDIR}/trained", "", "fp32", model=model).args
    sd, meta = comfy.utils.load_torch_file(os.path.join(host.folder("loras"), name), return_metadata=True)
    assert all(k.startswith("lora_unet_") for k in sd)
    assert meta["modelspec.title"] == "trained" and meta["ss_base_model_version"] == "sd_v1"
    original = core_apply(model, trainer, 1.0)
    saved = core_apply(model, sd, 1.0)
    assert sorted(saved.patches) == sorted(original.patches)
    assert_patched_alike(saved, original, sorted(original.patches))


def test_bake_node_puts_the_lora_into_the_weights(host, flux):
    import comfy.utils
    model, files, _ = flux
    nodes = host.module("nodes.merge")
    baked, report = nodes.LoRALabBake.execute(model, f"{SUBDIR}/kohya.safetensors", 0.5, "").args
    core = core_apply(model, comfy.utils.load_torch_file(files["kohya"]), 0.5)
    keys = sorted(core.patches)
    assert report.startswith(f"{len(keys)} weights baked")
    assert all(baked.patches[k][0][1][0] == "set" for k in keys)
    assert_patched_alike(baked, core, keys)
