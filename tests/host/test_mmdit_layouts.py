"""SD3/SD3.5 layouts equal ComfyUI's own MMDiT models, and ComfyUI's LoRA names map to the same keys."""
import json
import os

import pytest
import torch

from loralab_testkit import REPO

CASES = {"sd3": "sd3m", "sd35m": "sd35m", "sd35l": "sd35l"}


@pytest.fixture(scope="module", params=sorted(CASES))
def mmdit_model(request, host):
    import comfy.model_detection
    layouts = host.module("loralab.layouts")
    cfg = dict(layouts.STANDARD_CONFIGS[request.param])
    cfg.update({"pos_embed_scaling_factor": None, "input_size": None,
                "pos_embed_max_size": round(cfg["num_patches"] ** 0.5)})
    mc = comfy.model_detection.model_config_from_unet_config(cfg)
    mc.set_inference_dtype(torch.float16, None)
    with torch.device("meta"):
        model = mc.get_model({}, "")
    return request.param, model


def test_reference_file_is_what_comfyui_builds(mmdit_model):
    arch_id, model = mmdit_model
    ref = json.load(open(os.path.join(REPO, "tests", "data", "mmdit_layouts.json")))["models"][CASES[arch_id]]
    real = {k: list(v.shape) for k, v in model.diffusion_model.state_dict().items()}
    assert real == ref["shapes"]


def test_comfy_lora_names_resolve_to_the_same_keys(host, mmdit_model):
    import comfy.lora
    arch_id, model = mmdit_model
    layouts = host.module("loralab.layouts")
    canonical = host.module("loralab.formats.canonical")
    layout = layouts.layout_for(arch_id)
    key_map = comfy.lora.model_lora_keys_unet(model, {})
    model_keys = set(model.state_dict())
    checked = 0
    for name, target in key_map.items():
        key, offset = (target, None) if isinstance(target, str) else (target[0], target[1])
        if key not in model_keys or not key.endswith(".weight"):
            continue
        res = canonical.resolve_module(name, layout)
        assert res is not None, name
        assert layout.key_for(res, "weight") == key, (name, res)
        if offset is not None:
            full = layout.shapes[key][0]
            assert res.rows == (None if (offset[1], offset[2]) == (0, full) else (offset[1], offset[2])), name
        checked += 1
    assert checked > 500
