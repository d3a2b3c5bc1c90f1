"""The block editor's catalog says exactly what the spec parser knows about each arch."""
import json

import pytest

from loralab.layouts.archs import ARCHS
from loralab.blocks.catalog import block_catalog
from loralab.blocks.spec import VECTOR_FORMS, parse_block_weights, preset_names, standard_blocks
from loralab.blocks.map import OTHER


@pytest.mark.parametrize("arch_id", list(ARCHS))
def test_catalog_matches_the_parser(arch_id):
    cat = json.loads(json.dumps(block_catalog(arch_id)))  # JSON-ready, and what the browser receives
    assert cat["arch"] == arch_id
    assert cat["blocks"] == standard_blocks(arch_id)
    members = [b for fam in cat["families"] for b, _ in fam["blocks"]]
    assert members == cat["blocks"] + [OTHER]
    for fam in cat["families"]:
        spec = parse_block_weights(f"{fam['name']}=0.25", arch_id)
        assert {b for b in members if spec.weight(b) == 0.25} == {b for b, _ in fam["blocks"]}
        for block, number in fam["blocks"]:
            if number is not None:
                assert block == f"{fam['name']}{number:02d}"
    assert {int(n): ids for n, ids in cat["vector_forms"].items()} == VECTOR_FORMS.get(arch_id, {})
    assert [p["name"] for p in cat["presets"]] == preset_names(arch_id)
    for p in cat["presets"]:
        bw = parse_block_weights(p["name"], arch_id)
        assert p["weights"] == {b: bw.weight(b) for b in cat["blocks"] + [OTHER]}
    for name in cat["unavailable_presets"]:
        assert name not in preset_names(arch_id)


def test_catalog_shapes():
    sdxl = block_catalog("sdxl")
    assert [f["name"] for f in sdxl["families"]] == ["BASE", "IN", "M", "OUT", "OTHER"]
    assert len(sdxl["blocks"]) == 20 and "FLUX-SINGLE" in sdxl["unavailable_presets"]
    flux = block_catalog("flux")
    assert [f["name"] for f in flux["families"]] == ["CLIP", "T5", "IN", "D", "S", "OUT", "OTHER"]
    assert flux["families"][1]["blocks"] == [["T5", None]]
    assert len(flux["blocks"]) == 61
    sd35l = block_catalog("sd35l")
    assert [f["name"] for f in sd35l["families"]] == ["CLIP", "T5", "IN", "J", "OUT", "OTHER"]
    assert sd35l["vector_forms"] == {}
    with pytest.raises(KeyError):
        block_catalog("sd4")
