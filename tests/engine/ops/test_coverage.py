"""The coverage doctor: the share of a LoRA's modules that land, the rest grouped by reason, and
the likely cause with its fix, for LoRAs of the real trainers' layouts on released models known
from a loaded layout or only from a model file's header."""
import json
import os

import pytest
import torch

from loralab.files.safetensors import read_header, save_tensors
from loralab.formats.host_keys import HOSTS, NEWEST
from loralab.formats.model_weights import arch_fits, model_arch
from loralab.layouts import STANDARD_CONFIGS, ModelLayout, layout_for
from loralab.lora import Lora
from loralab.ops.coverage import (ABSENT, IMAGE_ATTENTION, MALFORMED, NO_CLIP, Coverage, ModelFile, NotApplied, diagnose,
                                  diagnose_files)
from loralab.ops.merge import MergeInput, merge
from loralab_testkit import (FixtureSource, FixtureSubset, fit_fixture_to_layout, fixture, fixture_tensors, materialize,
                             sparse_model_file)


def _doctor(name, arch_id, clip=True, source=None, host=NEWEST):
    lora = Lora(source or FixtureSource(name), layout_for(arch_id))
    return diagnose(lora, arch_id, clip_connected=clip, host=host, label=name)


def test_an_sd15_lora_on_sdxl_names_both_and_the_fix():
    cov = _doctor("kohya_sd15_lora", "sdxl")
    assert (cov.landed, cov.total, cov.share, cov.level) == (0, 264, 0.0, "error")
    assert cov.cause.id == "other_arch"
    assert cov.cause.text == "an SD1.x LoRA on an SDXL model"
    assert cov.cause.fix == "pick a LoRA made for SDXL, or load an SD1.x model"
    assert cov.to_text() == ("nothing lands on the SDXL model: an SD1.x LoRA on an SDXL model\n"
                             "fix: pick a LoRA made for SDXL, or load an SD1.x model")
    assert _doctor("kohya_flux_lora", "sd1").cause.text == "a Flux.1 LoRA on an SD1.x model"


def test_an_i2v_lora_on_a_t2v_model_applies_all_but_the_image_attention():
    cov = _doctor("diffusion_pipe_wan21_i2v_14b_lora", "wan21_t2v_14b")
    assert (cov.landed, cov.total, cov.percent, cov.level) == (400, 480, "83%", "warn")
    assert cov.cause.id == "i2v_on_t2v" and cov.cause.text.startswith("an I2V LoRA on a T2V model")
    assert "Wan 2.1 I2V 14B model" in cov.cause.fix
    [group] = cov.groups()
    assert (group.count, group.kind, group.reason) == (80, IMAGE_ATTENTION, "image cross-attention of Wan I2V (a T2V "
                                                                            "model has none)")
    assert group.detail == "no module of Wan 2.1 T2V 14B / Wan 2.2 A14B has this name"
    assert all("_img" in e for e in group.examples) and {n.module.split(".")[-1] for n in cov.not_applied} == {"k_img", "v_img"}
    lines = cov.to_text().splitlines()
    assert lines[0] == "400 of 480 modules (83%) land on the Wan 2.1 T2V 14B / Wan 2.2 A14B model"
    assert lines[3].startswith("likely cause: an I2V LoRA on a T2V model") and lines[4].startswith("fix: load a Wan 2.1 I2V")
    # the other way round everything lands: an I2V model has every weight of a T2V one
    assert _doctor("musubi_wan21_t2v_14b_lora", "wan21_i2v_14b").level == "ok"


def test_an_i2v_lora_on_a_t2v_model_of_a_size_no_released_model_has():
    """Known by the names the model lacks, not by the LoRA's sizes (which fit no released model)."""
    tiny = dict(STANDARD_CONFIGS["wan21_t2v_14b"], dim=64, ffn_dim=96, num_heads=2, num_layers=4)
    t2v = ModelLayout.from_config("wan21_t2v_14b", tiny)
    i2v = ModelLayout.from_config("wan21_i2v_14b", dict(tiny, model_type="i2v", in_dim=36))
    lora = Lora.from_state_dict(fit_fixture_to_layout("diffusion_pipe_wan21_i2v_14b_lora", i2v), {}, t2v, "tiny_i2v")
    cov = diagnose(lora, "wan21_t2v_14b", clip_connected=False)
    assert lora.detection.arch is None and (cov.landed, cov.total) == (40, 48)
    assert cov.cause.id == "i2v_on_t2v" and cov.cause.fix.startswith("load a Wan I2V model")
    assert [g.kind for g in cov.groups()] == [IMAGE_ATTENTION]


@pytest.mark.parametrize("host", list(HOSTS))
@pytest.mark.parametrize("name,arch_id,modules", [("diffusers_peft_wan21_t2v_14b_lora", "wan21_t2v_14b", 320),
                                                  ("peft_default_wan21_t2v_1_3b_lora", "wan21_t2v_1_3b", 300)])
