"""Application plans: every entry gets strength × the weight of its absolute block, patch groups
are one per distinct strength, and nothing is left out without a reason."""
import pytest

from loralab.ops.apply import CLIP, MODEL, plan_application
from loralab.blocks.spec import parse_block_weights
from loralab.blocks.map import block_of
from loralab.layouts import ModelLayout, layout_for
from loralab.layouts.unet import SDXL_CONFIG
from loralab.lora import Lora
from loralab_testkit import FixtureSource, FixtureSubset

#: SDXL with fewer transformer layers per block (Segmind Vega's depths): a model a real SDXL LoRA fits in part
VEGA_LIKE = dict(SDXL_CONFIG, transformer_depth=[0, 0, 1, 1, 2, 2], transformer_depth_output=[0, 0, 0, 1, 1, 1, 2, 2, 2],
                 transformer_depth_middle=2)


def _plan(name, arch_id, spec="", sm=1.0, sc=1.0, clip=True, layout=None, source=None):
    lora = Lora(source or FixtureSource(name), layout or layout_for(arch_id))
    weights = parse_block_weights(spec, arch_id, layout=lora.layout)
    return lora, plan_application(lora, weights, sm, sc, model_arch=arch_id, clip_connected=clip, label=name)


def test_all_ones_patches_every_mapped_entry_once_at_the_node_strengths():
    lora, plan = _plan("kohya_sdxl_lora", "sdxl", sm=0.8, sc=0.6)
    assert len(plan.patches) == len(lora.items) == 986
    assert not plan.zero and not plan.not_applied and plan.refused is None
    [(s_model, model)] = plan.groups(MODEL)
    [(s_clip, clip)] = plan.groups(CLIP)
    assert (s_model, s_clip) == (0.8, 0.6)
    assert {p.item.component for p in model} == {"unet"} and {p.item.component for p in clip} == {"clip_l", "clip_g"}
    assert len(model) + len(clip) == 986


def test_each_entry_gets_the_weight_of_its_absolute_block():
    spec = "1,0.9,0.8,0.7,0.6,0.5,0.4,0.3,0.2,0.1,0.15,0.25"  # BASE, IN04, IN05, IN07, IN08, M00, OUT00..OUT05
    lora, plan = _plan("kohya_sdxl_lora", "sdxl", spec=spec, sm=2.0, sc=0.5)
    expected = dict(zip(["BASE", "IN04", "IN05", "IN07", "IN08", "M00", "OUT00", "OUT01", "OUT02", "OUT03", "OUT04",
                         "OUT05"], [float(v) for v in spec.split(",")]))
    for p in plan.patches:
        assert p.block == block_of(p.key, "unet")
        assert p.weight == expected[p.block]
        assert p.strength == (2.0 if p.patcher == MODEL else 0.5) * expected[p.block]
    strengths = [s for s, _ in plan.groups(MODEL)]
    assert sorted(strengths) == sorted({2.0 * w for b, w in expected.items() if b != "BASE"})
    assert [s for s, _ in plan.groups(CLIP)] == [0.5]
    table = dict((b, (w, n)) for b, w, n in plan.block_table())
    assert table["OUT05"][0] == 0.25 and table["BASE"] == (1.0, 264)
    assert sum(n for _, n in table.values()) == len({p.key for p in plan.patches})


def test_zero_weight_blocks_are_left_out_and_counted():
    lora, plan = _plan("kohya_sdxl_lora", "sdxl", spec="OUT=0.5, default=0")
    assert plan.patches and all(p.block.startswith("OUT") and p.strength == 0.5 for p in plan.patches)
    assert len(plan.patches) + len(plan.zero) == 986
    assert all(not p.block.startswith("OUT") for p in plan.zero)
    assert plan.groups(CLIP) == []
    assert f"; {len(plan.zero)} left out at strength x block weight 0" in plan.report().splitlines()[0]


def test_single_blocks_only_flux_lora_gets_single_block_weights():
    """Inspire #191: a LoRA trained on single blocks only must get the S weights, not the D ones."""
    source = FixtureSubset("kohya_flux_lora", lambda k: k.startswith("lora_unet_single_blocks_"))
    lora, plan = _plan(None, "flux", spec="D=0, S=0.5", source=source)
    assert len(plan.patches) == 38 * 3 and all(p.strength == 0.5 and p.block.startswith("S") for p in plan.patches)
    vector = ",".join(["1"] * 19 + ["0.25", "0.75"] + ["0"] * 36)  # D00..D18, S00..S37
    lora, plan = _plan(None, "flux", spec=vector, source=source)
    assert {(p.block, p.strength) for p in plan.patches} == {("S00", 0.25), ("S01", 0.75)}
    assert len(plan.zero) == 36 * 3


def test_wrong_architecture_applies_nothing_and_names_both():
    lora, plan = _plan("kohya_sd15_lora", "sdxl")
    assert plan.refused and not plan.patches
    report = plan.report()
    assert report.startswith("nothing applied: an SD1.x LoRA on an SDXL model\n"
                             "fix: pick a LoRA made for SDXL, or load an SD1.x model\n")
    lora, plan = _plan("kohya_flux_lora", "sd1")
    assert plan.refused.text == "a Flux.1 LoRA on an SD1.x model"


def test_text_encoder_only_lora_is_not_refused_on_an_architecture_it_fits_as_well():
    source = FixtureSubset("kohya_sd15_lora", lambda k: k.startswith("lora_te_"))
    lora, plan = _plan(None, "sdxl", source=source)
    assert plan.refused is None and len(plan.patches) == 72 and {p.item.component for p in plan.patches} == {"clip_l"}


