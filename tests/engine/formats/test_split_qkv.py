"""kohya's split_qkv Flux LoRAs: found from metadata and ranks (block-diagonal ups where read), reported
with the scale they were trained at, and loaded or saved at that scale on request."""
import json

import pytest
import torch

from loralab.formats import split_qkv
from loralab.lora import Lora
from loralab.ops.health import header_warnings
from loralab.formats.metadata import parse_metadata
from loralab_testkit import FixtureSource
from loralab_testkit.split_qkv import LINEAR1, META, PROJ, QKV, kohya_split_file, trained_delta

D = torch.float64


def _delta(lora, module):
    entry = next(e for e in lora.entries if e.module == module)
    return lora.adapter(entry).delta_flat(D)


def test_found_from_metadata_and_ranks_on_the_fixture():
    lora = Lora(FixtureSource("kohya_flux_split_qkv_lora"))
    parts = lora.split_qkv()
    assert sorted(set(parts.values())) == [3, 4]
    assert sum(1 for n in parts.values() if n == 3) == 38  # 19 double blocks × img/txt qkv
    assert sum(1 for n in parts.values() if n == 4) == 38  # 38 single blocks' linear1
    assert all(("attn_qkv" in k) == (n == 3) for k, n in parts.items())
    warnings = {w.code: w for w in header_warnings(lora, parse_metadata(lora.metadata))}
    assert "rank_vs_metadata" not in warnings  # the metadata is right: each part has rank 16
    w = warnings["split_qkv"]
    assert len(w.items) == 76
    assert "38 module(s) of 3 rank-16 parts (trained at alpha/16 = 1, loaded at alpha/48 = 0.333333" in w.message
    assert "38 module(s) of 4 rank-16 parts (trained at alpha/16 = 1, loaded at alpha/64 = 0.25" in w.message


def test_plain_kohya_flux_lora_is_not_split():
    lora = Lora(FixtureSource("kohya_flux_lora"))
    assert lora.split_qkv() == {}
    assert "split_qkv" not in {w.code for w in header_warnings(lora, parse_metadata(lora.metadata))}


def test_without_the_metadata_nothing_is_assumed_and_the_ranks_are_reported():
    src = FixtureSource("kohya_flux_split_qkv_lora")
    src.metadata = dict(src.metadata, ss_network_args=json.dumps({"train_blocks": "all"}))
    lora = Lora(src)
    assert lora.split_qkv() == {}
    codes = {w.code for w in header_warnings(lora, parse_metadata(lora.metadata))}
    assert "rank_vs_metadata" in codes and "split_qkv" not in codes


def _assert_equal_to_rounding(module_delta, expected):
    """``module_delta`` equals ``expected`` to float64 rounding; full-size Flux modules, so
    compared in place (no temporaries the size of the module)."""
    scale = max(expected.max().item(), -expected.min().item())
    err = module_delta.sub_(expected).abs_().max().item()
    assert err <= 1e-12 * scale, f"max |Δ| {err:.3g} against max |ΔW| {scale:.3g}"


def test_as_trained_gives_kohyas_trained_delta_exactly():
    tensors, parts = kohya_split_file()
    lora = Lora.from_state_dict(tensors, META)
    assert lora.detection.arch == "flux"
    found = lora.split_qkv(verify=True)
    assert found == {QKV: 3, LINEAR1: 4}
    # as every loader reads the file: 1/3 and 1/4 of the trained update
    for module, n in ((QKV, 3), (LINEAR1, 4)):
        _assert_equal_to_rounding(_delta(lora, module), trained_delta(*parts[module]) / n)
    before_proj = _delta(lora, PROJ)
    assert lora.as_trained(found) == 2
    for module in (QKV, LINEAR1):
        _assert_equal_to_rounding(_delta(lora, module), trained_delta(*parts[module]))
    assert torch.equal(_delta(lora, PROJ), before_proj)


def test_verify_leaves_out_ups_that_are_not_block_diagonal():
    tensors, _ = kohya_split_file()
    tensors[f"{QKV}.lora_up.weight"][0, -1] = 1e-3  # a resized file mixes the parts
    lora = Lora.from_state_dict(tensors, META)
    assert lora.split_qkv() == {QKV: 3, LINEAR1: 4}
    assert lora.split_qkv(verify=True) == {LINEAR1: 4}


def test_a_rank_other_than_parts_times_network_dim_is_not_split():
    tensors, _ = kohya_split_file()
    lora = Lora.from_state_dict(tensors, dict(META, ss_network_dim="32"))
    assert lora.split_qkv() == {}
    lora = Lora.from_state_dict(tensors, dict(META, ss_network_dim="Dynamic"))  # resized: parts × r still told
    assert lora.split_qkv(verify=True) == {QKV: 3, LINEAR1: 4}


@pytest.mark.parametrize("args,expected", [
    ('{"split_qkv": "True"}', True), ('{"split_qkv": "true"}', True), ('{"split_qkv": true}', True),
    ('{"split_qkv": "False"}', False), ('{"train_blocks": "all"}', False), ("not json", False), ("[1, 2]", False),
    ('{"name":' * 50_000 + '"x"' + "}" * 50_000, False), ("", False),
])
def test_declared_reads_network_args_and_survives_hostile_metadata(args, expected):
    assert split_qkv.declared({"ss_network_args": args}) is expected


def test_part_rows_of_flux_weights():
    assert split_qkv.part_rows("diffusion_model.double_blocks.0.img_attn.qkv.weight", (9216, 3072)) == (3072,) * 3
    assert split_qkv.part_rows("diffusion_model.single_blocks.37.linear1.weight", (21504, 3072)) == (
        3072, 3072, 3072, 12288)
    assert split_qkv.part_rows("diffusion_model.double_blocks.0.img_attn.proj.weight", (3072, 3072)) is None
    assert split_qkv.part_rows("diffusion_model.double_blocks.0.img_attn.qkv.bias", (9216,)) is None


def test_loader_plan_gives_the_trained_strength_on_request_and_says_so_either_way():
    from loralab.blocks.spec import parse_block_weights
    from loralab.ops.apply import plan_application
    tensors, _ = kohya_split_file()
    lora = Lora.from_state_dict(tensors, META)
    weights = parse_block_weights("", "flux", layout=lora.layout)
    as_core = plan_application(lora, weights, 0.8, 1.0, model_arch="flux", clip_connected=False)
    assert {p.item.entry.module: p.strength for p in as_core.patches} == {QKV: 0.8, LINEAR1: 0.8, PROJ: 0.8}
    assert any("kohya split_qkv file: 2 fused modules get 1/3 or 1/4" in n for n in as_core.notes)
    trained = plan_application(lora, weights, 0.8, 1.0, model_arch="flux", clip_connected=False,
                               split_qkv_as_trained=True)
    assert {p.item.entry.module: p.strength for p in trained.patches} == pytest.approx(
        {QKV: 2.4, LINEAR1: 3.2, PROJ: 0.8}, rel=1e-15)
    assert any("split_qkv as trained: 2 fused modules at 3× and 4×" in n for n in trained.notes)
    assert "note: split_qkv as trained" in trained.report()
