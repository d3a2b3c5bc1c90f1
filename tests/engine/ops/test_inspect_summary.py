"""The header-only summary: on every fixture format, materialised as a real file, it names the right
format, arch, algorithms, per-module rank and alpha, coverage and host drops, reads no tensor data,
and serialises to strict JSON."""
import json
import os

import pytest
import torch

from loralab.files import safetensors as safetensors_io
from loralab.ops.inspect import SCHEMA, Distribution, inspect_lora, summarize
from loralab.files.safetensors import save_tensors
from loralab_testkit import LORA_FIXTURES, fixture, fixture_tensors, materialize

#: fixture -> (format, arch, algorithms, layers {linear, conv, other}, components, host drops every key: True,
#: none: False, or every key of this many modules)
EXPECTED = {
    "aitoolkit_flux_lora": ("aitoolkit", "flux", {"LoRA": 494}, (494, 0, 0), {"unet": 494}, False),
    "comfyui_trainer_sd15_lora": ("comfyui", "sd1", {"LoRA": 230, "LoCon": 52, "Full diff": 404}, (230, 52, 404),
                                  {"unet": 686}, False),
    "diffusers_sdxl_dreambooth_lora": ("diffusers_dreambooth", "sdxl", {"LoRA": 560}, (560, 0, 0), {"unet": 560}, True),
    "kohya_flux_lora": ("kohya", "flux", {"LoRA": 304}, (304, 0, 0), {"unet": 304}, False),
    "kohya_flux_lora_with_te1": ("kohya", "flux", {"LoRA": 376}, (376, 0, 0), {"unet": 304, "clip_l": 72}, False),
    "kohya_flux_split_qkv_lora": ("kohya", "flux", {"LoRA": 304}, (304, 0, 0), {"unet": 304}, False),
    "kohya_sd15_lora": ("kohya", "sd1", {"LoRA": 264}, (264, 0, 0), {"unet": 192, "clip_l": 72}, False),
    "kohya_sdxl_lora": ("kohya", "sdxl", {"LoRA": 986}, (986, 0, 0), {"unet": 722, "clip_l": 72, "clip_g": 192},
                        False),
    "lycoris_sd15_locon_dora": ("lycoris", "sd1", {"LoRA + DoRA": 302, "LoCon + DoRA": 52}, (302, 52, 0),
                                {"unet": 282, "clip_l": 72}, False),
    "lycoris_sd15_loha": ("lycoris", "sd1", {"LoHa": 354}, (302, 52, 0), {"unet": 282, "clip_l": 72}, False),
    "lycoris_sd15_lokr": ("lycoris", "sd1", {"LoKr": 354}, (302, 52, 0), {"unet": 282, "clip_l": 72}, False),
    "xlabs_flux_lora": ("xlabs", "flux", {"LoRA": 84}, (84, 0, 0), {"unet": 84}, True),
    "musubi_wan21_t2v_14b_lora": ("musubi", "wan21_t2v_14b", {"LoRA": 400}, (400, 0, 0), {"unet": 400}, False),
    "diffusers_peft_wan21_t2v_14b_lora": ("diffusers_peft", "wan21_t2v_14b", {"LoRA": 320}, (320, 0, 0),
                                          {"unet": 320}, True),
    "peft_default_wan21_t2v_1_3b_lora": ("diffusers_peft", "wan21_t2v_1_3b", {"LoRA": 300}, (300, 0, 0),
                                         {"unet": 300}, True),
    "diffusion_pipe_wan21_i2v_14b_lora": ("diffusion_pipe", "wan21_i2v_14b", {"LoRA": 480}, (480, 0, 0),
                                          {"unet": 480}, False),
    "musubi_qwen_image_lora": ("musubi", "qwen_image", {"LoRA": 840}, (840, 0, 0), {"unet": 840}, False),
    "diffusers_peft_qwen_image_lora": ("diffusers_peft", "qwen_image", {"LoRA": 240}, (240, 0, 0), {"unet": 240},
                                       False),
    "aitoolkit_flux2_klein_4b_lora": ("aitoolkit", "flux2_klein_4b", {"LoRA": 80}, (80, 0, 0), {"unet": 80}, False),
    "musubi_flux2_klein_4b_lora": ("musubi", "flux2_klein_4b", {"LoRA": 80}, (80, 0, 0), {"unet": 80}, False),
    "diffusers_peft_flux2_dev_lora": ("diffusers_peft", "flux2_dev", {"LoRA": 128}, (128, 0, 0), {"unet": 128}, False),
    "peft_default_flux2_klein_9b_lora": ("diffusers_peft", "flux2_klein_9b", {"LoRA": 153}, (153, 0, 0),
                                         {"unet": 153}, True),
    "aitoolkit_z_image_lora": ("aitoolkit", "z_image", {"LoRA": 240}, (240, 0, 0), {"unet": 240}, False),
    "musubi_z_image_lora": ("musubi", "z_image", {"LoRA": 210}, (210, 0, 0), {"unet": 210}, 120),
    "musubi_comfy_z_image_lora": ("musubi", "z_image", {"LoRA": 150}, (150, 0, 0), {"unet": 150}, False),
    "peft_default_z_image_lora": ("diffusers_peft", "z_image", {"LoRA": 276}, (276, 0, 0), {"unet": 276}, True),
    "aitoolkit_chroma_lora": ("aitoolkit", "chroma", {"LoRA": 228}, (228, 0, 0), {"unet": 228}, False),
    "kohya_chroma_lora": ("kohya", "chroma", {"LoRA": 228}, (228, 0, 0), {"unet": 228}, False),
    "diffusers_peft_chroma_lora": ("diffusers_peft", "flux", {"LoRA": 190}, (190, 0, 0), {"unet": 190}, False),
    # ComfyUI maps musubi's img_mlp_0, not its img_mlp_fc1/fc2: 4 MLP modules of each of the 20 double blocks dropped
    "musubi_hunyuan_video_lora": ("musubi", "hunyuan_video", {"LoRA": 240}, (240, 0, 0), {"unet": 240}, 80),
    "diffusion_pipe_hunyuan_video_lora": ("diffusion_pipe", "hunyuan_video", {"LoRA": 320}, (320, 0, 0),
                                          {"unet": 320}, False),
    "diffusers_peft_hunyuan_video_lora": ("diffusers_peft", "hunyuan_video", {"LoRA": 208}, (208, 0, 0),
                                          {"unet": 208}, True),
    "diffusion_pipe_lumina2_lora": ("diffusion_pipe", "lumina2", {"LoRA": 178}, (178, 0, 0), {"unet": 178}, False),
    "kohya_lumina2_lora": ("kohya", "lumina2", {"LoRA": 180}, (180, 0, 0), {"unet": 180}, False),
    "diffusers_peft_lumina2_lora": ("diffusers_peft", "lumina2", {"LoRA": 120}, (120, 0, 0), {"unet": 120}, True),
    "diffusion_pipe_hidream_lora": ("diffusion_pipe", "hidream", {"LoRA": 1072}, (1072, 0, 0), {"unet": 1072}, False),
    "diffusers_peft_hidream_lora": ("diffusers_peft", "hidream", {"LoRA": 192}, (192, 0, 0), {"unet": 192}, False),
    "simpletuner_lycoris_hidream_lokr": ("simpletuner_lycoris", "hidream", {"LoKr (full-dimension)": 256}, (256, 0, 0), {"unet": 256},
                                         False),
    "ltx_video_trainer_ltxv_lora": ("diffusers_peft", "ltxv", {"LoRA": 224}, (224, 0, 0), {"unet": 224}, True),
    "ltx_video_trainer_comfy_ltxv_lora": ("diffusion_pipe", "ltxv", {"LoRA": 224}, (224, 0, 0), {"unet": 224}, False),
    "ltx2_trainer_ltx2_lora": ("diffusion_pipe", "ltx2", {"LoRA": 1344}, (1344, 0, 0), {"unet": 1344}, False),
    # ComfyUI maps sd-scripts' attention and linear1/2 names, not mod_linear, mlp_fc1/fc2 or modulation_linear
    "kohya_hunyuan_image21_lora": ("kohya", "hunyuan_image21", {"LoRA": 320}, (320, 0, 0), {"unet": 320}, 160),
    # ComfyUI fuses q, k and v and names img_mod.lin and img_mlp.0/2: only the 108 attn_proj modules load
    "musubi_hunyuan_video15_lora": ("musubi", "hunyuan_video15", {"LoRA": 756}, (756, 0, 0), {"unet": 756}, 648),
    "diffusers_peft_hunyuan_video15_lora": ("diffusers_peft", "hunyuan_video15", {"LoRA": 224}, (224, 0, 0),
                                            {"unet": 224}, True),
}


