"""Releases of an architecture that only metadata names (Flux.1 Kontext, Qwen-Image-Edit): the
trainers' strings, the name inspect reports, the strings merge, resize and convert write, and the
library filter, which offers them for any model of their architecture."""
import os

import pytest
import torch

from loralab.formats.detect import CLAIM_KEYS
from loralab.formats.writer import carried_metadata
from loralab.layouts import layout_for
from loralab.layouts.archs import arch_from_metadata_string, variant_from_metadata
from loralab.library import Library
from loralab.library.compat import fitting_archs
from loralab.lora import Lora
from loralab.ops.convert import convert, convert_file
from loralab.ops.inputs import MergeInput
from loralab.ops.inspect import summarize
from loralab.ops.merge import RankRule, merge, resize
from loralab.files.safetensors import read_header, save_tensors
from loralab_testkit import fixture, fixture_tensors

F32 = torch.float32

#: what each trainer writes for a Kontext LoRA (ai-toolkit: ss_base_model_version only; musubi-tuner
#: names Kontext in ss_base_model_version and plain Flux.1 dev in its model spec)
KONTEXT = {"aitoolkit": {"ss_base_model_version": "flux.1_kontext"},
           "musubi": {"ss_base_model_version": "flux_kontext", "modelspec.architecture": "Flux.1-dev/lora"}}


def _without_claims(metadata):
    return {k: v for k, v in metadata.items() if k not in CLAIM_KEYS}


def flux_part(rank=2, seed=0):
    """The kohya Flux.1 fixture's double block 0 and single block 0: small enough to resize fast."""
    return {k: v for k, v in fixture_tensors("kohya_flux_lora", rank=rank, seed=seed, dtype=F32).items()
            if k.startswith(("lora_unet_double_blocks_0_", "lora_unet_single_blocks_0_"))}


def kontext_lora(trainer="musubi", seed=0):
    metadata = {**_without_claims(fixture("loras", "kohya_flux_lora")["metadata"]), **KONTEXT[trainer]}
    return Lora.from_state_dict(flux_part(seed=seed), metadata)


@pytest.mark.parametrize("arch_id,values,named,label", [
    ("flux", ["flux.1_kontext"], "flux", "Kontext"),  # ai-toolkit
    ("flux", ["Flux.1-dev/lora", "flux_kontext"], "flux", "Kontext"),  # musubi-tuner: the Kontext string wins
    ("flux", ["flux-1-kontext-dev/lora"], "flux", "Kontext"),  # what LoRA Lab writes
    ("flux", ["flux-1-dev/lora", "flux1"], "flux", "dev"), ("flux", ["flux-1-schnell/lora"], "flux", "schnell"),
    ("flux", ["flux1", "flux.1"], "flux", None),
    ("chroma", ["flux_kontext"], "flux", None),  # a string for another architecture names none of this one's releases
    # musubi-tuner's Qwen-Image-Edit, Edit-2509 (its "Edit-Plus"), Edit-2511 and Layered; ai-toolkit's arch names
    ("qwen_image", ["Qwen-Image-Edit/lora", "qwen_image_edit"], "qwen_image", "Edit"),
    ("qwen_image", ["Qwen-Image-Edit-Plus/lora", "qwen_image_edit"], "qwen_image", "Edit-2509"),
    ("qwen_image", ["Qwen-Image-Edit-2511/lora", "qwen_image_edit"], "qwen_image", "Edit-2511"),
    ("qwen_image", ["qwen_image_edit_plus"], "qwen_image", "Edit-2509"),
    ("qwen_image", ["Qwen-Image-Layered/lora", "qwen_image_layered"], "qwen_image", "Layered"),
    ("qwen_image", ["Qwen-Image/lora", "qwen_image"], "qwen_image", None),
])
def test_metadata_strings_name_the_release(arch_id, values, named, label):
    found = variant_from_metadata(arch_id, values)
    assert (found.label if found else None) == label
    assert {arch_from_metadata_string(v) for v in values} == {named}


@pytest.mark.parametrize("trainer", sorted(KONTEXT))
def test_a_kontext_lora_is_flux1_kontext_without_a_mismatch(trainer):
    det = kontext_lora(trainer).detection
    assert (det.arch, det.arch_variant, det.arch_name, det.metadata_arch, det.warnings) == \
        ("flux", "Kontext", "Flux.1 Kontext", "flux", [])


def test_guidance_in_says_dev_but_never_unsays_kontext():
    """Schnell has no guidance_in; Kontext [dev] has, so a Kontext LoRA that trains it stays Kontext."""
    out, fan_in = layout_for("flux").shapes["diffusion_model.guidance_in.in_layer.weight"]
    guidance = {"lora_unet_guidance_in_in_layer.lora_down.weight": torch.zeros(2, fan_in),
                "lora_unet_guidance_in_in_layer.lora_up.weight": torch.zeros(out, 2)}
    tensors = {**flux_part(), **guidance}
    labels = {claim: Lora.from_state_dict(tensors, {"modelspec.architecture": claim}).detection.arch_variant
              for claim in ("flux-1-schnell/lora", "flux-1-kontext-dev/lora", "flux-1/lora")}
    assert labels == {"flux-1-schnell/lora": "dev", "flux-1-kontext-dev/lora": "Kontext", "flux-1/lora": "dev"}


def test_inspect_names_kontext(tmp):
    lo = kontext_lora("aitoolkit")
    path = save_tensors(os.path.join(tmp, "k.safetensors"), lo.source.tensors, lo.metadata)
    s = summarize(path)
    assert (s.arch, s.arch_name, s.arch_variant) == ("flux", "Flux.1 Kontext", "Kontext")
    assert "base model: Flux.1 Kontext" in "\n".join(s.text_lines())
    assert s.verdict().startswith("LoRA for Flux.1 Kontext: ")
    assert "arch_mismatch" not in {w.code for w in s.warnings}
    assert s.to_dict()["arch"]["variant"] == "Kontext"


