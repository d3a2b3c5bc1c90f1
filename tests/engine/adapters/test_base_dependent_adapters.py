"""OFT, BOFT and GLoRA (LyCORIS): entries map onto their weights with the shape rules of ComfyUI's
adapters, inspect names them, and every feature that needs a ΔW of its own refuses them by name."""
import os

import pytest
import torch

from loralab.ops.bake import bake
from loralab.ops.block_strength import block_strengths
from loralab.errors import BaseWeightsNeededError, LoraFormatError
from loralab.ops.inspect import inspect_lora
from loralab.layouts import layout_for
from loralab.lora import Lora
from loralab.ops.lowrank import RankRule
from loralab.ops.convert import convert
from loralab.ops.merge import MergeInput, merge, resize
from loralab.files.safetensors import save_tensors

TO_Q = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"  # [320, 320]
PROJ_IN = "lora_unet_down_blocks_0_attentions_0_proj_in"  # [320, 320, 1, 1]
CONV = "lora_unet_down_blocks_0_resnets_0_conv1"  # [320, 320, 3, 3]
FC1 = "lora_te_text_model_encoder_layers_0_mlp_fc1"  # [3072, 768]
FF = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_ff_net_2"  # [640, 2560]


def oft(module, blocks=(4, 80, 80), rescale=None, alpha=0.5):
    """LyCORIS diag-OFT (3-D blocks) or BOFT (4-D blocks) tensors of one module."""
    t = {f"{module}.oft_blocks": torch.randn(blocks) * 0.01, f"{module}.alpha": torch.tensor(alpha)}
    if rescale is not None:
        t[f"{module}.rescale"] = torch.ones(rescale)
    return t


def glora(module, out, inp, rank=4, kernel=(), alpha=2.0, old=False):
    """LyCORIS GLoRA tensors of one module: current layout (a1 [in, r], a2 [r, in], b1 [out, r], b2 [r, in, k...])
    or the old one (a1 [r, in], a2 [in, r], b1 [r, in, k...], b2 [out, r])."""
    one = (1,) * len(kernel)
    if old:
        shapes = {"a1": (rank, inp), "a2": (inp, rank), "b1": (rank, inp, *kernel), "b2": (out, rank)}
    else:
        shapes = {"a1": (inp, rank, *one), "a2": (rank, inp, *one), "b1": (out, rank, *one), "b2": (rank, inp, *kernel)}
    t = {f"{module}.{r}.weight": torch.randn(s) * 0.01 for r, s in shapes.items()}
    t[f"{module}.alpha"] = torch.tensor(alpha)
    return t


def lycoris_file():
    return {**oft(TO_Q), **oft(PROJ_IN, (4, 8, 40, 40), rescale=(320, 1, 1, 1)), **oft(FF, (2, 10, 64, 64)),
            **glora(CONV, 320, 320, kernel=(3, 3)), **glora(FC1, 3072, 768, rank=8, alpha=4.0)}


def mapped_by_module(lora):
    return {m.entry.module: m for m in lora.items}


def test_oft_boft_and_glora_map_onto_their_weights():
    lora = Lora.from_state_dict(lycoris_file(), label="lyco")
    assert lora.detection.arch == "sd1" and not lora.orphans and not lora.unrecognized
    items = mapped_by_module(lora)
    assert all(m.mapped for m in items.values()), [m.reason for m in items.values()]
    assert {name: m.algorithm(lora.layout) for name, m in items.items()} == {
        TO_Q: "OFT", PROJ_IN: "BOFT", FF: "BOFT", CONV: "GLoRA", FC1: "GLoRA"}
    assert items[PROJ_IN].target.key == "diffusion_model.input_blocks.1.1.proj_in.weight"
    assert items[FC1].component == "clip_l"
    assert set(items[PROJ_IN].entry.keys) == {"oft_blocks", "rescale", "alpha"}
    assert set(items[CONV].entry.keys) == {"a1", "a2", "b1", "b2", "alpha"}
    # OFT's alpha is a constraint, not a scale: no rank; GLoRA's is alpha / rank, as ComfyUI computes it
    assert (items[TO_Q].entry.rank(), items[TO_Q].entry.scale()) == (None, 1.0)
    assert (items[FC1].entry.rank(), items[FC1].entry.scale()) == (8, 0.5)
    assert all(not m.entry.supported and m.entry.needs_base for m in items.values())


def test_old_glora_layout_is_read_with_its_own_rank():
    lora = Lora.from_state_dict(glora(FC1, 3072, 768, rank=8, old=True), label="old")
    (m,) = lora.items
    assert m.mapped and m.entry.rank() == 8 and m.algorithm(lora.layout) == "GLoRA"
    assert m.entry.base_problem((3072, 1024)) == ("a1 [8, 768], a2 [768, 8], b1 [8, 768], b2 [3072, 8] do not fit a "
                                                  "weight of [3072, 1024]")