def test_every_fixture_has_an_expectation():
    assert sorted(EXPECTED) == LORA_FIXTURES


@pytest.fixture
def reads(monkeypatch):
    """Every tensor key whose data is read from a file."""
    seen = []
    original = safetensors_io.SafetensorsFile.read_bytes

    def spy(self, key):
        seen.append((key, self.info(key).numel))
        return original(self, key)

    monkeypatch.setattr(safetensors_io.SafetensorsFile, "read_bytes", spy)
    return seen


@pytest.mark.parametrize("name", LORA_FIXTURES)
def test_summary_of_every_fixture(name, tmp, reads):
    fmt, arch, algos, (linear, conv, other), comps, host_drops_all = EXPECTED[name]
    path = materialize(name, os.path.join(tmp, name + ".safetensors"), rank=2)
    s = summarize(path)
    assert all(numel == 1 for _, numel in reads), "the summary read tensor data"
    assert (s.format, s.arch) == (fmt, arch)
    assert s.algorithms == algos
    assert s.layers == {"linear": linear, "conv": conv, "other": other}
    assert s.components == comps
    assert s.file_size == os.path.getsize(path)
    assert s.tensor_count == len(fixture("loras", name)["tensors"])
    scalars = fixture("loras", name).get("scalar_values", {})
    for m in s.modules:
        if m.algorithm == "Full diff":
            assert (m.rank, m.alpha, m.scale) == (None, None, None)
            continue
        if m.algorithm == "LoKr (full-dimension)":  # no rank: its stored alpha is not used
            assert (m.rank, m.scale) == (None, 1.0)
            continue
        assert m.rank == 2
        key = next((k for k in scalars if k == f"{m.module}.alpha"), None)
        assert m.alpha == (scalars[key] if key else None)
        assert m.scale == (m.alpha / 2 if m.alpha is not None else 1.0)
        assert m.target is not None and m.block is not None
    ranked = sum(1 for m in s.modules if m.rank is not None)
    assert s.rank.summary == (f"2 ×{ranked}" if ranked else "")
    if not scalars:
        assert s.alpha.summary == f"none (= rank) ×{len(s.modules)}" and s.scale.summary == f"1 ×{len(s.modules)}"
    if host_drops_all is True:
        assert s.host_dropped == s.tensor_count
        assert len(s.host_dropped_we_map) == len(s.modules)
    elif host_drops_all:
        per_module = s.tensor_count // len(s.modules)
        assert s.host_dropped == host_drops_all * per_module
        assert len(s.host_dropped_we_map) == host_drops_all
    else:
        assert (s.host_dropped, len(s.host_dropped_we_map)) == (host_drops_all or (0, 0))
    d = s.to_dict()
    text = json.dumps(d, allow_nan=False)
    assert json.loads(text)["schema"] == SCHEMA
    assert d["coverage"]["mapped"] == len(s.modules) and d["coverage"]["unmapped"] == 0
    assert d["coverage"]["unet"] + d["coverage"]["text_encoder"] == len(s.modules)
    assert d["host"]["name"] == "ComfyUI 0.33.0"
    mapped = sum(comps.values())
    verdict, first = s.to_text().splitlines()[:2]
    assert verdict.startswith(f"{' + '.join(s.algorithms)} for {s.arch_label}: {mapped} of {mapped} modules map onto it")
    assert first.startswith(f"file: {name}.safetensors") and d["verdict"] == verdict and d["not_lora"] is None


