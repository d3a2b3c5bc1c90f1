"""nodes/host/compat.py against the real ComfyUI: the training flag, Dynamic VRAM models trained on a
full copy, Flux.2 told apart from Flux.1 (dev and Klein by width), a model without a layout named, and what the start-up log says about a host version."""
import dataclasses
import types

import pytest
import torch


@pytest.fixture(scope="module")
def compat(host):
    return host.module("nodes.host.compat")


def test_training_mode_sets_in_training_and_restores_it(host, compat):
    import comfy.model_management as mm
    if not compat.HOST.training_flag:
        pytest.skip(f"ComfyUI {host.version} has no comfy.model_management.in_training")
    before = mm.in_training
    with compat.training_mode():
        assert mm.in_training is True
    assert mm.in_training == before
    with pytest.raises(ZeroDivisionError), compat.training_mode():
        1 / 0
    assert mm.in_training == before


@pytest.fixture
def dynamic(host, compat, tiny_models):
    """An sd15_micro MODEL that says it streams its weights (Dynamic VRAM, which a CPU host never
    uses), with a patch on it."""
    if not compat.HOST.dynamic_vram:
        pytest.skip(f"ComfyUI {host.version} has no Dynamic VRAM (ModelPatcher.is_dynamic)")
    tiny_models.setup_comfy()
    mp = tiny_models.build_patcher("sd15_micro")
    key = next(k for k in mp.model.state_dict() if k.endswith("attn1.to_q.weight"))
    mp.add_patches({key: ("diff", (torch.ones_like(mp.model.state_dict()[key]),))}, 0.5)
    mp.is_dynamic = lambda: True
    return mp, key


def test_a_dynamic_model_trains_on_a_full_copy_with_its_patches(host, compat, tiny_models, dynamic):
    mp, key = dynamic
    reloads = []

    def reload(disable_dynamic=False):
        reloads.append(disable_dynamic)
        return tiny_models.build_patcher("sd15_micro")

    mp.cached_patcher_init = (reload, ())
    copy = compat.trainable_clone(mp)
    assert reloads == [True] and not copy.is_dynamic() and copy.model is not mp.model
    assert copy.patches[key] == mp.patches[key]


def test_a_dynamic_model_without_a_reload_says_to_disable_dynamic_vram(host, compat, dynamic):
    mp, _ = dynamic
    mp.cached_patcher_init = None
    errors = host.module("loralab.errors")
    with pytest.raises(errors.TrainingError, match="--disable-dynamic-vram"):
        compat.trainable_clone(mp)


def _model_of(config):
    return types.SimpleNamespace(model=types.SimpleNamespace(model_config=config))


@pytest.mark.parametrize("width,arch_id", [(6144, "flux2_dev"), (4096, "flux2_klein_9b"), (3072, "flux2_klein_4b")])
def test_flux2_is_its_own_arch_by_width_never_flux1(host, width, arch_id):
    import comfy.supported_models as sm
    if not hasattr(sm, "Flux2"):
        pytest.skip(f"ComfyUI {host.version} has no Flux.2 model config")
    flux2 = _model_of(sm.Flux2({"image_model": "flux2", "hidden_size": width, "num_heads": width // 128}))
    assert isinstance(flux2.model.model_config, sm.Flux)  # what made it look like Flux.1
    assert host.module("nodes.host.models").model_arch(flux2) == arch_id


def test_a_model_class_without_a_layout_says_so(host):
    import comfy.supported_models as sm
    models = host.module("nodes.host.models")
    other = _model_of(sm.AuraFlow(dict(sm.AuraFlow.unet_config)))
    assert models.model_arch(other) is None and models.model_layout(other) is None
    with pytest.raises(host.module("loralab.errors").ArchMismatchError, match="no layout for AuraFlow yet"):
        models.required_layout(other, "bakes LoRAs into")
    _, _, info = host.module("nodes.loader").apply_lora(other, None, "never_read.safetensors", 1.0, 1.0, "",
                                                        1.0, 1.0, 0, ("auraflow", 0))
    assert info.startswith("nothing applied: the model is AuraFlow, which LoRA Lab has no layout for yet")


def test_z_image_is_its_own_arch_and_its_pixel_space_model_has_no_layout(host):
    import comfy.supported_models as sm
    if not hasattr(sm, "ZImage"):
        pytest.skip(f"ComfyUI {host.version} has no Z-Image model config")
    models = host.module("nodes.host.models")
    z = _model_of(sm.ZImage({"image_model": "lumina2", "dim": 3840}))
    assert models.model_arch(z) == "z_image"
    pixel = _model_of(sm.ZImagePixelSpace({"image_model": "zimage_pixel", "dim": 3840}))
    assert isinstance(pixel.model.model_config, sm.ZImage) and models.model_arch(pixel) is None
    with pytest.raises(host.module("loralab.errors").ArchMismatchError, match="no layout for Z-Image pixel-space yet"):
        models.required_layout(pixel, "bakes LoRAs into")


@pytest.mark.parametrize("name", ["Flux", "FluxSchnell", "FluxInpaint"])
def test_flux1_configs_stay_flux(host, name):
    import comfy.supported_models as sm
    config = getattr(sm, name)(dict(getattr(sm, name).unet_config))
    assert host.module("nodes.host.models").model_arch(_model_of(config)) == "flux"


def test_support_lines_name_what_is_tested_and_what_is_missing(host, compat):
    here = compat.HOST
    assert here.support_lines() == [f"LoRA Lab: ComfyUI {host.version} (tested)"]
    newer = dataclasses.replace(here, version="0.99.0")
    assert "ComfyUI 0.99.0 is untested (tested on 0.3.64 and 0.33.0)" in newer.support_lines()[0]
    older = dataclasses.replace(here, version="0.3.40", weight_wrappers=False)
    lines = older.support_lines()
    assert "ComfyUI 0.3.40 is older than 0.3.64, the oldest LoRA Lab supports" in lines[0]
    assert lines[1] == ("LoRA Lab: unavailable on this ComfyUI: training (this ComfyUI's ModelPatcher has no "
                        "add_weight_wrapper)")
