"""The kohya writer: names as kohya writes them, exact fusing of split targets, true metadata."""
import hashlib
import os
import struct

import pytest
import torch

from loralab.lora import Lora
from loralab.formats.writer import kohya_tensors, lora_metadata, network_facts, save_lora
from loralab.files.safetensors import read_header
from loralab_testkit import fixture, fixture_tensors

D = torch.float64


def _probe(adapter, probe):
    """ΔW @ probe from the factors (exact, without building ΔW)."""
    b, a = adapter.low_rank(D)
    return b @ (a @ probe)


def _adapters(lora):
    return [(m.target, lora.adapter(m.entry)) for m in lora.mapped()]


@pytest.mark.parametrize("name", ["kohya_sd15_lora", "kohya_sdxl_lora", "kohya_flux_lora_with_te1",
                                  "lycoris_sd15_loha", "lycoris_sd15_lokr", "lycoris_sd15_locon_dora"])
def test_kohya_and_lycoris_files_round_trip_to_their_own_names(name):
    tensors = fixture_tensors(name, rank=2)
    lora = Lora.from_state_dict(tensors)
    out = kohya_tensors(_adapters(lora), lora.layout)
    assert set(out) == set(tensors)
    for k, v in out.items():
        assert v.shape == tensors[k].shape, k
        assert torch.equal(v.to(tensors[k].dtype), tensors[k]), k


def test_comfyui_trainer_conv_loras_become_kohya_4d():
    lora = Lora.from_state_dict(fixture_tensors("comfyui_trainer_sd15_lora", rank=2))
    out = kohya_tensors(_adapters(lora), lora.layout)
    assert out["lora_unet_conv_in.lora_down.weight"].shape == (2, 4, 3, 3)
    assert out["lora_unet_conv_in.lora_up.weight"].shape == (320, 2, 1, 1)
    assert "lora_unet_conv_in.diff_b" in out
    again = Lora.from_state_dict(out)
    assert not list(again.unmapped())
    before = {m.target.key: lora.adapter(m.entry) for m in lora.mapped()}
    g = torch.Generator().manual_seed(0)
    for m in again.mapped():
        new, old = again.adapter(m.entry), before[m.target.key]
        if m.entry.kind == "lora":
            probe = torch.randn(new.in_numel, 3, generator=g, dtype=D)
            assert torch.allclose(_probe(new, probe), _probe(old, probe)), m.target.key
        else:
            assert torch.equal(new.diff, old.diff)


def test_aitoolkit_flux_split_qkv_fuses_exactly_into_kohya_modules():
    lora = Lora.from_state_dict(fixture_tensors("aitoolkit_flux_lora", rank=2, dtype=torch.float32))
    out = kohya_tensors(_adapters(lora), lora.layout)
    again = Lora.from_state_dict(out)
    assert again.detection.format == "kohya" and not list(again.unmapped())
    # reference: every piece's ΔW placed in its rows of the fused weight, seen through a random probe
    g = torch.Generator().manual_seed(0)
    probes = {k: torch.randn(s[1], 3, generator=g, dtype=D) for k, s in lora.layout.shapes.items() if len(s) == 2}
    ref = {}
    for m in lora.mapped():
        shape = lora.layout.shapes[m.target.key]
        full = ref.setdefault(m.target.key, torch.zeros(shape[0], 3, dtype=D))
        start, length = m.target.rows or (0, shape[0])
        full[start:start + length] += _probe(lora.adapter(m.entry), probes[m.target.key])
    got = {m.target.key: _probe(again.adapter(m.entry), probes[m.target.key]) for m in again.mapped()}
    assert set(got) == set(ref)
    for k in ref:
        assert torch.allclose(got[k], ref[k], atol=1e-9), k
    qkv = "lora_unet_single_blocks_0_linear1"
    assert out[f"{qkv}.lora_down.weight"].shape == (8, 3072)  # q, k, v and proj_mlp: 4 pieces of rank 2
    assert network_facts(out)[1] == "Dynamic"  # 8 on fused modules, 2 elsewhere: the truth, not one number