def test_summary_json_shape_is_stable(tmp):
    """The keys the frontend reads (documented in loralab.ops.inspect)."""
    path = materialize("kohya_sd15_lora", os.path.join(tmp, "k.safetensors"), rank=2)
    d = summarize(path).to_dict()
    assert set(d) == {"schema", "verdict", "not_lora", "name", "path", "file_size", "tensor_count", "dtypes", "format", "arch", "algorithms",
                      "rank", "alpha", "scale", "coverage", "layers", "modules", "unmapped", "unrecognized_keys",
                      "host", "training", "triggers", "trigger_words", "tags", "tag_frequency", "metadata", "warnings"}
    assert set(d["arch"]) == {"id", "name", "variant", "metadata_claim", "also_fits"}
    assert set(d["rank"]) == {"summary", "values", "varies", "by_group"}
    assert set(d["modules"][0]) == {"module", "param", "algorithm", "component", "target", "rows", "block", "layer",
                                    "rank", "alpha", "scale"}
    assert set(d["host"]) == {"name", "dropped_keys", "dropped_we_map", "modules_we_map"}
    assert set(d["triggers"][0]) == {"word", "kind", "source", "count", "images", "likely"}
    assert set(d["tags"]) == {"top", "distinct", "folders", "skipped", "problem"}
    assert set(d["tag_frequency"][0]) == {"folder", "images", "tags"}
    assert set(d["metadata"]) == {"kohya", "modelspec", "aitoolkit", "diffusers", "other", "errors"}
    assert d["dtypes"] == {"F16": 792}
    full = inspect_lora(path, blocks=True, hashes=True).to_dict()
    assert set(full) == set(d) | {"blocks", "hashes"}
    assert set(full["blocks"]) == {"family", "measure", "relative", "items"}
    assert set(full["hashes"]) == {"sha256", "autov2", "addnet", "autov3", "legacy", "stored_addnet", "stored_legacy",
                                   "stored_spec", "addnet_matches", "legacy_matches", "spec_matches"}


