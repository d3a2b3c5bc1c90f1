"""Exports of LoRA Manager and Civitai, read offline: what they say about a model is attached to the
library's files with the same hashes (sha256, AutoV3, AutoV2); whatever else is in them, of any
shape, is ignored, and nothing is fetched."""
from __future__ import annotations

import json
import os

import pytest

from loralab.errors import LoRALabError
from loralab.library import Library
from loralab.library.imports import MAX_LIST, MAX_TEXT, parse_export, read_export
from loralab_testkit import materialize


@pytest.fixture
def hashed(tmp):
    """A library of two hashed files: {name: entry}."""
    folder = os.path.join(tmp, "loras")
    materialize("kohya_sdxl_lora", os.path.join(folder, "a.safetensors"), rank=2, seed=1)
    materialize("kohya_sd15_lora", os.path.join(folder, "b.safetensors"), rank=2, seed=2)
    lib = Library(os.path.join(tmp, "lib.sqlite"))
    lib.scan([folder])
    lib.hash_pending()
    yield lib, {e.name: e for e in lib.entries()}
    lib.close()


def lora_manager(sha256, **extra):
    """A ComfyUI LoRA Manager ``<name>.metadata.json`` as it writes one after fetching from Civitai."""
    return {"file_name": "a", "model_name": "Cinematic Light XL", "file_path": "/loras/a.safetensors",
            "size": 1234, "modified": 1700000000.0, "sha256": sha256, "base_model": "SDXL 1.0",
            "preview_url": "/loras/a.preview.png", "preview_nsfw_level": 0, "notes": "", "from_civitai": True,
            "tags": ["lighting"], "civitai": {"id": 111, "modelId": 22, "name": "v2.0", "baseModel": "SDXL 1.0",
                                              "trainedWords": ["cinematic light", "rim light"],
                                              "images": [{"url": "https://image.civitai.com/x/1.jpeg", "nsfwLevel": 1}],
                                              "model": {"name": "Cinematic Light", "type": "LORA"}},
            **extra}


def civitai_version(files, **extra):
    """A Civitai model-version document (GET /api/v1/model-versions/:id; Civitai Helper's .civitai.info)."""
    return {"id": 333, "modelId": 44, "name": "v1", "baseModel": "SD 1.5", "trainedWords": ["ohwx woman"],
            "model": {"name": "Ohwx Woman", "type": "LORA"}, "files": files,
            "images": [{"url": "https://image.civitai.com/y/2.jpeg"}], **extra}


def civitai_file(sha256=None, autov3=None, autov2=None, kind="Model"):
    hashes = {k: v for k, v in (("SHA256", sha256 and sha256.upper()), ("AutoV3", autov3 and autov3.upper()),
                                ("AutoV2", autov2 and autov2.upper()), ("CRC32", "ABCDEF12")) if v}
    return {"name": "file.safetensors", "type": kind, "sizeKB": 1.5, "hashes": hashes}


