"""kohya split_qkv Flux LoRAs in the real ComfyUI: 'as loaded' equals core's LoraLoader bit for bit,
'as trained' changes each fused weight by the ΔW kohya trained (× its number of parts)."""
import os

import torch

from loralab_testkit import fit_fixture_to_layout, fixture
from loralab.files.safetensors import save_tensors

from host.test_loader import _assert_changed_by, _assert_same_weights, _core, _entry_deltas, _layout, _loaded, _patched
from host.test_loader import models  # noqa: F401  (the module's fixture)

PART_RANK = 2


def _split_file(host, mp):
    """kohya_flux_lora fitted to the tiny Flux, its fused qkv and linear1 modules rebuilt as kohya's
    split_qkv state_dict writes them (stacked downs, block-diagonal ups), with that fixture's metadata."""
    layout = _layout(host, mp)
    part_rows = host.module("loralab.formats.split_qkv").part_rows
    tensors = fit_fixture_to_layout("kohya_flux_lora", layout, rank=PART_RANK, seed=5)
    g = torch.Generator().manual_seed(6)
    split = {}
    plain = host.module("loralab.lora").Lora.from_state_dict(tensors, {}, layout)
    for m in plain.mapped():
        module, key = m.entry.module, m.entry.keys["up"]
        rows = part_rows(m.target.key, layout.shapes[m.target.key])
        if rows is None:
            continue
        down = tensors[f"{module}.lora_down.weight"]
        downs = [(torch.randn(PART_RANK, down.shape[1], generator=g) * 0.05).to(down.dtype) for _ in rows]
        up = torch.zeros(sum(rows), PART_RANK * len(rows), dtype=down.dtype)
        start = 0
        for i, n in enumerate(rows):
            up[start:start + n, i * PART_RANK:(i + 1) * PART_RANK] = torch.randn(n, PART_RANK, generator=g) * 0.05
            start += n
        tensors[f"{module}.lora_down.weight"], tensors[key] = torch.cat(downs), up
        split[module] = len(rows)
    assert sorted(set(split.values())) == [3, 4], "the tiny Flux has fused qkv and linear1 weights"
    metadata = dict(fixture("loras", "kohya_flux_split_qkv_lora")["metadata"], ss_network_dim=str(PART_RANK))
    name = "loader_kohya_flux_split_qkv.safetensors"
    path = os.path.join(host.folder("loras"), name)
    if not os.path.exists(path):
        save_tensors(path, tensors, metadata)
    return name, tensors, metadata, split


def _apply(host, mp, name, split_qkv):
    return host.module("nodes.loader").apply_lora(mp, None, name, 1.0, 1.0, "", 1.0, 1.0, 0, ("split", 0), split_qkv)


def test_as_loaded_equals_core_and_as_trained_gives_the_trained_delta(host, models):  # noqa: F811
    mp = models("flux_micro")
    layout = _layout(host, mp)
    name, tensors, metadata, split = _split_file(host, mp)
    core, _ = _core(host, mp, None, name)
    ours, _, info = _apply(host, mp, name, "as loaded")
    _assert_same_weights(core, ours)
    assert f"kohya split_qkv file: {len(split)} fused modules get 1/3 or 1/4" in info

    base = _patched(mp)
    lora = host.module("loralab.lora").Lora.from_state_dict(tensors, metadata, layout)
    assert lora.split_qkv(verify=True) == split
    factor = {}
    for m in lora.mapped():
        factor[m.target.key] = split.get(m.entry.module, 1)
    expected = {}
    for key, _block, rows, d in _entry_deltas(host, tensors, layout):
        expected.setdefault(key, torch.zeros(layout.shapes[key], dtype=torch.float64))[rows] += factor[key] * d
    assert {k for k, f in factor.items() if f > 1}, "some weight gets the correction"
    ours, _, info = _apply(host, mp, name, "as trained")
    _assert_changed_by(base, _loaded(ours), expected)
    assert f"split_qkv as trained: {len(split)} fused modules at 3× and 4×" in info


def test_the_node_offers_the_choice_as_an_input(host):
    loader = host.module("nodes.loader").LoRALabLoader
    schema = loader.define_schema()
    (inp,) = [i for i in schema.inputs if i.id == "split_qkv"]
    assert inp.options == ["as loaded", "as trained"] and inp.default == "as loaded"