def test_diffusers_wan_keys_land_here_and_the_note_says_comfyui_drops_them(name, arch_id, modules, host):
    rules = HOSTS[host]
    cov = _doctor(name, arch_id, host=rules)
    assert (cov.landed, cov.total, cov.host_dropped, cov.level) == (modules, modules, modules, "info")
    assert cov.cause.id == "host_drops" and not cov.cause.blocking
    assert cov.cause.text == (f"diffusers-format keys: ComfyUI {host}'s own LoRA loader drops {modules} of these "
                              "modules; LoRA Lab applies them")
    assert "convert it to kohya names" in cov.cause.fix
    assert cov.to_text().splitlines()[1:] == [f"note: {cov.cause.text}", f"fix: {cov.cause.fix}"]


def test_the_conversion_the_note_proposes_gives_a_file_comfyui_loads_whole():
    """Merge LoRAs with one file and concat writes kohya names, which every known host loads."""
    lora = Lora.from_state_dict(fixture_tensors("diffusers_peft_wan21_t2v_14b_lora", rank=2), {}, label="d")
    converted = merge([MergeInput(lora)], "concat", dtype=torch.float32)
    again = Lora.from_state_dict(converted.tensors, converted.metadata, label="converted")
    for rules in HOSTS.values():
        assert len(lora.host_dropped(rules)) == 640 and again.host_dropped(rules) == set()
        assert diagnose(again, "wan21_t2v_14b", clip_connected=False, host=rules).level == "ok"


def test_text_encoder_only_lora_without_clip_lands_nothing_and_says_connect_clip():
    te_only = FixtureSubset("kohya_sd15_lora", lambda k: k.startswith("lora_te_"))
    cov = _doctor(None, "sd1", clip=False, source=te_only)
    assert (cov.landed, cov.total, cov.level) == (0, 72, "error")
    assert cov.cause.id == "no_clip" and cov.cause.text == "text-encoder keys but no CLIP connected"
    assert "clip input" in cov.cause.fix
    [group] = cov.groups()
    assert (group.reason, group.kind, group.count) == ("text encoder clip_l: no CLIP connected", NO_CLIP, 72)
    assert cov.headline() == "none of its 72 modules lands on the SD1.x model"
    assert _doctor(None, "sd1", clip=True, source=te_only).level == "ok"


def test_a_lora_with_both_parts_without_clip_lands_its_model_part():
    cov = _doctor("kohya_sd15_lora", "sd1", clip=False)
    assert (cov.landed, cov.total, cov.percent, cov.level, cov.cause.id) == (192, 264, "73%", "warn", "no_clip")
    assert _doctor("kohya_sd15_lora", "sd1").to_text() == "all 264 modules land on the SD1.x model"


def test_a_model_file_that_lacks_weights_keeps_their_modules_off(tmp_path):
    """An SDXL model with fewer transformer layers (as SSD-1B or Vega are): known from its header, the
    modules for the missing layers are listed and the rest lands."""
    path = sparse_model_file(str(tmp_path / "full.safetensors"), [("sdxl", "model.diffusion_model.")])
    header = read_header(path)
    kept = {k: t.shape for k, t in header.tensors.items() if ".transformer_blocks.1." not in k}
    model = ModelFile("sdxl", {"diffusion_model." + k[len("model.diffusion_model."):]: s for k, s in kept.items()})
    lora = Lora(FixtureSource("kohya_sdxl_lora"), layout_for("sdxl"))
    cov = diagnose(lora, "sdxl", clip_connected=True, present=model.present)
    absent = [n for n in cov.not_applied if n.kind == ABSENT]
    assert absent and len(absent) == len(cov.not_applied) and cov.landed == 986 - len(absent)
    assert all("transformer_blocks_1_" in n.module for n in absent)
    assert cov.cause.id == "other_build" and cov.cause.text.startswith("the model file lacks weights this SDXL LoRA")


def test_weights_that_fit_no_known_model_say_so():
    tensors = {"lora_unet_foo_proj.lora_down.weight": torch.zeros(4, 64),
               "lora_unet_foo_proj.lora_up.weight": torch.zeros(64, 4)}
    cov = diagnose(Lora.from_state_dict(tensors, {}, layout_for("sdxl"), "odd"), "sdxl", clip_connected=True)
    assert cov.lora_arch is None and cov.cause.id == "unknown_arch" and cov.level == "error"
    assert cov.cause.text == "the weights fit no base model LoRA Lab knows"