def test_lora_manager_metadata_is_attached_by_sha256(hashed, tmp):
    lib, by_name = hashed
    a = by_name["a.safetensors"]
    path = os.path.join(tmp, "a.metadata.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(lora_manager(a.sha256.upper()), f)
    assert lib.import_export(path) == (1, 1)
    got = {e.name: e for e in lib.entries()}
    assert got["b.safetensors"].imported is None
    imp = got["a.safetensors"].imported
    assert imp == {"source": "LoRA Manager", "name": "Cinematic Light XL", "version": "v2.0", "base_model": "SDXL 1.0",
                   "triggers": ["cinematic light", "rim light"],
                   "previews": ["/loras/a.preview.png", "https://image.civitai.com/x/1.jpeg"]}
    assert [e.name for e in lib.entries(query="rim light")] == ["a.safetensors"]  # imported words are searched
    assert [e.name for e in lib.entries(query="cinematic")] == ["a.safetensors"]


def test_civitai_versions_models_and_pages_are_attached_by_autov3_and_autov2(hashed, tmp):
    lib, by_name = hashed
    a, b = by_name["a.safetensors"], by_name["b.safetensors"]
    model = {"id": 44, "name": "Ohwx Woman", "type": "LORA",
             "modelVersions": [civitai_version([civitai_file(autov3=b.addnet[:12])])]}
    page = {"items": [{"id": 55, "name": "Other", "modelVersions": [
        civitai_version([civitai_file(autov2=a.sha256[:10])], name="v9", trainedWords=["other words"])]}],
        "metadata": {"nextCursor": "x"}}
    with open(os.path.join(tmp, "model.json"), "w", encoding="utf-8") as f:
        json.dump(model, f)
    with open(os.path.join(tmp, "page.json"), "w", encoding="utf-8") as f:
        json.dump(page, f)
    assert lib.import_export(os.path.join(tmp, "model.json")) == (1, 1)
    assert lib.import_export(os.path.join(tmp, "page.json")) == (1, 1)
    got = {e.name: e.imported for e in lib.entries()}
    assert got["b.safetensors"]["name"] == "Ohwx Woman" and got["b.safetensors"]["triggers"] == ["ohwx woman"]
    assert got["b.safetensors"]["source"] == "Civitai" and got["b.safetensors"]["base_model"] == "SD 1.5"
    assert got["a.safetensors"]["name"] == "Other" and got["a.safetensors"]["version"] == "v9"
    assert got["a.safetensors"]["previews"] == ["https://image.civitai.com/y/2.jpeg"]


def test_a_folder_of_exports_is_read_and_other_files_skipped(hashed, tmp):
    lib, by_name = hashed
    folder = os.path.join(tmp, "exports", "deeper")
    os.makedirs(folder)
    with open(os.path.join(folder, "b.civitai.info"), "w", encoding="utf-8") as f:
        json.dump(civitai_version([civitai_file(sha256=by_name["b.safetensors"].sha256)]), f)
    with open(os.path.join(folder, "a.metadata.json"), "w", encoding="utf-8") as f:
        json.dump(lora_manager(by_name["a.safetensors"].sha256), f)
    with open(os.path.join(folder, "notes.json"), "w", encoding="utf-8") as f:
        f.write("{not json")
    with open(os.path.join(folder, "readme.txt"), "w", encoding="utf-8") as f:
        f.write("ignored")
    assert lib.import_export(os.path.join(tmp, "exports")) == (2, 2)
    assert all(e.imported for e in lib.entries())


def test_a_later_import_replaces_an_earlier_one_for_the_same_hash(hashed, tmp):
    lib, by_name = hashed
    sha = by_name["a.safetensors"].sha256
    lib.import_models(parse_export(lora_manager(sha)))
    lib.import_models(parse_export(lora_manager(sha, model_name="Renamed")))
    assert {e.name: e.imported for e in lib.entries()}["a.safetensors"]["name"] == "Renamed"


def test_the_model_file_of_a_version_comes_first_and_each_file_is_a_model():
    sha = "ab" * 32
    doc = civitai_version([civitai_file(autov2="1234567890", kind="Training Data"), civitai_file(sha256=sha)])
    models = parse_export(doc)
    assert [m.hashes for m in models] == [{"sha256": sha}, {"autov2": "1234567890"}]
    # LoRA Manager: the file's own sha256, with the AutoV3 Civitai lists for that same file only
    lm = lora_manager(sha, civitai={"files": [civitai_file(sha256="cd" * 32, autov3="0" * 12),
                                              civitai_file(sha256=sha, autov3="1" * 12)]})
    assert parse_export(lm)[0].hashes == {"sha256": sha, "autov3": "1" * 12}


@pytest.mark.parametrize("doc", [
    None, 5, "text", [], {}, {"items": "no"}, {"files": [{"hashes": {"SHA256": "not hex"}}]},
    {"files": [{"hashes": {"SHA256": "ab" * 31}}]},  # too short for a sha256
    {"files": [{"hashes": ["SHA256"]}]}, {"files": [None, 3, "x"]}, {"modelVersions": [None, {"files": 7}]},
    {"sha256": 12, "model_name": "x"}, {"sha256": "zz" * 32, "file_name": "x"},
    [[[[[[[{"files": [{"hashes": {"SHA256": "ab" * 32}}]}]]]]]]],  # nested past what any export nests
])
def test_documents_of_other_shapes_give_no_models(doc):
    assert parse_export(doc) == []


def test_strangers_text_is_bounded_and_typed():
    doc = civitai_version([civitai_file(sha256="ef" * 32)], name=7, baseModel=["SDXL"],
                          trainedWords=["x" * 10_000, 3, None, {"a": 1}, "x" * 10_000, *[f"w{i}" for i in range(200)]],
                          images=[{"url": "<img src=x onerror=alert(1)>"}, "not an image", {"url": 5}],
                          model={"name": "\u202eevil"})
    (m,) = parse_export(doc)
    assert m.version == "7" and m.base_model is None and m.name == "\u202eevil"  # kept as text; shown via textContent
    assert m.triggers[0] == "x" * MAX_TEXT and m.triggers[1] == "3" and len(m.triggers) == MAX_LIST
    assert m.previews == ["<img src=x onerror=alert(1)>", "5"]


def test_unreadable_exports_name_their_file(tmp):
    bad = os.path.join(tmp, "bad.json")
    with open(bad, "wb") as f:
        f.write(b"\xff\xfe{")
    with pytest.raises(LoRALabError) as e:
        read_export(bad)
    assert e.value.path == bad and "UTF-8" in e.value.problem
    with open(bad, "w", encoding="utf-8") as f:
        f.write("[" * 100_000 + "]" * 100_000)
    with pytest.raises(LoRALabError) as e:
        read_export(bad)
    assert e.value.path == bad
    with pytest.raises(LoRALabError) as e:
        read_export(os.path.join(tmp, "missing.json"))
    assert "cannot be read" in e.value.problem
