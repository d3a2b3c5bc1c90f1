"""Helpers of the DiT family tests in the real ComfyUI (Wan/Qwen-Image, Chroma/HunyuanVideo/Lumina 2/
HiDream, Flux.2, Z-Image): tiny models built with ComfyUI's own classes, fixture LoRAs fitted to them
and saved once into the host's loras folder, our loader's result, the weights a patcher loads, and
the check that a patched model differs from its base by exactly the engine's ΔW of each weighted block."""
from __future__ import annotations

import os
from typing import Callable, NamedTuple

import torch

from host.dit_configs import host_dit_config
from loralab.files.safetensors import save_tensors
from loralab_testkit import fit_fixture_to_layout, fixture


def comfy_model(config_class: str, cfg: dict, device: str | None = None):
    """ComfyUI's model of ``comfy.supported_models.<config_class>`` for ``cfg`` in float32; with
    ``device="meta"`` built on the meta device (shapes only)."""
    import comfy.supported_models as sm
    mc = getattr(sm, config_class)(host_dit_config(cfg))
    mc.set_inference_dtype(torch.float32, None)
    if device == "meta":
        with torch.device("meta"):
            return mc.get_model({}, "", device=torch.device("meta"))
    return mc.get_model({}, "")


def seeded_patcher(model):
    """A ModelPatcher of ``model`` with its diffusion model's weights set to seeded random values."""
    import comfy.model_management as mm
    import comfy.model_patcher
    g = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v.shape, generator=g) * 0.05 for k, v in model.diffusion_model.state_dict().items()}
    model.diffusion_model.load_state_dict(sd, strict=True)
    return comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                            offload_device=mm.unet_offload_device())


def tiny_patchers(build: Callable[[str], object]) -> Callable[[str], object]:
    """variant -> a seeded ModelPatcher of ``build(variant)``, each variant built once."""
    built = {}

    def get(variant: str):
        if variant not in built:
            built[variant] = seeded_patcher(build(variant))
        return built[variant]
    return get


def layout_of(host, mp):
    """The layout the pack reads from the ModelPatcher ``mp``."""
    return host.module("nodes.host.models").model_layout(mp)


