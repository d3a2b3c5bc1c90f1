"""The test kit's fixture fitter: a real trainer's key layout, shaped for a tiny model."""
import math

import pytest

from loralab.formats.canonical import shape_fits, target_shape
from loralab.layouts import ModelLayout
from loralab.layouts.flux import CHROMA_CONFIG, FLUX_DEV_CONFIG
from loralab.layouts.flux2 import FLUX2_DEV_CONFIG, FLUX2_KLEIN_4B_CONFIG, FLUX2_KLEIN_9B_CONFIG
from loralab.layouts.hunyuan_video import HUNYUAN_IMAGE21_CONFIG, HUNYUAN_VIDEO15_CONFIG, HUNYUAN_VIDEO_CONFIG
from loralab.layouts.hidream import HIDREAM_CONFIG
from loralab.layouts.lumina2 import LUMINA2_CONFIG
from loralab.layouts.ltxv import LTX2_CONFIG, LTXV_CONFIG
from loralab.layouts.qwen_image import QWEN_IMAGE_CONFIG
from loralab.layouts.z_image import Z_IMAGE_CONFIG
from loralab.layouts.unet import SD15_CONFIG, SDXL_CONFIG
from loralab.layouts.wan import WAN21_I2V_14B_CONFIG, WAN21_T2V_14B_CONFIG
from loralab.lora import Lora
from loralab_testkit import FIXTURE_MODELS, LORA_FIXTURES, fit_fixture_to_layout, fixture

TINY = {
    "sd1": ModelLayout.from_config("sd1", dict(SD15_CONFIG, model_channels=32, num_res_blocks=[1, 1], channel_mult=[1, 2],
                                               transformer_depth=[1, 0], transformer_depth_output=[1, 1, 0, 0])),
    "sdxl": ModelLayout.from_config("sdxl", dict(SDXL_CONFIG, model_channels=32, channel_mult=[1, 2, 2],
                                                 transformer_depth=[0, 0, 1, 1, 2, 2], transformer_depth_middle=2,
                                                 transformer_depth_output=[0, 0, 0, 1, 1, 1, 2, 2, 2])),
    "flux": ModelLayout.from_config("flux", dict(FLUX_DEV_CONFIG, hidden_size=64, num_heads=2, depth=2,
                                                 depth_single_blocks=2)),
}
_WAN = {"dim": 64, "ffn_dim": 96, "num_heads": 2, "num_layers": 3}
TINY.update({
    "wan21_t2v_14b": ModelLayout.from_config("wan21_t2v_14b", dict(WAN21_T2V_14B_CONFIG, **_WAN)),
    "wan21_i2v_14b": ModelLayout.from_config("wan21_i2v_14b", dict(WAN21_I2V_14B_CONFIG, **_WAN)),
    "qwen_image": ModelLayout.from_config("qwen_image", dict(QWEN_IMAGE_CONFIG, num_layers=3, num_attention_heads=2,
                                                             attention_head_dim=32)),
    "chroma": ModelLayout.from_config("chroma", dict(CHROMA_CONFIG, hidden_size=64, num_heads=2, depth=2,
                                                     depth_single_blocks=2, hidden_dim=32, n_layers=2, out_dim=64)),
    "hunyuan_video": ModelLayout.from_config("hunyuan_video", dict(HUNYUAN_VIDEO_CONFIG, hidden_size=64, num_heads=2,
                                                                   depth=2, depth_single_blocks=2)),
    "lumina2": ModelLayout.from_config("lumina2", dict(LUMINA2_CONFIG, dim=64, n_heads=4, n_kv_heads=2, n_layers=2,
                                                       cap_feat_dim=32)),
    "hidream": ModelLayout.from_config("hidream", dict(HIDREAM_CONFIG, num_attention_heads=2, attention_head_dim=32,
                                                       num_layers=2, num_single_layers=2, num_routed_experts=2,
                                                       caption_channels=[32, 32], text_emb_dim=32)),
    "ltxv": ModelLayout.from_config("ltxv", dict(LTXV_CONFIG, num_attention_heads=2, attention_head_dim=32, num_layers=2,
                                                 cross_attention_dim=64, caption_channels=48, in_channels=16)),
    "ltx2": ModelLayout.from_config("ltx2", dict(LTX2_CONFIG, num_attention_heads=2, attention_head_dim=32, num_layers=2,
                                                 cross_attention_dim=64, audio_num_attention_heads=2,
                                                 audio_attention_head_dim=16, audio_cross_attention_dim=32,
                                                 caption_channels=48, in_channels=16, audio_in_channels=8)),
})
_FLUX2 = {"hidden_size": 64, "num_heads": 2, "depth": 2, "depth_single_blocks": 2, "context_in_dim": 48}
TINY.update({a: ModelLayout.from_config(a, dict(cfg, **_FLUX2)) for a, cfg in (
    ("flux2_dev", FLUX2_DEV_CONFIG), ("flux2_klein_4b", FLUX2_KLEIN_4B_CONFIG), ("flux2_klein_9b", FLUX2_KLEIN_9B_CONFIG))})
