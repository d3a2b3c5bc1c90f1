"""LoRA Loader (Block Weights), LoRA Stack and the Wan 2.2 pair loader: apply LoRAs with weights per
absolute block.

A block-weight spec is a preset name, an LBW vector or a readable spec (see
:mod:`..loralab.blocks.spec`); user presets are read at every run from
``<ComfyUI user directory>/loralab/block_presets.txt``.
"""
from __future__ import annotations

import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from ..loralab.blocks.spec import BlockWeights, load_presets, parse_block_weights
from ..loralab.errors import LoRALabError, SafetensorsError, SpecError
from ..loralab.files.safetensors import read_header
from ..loralab.formats.noise_pair import noise_role, partner
from ..loralab.formats.not_lora import looks_like
from ..loralab.layouts import ModelLayout
from ..loralab.lora import Lora
from ..loralab.ops.apply import plan_application
from . import common, stack_rows
from .host import folders, models
from .host.compat import HOST
from .host.patching import apply_plan

log = logging.getLogger("loralab")

#: how many (node, slot) file caches are kept; each holds the tensors of its last file, as core's loader does
CACHED_FILES = 16
#: how many model layouts are kept (one per distinct model config seen)
CACHED_LAYOUTS = 8

SPEC_TOOLTIP = ("Weight per absolute block: empty = all 1; a preset name (ALL, OUTALL, SDXL-OUTALL, FLUX-SINGLE, "
                "...); an LBW vector (SD 17/26, SDXL 12/20, Flux 57/61 values; tokens R, U, X, A, B); or "
                "readable items such as 'IN04-IN08=0.5, M00=1, OUT=0, D0-6=1, S=0.3, default=1'.")


MODEL_TIP = "the diffusion model to patch (from Load Checkpoint or Load Diffusion Model); SD1.x, SD2, SDXL, SD3 or Flux"
CLIP_TIP = ("the text encoder to patch with the LoRA's text-encoder part; leave it unconnected to patch the model "
            "only (the report counts the modules that skips)")


def user_presets_file() -> str:
    """Where users keep their own block-weight presets (LBW's ``NAME:values`` format)."""
    return os.path.join(folder_paths.get_user_directory(), "loralab", "block_presets.txt")


@dataclass
class _File:
    """One LoRA file's tensors and metadata, and its Lora mapped onto each model layout seen; a file
    that is no LoRA (``not_lora``: what it looks like) keeps no tensors."""

    path: str
    stamp: tuple[int, int] | None
    tensors: dict[str, torch.Tensor]
    metadata: dict[str, str]
    not_lora: str | None = None
    mapped: dict[str, Lora] = field(default_factory=dict)


_FILES: "OrderedDict[tuple[str, int], _File]" = OrderedDict()
_LAYOUTS: "OrderedDict[str, ModelLayout]" = OrderedDict()


def _read(cache_key: tuple[str, int], path: str) -> _File:
    """The file's tensors, from this node slot's cache while the file is unchanged."""
    stamp = folders.file_stamp(path)
    hit = _FILES.get(cache_key)
    if hit is not None and hit.path == path and hit.stamp == stamp:
        _FILES.move_to_end(cache_key)
        return hit
    _FILES.pop(cache_key, None)
    header = read_header(path)  # every malformed or hostile file stops here, with LoRA Lab's clear error
    kind = _not_a_lora(path, list(header.tensors))
    if kind is not None:  # a checkpoint picked as a LoRA can be gigabytes: none of it is loaded
        return _cache(cache_key, _File(path, stamp, {}, header.metadata, kind))
    try:  # then ComfyUI's own reader, as core's LoraLoader uses: the same tensors, bit for bit
        tensors = comfy.utils.load_torch_file(path, safe_load=True)
    except Exception as e:  # the file changed after its header was checked; the library's errors have no common type
        raise SafetensorsError(f"not a readable safetensors file ({e})", path=path,
                               hint="the file is corrupt or incomplete: download it again") from None
    return _cache(cache_key, _File(path, stamp, tensors, header.metadata))