def _claims(metadata):
    return metadata["ss_base_model_version"], metadata["modelspec.architecture"]


def test_merge_resize_and_convert_write_kontext():
    a, b = kontext_lora("musubi", seed=1), kontext_lora("aitoolkit", seed=2)
    dev = Lora.from_state_dict(flux_part(seed=3), fixture("loras", "kohya_flux_lora")["metadata"])
    assert dev.detection.arch_variant == "dev"
    unnamed = Lora.from_state_dict(flux_part(seed=4))
    written = ("flux_kontext", "flux-1-kontext-dev/lora")
    both = merge([MergeInput(a), MergeInput(b)], "concat", dtype=F32)
    with_unnamed = merge([MergeInput(a), MergeInput(unnamed)], "concat", dtype=F32)
    assert _claims(both.metadata) == _claims(with_unnamed.metadata) == written
    assert Lora.from_state_dict(both.tensors, both.metadata).detection.arch_name == "Flux.1 Kontext"
    mixed = merge([MergeInput(a), MergeInput(dev)], "concat", dtype=F32)
    assert _claims(mixed.metadata) == ("flux1", "flux-1-dev/lora")  # two releases: the architecture's strings
    resized = resize(MergeInput(a), RankRule("fixed", 1), dtype=F32)
    assert _claims(resized.metadata) == written
    assert _claims(convert(a, title="k").metadata) == written


def test_convert_file_keeps_the_source_strings(tmp):
    lo = kontext_lora("aitoolkit")
    path = save_tensors(os.path.join(tmp, "k.safetensors"), lo.source.tensors, lo.metadata)
    result = convert_file(path)
    assert result.metadata["ss_base_model_version"] == "flux.1_kontext"
    assert carried_metadata(read_header(path).metadata).items() <= result.metadata.items()
    assert Lora.from_state_dict(result.tensors, result.metadata).detection.arch_variant == "Kontext"


def test_library_offers_kontext_and_dev_loras_for_a_flux_model(tmp):
    folder = os.path.join(tmp, "loras")
    kontext = kontext_lora("musubi")
    dev = Lora.from_state_dict(flux_part(seed=3), fixture("loras", "kohya_flux_lora")["metadata"])
    save_tensors(os.path.join(folder, "kontext.safetensors"), kontext.source.tensors, kontext.metadata)
    save_tensors(os.path.join(folder, "dev.safetensors"), dev.source.tensors, dev.metadata)
    assert "flux" in fitting_archs(kontext.detection)
    with Library(os.path.join(tmp, "index", "library.sqlite")) as lib:
        lib.scan([folder])
        by_name = {e.name: e for e in lib.entries(model_arch="flux")}
        assert sorted(by_name) == ["dev.safetensors", "kontext.safetensors"]
        assert (by_name["kontext.safetensors"].facts["arch_name"], by_name["kontext.safetensors"].facts["variant"]) \
            == ("Flux.1 Kontext", "Kontext")


#: musubi-tuner's strings for each Qwen-Image release -> the name reported
QWEN = {"Qwen-Image-Edit/lora": "Qwen-Image-Edit", "Qwen-Image-Edit-Plus/lora": "Qwen-Image-Edit-2509",
        "Qwen-Image-Edit-2511/lora": "Qwen-Image-Edit-2511"}


def qwen_lora(spec, seed=0):
    """The musubi-tuner Qwen-Image fixture's first block, with the metadata of the release ``spec`` names."""
    tensors = {k: v for k, v in fixture_tensors("musubi_qwen_image_lora", rank=2, seed=seed, dtype=F32).items()
               if k.startswith("lora_unet_transformer_blocks_0_")}
    metadata = {**fixture("loras", "musubi_qwen_image_lora")["metadata"], "modelspec.architecture": spec,
                "ss_base_model_version": "qwen_image_edit"}
    return Lora.from_state_dict(tensors, metadata)


@pytest.mark.parametrize("spec", sorted(QWEN))
def test_qwen_image_edit_releases_are_named_inspected_and_written(spec, tmp):
    lo = qwen_lora(spec)
    det = lo.detection
    assert (det.arch, det.arch_name, det.metadata_arch, det.format, det.warnings) == \
        ("qwen_image", QWEN[spec], "qwen_image", "musubi", [])
    path = save_tensors(os.path.join(tmp, "q.safetensors"), lo.source.tensors, lo.metadata)
    s = summarize(path)
    assert f"base model: {QWEN[spec]}" in "\n".join(s.text_lines()) and s.verdict().startswith(f"LoRA for {QWEN[spec]}: ")
    assert "qwen_image" in fitting_archs(det)
    for result in (resize(MergeInput(lo), RankRule("fixed", 1), dtype=F32), convert(lo, title="q"),
                   merge([MergeInput(lo), MergeInput(qwen_lora(spec, seed=1))], "concat", dtype=F32)):
        assert _claims(result.metadata) == ("qwen_image_edit", spec)
        assert Lora.from_state_dict(result.tensors, result.metadata).detection.arch_name == QWEN[spec]
    two = merge([MergeInput(qwen_lora("Qwen-Image-Edit/lora")), MergeInput(qwen_lora("Qwen-Image-Edit-2511/lora"))],
                "concat", dtype=F32)
    assert _claims(two.metadata) == ("qwen_image", "Qwen-Image/lora")
