"""Block-weight specs resolve to the expected absolute per-block weights; bad specs quote the bad part."""
import pytest

from loralab.blocks.spec import (VECTOR_FORMS, load_presets, parse_block_weights, preset_names,
                                   standard_blocks)
from loralab.blocks.map import OTHER
from loralab.errors import SpecError

SD26 = standard_blocks("sd1")


def test_sd_17_vector_maps_to_lbw_ids_and_keeps_the_rest_at_1():
    vals = [f"{i / 10:g}" for i in range(17)]
    bw = parse_block_weights(",".join(vals), "sd1")
    assert bw.weight("BASE") == 0.0 and bw.weight("IN01") == 0.1 and bw.weight("IN08") == 0.6
    assert bw.weight("M00") == 0.7 and bw.weight("OUT03") == 0.8 and bw.weight("OUT11") == 1.6
    for uncovered in ("IN00", "IN03", "IN06", "IN09", "IN10", "IN11", "OUT00", "OUT01", "OUT02", OTHER):
        assert bw.weight(uncovered) == 1.0


def test_sd_26_vector_is_positional_over_all_blocks():
    vals = [str(i) for i in range(26)]
    bw = parse_block_weights(",".join(vals), "sd2")
    assert [bw.weight(b) for b in SD26] == [float(i) for i in range(26)]
    assert SD26[0] == "BASE" and SD26[13] == "M00" and SD26[-1] == "OUT11"


def test_sdxl_12_and_20():
    bw = parse_block_weights("0,1,2,3,4,5,6,7,8,9,10,11", "sdxl")
    assert [bw.weight(b) for b in ("BASE", "IN04", "IN05", "IN07", "IN08", "M00", "OUT00", "OUT05")] == \
        [0, 1, 2, 3, 4, 5, 6, 11]
    assert bw.weight("IN00") == 1.0 and bw.weight("OUT06") == 1.0
    bw = parse_block_weights(",".join(str(i) for i in range(20)), "sdxl")
    assert bw.weight("IN00") == 1 and bw.weight("IN08") == 9 and bw.weight("M00") == 10 and bw.weight("OUT08") == 19


def test_flux_57_and_61():
    vals = ["0"] * 19 + ["1"] * 38
    bw = parse_block_weights(",".join(vals), "flux")
    assert all(bw.weight(f"D{i:02d}") == 0 for i in range(19))
    assert all(bw.weight(f"S{i:02d}") == 1 for i in range(38))
    assert bw.weight("CLIP") == bw.weight("OUT") == 1.0
    vals = ["0.1", "0.2", "0.3"] + ["0"] * 19 + ["1"] * 38 + ["0.4"]
    bw = parse_block_weights(",".join(vals), "flux")
    assert (bw.weight("CLIP"), bw.weight("T5"), bw.weight("IN"), bw.weight("OUT")) == (0.1, 0.2, 0.3, 0.4)
    assert bw.weight("D18") == 0 and bw.weight("S00") == 1


def test_tokens_are_seeded_and_parametrised():
    v = ",".join(["R", "U", "X", "A", "B"] + ["1"] * 12)
    one = parse_block_weights(v, "sd1", a=4.0, b=0.25, x=0.7, seed=3)
    two = parse_block_weights(v, "sd1", a=4.0, b=0.25, x=0.7, seed=3)
    three = parse_block_weights(v, "sd1", a=4.0, b=0.25, x=0.7, seed=4)
    assert one.weights == two.weights != three.weights
    assert 0 <= one.weight("BASE") < 1 and -0.5 <= one.weight("IN01") < 1.5
    assert (one.weight("IN02"), one.weight("IN04"), one.weight("IN05")) == (0.7, 4.0, 0.25)