def test_without_clip_text_encoder_entries_are_listed_with_the_reason():
    lora, plan = _plan("kohya_sd15_lora", "sd1", clip=False)
    assert len(plan.not_applied) == 72 and all(n.reason == "text encoder clip_l: no CLIP connected"
                                               for n in plan.not_applied)
    lines = plan.report().splitlines()
    assert lines[:3] == ["applied 192 of 264 modules; 72 not applied (reasons below)", "not applied: 72 modules",
                         "  72 × text encoder clip_l: no CLIP connected, e.g. lora_te_text_model_encoder_layers_0_mlp_fc1, "
                         "lora_te_text_model_encoder_layers_0_mlp_fc2, lora_te_text_model_encoder_layers_0_self_attn_k_proj "
                         "and 69 more"]


def test_partially_matching_lora_applies_what_fits_and_lists_the_rest():
    layout = ModelLayout.from_config("sdxl", VEGA_LIKE)
    lora, plan = _plan("kohya_sdxl_lora", "sdxl", layout=layout)
    assert plan.refused is None
    missing = {n.module for n in plan.not_applied}
    assert "lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q" in missing
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q" not in missing
    assert len(plan.patches) + len(plan.not_applied) == 986
    assert all(n.reason == "no module of SDXL has this name" for n in plan.not_applied)
    report = plan.report()
    n = len(plan.not_applied)
    assert report.startswith(f"applied {986 - n} of 986 modules; {n} not applied (reasons below)\n"
                             f"not applied: {n} modules\n  {n} × no module of SDXL has this name, e.g. ")
    assert len([line for line in report.splitlines() if "lora_unet_" in line]) == 1  # one line per reason


def test_reasons_are_counted_once_with_the_first_entry_in_full():
    """Modules that do not fit their weight's size: one line, the count, and what the first one's sizes are."""
    sd15 = ModelLayout.from_config("sd1", dict(layout_for("sd1").config, context_dim=1024))  # an SD2-width context
    lora, plan = _plan("kohya_sd15_lora", "sd1", layout=sd15)
    unfit = [n for n in plan.not_applied if n.why == "does not fit its weight in this model"]
    assert len(unfit) == 32 and all("does not fit" in n.reason and n.reason != n.why for n in unfit)
    line = next(x for x in plan.report().splitlines() if "does not fit its weight" in x)
    assert line.startswith("  32 × does not fit its weight in this model, e.g. ") and " and 29 more (" in line
    assert line.endswith(f"({unfit[0].label}: {unfit[0].reason})")


def test_zero_strength_patches_nothing():
    lora, plan = _plan("kohya_sd15_lora", "sd1", sm=0.0, sc=0.0)
    assert not plan.patches and len(plan.zero) == 264


def test_drop_moves_an_entry_to_not_applied():
    lora, plan = _plan("kohya_sd15_lora", "sd1")
    p = plan.patches[0]
    plan.drop(p, "because")
    assert p not in plan.patches and plan.not_applied[-1].reason == "because"
    assert plan.not_applied[-1].module == p.item.entry.module


@pytest.mark.parametrize("name,arch_id", [("aitoolkit_flux_lora", "flux"), ("xlabs_flux_lora", "flux"),
                                          ("diffusers_sdxl_dreambooth_lora", "sdxl")])
def test_split_and_dropped_formats_plan_onto_canonical_targets(name, arch_id):
    lora, plan = _plan(name, arch_id)
    assert not plan.not_applied and len(plan.patches) == len(lora.items)
    if name == "aitoolkit_flux_lora":
        rows = {p.item.target.rows for p in plan.patches if p.key.endswith("single_blocks.0.linear1.weight")}
        assert rows == {(0, 3072), (3072, 3072), (6144, 3072), (9216, 12288)}


def test_report_names_file_model_spec_and_counts():
    lora, plan = _plan("kohya_sd15_lora", "sd1", spec="OUTALL", sm=0.7)
    report = plan.report()
    assert report.startswith("applied 180 of 264 modules; 84 left out at strength x block weight 0\n"
                             "LoRA: kohya_sd15_lora (kohya sd-scripts; made for SD1.x)\nmodel: SD1.x\n")
    assert "block weights: OUTALL" in report
    assert "applied to the model: " in report and "(strength 0.7 x block weight = 0.7)" in report


def test_tensors_that_belong_to_no_adapter_are_listed():
    import torch
    tensors = {"lora_unet_middle_block_1_proj_in.lora_down.weight": torch.zeros(2, 1280, 1, 1),
               "lora_unet_middle_block_1_proj_in.lora_up.weight": torch.zeros(1280, 2, 1, 1),
               "lora_unet_middle_block_1_proj_out.alpha": torch.tensor(1.0),
               "some_other_thing": torch.zeros(3)}
    lora = Lora.from_state_dict(tensors, {}, layout_for("sd1"), "odd.safetensors")
    plan = plan_application(lora, parse_block_weights("", "sd1"), 1.0, 1.0, model_arch="sd1", clip_connected=True)
    assert len(plan.patches) == 1
    report = plan.report()
    assert "  1 × not a tensor of any LoRA format LoRA Lab reads, e.g. some_other_thing\n" in report
    assert ("  1 × belongs to no adapter (its partner tensors are missing), e.g. "
            "lora_unet_middle_block_1_proj_out.alpha\n") in report