TINY.update({a: ModelLayout.from_config(a, dict(cfg, hidden_size=64, num_heads=2, depth=2, depth_single_blocks=d,
                                                context_in_dim=32, **({"vision_in_dim": 24} if d == 0 else {})))
             for a, cfg, d in (("hunyuan_image21", HUNYUAN_IMAGE21_CONFIG, 2), ("hunyuan_video15", HUNYUAN_VIDEO15_CONFIG, 0))})
TINY["z_image"] = ModelLayout.from_config("z_image", dict(Z_IMAGE_CONFIG, dim=64, n_heads=2, n_kv_heads=2, n_layers=3,
                                                          cap_feat_dim=48, multiple_of=32))
MODEL_ARCH = {"sd15": "sd1", "sdxl": "sdxl", "flux_dev": "flux", "wan21_t2v_14b": "wan21_t2v_14b",
              "wan21_t2v_1_3b": "wan21_t2v_14b", "wan21_i2v_14b": "wan21_i2v_14b", "qwen_image": "qwen_image",
              "flux2_dev": "flux2_dev", "flux2_klein_4b": "flux2_klein_4b", "flux2_klein_9b": "flux2_klein_9b",
              "z_image": "z_image", "chroma": "chroma", "hunyuan_video": "hunyuan_video", "lumina2": "lumina2",
              "hidream": "hidream", "ltxv": "ltxv", "ltx2": "ltx2",
              "hunyuan_image21": "hunyuan_image21", "hunyuan_video15": "hunyuan_video15"}


@pytest.mark.parametrize("name", LORA_FIXTURES)
def test_fitted_lora_keeps_names_and_fits_the_tiny_model(name):
    layout = TINY[MODEL_ARCH[FIXTURE_MODELS[name]["unet"]]]
    tensors = fit_fixture_to_layout(name, layout, rank=3, seed=1)
    original = fixture("loras", name)
    assert tensors and set(tensors) <= set(original["tensors"])  # the fixture's own names, nothing invented
    for key, t in tensors.items():
        if key.endswith(".alpha"):
            assert float(t) == original["scalar_values"][key]
    lora = Lora.from_state_dict(tensors, {}, layout)
    assert not lora.unrecognized and not lora.orphans
    assert not list(lora.unmapped()), [(m.entry.module, m.reason) for m in lora.unmapped()][:3]
    for m in lora.items:
        assert shape_fits(m.entry, target_shape(m.target, layout))
        assert (m.entry.rank() or 0) <= 3
        for role, key in m.entry.keys.items():
            assert len(tensors[key].shape) == len(original["tensors"][key]["shape"]), key
    # every module of the fixture that the tiny model has is kept
    full = Lora(_Shapes(original), layout)
    assert len(lora.items) == sum(1 for m in full.items if m.target is not None)


def test_fitting_is_seeded():
    a = fit_fixture_to_layout("kohya_sd15_lora", TINY["sd1"], rank=2, seed=5)
    b = fit_fixture_to_layout("kohya_sd15_lora", TINY["sd1"], rank=2, seed=5)
    c = fit_fixture_to_layout("kohya_sd15_lora", TINY["sd1"], rank=2, seed=6)
    key = next(k for k in a if k.endswith("lora_up.weight"))
    assert (a[key] == b[key]).all() and not (a[key] == c[key]).all()
    assert math.prod(a[key].shape) > 0


class _Shapes:
    """A fixture's shapes as a tensor source (scalars only)."""

    def __init__(self, d):
        self.d, self.metadata, self.path = d, {}, "fixture"

    def keys(self):
        return list(self.d["tensors"])

    def shape(self, key):
        return tuple(self.d["tensors"][key]["shape"])

    def dtype(self, key):
        return self.d["tensors"][key]["dtype"]

    def scalar(self, key):
        return float(self.d.get("scalar_values", {}).get(key, 1.0))

    def close(self):
        pass

    @property
    def label(self):
        return self.path