def test_readable_spec():
    bw = parse_block_weights("IN04-IN08=0.5, M00=1, OUT=0, default=0.2", "sd1")
    assert [bw.weight(f"IN{i:02d}") for i in range(3, 10)] == [0.2, 0.5, 0.5, 0.5, 0.5, 0.5, 0.2]
    assert bw.weight("M00") == 1 and all(bw.weight(f"OUT{i:02d}") == 0 for i in range(12))
    assert bw.weight("BASE") == 0.2 and bw.weight(OTHER) == 0.2
    bw = parse_block_weights("D0-6=1, S=0.3, default=0", "flux")
    assert bw.weight("D06") == 1 and bw.weight("D07") == 0 and bw.weight("S37") == 0.3 and bw.weight("IN") == 0
    bw = parse_block_weights("s=0; s5=2\nd03-d04=0.5", "flux")
    assert bw.weight("S05") == 2 and bw.weight("S06") == 0 and bw.weight("D03") == 0.5 and bw.weight("D05") == 1


def test_flux_t5_is_a_block_name_not_family_t():
    bw = parse_block_weights("CLIP=0.5, t5 = 0, default=1", "flux")
    assert (bw.weight("CLIP"), bw.weight("T5"), bw.weight("D00")) == (0.5, 0.0, 1.0)


def test_single_number_and_empty():
    assert parse_block_weights("", "sdxl").is_uniform(1.0)
    bw = parse_block_weights("0.75", "flux")
    assert bw.is_uniform(0.75)


@pytest.mark.parametrize("arch_id", ["sd1", "sdxl", "flux"])
def test_presets_resolve_per_arch(arch_id):
    names = preset_names(arch_id)
    assert {"NONE", "ALL", "ALL0.5"} <= set(names)
    for name in names:
        parse_block_weights(name, arch_id)
    every = parse_block_weights("ALL", arch_id)
    assert all(every.weight(b) == 1 for b in standard_blocks(arch_id))
    nothing = parse_block_weights("NONE", arch_id)
    assert nothing.weight("OUT05" if arch_id != "flux" else "S05") == 0


def test_lbw_presets_match_their_vectors():
    bw = parse_block_weights("OUTALL", "sd1")
    assert bw.weight("BASE") == 1 and bw.weight("IN01") == 0 and bw.weight("M00") == 0 and bw.weight("OUT03") == 1
    bw = parse_block_weights("ins", "sd1")
    assert [bw.weight(b) for b in ("BASE", "IN01", "IN02", "IN04", "IN05")] == [1, 1, 1, 1, 0]
    bw = parse_block_weights("OUTALL", "sdxl")
    assert bw.weight("IN04") == 0 and bw.weight("OUT05") == 1 and bw.weight("BASE") == 1
    bw = parse_block_weights("FLUX-SINGLE", "flux")
    assert bw.weight("D00") == 0 and bw.weight("S20") == 1


def test_user_preset_file_overrides_and_adds(tmp_path):
    user = tmp_path / "presets.txt"
    user.write_text("ALL:0.9,0.9,0.9,0.9,0.9,0.9,0.9,0.9,0.9,0.9,0.9,0.9,0.9,0.9,0.9,0.9,0.9\n"
                    "MINE:OUT=0.5, default=0\n@SD-FULL-TEST:17\n", encoding="utf-8")
    presets = load_presets([str(user)])
    assert parse_block_weights("ALL", "sd1", presets=presets).weight("IN01") == 0.9
    assert parse_block_weights("ALL", "sdxl", presets=presets).weight("IN04") == 1.0  # shipped SDXL form kept
    mine = parse_block_weights("mine", "sd1", presets=presets)
    assert mine.weight("OUT07") == 0.5 and mine.weight("IN01") == 0
    assert "@SD-FULL-TEST" not in presets


@pytest.mark.parametrize("spec,arch_id,quoted", [
    ("1,1,1", "sd1", "1,1,1"),
    ("0,1,2,3,4,5,6,7,8,9,10,11", "sd1", "12 values"),
    ("D19=1", "flux", "D19"),
    ("IN12=1", "sd1", "IN12"),
    ("OUT04-OUT02=1", "sd1", "OUT04-OUT02"),
    ("IN04-OUT05=1", "sd1", "IN04-OUT05"),
    ("Q=1", "sd1", "Q"),
    ("D=1", "sd1", "D"),
    ("IN04=abc", "sd1", "abc"),
    ("IN04=nan", "sd1", "nan"),
    ("IN04 0.5", "sd1", "IN04 0.5"),
    ("1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,Z", "sd1", "Z"),
    ("NOSUCHPRESET", "sd1", "NOSUCHPRESET"),
    ("FLUX-SINGLE", "sd1", "FLUX-SINGLE"),
])
def test_malformed_specs_quote_the_bad_part(spec, arch_id, quoted):
    with pytest.raises(SpecError) as e:
        parse_block_weights(spec, arch_id)
    assert quoted in str(e.value)