def test_the_largest_reason_is_the_cause():
    """A few lone tensors beside a LoRA whose text-encoder part has no CLIP: the CLIP is the cause."""
    base = Coverage("x", "sd1", "sd1", "kohya", "kohya sd-scripts", 10, 5)
    lone = [NotApplied(f"t{i}", "", "belongs to no adapter", kind="lone") for i in range(2)]
    no_clip = [NotApplied(f"te{i}", "weight", "text encoder clip_l: no CLIP connected", kind=NO_CLIP) for i in range(3)]
    base.not_applied = lone + no_clip
    assert base.cause.id == "no_clip"
    base.not_applied = lone * 2 + no_clip[:1] + [NotApplied("m", "weight", "malformed", kind=MALFORMED)]
    assert base.cause.id == "malformed"


@pytest.mark.parametrize("landed,total,shown", [(0, 10, "0%"), (1, 1000, "1%"), (999, 1000, "99%"), (5, 5, "100%"),
                                                (1, 3, "33%")])
def test_percent_never_rounds_to_all_or_none(landed, total, shown):
    assert Coverage("x", "sd1", "sd1", "kohya", "kohya", total, landed).percent == shown


def test_to_dict_is_json_with_the_cause_and_groups():
    cov = _doctor("kohya_sd15_lora", "sd1", clip=False)
    d = json.loads(json.dumps(cov.to_dict(), allow_nan=False))
    assert d["model"] == {"arch": "sd1", "name": "SD1.x"} and d["lora"]["arch"] == "sd1"
    assert (d["landed"], d["total"], d["percent"], d["level"]) == (192, 264, "73%", "warn")
    assert d["cause"]["id"] == "no_clip" and d["groups"][0]["count"] == 72 and len(d["groups"][0]["examples"]) == 3
    assert d["host"] == {"name": NEWEST.name, "dropped": 0} and d["clip_connected"] is False


CHECKPOINTS = {
    "sd1": [("sd15", "model.diffusion_model."), ("clip_l", "cond_stage_model.transformer.")],
    "sdxl": [("sdxl", "model.diffusion_model."), ("clip_l", "conditioner.embedders.0.transformer.")],
    "flux": [("flux_dev", "")],
    "wan21_t2v_14b": [("wan21_t2v_14b", "")],
    "wan21_i2v_14b": [("wan21_i2v_14b", "model.diffusion_model.")],
    "wan21_t2v_1_3b": [("wan21_t2v_1_3b", "")],
    "qwen_image": [("qwen_image", "")],
}


@pytest.mark.parametrize("arch_id", sorted(CHECKPOINTS))
def test_a_model_files_header_names_its_architecture(tmp_path, arch_id):
    path = sparse_model_file(str(tmp_path / "m.safetensors"), CHECKPOINTS[arch_id])
    assert os.stat(path).st_blocks * 512 < 1 << 20  # the data section takes no disk
    model = ModelFile.read(path)
    assert model.arch == arch_id
    assert len(model.present) == len([k for k in fixture("models", CHECKPOINTS[arch_id][0][0])["tensors"]])


def test_a_header_of_unknown_sizes_names_no_architecture():
    sd = {k: tuple(2 * d for d in v) for k, v in layout_for("sdxl").shapes.items() if k.startswith("diffusion_model.")}
    assert model_arch(sd) is None  # names fit SDXL, sizes fit nothing: a model LoRA Lab has no layout for
    assert model_arch({"foo.weight": (3, 3)}) is None
    assert arch_fits({"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3)})[0].fitting == 1


@pytest.mark.parametrize("lora,parts,clip,cause", [
    ("kohya_sd15_lora", CHECKPOINTS["sdxl"], True, "other_arch"),
    ("diffusion_pipe_wan21_i2v_14b_lora", CHECKPOINTS["wan21_t2v_14b"], False, "i2v_on_t2v"),
    ("diffusers_peft_wan21_t2v_14b_lora", CHECKPOINTS["wan21_t2v_14b"], False, "host_drops"),
    ("kohya_sdxl_lora", CHECKPOINTS["sdxl"], True, None),
])
def test_files_on_disk_give_the_same_coverage_as_the_loaded_layout(tmp_path, lora, parts, clip, cause):
    model = ModelFile.read(sparse_model_file(str(tmp_path / "m.safetensors"), parts))
    path = materialize(lora, str(tmp_path / "l.safetensors"), rank=2)
    cov = diagnose_files(path, model, clip_connected=clip, label="l.safetensors")
    assert (cov.cause.id if cov.cause else None) == cause
    same = _doctor(lora, model.arch, clip=clip)
    assert (cov.landed, cov.total, cov.host_dropped) == (same.landed, same.total, same.host_dropped)


def test_files_on_an_unknown_model_give_no_coverage(tmp_path):
    path = str(tmp_path / "l.safetensors")
    save_tensors(path, fixture_tensors("kohya_sd15_lora", rank=2))
    assert diagnose_files(path, ModelFile(None, {}), clip_connected=True) is None