def _cache(cache_key: tuple[str, int], loaded: _File) -> _File:
    _FILES[cache_key] = loaded
    while len(_FILES) > CACHED_FILES:
        _FILES.popitem(last=False)
    return loaded


def _not_a_lora(path: str, keys: list[str]) -> str | None:
    """What a file with no LoRA tensors looks like (a checkpoint, a VAE...), from its header; None for LoRAs."""
    if looks_like(keys) is None:
        return None
    with Lora.open(path) as probe:
        return probe.detection.not_lora


def _mapped(loaded: _File, layout: ModelLayout, label: str) -> Lora:
    """The file's Lora on a layout (for a file that is no LoRA, from its header: a plan needs no tensors of it)."""
    if loaded.not_lora is None:
        return Lora.from_state_dict(loaded.tensors, loaded.metadata, layout, label)
    with Lora.open(loaded.path, layout) as lora:
        return lora


def _layout(model: Any) -> tuple[str, ModelLayout] | None:
    """(cache key, layout) of a MODEL, None for architectures LoRA Lab has no layout for."""
    arch_id = models.model_arch(model)
    if arch_id is None:
        return None
    key = arch_id + json.dumps(model.model.model_config.unet_config, sort_keys=True, default=str)
    if key not in _LAYOUTS:
        _LAYOUTS[key] = models.model_layout(model)
        while len(_LAYOUTS) > CACHED_LAYOUTS:
            _LAYOUTS.popitem(last=False)
    return key, _LAYOUTS[key]


def _block_weights(layout: ModelLayout, spec: str, a: float, b: float, seed: int) -> BlockWeights:
    """A spec's weights on a model layout (the pack's presets and the user's, read now)."""
    return parse_block_weights(spec, layout.arch.id, a=a, b=b, seed=seed, layout=layout,
                               presets=load_presets([user_presets_file()]))


def check_block_weights(model: Any, spec: str, a: float, b: float, seed: int) -> None:
    """Raises the SpecError :func:`apply_lora` would raise for ``spec`` on this model (nothing for
    models LoRA Lab has no layout for: they are left unpatched)."""
    found = _layout(model)
    if found is not None:
        _block_weights(found[1], spec, a, b, seed)


def apply_lora(model: Any, clip: Any, lora_name: str, strength_model: float, strength_clip: float, spec: str,
               a: float, b: float, seed: int, cache_key: tuple[str, int],
               split_qkv: str = common.SPLIT_QKV[0]) -> tuple[Any, Any, str]:
    """Apply one LoRA with block weights: (model, clip, info); ``split_qkv``: see :data:`common.SPLIT_QKV`."""
    found = _layout(model)
    if found is None:
        name = models.model_name(model)
        info = (f"nothing applied: the model is {name}, which LoRA Lab has no layout for yet (use ComfyUI's "
                f"LoraLoader for this model)\nLoRA: {lora_name}")
        log.warning("LoRA Lab: %s", info.replace("\n", "; "))
        return model, clip, info
    layout_key, layout = found
    arch_id = layout.arch.id
    weights = _block_weights(layout, spec, a, b, seed)
    loaded = _read(cache_key, folders.picked_lora(lora_name))
    lora = loaded.mapped.get(layout_key)
    if lora is None:
        lora = loaded.mapped[layout_key] = _mapped(loaded, layout, lora_name)
    plan = plan_application(lora, weights, strength_model, strength_clip, model_arch=arch_id,
                            clip_connected=clip is not None, label=lora_name,
                            split_qkv_as_trained=split_qkv == "as trained", host=HOST.key_rules)
    model, clip = apply_plan(plan, loaded.tensors, model, clip)
    if plan.refused:
        log.warning("LoRA Lab: %s: nothing applied: %s (fix: %s)", lora_name, plan.refused.text, plan.refused.fix)
    return model, clip, plan.report()


def _fingerprint(*names: str) -> tuple:
    """Changes when a chosen LoRA file or the user preset file changes."""
    return (folders.file_stamp(user_presets_file()), *(folders.picked_stamp(n) for n in names))


