"""Which LoRAs the pack offers and reads in the real ComfyUI, and that nothing reruns unasked:

* every name ComfyUI's own listing of the loras folders holds works: a symlink to a file on another
  drive, a folder added as ComfyUI's extra_model_paths.yaml adds one;
* names that ComfyUI's combo menu would run as markup are left out of the pack's lists, with one
  warning that says how many and why;
* a merge prompt queued twice with nothing changed runs once (one file); a changed file runs it again.
"""
from __future__ import annotations

import copy
import json
import logging
import os

import pytest

from loralab_testkit import fit_fixture_to_layout
from loralab.files.safetensors import save_tensors

MODEL_FILE = "listing_sd15_micro.safetensors"


@pytest.fixture(scope="module")
def model(host, tiny_models):
    """An sd15_micro model file in diffusion_models/ and the MODEL loaded from it."""
    tiny_models.setup_comfy()
    path = os.path.join(host.folder("diffusion_models"), MODEL_FILE)
    if not os.path.exists(path):
        tiny_models.write_model("sd15_micro", path, dtype="fp32")
    return tiny_models.load_tiny_model(path)


def _lora(host, mp, path: str, seed: int) -> str:
    layout = host.module("nodes.host.models").model_layout(mp)
    save_tensors(path, fit_fixture_to_layout("kohya_sd15_lora", layout, rank=2, seed=seed), {}, overwrite=True)
    return path


def _checksum(host, loader: dict) -> dict:
    """Weight sums of the model after ``loader`` (node "2", fed by the tiny model loader "1")."""
    prompt = {"1": {"class_type": "TinyDiffusionModelLoader", "inputs": {"unet_name": MODEL_FILE}},
              "2": loader, "9": {"class_type": "ModelWeightChecksum", "inputs": {"model": ["2", 0]}}}
    ok, result, messages = host.run_prompt(prompt)
    assert ok, (result, messages)
    return json.loads(host.executor.history_result["outputs"]["9"]["text"][0])


def _loader(name: str) -> dict:
    return {"class_type": "LoRALabLoader",
            "inputs": {"model": ["1", 0], "lora_name": name, "strength_model": 0.8, "strength_clip": 1.0,
                       "block_weights": "", "a": 1.0, "b": 1.0, "seed": 0}}


def test_a_lora_linked_from_another_folder_is_listed_and_applied(host, model, tmp_path):
    """The symlink leads out of the loras folder (as a LoRA kept on another drive does): core's loader
    lists and applies it, and so does LoRA Lab's, with the same weights."""
    target = _lora(host, model, str(tmp_path / "on_another_drive.safetensors"), seed=11)
    os.symlink(target, os.path.join(host.folder("loras"), "listing_linked.safetensors"))
    assert "listing_linked.safetensors" in host.module("nodes.host.folders").lora_names()
    ours = _checksum(host, _loader("listing_linked.safetensors"))
    core = _checksum(host, {"class_type": "LoraLoaderModelOnly",
                            "inputs": {"model": ["1", 0], "lora_name": "listing_linked.safetensors",
                                       "strength_model": 0.8}})
    assert ours["num_patches"] == core["num_patches"] > 10
    assert (ours["sum"], ours["abs_sum"]) == (core["sum"], core["abs_sum"])


def test_a_lora_in_an_extra_models_folder_is_listed_and_applied(host, model, tmp_path):
    folder = tmp_path / "extra_loras"
    folder.mkdir()
    _lora(host, model, str(folder / "listing_extra.safetensors"), seed=12)
    host.folder_paths.add_model_folder_path("loras", str(folder))  # what extra_model_paths.yaml does
    try:
        assert "listing_extra.safetensors" in host.module("nodes.host.folders").lora_names()
        assert _checksum(host, _loader("listing_extra.safetensors"))["num_patches"] > 10
    finally:
        host.folder_paths.folder_names_and_paths["loras"][0].remove(str(folder))


def test_names_that_would_run_as_markup_are_not_listed_and_are_logged(host, model, caplog):
    folders = host.module("nodes.host.folders")
    hostile = '<img src=x onerror="alert(1)"> & co.safetensors'
    _lora(host, model, os.path.join(host.folder("loras"), hostile), seed=13)
    assert hostile in host.folder_paths.get_filename_list("loras")
    with caplog.at_level(logging.WARNING, logger="loralab"):
        names = folders.lora_names()
    assert hostile not in names and names
    warned = [r.getMessage() for r in caplog.records if r.name == "loralab"]
    assert len(warned) == 1 and "1 LoRA file(s) left out" in warned[0] and "markup" in warned[0], warned
    for node_id in ("LoRALabLoader", "LoRALabInspect", "LoRALabMerge"):  # nor offered by any node
        spec = host.nodes.NODE_CLASS_MAPPINGS[node_id].INPUT_TYPES()["required"]
        kind, opts = spec["lora_name" if "lora_name" in spec else "lora_name_1"][:2]
        assert hostile not in (kind if isinstance(kind, list) else opts["options"])
    with pytest.raises(host.module("loralab.errors").UnsafeNameError, match="markup"):
        folders.lora_path(hostile)
    os.remove(os.path.join(host.folder("loras"), hostile))


def test_the_same_merge_prompt_twice_writes_one_file(host, model):
    """Nothing changed: ComfyUI serves the second run from its cache (no seed that changes by itself,
    the files' size and time unchanged); a rewritten input file runs the merge again."""
    loras = host.folder("loras")
    os.makedirs(os.path.join(loras, "rerun"), exist_ok=True)
    first = _lora(host, model, os.path.join(loras, "rerun", "a.safetensors"), seed=14)
    _lora(host, model, os.path.join(loras, "rerun", "b.safetensors"), seed=15)
    merge = {"lora_name_1": "rerun/a.safetensors", "weight_1": 1.0, "block_weights_1": "",
             "lora_name_2": "rerun/b.safetensors", "weight_2": 0.5, "block_weights_2": "", "method": "concat",
             "rank_mode": "fixed", "rank": 4, "threshold": 0.95, "density": 0.5, "seed": 0,
             "output_name": "rerun/merged", "dtype": "fp32"}
    spec = host.nodes.NODE_CLASS_MAPPINGS["LoRALabMerge"].INPUT_TYPES()["required"]["seed"][1]
    assert spec.get("control_after_generate") is False  # the frontend adds no "randomize" to it
    prompt = {"1": {"class_type": "LoRALabMerge", "inputs": merge}}
    for _ in range(2):  # each queued prompt is a fresh copy, as the server parses each one anew
        ok, result, messages = host.run_prompt(copy.deepcopy(prompt))
        assert ok, (result, messages)
    assert sorted(os.listdir(os.path.join(loras, "rerun"))) == ["a.safetensors", "b.safetensors", "merged.safetensors"]
    _lora(host, model, first, seed=16)  # the file changes (new content, size or time): merged again
    os.utime(first, ns=(os.stat(first).st_atime_ns, os.stat(first).st_mtime_ns + 10**9))
    ok, result, messages = host.run_prompt(copy.deepcopy(prompt))
    assert ok, (result, messages)
    assert "merged_00001.safetensors" in os.listdir(os.path.join(loras, "rerun"))