def test_table_counts_keys_per_block():
    bw = parse_block_weights("OUT=0", "sd1")
    keys = ["diffusion_model.output_blocks.3.1.proj_in.weight", "diffusion_model.output_blocks.3.1.proj_out.weight",
            "diffusion_model.input_blocks.1.1.proj_in.weight", "clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight"]
    assert bw.table(keys) == [("BASE", 1.0, 1), ("IN01", 1.0, 1), ("OUT03", 0.0, 2)]


def test_vector_forms_cover_every_standard_block():
    for arch_id, forms in VECTOR_FORMS.items():
        longest = max(forms, key=int)
        assert set(forms[longest]) == set(standard_blocks(arch_id)), arch_id


def test_inspire_preset_names():
    bw = parse_block_weights("SD-OUTALL", "sd1")
    assert bw.weight("BASE") == 1 and bw.weight("IN01") == 0 and bw.weight("OUT03") == 1
    bw = parse_block_weights("sd-ab", "sd1", a=0.3, b=0.6)
    assert bw.weight("BASE") == 0.3 and bw.weight("IN01") == 0.6 and bw.weight("OUT07") == 0.3
    rout = parse_block_weights("SD-ROUT", "sd1", seed=5)
    assert rout.weight("M00") == 1 and 0 <= rout.weight("OUT03") < 1
    assert rout.weights == parse_block_weights("SD-ROUT", "sd1", seed=5).weights
    bw = parse_block_weights("SDXL-LyC-OUTALL", "sdxl")
    assert [bw.weight(b) for b in ("BASE", "IN00", "IN08", "M00", "OUT00", "OUT08")] == [1, 0, 0, 0, 1, 1]
    assert bw.weight(OTHER) == 0
    bw = parse_block_weights("SD-LyC-MIDALL", "sd2")
    assert [bw.weight(b) for b in ("BASE", "IN00", "M00", "OUT11")] == [1, 0, 1, 0]
    assert parse_block_weights("SDXL-NONE", "sdxl").weight("OUT05") == 0


def test_sd3_gets_the_shared_presets():
    assert parse_block_weights("NONE", "sd3").is_uniform(0.0)
    assert parse_block_weights("ALL0.5", "sd35l").is_uniform(0.5)


_SD17 = ["BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00", *(f"OUT{i:02d}" for i in range(3, 12))]
_XL12 = ["BASE", "IN04", "IN05", "IN07", "IN08", "M00", *(f"OUT{i:02d}" for i in range(6))]
_OUT = lambda lo, hi: [f"OUT{i:02d}" for i in range(lo, hi + 1)]  # noqa: E731
#: preset -> the blocks of its vector form set to 1 (every other block of the form 0), as LBW/Inspire define them
SD_PRESETS = {
    "NONE": [], "ALL": _SD17, "INS": ["BASE", "IN01", "IN02", "IN04"], "IND": ["BASE", "IN05", "IN07", "IN08"],
    "INALL": ["BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08"],
    "MIDD": ["BASE", "IN05", "IN07", "IN08", "M00", *_OUT(3, 6)], "OUTD": ["BASE", *_OUT(3, 6)],
    "OUTS": ["BASE", *_OUT(7, 11)], "OUTALL": ["BASE", *_OUT(3, 11)],
}
XL_PRESETS = {"NONE": [], "ALL": _XL12, "INALL": ["BASE", "IN04", "IN05", "IN07", "IN08"], "MIDALL": ["BASE", "M00"],
              "OUTALL": ["BASE", *_OUT(0, 5)]}