@pytest.mark.parametrize("tensors,reason", [
    (oft(TO_Q, (4, 64, 64)), "oft_blocks [4, 64, 64] (4 blocks of 64) do not cover the 320 rows "
                             "(diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight of SD1.x)"),
    (oft(TO_Q, (5, 16, 64, 64)), "oft_blocks [5, 16, 64, 64] (16 blocks of 64) do not cover the 320 rows"),
    (oft(TO_Q, (5, 8, 40, 40)), "5 butterfly stages of blocks of 40 do not divide the 320 rows"),
    (oft(PROJ_IN, (4, 8, 40, 40), rescale=(320,)), "rescale [320] is not one value per row of [320, 320, 1, 1]"),
    (glora(CONV, 640, 320, kernel=(3, 3)), "a1 [320, 4, 1, 1], a2 [4, 320, 1, 1], b1 [640, 4, 1, 1], b2 [4, 320, 3, 3] "
                                           "do not fit a weight of [320, 320, 3, 3]"),
    (glora(FC1, 3072, 320), "do not fit a weight of [3072, 768]"),
])
def test_factors_that_cannot_act_on_the_weight_are_not_mapped(tensors, reason):
    lora = Lora.from_state_dict(tensors, layout=layout_for("sd1"), label="x")
    (m,) = lora.items
    assert not m.mapped and m.target is not None and m.entry.problem is None and reason in m.reason


@pytest.mark.parametrize("tensors,problem", [
    ({f"{TO_Q}.rescale": torch.ones(320, 1)}, "oft_blocks missing"),
    ({f"{TO_Q}.oft_blocks": torch.zeros(320, 4)}, "oft_blocks [320, 4] are neither [n, b, b] (OFT) nor [m, n, b, b]"),
    ({f"{TO_Q}.oft_blocks": torch.zeros(4, 80, 40)}, "are neither"),
    ({f"{TO_Q}.oft_blocks": torch.zeros(2, 4, 80, 80)}, "BOFT without alpha: ComfyUI's BOFT fails on it"),
    ({k: v for k, v in glora(TO_Q, 320, 320).items() if ".a2." not in k}, "missing a2"),
    ({**glora(TO_Q, 3072, 768), f"{TO_Q}.b1.weight": torch.zeros(3072, 3)}, "do not chain"),
    ({**glora(TO_Q, 320, 320), f"{TO_Q}.a1.weight": torch.zeros(320)}, "do not chain"),
])
def test_malformed_factors_are_problems(tensors, problem):
    lora = Lora.from_state_dict(tensors, label="bad")
    (e,) = lora.entries
    assert e.problem is not None and problem in e.problem and not lora.items[0].mapped
    e.rank(), e.scale(), e.delta_shape(), e.algorithm(), e.base_problem((320, 320))  # never raises
    with pytest.raises(LoraFormatError) as err:
        lora.adapter(e)
    assert not isinstance(err.value, BaseWeightsNeededError) and TO_Q in str(err.value)


def test_oft_diag_belongs_to_no_entry_as_comfyui_reads_none():
    lora = Lora.from_state_dict({**oft(TO_Q), f"{TO_Q}.oft_diag": torch.ones(320)}, label="diag")
    assert [m.mapped for m in lora.items] == [True] and lora.orphans == [f"{TO_Q}.oft_diag"]


@pytest.fixture
def lyco_path(tmp_path):
    return save_tensors(os.path.join(tmp_path, "lyco.safetensors"), lycoris_file(), {})


def _refused(err, module):
    text = str(err.value)
    assert "lyco" in text and module in text and "needs the base weights" in text, text


def test_adapter_merge_resize_and_convert_refuse_by_module_and_algorithm(lyco_path):
    lora = Lora.open(lyco_path)
    with pytest.raises(BaseWeightsNeededError) as err:
        lora.adapter(mapped_by_module(lora)[PROJ_IN].entry)
    _refused(err, PROJ_IN)
    assert str(err.value).count("BOFT needs the base weights: LoRA Lab applies it in the loader") == 1
    for run in (lambda: merge([MergeInput(lora)], "concat", None),
                lambda: merge([MergeInput(lora, 0.5)], "svd", RankRule("fixed", 4)),
                lambda: resize(MergeInput(lora), RankRule("fixed", 2)),
                lambda: convert(lora, title="t")):
        with pytest.raises(BaseWeightsNeededError) as err:
            run()
        _refused(err, err.value.key)
        assert err.value.key in (TO_Q, PROJ_IN, FF, CONV, FC1)


def test_bake_refuses_and_changes_nothing(lyco_path):
    lora = Lora.open(lyco_path)
    sd = {k: torch.randn(lora.layout.shapes[k]) for k in (m.target.key for m in lora.items)}
    before = {k: v.clone() for k, v in sd.items()}
    with pytest.raises(BaseWeightsNeededError) as err:
        bake(sd, [MergeInput(lora)], layout=lora.layout)
    _refused(err, err.value.key)
    assert all(torch.equal(sd[k], before[k]) for k in sd)


def test_block_strengths_and_inspect_count_them_as_unmeasured(lyco_path):
    blocks = {b.block: (b.modules, b.unmeasured, b.norm) for b in block_strengths(Lora.open(lyco_path)) if b.modules}
    assert blocks == {"BASE": (1, 1, 0.0), "IN01": (3, 3, 0.0), "IN04": (1, 1, 0.0)}
    report = inspect_lora(lyco_path)
    summary = report.summary
    assert summary.algorithms == {"OFT": 1, "BOFT": 2, "GLoRA": 2}
    assert summary.host_dropped == 0 and summary.host_dropped_we_map == []
    assert not summary.unmapped and not report.warnings
    assert summary.rank.values == [(4, 1), (8, 1)]  # GLoRA's rank; OFT has none
    text = report.to_text()
    assert "block strength ‖ΔW‖ (block norm), untouched blocks left out:" in text
    assert "(5 OFT/BOFT/GLoRA module(s) left out: their update depends on the base weights)" in text
    assert "algorithm: OFT ×1, BOFT ×2, GLoRA ×2" in text and "ComfyUI 0.33.0 loads every key" in text