def _node(cls: type[io.ComfyNode]) -> str:
    """The node's id in the graph (its file cache is kept per node, as core keeps one per node)."""
    return str(getattr(cls.hidden, "unique_id", None))


def _strength(name: str, tooltip: str) -> io.Float.Input:
    return io.Float.Input(name, default=1.0, min=-100.0, max=100.0, step=0.01, tooltip=tooltip)


def _spec(name: str) -> io.String.Input:
    return io.String.Input(name, default="", multiline=True, tooltip=SPEC_TOOLTIP)


def _spec_token(inp: io.Input) -> io.Input:
    """``inp`` marked in /object_info (``loralab_spec_token``) as read only by specs that use its
    token: the frontend shows it while a spec on the node does (js/block_editor.js)."""
    inp.extra_dict = {**inp.extra_dict, "loralab_spec_token": True}
    return inp


def _token_inputs() -> list[io.Input]:
    """``a``, ``b`` and ``seed``: read only by specs with the tokens A, B, R or U."""
    return [
        _spec_token(io.Float.Input("a", default=1.0, min=-100.0, max=100.0, step=0.01,
                                   tooltip="value of the token A in a block-weight vector (usually 1); only specs "
                                           "that use A read it")),
        _spec_token(io.Float.Input("b", default=1.0, min=-100.0, max=100.0, step=0.01,
                                   tooltip="value of the token B in a block-weight vector (usually 1); only specs "
                                           "that use B read it")),
        # fixed unless the user wires a seed in: a seed that changes every run would re-run the node
        # (and everything after it) every time
        _spec_token(io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=False,
                                 tooltip="seed of the random tokens R (0..1) and U (-0.5..1.5) in a block-weight "
                                         "vector; only specs that use R or U read it")),
    ]


def _ui(info: str, model: Any) -> dict:
    """What the node shows (its report) and tells the frontend: the architecture of the model it
    patched (``loralab_model_arch``), so the LoRA picker can offer the LoRAs that fit it."""
    arch_id = models.model_arch(model)
    return {"text": (info,), **({"loralab_model_arch": (arch_id,)} if arch_id else {})}


def _outputs() -> list[io.Output]:
    return [io.Model.Output("MODEL"), io.Clip.Output("CLIP"),
            io.String.Output("info", display_name="info",
                             tooltip="file and model architecture, weight per block, keys applied and not applied")]