@pytest.mark.parametrize("prefix", ["", "SD-"])
@pytest.mark.parametrize("name", sorted(SD_PRESETS))
def test_every_sd_preset_sets_its_blocks(prefix, name):
    bw = parse_block_weights(prefix + name, "sd1")
    assert {b: bw.weight(b) for b in _SD17} == {b: float(b in SD_PRESETS[name]) for b in _SD17}
    assert all(bw.weight(b) == 1 for b in ("IN00", "IN03", "IN06", "IN09", "IN10", "IN11", "OUT00", "OUT02", OTHER))


@pytest.mark.parametrize("prefix", ["", "SDXL-"])
@pytest.mark.parametrize("name", sorted(XL_PRESETS))
def test_every_sdxl_preset_sets_its_blocks(prefix, name):
    bw = parse_block_weights(prefix + name, "sdxl")
    assert {b: bw.weight(b) for b in _XL12} == {b: float(b in XL_PRESETS[name]) for b in _XL12}
    assert all(bw.weight(b) == 1 for b in ("IN00", "IN03", "IN06", "OUT06", "OUT08", OTHER))


def test_half_and_inspire_extra_presets():
    for name, arch_id, form in (("ALL0.5", "sd1", _SD17), ("SD-ALL0.5", "sd1", _SD17), ("ALL0.5", "sdxl", _XL12)):
        assert [parse_block_weights(name, arch_id).weight(b) for b in form] == [0.5] * len(form)
    mout = parse_block_weights("SD-MOUT", "sd1")
    assert [mout.weight(b) for b in _SD17] == [1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0.5, 0, 0]
    aout = parse_block_weights("SD-AOUT", "sd1", a=0.2)
    assert [aout.weight(b) for b in _SD17] == [0.2] + [1] * 11 + [0.2] * 5


@pytest.mark.parametrize("arch_id", ["sd1", "sd2", "sdxl"])
@pytest.mark.parametrize("part,blocks", [("INALL", ("IN",)), ("MIDALL", ("M",)), ("OUTALL", ("OUT",))])
def test_lycoris_presets_cover_every_block_of_their_part(arch_id, part, blocks):
    for prefix in ("SD-LyC-", "SDXL-LyC-"):
        bw = parse_block_weights(prefix + part, arch_id)
        for b in [*standard_blocks(arch_id), OTHER]:
            on = b == "BASE" or any(b.startswith(f) and b[len(f):].isdigit() for f in blocks)
            assert bw.weight(b) == float(on), (prefix + part, b)
    assert parse_block_weights("SD-LyC-NONE", arch_id).is_uniform(0.0)
    assert parse_block_weights("SDXL-LyC-ALL", arch_id).is_uniform(1.0)


def test_flux_presets_set_their_blocks():
    expect = {
        "FLUX-DOUBLE": lambda b: 0.0 if b.startswith("S") else 1.0,
        "FLUX-SINGLE": lambda b: 0.0 if b.startswith("D") else 1.0,
        "FLUX-DBL-FRONT": lambda b: 1.0 if b in [f"D{i:02d}" for i in range(6)] or b[0] not in "DS" else 0.0,
        "FLUX-DBL-MID": lambda b: 1.0 if b in [f"D{i:02d}" for i in range(6, 13)] or b[0] not in "DS" else 0.0,
        "FLUX-DBL-TAIL": lambda b: 1.0 if b in [f"D{i:02d}" for i in range(13, 19)] or b[0] not in "DS" else 0.0,
        "FLUX-SGL-FRONT": lambda b: 1.0 if b in [f"S{i:02d}" for i in range(13)] or b[0] not in "DS" else 0.0,
        "FLUX-SGL-MID": lambda b: 1.0 if b in [f"S{i:02d}" for i in range(13, 26)] or b[0] not in "DS" else 0.0,
        "FLUX-SGL-TAIL": lambda b: 1.0 if b in [f"S{i:02d}" for i in range(26, 38)] or b[0] not in "DS" else 0.0,
    }
    for name, weight in expect.items():
        bw = parse_block_weights(name, "flux")
        assert {b: bw.weight(b) for b in standard_blocks("flux")} == {b: weight(b) for b in standard_blocks("flux")}
    assert parse_block_weights("NONE", "flux").is_uniform(0.0) and parse_block_weights("ALL", "flux").is_uniform(1.0)