def test_rank_and_alpha_that_vary_are_listed_per_group(tmp):
    """kohya with conv_dim: 3x3 convs at another rank and alpha than the linear layers."""
    t = fixture_tensors("lycoris_sd15_loha", rank=4)
    for k in list(t):
        if k.endswith(".hada_w1_b") and t[k].shape[1] > 320 * 9 - 1 and "conv" in k:
            base = k[:-len(".hada_w1_b")]
            for role in ("hada_w1_a", "hada_w2_a"):
                t[f"{base}.{role}"] = t[f"{base}.{role}"][:, :2].contiguous()
            for role in ("hada_w1_b", "hada_w2_b"):
                t[f"{base}.{role}"] = t[f"{base}.{role}"][:2].contiguous()
            t[f"{base}.alpha"] = torch.tensor(1.0).half()
    path = save_tensors(os.path.join(tmp, "v.safetensors"), t)
    s = summarize(path)
    assert s.rank.varies and s.alpha.varies
    low = [m for m in s.modules if m.rank == 2]
    assert low and all(m.layer == "conv" and m.alpha == 1.0 and m.scale == 0.5 for m in low)
    groups = dict(s.rank.by_group)
    assert groups["clip_l linear"] == "4 ×72"
    assert "2 ×" in groups["unet conv"] and "4 ×" in groups["unet conv"]
    assert "rank: 4 ×" in s.to_text() and "unet conv:" in s.to_text()


def test_distribution_orders_by_count():
    d = Distribution.of([("a", 16), ("a", 16), ("b", 8), ("b", None)])
    assert d.summary == "16 ×2, 8 ×1, none ×1"
    assert d.to_dict()["values"] == [{"value": 16, "count": 2}, {"value": 8, "count": 1}, {"value": None, "count": 1}]
    assert d.by_group == [("a", "16 ×2"), ("b", "8 ×1, none ×1")]
    assert not Distribution.of([("a", 4.0)]).varies


#: the panel's answer for a real-layout SDXL kohya LoRA (986 modules) stays under this many bytes
PANEL_BUDGET = 4096


