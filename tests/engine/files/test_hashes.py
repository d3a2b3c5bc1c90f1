"""Hashes against reference computations, and against the sshs_model_hash kohya, LyCORIS and
ai-toolkit stored in the fixtures' metadata (computed by the trainers over zero-filled tensors with
the fixture's exact keys, shapes and dtypes, alphas keeping their values, saved by safetensors)."""
import hashlib
import os
import struct

import pytest
import safetensors.torch
import torch

from loralab.files import hashes as hashes_mod
from loralab.files.hashes import file_hashes
from loralab.ops.inspect import inspect_lora
from loralab.files.safetensors import DTYPES, save_tensors
from loralab_testkit import fixture, materialize

#: fixtures whose metadata holds a trainer-computed sshs_model_hash
STORED = ["kohya_sd15_lora", "kohya_sdxl_lora", "kohya_flux_lora", "kohya_flux_lora_with_te1",
          "lycoris_sd15_loha", "lycoris_sd15_lokr", "lycoris_sd15_locon_dora", "aitoolkit_flux_lora"]


def zero_filled(name):
    d = fixture("loras", name)
    scalars = d.get("scalar_values", {})
    out = {}
    for key, info in d["tensors"].items():
        dtype = DTYPES[info["dtype"]][1]
        if key in scalars:
            out[key] = torch.tensor(scalars[key]).to(dtype).reshape(info["shape"])
        else:
            out[key] = torch.zeros(info["shape"], dtype=dtype)
    return out


def metadata_of(name):
    if name == "aitoolkit_flux_lora":  # its metadata fixture holds the hashes ai-toolkit computed
        return fixture("metadata", "aitoolkit_flux")["metadata"]
    return fixture("loras", name)["metadata"]


def reference(path):
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    return (hashlib.sha256(raw).hexdigest(), hashlib.sha256(raw[8 + n:]).hexdigest(),
            hashlib.sha256(raw[0x100000:0x110000]).hexdigest()[:8])


def test_hashes_equal_reference_computations(tmp, monkeypatch):
    path = materialize("kohya_sd15_lora", os.path.join(tmp, "k.safetensors"), rank=4)
    monkeypatch.setattr(hashes_mod, "CHUNK", 4096 + 17)  # chunks that straddle the header and the legacy window
    h = file_hashes(path)
    sha, addnet, legacy = reference(path)
    assert (h.sha256, h.addnet, h.legacy) == (sha, addnet, legacy)
    assert (h.autov2, h.autov3) == (sha[:10], addnet[:12])
    assert h.stored_addnet == "1e17e30bf2a8e35a1593ac7402025aac6b5629be2a9795907554a82e9695b74f"
    assert h.addnet_matches is False  # random values, not what kohya saved


@pytest.mark.parametrize("name", STORED)
def test_hashes_match_what_the_trainer_stored(name, tmp):
    """Saved as the trainers hash it (ss_* metadata only, which only the legacy hash sees): our
    addnet hash is their sshs_model_hash, our legacy hash their sshs_legacy_hash (kohya; in the
    SDXL fixture the 64 KiB at 1 MiB hold alphas, so that hash is not one of zeros)."""
    meta = metadata_of(name)
    path = os.path.join(tmp, name + ".safetensors")
    ss_only = {k: v for k, v in meta.items() if k.startswith("ss_")}
    safetensors.torch.save_file(zero_filled(name), path, metadata=ss_only)
    h = file_hashes(path)
    assert h.addnet == meta["sshs_model_hash"].lower().removeprefix("0x")
    if name.startswith("kohya"):
        assert h.legacy == meta["sshs_legacy_hash"]


def test_stored_hash_is_compared(tmp):
    name = "kohya_sd15_lora"
    path = os.path.join(tmp, name + ".safetensors")
    safetensors.torch.save_file(zero_filled(name), path, metadata=metadata_of(name))
    h = file_hashes(path)
    assert h.stored_addnet == metadata_of(name)["sshs_model_hash"] and h.addnet_matches is True
    assert h.to_dict()["addnet_matches"] is True
    text = inspect_lora(path, blocks=False, hashes=True).to_text()
    assert f"AutoV3 {h.addnet[:12]} (matches sshs_model_hash)" in text and f"AutoV2 {h.sha256[:10]}" in text


def test_metadata_edits_change_sha256_not_addnet(tmp):
    t = {"a.lora_up.weight": torch.randn(8, 2), "a.lora_down.weight": torch.randn(2, 8)}
    one = file_hashes(save_tensors(os.path.join(tmp, "one.safetensors"), t, {"ss_output_name": "x"}))
    two = file_hashes(save_tensors(os.path.join(tmp, "two.safetensors"), t, {"ss_output_name": "a longer name"}))
    assert one.addnet == two.addnet and one.sha256 != two.sha256
    assert one.stored_addnet is None and one.addnet_matches is None


def test_cache_follows_size_and_mtime(tmp, monkeypatch):
    path = os.path.join(tmp, "c.safetensors")
    save_tensors(path, {"x": torch.zeros(4)})
    calls = []
    real = hashes_mod._compute
    monkeypatch.setattr(hashes_mod, "_compute", lambda *a: calls.append(a) or real(*a))
    first = file_hashes(path)
    assert file_hashes(path) is first and len(calls) == 1
    save_tensors(path, {"x": torch.ones(4)}, overwrite=True)
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    second = file_hashes(path)
    assert len(calls) == 2 and second.sha256 != first.sha256
