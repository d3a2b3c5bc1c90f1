"""Layouts take the parameter names of the model they describe where ComfyUI versions name them
differently (Flux's q/k norms: ``scale`` in BFL files and ComfyUI 0.3.x, ``weight`` since 0.33)."""
import pytest

from loralab.layouts import ModelLayout, layout_for
from loralab.layouts.flux import FLUX_DEV_CONFIG, flux_layout

NORM = "diffusion_model.double_blocks.0.img_attn.norm.query_norm."


@pytest.mark.parametrize("param", ["scale", "weight"])
def test_from_config_takes_the_norm_names_of_the_real_model(param):
    real = [k for k in layout_for("flux").with_norm_param(param).shapes if k.startswith("diffusion_model.")]
    layout = ModelLayout.from_config("flux", FLUX_DEV_CONFIG, real)
    assert layout.norm_param == param and NORM + param in layout.shapes
    assert set(real) == {k for k in layout.shapes if k.startswith("diffusion_model.")}


def test_default_names_are_bfls_and_renaming_keeps_everything_else():
    scale, weight = layout_for("flux"), layout_for("flux").with_norm_param("weight")
    assert NORM + "scale" in scale.shapes and NORM + "weight" in weight.shapes
    assert len(scale.shapes) == len(weight.shapes)
    assert {k.replace("_norm.scale", "_norm.weight") for k in scale.shapes} == set(weight.shapes)
    assert layout_for("flux").with_norm_param("weight") is weight  # built once
    assert layout_for("sdxl").with_norm_param("weight") is layout_for("sdxl")


def test_norm_modules_resolve_to_the_named_weight():
    for param in ("scale", "weight"):
        layout = layout_for("flux").with_norm_param(param)
        res = layout.resolve_unet("transformer_blocks.0.attn.norm_q")
        assert layout.key_for(res, "weight") == NORM + param


def test_unknown_norm_name_is_refused():
    with pytest.raises(ValueError, match="'gamma' is not one of"):
        flux_layout(FLUX_DEV_CONFIG, "gamma")
