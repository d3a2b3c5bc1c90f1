"""Convert LoRA in the real ComfyUI: a file core drops becomes one core loads whole, with the ΔW our
loader applies from the original; a folder converts in one run; nothing is overwritten."""
import os
import shutil

import pytest

from loralab.files.safetensors import save_tensors
from loralab_testkit import fit_fixture_to_layout, fixture

from host.test_loader import _assert_changed_by, _core, _expected_deltas, _layout, _loaded, _patched
from host.test_loader import models  # noqa: F401  (the module's fixture)

NODE = "LoRALabConvert"


def _put(host, relative, tensors, metadata):
    path = os.path.join(host.folder("loras"), *relative.split("/"))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not os.path.exists(path):
        save_tensors(path, tensors, metadata)
    return relative


def _convert(host, lora_name, **kw):
    return host.call_node(NODE, lora_name=lora_name, **{"scope": "this LoRA", "output_folder": "converted",
                                                         "suffix": "", **kw})


def test_a_file_core_drops_converts_to_one_core_loads_with_the_same_delta(host, models):  # noqa: F811
    mp = models("flux_micro")
    layout = _layout(host, mp)
    tensors = fit_fixture_to_layout("xlabs_flux_lora", layout, rank=4, seed=8)
    name = _put(host, "convert_src/xlabs_flux.safetensors", tensors, fixture("loras", "xlabs_flux_lora")["metadata"])
    core, _ = _core(host, mp, None, name)
    assert not core.patches  # ComfyUI drops XLabs Flux files
    out = os.path.join(host.folder("loras"), "converted", "xlabs_flux.safetensors")
    if os.path.exists(out):
        os.remove(out)
    files, report = _convert(host, name, model=mp)
    assert files == "converted/xlabs_flux.safetensors" and "converted 1 of 1" in report
    base = _patched(mp)
    core, _ = _core(host, mp, None, files, sm=0.8)
    assert core.patches, "core loads the converted file"
    _assert_changed_by(base, _loaded(core), _expected_deltas(host, tensors, layout, lambda b: 0.8))
    files, report = _convert(host, name, model=mp)
    assert files == "" and "left as it is, loras/converted/xlabs_flux.safetensors exists" in report


def test_every_lora_of_a_folder_in_one_run_and_a_broken_one_reported(host):
    folder = os.path.join(host.folder("loras"), "convert_batch")
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(os.path.join(host.folder("loras"), "batch_out"), ignore_errors=True)
    from loralab.layouts import layout_for
    for i, fixture_name in enumerate(("kohya_sd15_lora", "xlabs_flux_lora")):
        tensors = fit_fixture_to_layout(fixture_name, layout_for("sd1" if "sd15" in fixture_name else "flux"),
                                        rank=2, seed=i)
        _put(host, f"convert_batch/{fixture_name}.safetensors", tensors, fixture("loras", fixture_name)["metadata"])
    with open(os.path.join(folder, "broken.safetensors"), "wb") as f:
        f.write(b"\x00" * 16)
    files, report = _convert(host, "convert_batch/kohya_sd15_lora.safetensors", scope="every LoRA in its folder",
                             output_folder="batch_out", suffix="_comfy")
    assert files.splitlines() == ["batch_out/kohya_sd15_lora_comfy.safetensors",
                                  "batch_out/xlabs_flux_lora_comfy.safetensors"]
    assert "converted 2 of 3" in report and "convert_batch/broken.safetensors: not converted:" in report


@pytest.mark.parametrize("folder", ["../outside", "/abs", ""])
def test_an_output_folder_outside_loras_is_refused(host, folder):
    with pytest.raises(host.module("loralab.errors").LoRALabError):  # the pack's own class, as ComfyUI loaded it
        _convert(host, "convert_src/xlabs_flux.safetensors", output_folder=folder)
