"""The engine's canonical keys equal the keys ComfyUI's own comfy.lora mapping patches."""
import pytest
import torch

VARIANTS = ["sd15", "sd15_micro", "sdxl_micro", "flux_micro"]


@pytest.fixture(scope="module", params=VARIANTS)
def model(request, host, tiny_models):
    tiny_models.setup_comfy()
    return request.param, tiny_models.build_patcher(request.param)


def _ours(host, mp):
    layout = host.module("nodes.host.models").model_layout(mp)
    assert layout is not None
    return layout


def test_layout_equals_real_model_state_dict(host, model):
    name, mp = model
    layout = _ours(host, mp)
    real = {k: tuple(v.shape) for k, v in mp.model.state_dict().items() if k.startswith("diffusion_model.")}
    ours = {k: v for k, v in layout.shapes.items() if k.startswith("diffusion_model.")}
    assert ours == real, sorted(set(ours) ^ set(real))[:10]


def test_every_comfy_lora_name_resolves_to_the_same_key(host, model):
    import comfy.lora
    name, mp = model
    layout = _ours(host, mp)
    canonical = host.module("loralab.formats.canonical")
    key_map = comfy.lora.model_lora_keys_unet(mp.model, {})
    model_keys = set(mp.model.state_dict())
    checked = 0
    comfy_only = []
    for lora_name, target in key_map.items():
        if isinstance(target, tuple):
            comfy_key, offset = target[0], target[1]
            rows = None if offset is None else (offset[1], offset[2])
        else:
            comfy_key, rows = target, None
        res = canonical.resolve_module(lora_name, layout)
        if lora_name.endswith("linear1_qkv"):
            comfy_only.append(lora_name)  # ComfyUI's internal alias for converted USO/XLabs keys
            continue
        if comfy_key not in model_keys:
            continue  # ComfyUI's maps also name layers this model does not have (conv_shortcut, controlnet)
        if not comfy_key.endswith(".weight"):
            continue  # whole non-weight keys (e.g. diffusion_model.x.bias) are addressed by param, not module
        assert res is not None, f"{name}: ComfyUI maps {lora_name!r} -> {comfy_key}, we map nothing"
        assert layout.key_for(res, "weight") == comfy_key, (lora_name, res, comfy_key)
        if rows is not None:
            full = layout.shapes[comfy_key][0]
            assert res.rows == (None if rows == (0, full) else rows), (lora_name, res.rows, rows)
        else:
            assert res.rows is None, (lora_name, res.rows)
        checked += 1
    assert checked > 50


def test_kohya_and_diffusers_lora_patch_the_same_keys(host, model):
    """Build small real LoRA state dicts in kohya and diffusers/PEFT names, load them with
    comfy.lora.load_lora and with the engine, and compare what each patches."""
    import comfy.lora
    import comfy.utils
    name, mp = model
    layout = _ours(host, mp)
    Lora = host.module("loralab.lora").Lora
    sd = mp.model.state_dict()
    g = torch.Generator().manual_seed(0)
    weights = [k for k, v in sd.items() if k.startswith("diffusion_model.") and k.endswith(".weight") and v.dim() >= 2]
    tensors_kohya = {}
    for k in weights:
        shape = sd[k].shape
        stem = k[len("diffusion_model."):-len(".weight")].replace(".", "_")
        tensors_kohya[f"lora_unet_{stem}.lora_down.weight"] = torch.randn(2, shape[1:].numel(), generator=g)
        tensors_kohya[f"lora_unet_{stem}.lora_up.weight"] = torch.randn(shape[0], 2, generator=g)
        tensors_kohya[f"lora_unet_{stem}.alpha"] = torch.tensor(1.0)
    key_map = comfy.lora.model_lora_keys_unet(mp.model, {})
    patches = comfy.lora.load_lora(tensors_kohya, key_map, log_missing=False)
    ours = Lora.from_state_dict(tensors_kohya, layout=layout)
    assert not list(ours.unmapped())
    assert {m.target.key for m in ours.mapped()} == set(patches) == set(weights)

    if name.startswith("flux"):
        conv = comfy.utils.flux_to_diffusers(mp.model.model_config.unet_config, output_prefix="diffusion_model.")
        prefix = "transformer."
    else:
        conv = {k: "diffusion_model." + v for k, v in comfy.utils.unet_to_diffusers(mp.model.model_config.unet_config).items()}
        prefix = "unet."
    peft = {}
    for dk, target in conv.items():
        key = target if isinstance(target, str) else target[0]
        if not dk.endswith(".weight") or key not in sd or sd[key].dim() < 2:
            continue
        rows = sd[key].shape[0] if isinstance(target, str) or target[1] is None else target[1][2]
        stem = prefix + dk[:-len(".weight")]
        peft[f"{stem}.lora_A.weight"] = torch.randn(2, sd[key].shape[1:].numel(), generator=g)
        peft[f"{stem}.lora_B.weight"] = torch.randn(rows, 2, generator=g)
    ours = Lora.from_state_dict(peft, layout=layout)
    theirs = comfy.lora.load_lora(peft, key_map, log_missing=False)
    theirs_keys = {(k if isinstance(k, str) else (k[0], None if k[1] is None else (k[1][1], k[1][2])))
                   for k in theirs}
    mine = set()
    for m in ours.mapped():
        t = m.target
        mine.add(t.key if t.rows is None and not t.swap_halves else (t.key, t.rows))
    unmapped = [(m.entry.module, m.reason) for m in ours.unmapped()]
    assert not unmapped, unmapped[:5]
    if prefix == "unet.":
        # ComfyUI maps diffusers U-Net LoRAs only in the attention-processor form (to_q -> processor.to_q);
        # the PEFT form of every other layer is one of the keys ComfyUI drops.
        assert theirs_keys <= mine
    else:
        normalized = {k if isinstance(k, str) else (k[0], None if k[1] is None or k[1] == (0, sd[k[0]].shape[0]) else k[1])
                      for k in theirs_keys}
        mine_n = {k if isinstance(k, str) else (k[0], k[1]) for k in mine}
        assert {k if isinstance(k, str) or k[1] is not None else k[0] for k in normalized} <= \
               {k if isinstance(k, str) else k for k in mine_n} | {k[0] for k in mine_n if not isinstance(k, str)}