class LoRALabLoader(io.ComfyNode):
    """Apply one LoRA with a weight per absolute block."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=common.node_id("Loader"),
            display_name=common.display_name("LoRA Loader (Block Weights)"),
            category=f"{common.CATEGORY}/Apply",
            description="Apply a LoRA to MODEL and CLIP with a weight per absolute block (SD1.x/SD2, SDXL, "
                        "Flux, SD3). At all-1 weights the result equals ComfyUI's LoraLoader bit for bit.",
            inputs=[
                io.Model.Input("model", tooltip=MODEL_TIP),
                io.Clip.Input("clip", optional=True, tooltip=CLIP_TIP),
                io.Combo.Input("lora_name", options=folders.lora_names(), tooltip="a LoRA file (.safetensors) from the loras folders; the panel below shows its base model, rank and trigger words"),
                _strength("strength_model", "multiplies every diffusion-model patch: 1 as trained, 0.6-0.9 to tone a "
                          "style down, negative to push away from it"),
                _strength("strength_clip", "multiplies every text-encoder patch (usually the same as strength_model); "
                          "needs clip connected"),
                _spec("block_weights"),
                *_token_inputs(),
                common.split_qkv_input(),
            ],
            outputs=_outputs(),
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, lora_name: str | None = None) -> bool | str:
        return common.unlisted({"lora_name": lora_name}, folders.lora_names())

    @classmethod
    def fingerprint_inputs(cls, lora_name: str = "", **kwargs: Any) -> Any:
        return _fingerprint(lora_name)

    @classmethod
    def execute(cls, model, lora_name: str, strength_model: float, strength_clip: float, block_weights: str,
                a: float, b: float, seed: int, clip=None, split_qkv: str = common.SPLIT_QKV[0]) -> io.NodeOutput:
        model, clip, info = apply_lora(model, clip, lora_name, strength_model, strength_clip, block_weights,
                                       a, b, seed, (_node(cls), 0), split_qkv)
        return io.NodeOutput(model, clip, info, ui=_ui(info, model))


class LoRALabStack(io.ComfyNode):
    """Apply several LoRAs in order, each with its own strengths and block weights."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=common.node_id("Stack"),
            display_name=common.display_name("LoRA Stack"),
            category=f"{common.CATEGORY}/Apply",
            description="Apply LoRAs in order, one row each (+ Add LoRA), each with its own strengths and weight per "
                        "absolute block; rows that are off are skipped.",
            inputs=[
                io.Model.Input("model", tooltip=MODEL_TIP), io.Clip.Input("clip", optional=True, tooltip=CLIP_TIP),
                stack_rows.rows_input("the LoRAs, applied top to bottom: one row each with on/off, the file, "
                                      "strength_model, strength_clip and block weights (shown as rows on the node)",
                                      folders.lora_names()),
                *_token_inputs(),
                io.String.Input(stack_rows.PROPOSAL, optional=True, force_input=True,
                                tooltip="optional: the Stack Report's proposed_block_weights (a JSON list, one entry "
                                        "per row, in row order); when connected, each non-empty entry replaces its "
                                        "row's block weights. The Report needs the same rows as this Stack"),
            ],
            outputs=_outputs(),
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, loras: str | None = None) -> bool | str:
        return stack_rows.check_rows(loras, folders.lora_names())

    @classmethod
    def fingerprint_inputs(cls, loras: str = "", **kwargs: Any) -> Any:
        try:
            rows = stack_rows.numbered_on(stack_rows.parse_rows(loras))
        except SpecError:
            return loras  # validation refuses it before anything runs
        return _fingerprint(*(row.lora for _, row in rows))

    @classmethod
    def execute(cls, model, loras: str, a: float, b: float, seed: int, clip=None,
                block_weights: str | None = None) -> io.NodeOutput:
        rows = stack_rows.parse_rows(loras)
        if block_weights is not None:
            rows = stack_rows.with_proposal(rows, block_weights)
        reports = []
        for n, row in stack_rows.numbered_on(rows):
            model, clip, info = apply_lora(model, clip, row.lora, row.strength_model, row.strength_clip,
                                           row.block_weights, a, b, seed, (_node(cls), n))
            reports.append(f"[{n}] {info}")
        info = "\n\n".join(reports) or "no LoRA on: add a row with + Add LoRA (or turn one on)"
        return io.NodeOutput(model, clip, info, ui=_ui(info, model))


#: the lora_low choice that takes lora_high's partner by name
AUTO_PARTNER = "(partner of lora_high)"


def pair_files(lora_high: str, lora_low: str, names: list[str]) -> tuple[str, str]:
    """The two files of a pair, ``lora_low`` resolved when it is :data:`AUTO_PARTNER`."""
    if lora_low != AUTO_PARTNER:
        return lora_high, lora_low
    found = partner(lora_high, names)
    if found is None:
        raise LoRALabError(f"no low-noise partner of {lora_high!r} in the loras folders",
                           hint="pick lora_low yourself, or name the pair's files alike with high_noise/low_noise "
                                "(or HIGH/LOW) in their names")
    return lora_high, found


def role_warnings(node: str, lora_high: str, lora_low: str) -> list[str]:
    """A line for each file whose name or training timesteps say it is for the other expert (the
    metadata from this node's file cache, which applying the pair filled)."""
    out = []
    for n, (slot, name, expected) in enumerate((("lora_high", lora_high, "high"), ("lora_low", lora_low, "low"))):
        role = noise_role(name, _read((node, n), folders.picked_lora(name)).metadata)
        if role is not None and role.role != expected:
            out.append(f"check the pair: {slot} looks like a {role.role}-noise LoRA ({role.evidence}); "
                       f"swap lora_high and lora_low if so")
    return out