def save_once(host, name: str, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """``name``, saved with ``tensors`` into the host's loras folder unless it is there already."""
    path = os.path.join(host.folder("loras"), name)
    if not os.path.exists(path):
        save_tensors(path, tensors, metadata)
    return name


def fitted(host, mp, name: str, prefix: str, seed: int = 0) -> tuple[str, dict[str, torch.Tensor]]:
    """(file name, tensors) of the fixture LoRA ``name`` fitted at rank 4 to ``mp``'s layout, saved
    with the fixture's metadata as ``<prefix>_<name>_<seed>_<count>.safetensors``."""
    tensors = fit_fixture_to_layout(name, layout_of(host, mp), rank=4, seed=seed)
    file_name = f"{prefix}_{name}_{seed}_{len(tensors)}.safetensors"
    return save_once(host, file_name, tensors, fixture("loras", name).get("metadata", {})), tensors


def apply_ours(host, mp, file_name: str, sm: float = 1.0, spec: str = ""):
    """Our loader's (model, clip, info) for ``file_name`` on ``mp`` at strength ``sm`` with block spec ``spec``."""
    return host.module("nodes.loader").apply_lora(mp, None, file_name, sm, 1.0, spec, 1.0, 1.0, 0, ("test", 0))


def loaded_weights(patcher) -> dict[str, torch.Tensor]:
    """The model's state dict as ComfyUI loads ``patcher`` (its patches applied), copied."""
    import comfy.model_management
    with torch.no_grad():
        comfy.model_management.load_models_gpu([patcher], force_full_load=True)
    return {k: v.detach().clone() for k, v in patcher.model.state_dict().items()}


class Delta(NamedTuple):
    """One entry's ΔW of the whole weight ``key`` (float64): zero outside ``rows`` of a fused weight."""
    key: str
    rows: tuple[int, int] | None
    block: str
    delta: torch.Tensor


def entry_deltas(host, tensors: dict[str, torch.Tensor], layout) -> list[Delta]:
    """A Delta for every entry of ``tensors`` from the engine's adapter math: placed in its rows of a
    fused weight, halves swapped where diffusers orders them."""
    lora = host.module("loralab.lora").Lora.from_state_dict(tensors, {}, layout)
    block_of = host.module("loralab.blocks.map").block_of
    out = []
    for m in lora.mapped():
        shape = layout.shapes[m.target.key]
        full = torch.zeros(shape, dtype=torch.float64)
        start, count = m.target.rows or (0, shape[0])
        part = lora.adapter(m.entry).delta_flat(torch.float64).reshape(count, *shape[1:])
        if m.target.swap_halves:
            part = torch.cat(part.chunk(2, dim=0)[::-1])
        full[start:start + count] = part
        out.append(Delta(m.target.key, m.target.rows, block_of(m.target.key, layout.arch.family), full))
    return out


def assert_changed_by(base: dict[str, torch.Tensor], patched: dict[str, torch.Tensor], changes: list[Delta],
                      weight_of: Callable[[str], float]) -> None:
    """``patched`` is ``base`` plus ``weight_of(block)`` times each Delta, every other weight unchanged."""
    expected = {}
    for d in changes:
        if weight_of(d.block):
            expected[d.key] = expected.get(d.key, 0) + weight_of(d.block) * d.delta
    assert expected
    for k, v in base.items():
        if k in expected:
            err = float((patched[k].double() - v.double() - expected[k]).abs().max())
            assert err <= 2e-6 * max(1.0, float(v.abs().max())), f"{k}: off by {err}"
        else:
            assert torch.equal(patched[k], v), f"{k} changed but is not in a weighted block"


def assert_equals_core_and_adds(host, mp, file_name: str, sm: float, core_drops: set[str]):
    """At strength ``sm`` our loader applies all of the file and patches every key core's
    LoraLoaderModelOnly patches plus ``core_drops`` (not empty), and the weights core patches are bit
    for bit core's. Returns (core's patcher, our patcher)."""
    core = host.nodes.LoraLoaderModelOnly().load_lora_model_only(mp, file_name, sm)[0]
    ours, _, info = apply_ours(host, mp, file_name, sm=sm)
    assert "not applied" not in info
    assert set(core.patches) < set(ours.patches)
    assert set(ours.patches) - set(core.patches) == core_drops
    a, b = loaded_weights(core), loaded_weights(ours)
    assert [k for k in a if k not in core_drops and not torch.equal(a[k], b[k])] == []
    return core, ours


def assert_spec_weights(host, mp, base: dict[str, torch.Tensor], file_name: str, deltas: list[Delta], spec: str,
                        weight_of: Callable[[str], float], sm: float = 1.0) -> None:
    """Our loader with block-weight ``spec`` at strength ``sm`` applies all of the file and changes
    ``mp``'s weights (``base``) by ``weight_of(block)`` times each Delta, no other weight."""
    ours, _, info = apply_ours(host, mp, file_name, sm=sm, spec=spec)
    assert "not applied" not in info
    assert_changed_by(base, loaded_weights(ours), deltas, weight_of)


def assert_equals_core(host, mp, file_name: str, min_patches: int) -> None:
    """At strength 0.7 our loader patches the keys core's LoraLoaderModelOnly patches (at least
    ``min_patches``), applies all of the file, and loads bit for bit core's weights."""
    core = host.nodes.LoraLoaderModelOnly().load_lora_model_only(mp, file_name, 0.7)[0]
    patched, _, info = apply_ours(host, mp, file_name, sm=0.7)
    assert core.patches.keys() == patched.patches.keys() and len(patched.patches) >= min_patches
    assert "not applied" not in info
    a, b = loaded_weights(core), loaded_weights(patched)
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