def test_panel_dict_carries_what_the_panel_shows(tmp):
    """The panel's part of the summary: the compact line, the "more" rows, the chips, the blocks
    for the editor and the warnings' first items; no per-module list, metadata or tag table."""
    from loralab.ops.inspect import PANEL_ITEMS
    path = materialize("kohya_sdxl_lora", os.path.join(tmp, "x.safetensors"), rank=2)
    s = summarize(path)
    full, panel = s.to_dict(), s.panel_dict()
    size = len(json.dumps(panel, ensure_ascii=False, allow_nan=False).encode())
    assert size < PANEL_BUDGET < len(json.dumps(full).encode()) / 50, size
    assert set(panel) == {"schema", "verdict", "not_lora", "name", "path", "file_size", "format", "arch", "algorithms",
                          "rank", "alpha", "coverage", "training", "tags", "triggers", "trigger_words", "warnings"}
    for key in ("verdict", "format", "arch", "algorithms", "rank", "alpha", "coverage", "tags", "trigger_words"):
        assert panel[key] == full[key], key
    assert panel["coverage"]["blocks"] == s.blocks_touched and "IN04" in panel["coverage"]["blocks"]
    assert panel["training"] == {k: v for k, v in full["training"].items() if k != "network_args"}
    t = panel["training"]
    assert (t["learning_rate"], t["unet_lr"], t["text_encoder_lr"]) == (1e-4, 1e-4, 5e-5)
    assert (t["optimizer"], t["network_module"], t["base_model"]) == ("AdamW8bit", "networks.lora",
                                                                      "sd_xl_base_1.0.safetensors")
    assert (t["images"], t["train_images"], t["steps"], t["epochs"]) == (25, 250, 1280, 10)
    assert [tag["tag"] for tag in panel["tags"]["top"]][:3] == ["ohwx woman", "1girl", "solo"]
    assert len(panel["tags"]["top"]) == 8
    assert panel["triggers"] == [t for t in full["triggers"] if t["kind"] != "tag" or t["likely"]]
    assert len(full["triggers"]) > len(panel["triggers"]) > 0
    (warning,) = panel["warnings"]
    assert warning["count"] == 986 and len(warning["items"]) == PANEL_ITEMS
    assert warning["items"] == full["warnings"][0]["items"][:PANEL_ITEMS]


def test_panel_dict_stays_small_however_large_the_metadata(tmp):
    """A LoRA whose metadata holds 100 000 tags and a 1 MB network_args: the panel's answer is as
    small as ever (the tables are in to_dict only)."""
    big_tags = {"10_x": {f"tag{i}": i % 97 for i in range(100_000)}}
    meta = {"ss_tag_frequency": json.dumps(big_tags), "ss_network_args": json.dumps({"junk": "x" * 1_000_000}),
            "ss_network_module": "networks.lora"}
    path = save_tensors(os.path.join(tmp, "m.safetensors"), fixture_tensors("kohya_sd15_lora", rank=2), meta)
    s = summarize(path)
    assert len(json.dumps(s.panel_dict()).encode()) < PANEL_BUDGET
    assert s.panel_dict()["tags"]["distinct"] == 100_000
    assert len(s.to_dict()["tag_frequency"][0]["tags"]) == 100_000


def test_text_report_lists_top_tags_and_the_unreadable_part(tmp):
    t = fixture_tensors("kohya_sd15_lora", rank=2)
    path = save_tensors(os.path.join(tmp, "t.safetensors"), t, {"ss_tag_frequency": '{"1_a": {"x": 2, "y": "z"}}'})
    text = summarize(path).to_text()
    assert "top tags: x (2)" in text and "tags: 1 ss_tag_frequency entries left out" in text
    path = save_tensors(os.path.join(tmp, "u.safetensors"), t, {"ss_tag_frequency": '{"1_a": '})
    s = summarize(path)
    assert "tags: ss_tag_frequency is not valid JSON" in s.to_text() and "top tags" not in s.to_text()
    assert s.panel_dict()["tags"]["problem"].startswith("ss_tag_frequency is not valid JSON")