class LoRALabWanPair(io.ComfyNode):
    """Apply a Wan 2.2 A14B LoRA pair: the high-noise file to the high-noise model, the low-noise
    file to the low-noise model, as one entry."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        names = folders.lora_names()
        return io.Schema(
            node_id=common.node_id("WanPair"),
            display_name=common.display_name("LoRA Pair (Wan 2.2 High/Low Noise)"),
            category=f"{common.CATEGORY}/Apply",
            description="Apply a Wan 2.2 A14B LoRA pair in one node: lora_high to the high-noise model, lora_low "
                        "(or lora_high's partner by name) to the low-noise model, with the same block weights. "
                        "Each side equals ComfyUI's LoraLoaderModelOnly at all-1 weights.",
            inputs=[
                io.Model.Input("model_high", tooltip="the high-noise expert (the first sampler's model in a Wan 2.2 "
                                                     "A14B graph)"),
                io.Model.Input("model_low", tooltip="the low-noise expert (the second sampler's model)"),
                io.Combo.Input("lora_high", options=names,
                               tooltip="the pair's high-noise LoRA (names with high_noise, HIGH or HN)"),
                io.Combo.Input("lora_low", options=[AUTO_PARTNER, *names],
                               tooltip="the pair's low-noise LoRA; '(partner of lora_high)' takes the file named "
                                       "like lora_high with low_noise/LOW/LN in place of high_noise/HIGH/HN"),
                _strength("strength_high", "multiplies the high-noise LoRA (1 as trained)"),
                _strength("strength_low", "multiplies the low-noise LoRA (1 as trained; often lower than high to "
                                          "keep motion but soften detail)"),
                _spec("block_weights"),
                *_token_inputs(),
            ],
            outputs=[io.Model.Output("MODEL_HIGH", display_name="model_high"),
                     io.Model.Output("MODEL_LOW", display_name="model_low"),
                     io.String.Output("info", display_name="info",
                                      tooltip="each side's report: file, weight per block, keys applied and not")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def validate_inputs(cls, lora_high: str | None = None, lora_low: str | None = None) -> bool | str:
        chosen = {"lora_high": lora_high, "lora_low": None if lora_low == AUTO_PARTNER else lora_low}
        return common.unlisted(chosen, folders.lora_names())

    @classmethod
    def fingerprint_inputs(cls, lora_high: str = "", lora_low: str = "", **kwargs: Any) -> Any:
        try:
            return _fingerprint(*pair_files(lora_high, lora_low, folders.lora_names()))
        except LoRALabError as e:
            return str(e)

    @classmethod
    def execute(cls, model_high, model_low, lora_high: str, lora_low: str, strength_high: float, strength_low: float,
                block_weights: str, a: float, b: float, seed: int) -> io.NodeOutput:
        if models.model_arch(model_high) != models.model_arch(model_low):
            raise LoRALabError(f"the two models differ: model_high is {models.model_name(model_high)}, model_low is "
                               f"{models.model_name(model_low)}",
                               hint="connect the high- and low-noise experts of one Wan 2.2 A14B model")
        lora_high, lora_low = pair_files(lora_high, lora_low, folders.lora_names())
        node = _node(cls)
        model_high, _, high = apply_lora(model_high, None, lora_high, strength_high, 0.0, block_weights,
                                         a, b, seed, (node, 0))
        model_low, _, low = apply_lora(model_low, None, lora_low, strength_low, 0.0, block_weights,
                                       a, b, seed, (node, 1))
        info = "\n\n".join([*role_warnings(node, lora_high, lora_low), f"[high noise] {high}", f"[low noise] {low}"])
        return io.NodeOutput(model_high, model_low, info, ui=_ui(info, model_high))


NODES = [LoRALabLoader, LoRALabStack, LoRALabWanPair]
