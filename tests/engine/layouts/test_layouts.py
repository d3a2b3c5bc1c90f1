"""Generated model layouts equal the real models' keys and shapes (../shared/fixtures/models)."""
import pytest

from loralab.layouts import STANDARD_CONFIGS, layout_for
from loralab.layouts.flux import FLUX_SCHNELL_CONFIG, flux_layout
from loralab.layouts.text_encoders import text_encoder_layout
from loralab.layouts.unet import unet_layout
from loralab_testkit import model_shapes

UNET_CASES = [("sd1", "sd15"), ("sd2", "sd21"), ("sdxl", "sdxl"), ("sdxl_refiner", "sdxl_refiner")]


@pytest.mark.parametrize("arch_id,fixture_name", UNET_CASES)
def test_unet_layout_matches_fixture(arch_id, fixture_name):
    shapes, names = unet_layout(STANDARD_CONFIGS[arch_id])
    real = {k[len("diffusion_model."):]: v for k, v in model_shapes(fixture_name, "unet").items()}
    assert shapes == real
    # every LDM module has a diffusers name, and every diffusers name points at a real module
    modules = {k.rsplit(".", 1)[0] for k in shapes}
    assert set(names.values()) == modules


@pytest.mark.parametrize("fixture_name,config", [("flux_dev", STANDARD_CONFIGS["flux"]), ("flux_schnell", FLUX_SCHNELL_CONFIG)])
def test_flux_layout_matches_fixture(fixture_name, config):
    shapes, names, fused = flux_layout(config)
    real = {k[len("diffusion_model."):]: v for k, v in model_shapes(fixture_name, "unet").items()}
    assert shapes == real
    for diffusers, (module, start, length, _) in fused.items():
        assert start + length <= shapes[module + ".weight"][0], diffusers
    # the four pieces of a single block's linear1 tile it exactly
    rows = sorted((s, n) for d, (m, s, n, _) in fused.items() if m == "single_blocks.0.linear1")
    assert rows == [(0, 3072), (3072, 3072), (6144, 3072), (9216, 12288)]


@pytest.mark.parametrize("name", ["clip_l", "clip_g", "t5xxl"])
def test_text_encoder_layout_matches_fixture(name):
    assert text_encoder_layout(name) == model_shapes(name, name)


def test_no_alias_is_ambiguous():
    for arch_id in STANDARD_CONFIGS:
        layout = layout_for(arch_id)
        assert all(v is not None for v in layout._unet_u.values()), arch_id
        for te in layout._te_u.values():
            assert all(v is not None for v in te.values()), arch_id


def test_flux_split_targets():
    layout = layout_for("flux")
    r = layout.resolve_unet("single_transformer_blocks.3.proj_mlp")
    assert (r.module, r.rows) == ("diffusion_model.single_blocks.3.linear1", (9216, 12288))
    r = layout.resolve_unet("transformer_blocks.0.attn.add_v_proj")
    assert (r.module, r.rows) == ("diffusion_model.double_blocks.0.txt_attn.qkv", (6144, 3072))
    r = layout.resolve_unet("norm_out.linear")
    assert (r.module, r.rows, r.swap_halves) == ("diffusion_model.final_layer.adaLN_modulation.1", None, True)
    r = layout.resolve_unet("single_blocks.2.processor.qkv_lora")
    assert (r.module, r.rows) == ("diffusion_model.single_blocks.2.linear1", (0, 9216))