def test_metadata_is_all_strings_and_true(tmp):
    lora = Lora.from_state_dict(fixture_tensors("kohya_sdxl_lora", rank=2))
    items = _adapters(lora)
    tensors = kohya_tensors(items, lora.layout)
    meta = lora_metadata("sdxl", tensors, title="my lora", resolution=(1024, 1024), prediction_type="epsilon",
                         trigger_phrase="ohwx", extra={"ss_steps": 100})
    assert all(isinstance(v, str) for v in meta.values())
    assert meta["ss_network_dim"] == "2" and meta["ss_network_alpha"] == "16.0"
    assert meta["ss_base_model_version"] == "sdxl_base_v1-0"
    assert meta["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert meta["ss_resolution"] == "(1024, 1024)" and meta["modelspec.resolution"] == "1024x1024"
    assert meta["ss_steps"] == "100"
    path = save_lora(os.path.join(tmp, "x.safetensors"), items, lora.layout, meta, dtype=torch.float16)
    header = read_header(path)
    assert header.metadata == meta
    assert {t.dtype for t in header.tensors.values()} == {"F16"}
    again = Lora.open(path)
    assert again.detection.arch == "sdxl" and again.detection.format == "kohya"
    assert not list(again.unmapped())
    with pytest.raises(Exception):
        save_lora(path, items, lora.layout, meta)


def test_lycoris_network_module():
    tensors = fixture_tensors("lycoris_sd15_loha", rank=2)
    assert network_facts(tensors) == ("lycoris.kohya", "2", "4.0")
    assert fixture("loras", "lycoris_sd15_loha")["metadata"]["ss_network_module"] == "lycoris.kohya"


@pytest.mark.parametrize("header_pad", [0, 0x110000], ids=["small-header", "header-past-1MiB"])
def test_saved_files_carry_their_own_hashes(tmp, header_pad):
    from loralab.files.hashes import file_hashes
    from loralab.files.safetensors import SafetensorsFile
    from loralab.formats.writer import save_with_hashes
    g = torch.Generator().manual_seed(0)
    tensors = {"lora_unet_x.lora_down.weight": torch.randn(8, 40000, generator=g),  # 1.28 MB: a real legacy window
               "lora_unet_x.lora_up.weight": torch.randn(320, 8, generator=g), "lora_unet_x.alpha": torch.tensor(8.0)}
    # stale hashes of some input file, which the save must replace or drop
    meta = {"ss_network_dim": "8", "pad": "x" * header_pad, "sshs_model_hash": "ab" * 32, "sshs_legacy_hash": "12345678",
            "modelspec.hash_sha256": "0x" + "cd" * 32}
    path = save_with_hashes(os.path.join(tmp, f"h{header_pad}.safetensors"), tensors, meta)
    h = file_hashes(path)
    stored = SafetensorsFile(path).metadata
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert h.addnet == hashlib.sha256(raw[8 + n:]).hexdigest()
    assert stored["sshs_model_hash"] == h.addnet and h.addnet_matches
    assert stored["modelspec.hash_sha256"] == "0x" + h.addnet and h.spec_matches
    if header_pad:  # the legacy window holds header bytes: no value could equal the file's
        assert "sshs_legacy_hash" not in stored
    else:
        assert stored["sshs_legacy_hash"] == h.legacy and h.legacy_matches
        assert h.legacy != hashlib.sha256(b"").hexdigest()[:8]
    assert not [f for f in os.listdir(tmp) if f.endswith(".loralab-tmp")]  # no spool or temp is left


def test_saving_with_hashes_overwrites_only_when_asked(tmp):
    from loralab.errors import FileExistsRefusedError
    from loralab.files.hashes import file_hashes
    from loralab.formats.writer import save_with_hashes
    path = os.path.join(tmp, "o.safetensors")
    save_with_hashes(path, {"a.alpha": torch.tensor(1.0)}, {})
    with pytest.raises(FileExistsRefusedError):
        save_with_hashes(path, {"a.alpha": torch.tensor(2.0)}, {})
    save_with_hashes(path, {"a.alpha": torch.tensor(2.0)}, {}, overwrite=True)
    h = file_hashes(path)
    assert h.addnet == hashlib.sha256(struct.pack("<f", 2.0)).hexdigest() and h.addnet_matches and h.spec_matches
