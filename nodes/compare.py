"""Compare Grid: one labelled image of a LoRA at several settings (strength, block weights, files or
a training run's checkpoints, prompt, seed), each cell sampled with ComfyUI's own KSampler path.

Each cell is what LoRA Loader (Block Weights) → CLIP Text Encode → KSampler → VAE Decode make with
its settings, bit for bit. Rendered cells are kept (in this process, least recently used first out)
under a key of everything that decides their pixels, so a changed axis value renders only the cells
it changes.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import weakref
from typing import Any

import comfy.samplers
import torch
from comfy_api.latest import io, ui

from ..loralab.errors import LoRALabError, SpecError
from ..loralab.ops.grid import (AXIS_KINDS, NO_LORA, Axis, CellCache, cell_key, checkpoint_axis, checkpoint_step,
                                grid_cells, grid_image, grid_json, parse_axis, run_checkpoints, split_values)
from .common import CATEGORY, advanced, display_name, node_id
from .host import sampling
from .host.folders import file_stamp, listed_name, lora_names, picked_lora, picked_stamp
from .host.progress import progress_callback
from .loader import MODEL_TIP, SPEC_TOOLTIP, apply_lora, check_block_weights, user_presets_file
from .train import RunType

#: rendered cells kept between runs (bytes of image tensors; a 1024² cell is 12 MiB)
CACHE_BYTES = 512 * 1024 * 1024
CELLS = CellCache(CACHE_BYTES)

AXIS_TIP = ("what the {0} axis varies: strength (model and clip strength), strength_model, strength_clip, lora "
            "(files), run (a training run's checkpoints), blocks (block-weight specs), prompt, seed; none = one {1}")
VALUES_TIP = ("the {0} axis' values, one per line, or on one line separated by commas (blocks and prompts: by |). "
              "E.g. strength: 0.5, 0.75, 1 · lora: a.safetensors, None · run: my_lora (empty with a run connected: "
              "its checkpoints) · blocks: ALL | SDXL-INALL | OUT=0 · prompt: a cat | a dog · seed: 1, 2, 3")


class _Uncacheable(Exception):
    """An input holds an object whose identity cannot be tracked: its cells are rendered every time."""


_TOKENS: "weakref.WeakKeyDictionary[Any, int]" = weakref.WeakKeyDictionary()
_NEXT = itertools.count(1)


def _identity(obj: Any) -> str:
    """A token that stays the same while ``obj`` lives and is never given to another object (models,
    text encoders and VAEs are compared by identity: ComfyUI hands the same object to every run
    while the nodes that made it are unchanged)."""
    try:
        token = _TOKENS.get(obj)
        if token is None:
            token = _TOKENS[obj] = next(_NEXT)
    except TypeError:
        raise _Uncacheable(type(obj).__name__) from None
    return f"{type(obj).__name__}#{token}"


def _fingerprint(value: Any) -> Any:
    """A JSON-able stand-in of a LATENT or CONDITIONING: tensors by content, plain values as they
    are, other objects by identity."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        t = value.detach().to("cpu").contiguous()
        digest = hashlib.sha256(t.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
        return ["tensor", str(t.dtype), list(t.shape), digest]
    if isinstance(value, (list, tuple)):
        return [_fingerprint(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _fingerprint(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    return ["object", _identity(value)]


def _run_axis(run: Any) -> Axis:
    """The checkpoints a connected training run saved and still keeps, in step order."""
    named = []
    for path, _ in run.checkpoints:
        name = listed_name(path)
        if name is not None:
            named.append((checkpoint_step(name), name))
    if not named:
        raise SpecError(f"the connected run ({run.settings.name}) has no saved checkpoints in the loras list",
                        hint="set save_every on Start Training Run (and keep_last 0 to keep them all), or name a "
                             "run whose files are in the list")
    return checkpoint_axis(sorted(named))


def _axis(kind: str, values: str, names: list[str], run: Any = None) -> Axis:
    if kind == "run" and run is not None and not (values or "").strip():
        return _run_axis(run)
    return parse_axis(kind, values, lora_names=names)


def _named_files(lora_name: str, axes: list[tuple[str, str]]) -> list[str]:
    """Every LoRA name a node's widgets choose (for the node's fingerprint); names of axes that do
    not parse are left to the run, which says what is wrong."""
    named = [lora_name]
    listing = lora_names()
    for kind, values in axes:
        try:
            if kind == "lora":
                named += split_values(kind, values)
            elif kind == "run" and (values or "").strip():
                named += [name for _, name in run_checkpoints(values, listing)]
        except SpecError:
            named.append(f"unreadable axis: {values}")
    return named


def _prompting(clip, positive, negative, x: Axis, y: Axis) -> bool:
    """True where prompts are typed (and encoded per cell), False where conditioning is connected."""
    if clip is not None and (positive is not None or negative is not None):
        raise SpecError("connect clip (prompts typed in this node) or positive and negative conditioning, not both",
                        hint="with clip connected the LoRA's text-encoder part applies to the prompts of each cell")
    if clip is None and (positive is None or negative is None):
        raise SpecError("connect clip (prompts typed in this node) or both positive and negative conditioning")
    if clip is None and "prompt" in (x.kind, y.kind):
        raise SpecError("a prompt axis needs clip connected (each prompt is encoded with it)",
                        hint="connect the CLIP and leave positive and negative unconnected")
    return clip is not None


def _check_latent(latent: dict) -> None:
    samples = latent["samples"]
    if not getattr(samples, "is_nested", False) and samples.shape[0] != 1:
        raise SpecError(f"the latent holds {samples.shape[0]} images; each cell samples one",
                        hint="set batch_size 1 on the latent")


class LoRALabCompare(io.ComfyNode):
    """A grid of cells across one or two axes of LoRA settings, each sampled as the core nodes would."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        kinds = list(AXIS_KINDS)
        return io.Schema(
            node_id=node_id("Compare"),
            display_name=display_name("Compare Grid"),
            category=f"{CATEGORY}/Apply",
            description="Sample a LoRA at several settings into one labelled grid: x and y axes of strength, "
                        "block weights, LoRA files or a training run's checkpoints, prompt or seed. Each cell is "
                        "what LoRA Loader (Block Weights) → KSampler → VAE Decode make; rendered cells are kept, so "
                        "changing one axis value renders only the new cells.",
            inputs=[
                io.Model.Input("model", tooltip=MODEL_TIP),
                io.Vae.Input("vae", tooltip="the VAE that decodes every cell"),
                io.Latent.Input("latent_image", tooltip="the latent every cell starts from (Empty Latent Image, "
                                                        "batch size 1); its size is the cell size"),
                io.Clip.Input("clip", optional=True,
                              tooltip="the text encoder: the prompts typed here are encoded per cell with the LoRA's "
                                      "text-encoder part applied. Leave it unconnected to connect positive and "
                                      "negative conditioning instead"),
                io.Conditioning.Input("positive", optional=True,
                                      tooltip="positive conditioning for every cell, when clip is not connected"),
                io.Conditioning.Input("negative", optional=True,
                                      tooltip="negative conditioning for every cell, when clip is not connected"),
                RunType.Input("run", optional=True,
                              tooltip="a training run: a run axis with no values shows the checkpoints it saved "
                                      "(save_every) and still keeps"),
                io.Combo.Input("x_axis", options=kinds, default="strength", tooltip=AXIS_TIP.format("x", "column")),
                io.String.Input("x_values", default="0.5, 0.75, 1", multiline=True, tooltip=VALUES_TIP.format("x")),
                io.Combo.Input("y_axis", options=kinds, default="none", tooltip=AXIS_TIP.format("y", "row")),
                io.String.Input("y_values", default="", multiline=True, tooltip=VALUES_TIP.format("y")),
                io.Combo.Input("lora_name", options=[NO_LORA, *lora_names()], default=NO_LORA,
                               tooltip="the LoRA of every cell, unless an axis is lora or run; None = no LoRA"),
                io.Float.Input("strength_model", default=1.0, min=-100.0, max=100.0, step=0.01,
                               tooltip="diffusion-model strength of every cell, unless an axis sets it"),
                io.Float.Input("strength_clip", default=1.0, min=-100.0, max=100.0, step=0.01,
                               tooltip="text-encoder strength of every cell (needs clip), unless an axis sets it"),
                io.String.Input("block_weights", default="", multiline=True,
                                tooltip="block weights of every cell, unless an axis is blocks. " + SPEC_TOOLTIP),
                io.String.Input("prompt", default="", multiline=True,
                                tooltip="positive prompt of every cell, unless an axis is prompt (needs clip)"),
                io.String.Input("negative_prompt", default="", multiline=True,
                                tooltip="negative prompt of every cell (needs clip; empty is fine)"),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=False,
                             tooltip="sampling seed of every cell, unless an axis is seed (fixed, so cells compare)"),
                io.Int.Input("steps", default=20, min=1, max=10000, tooltip="sampling steps (20-30 is usual)"),
                io.Float.Input("cfg", default=7.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="classifier-free guidance: 5-8 for SD1.x/SDXL, 1 for Flux"),
                io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                               tooltip="ComfyUI's sampler, as in KSampler (euler is usual)"),
                io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal",
                               tooltip="ComfyUI's scheduler, as in KSampler (normal; simple for Flux)"),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="how much of the latent is re-noised (1 for an empty latent)"),
                advanced(io.Float.Input("a", default=1.0, min=-100.0, max=100.0, step=0.01,
                                        tooltip="value of the token A in block-weight vectors (usually 1)")),
                advanced(io.Float.Input("b", default=1.0, min=-100.0, max=100.0, step=0.01,
                                        tooltip="value of the token B in block-weight vectors (usually 1)")),
                advanced(io.Int.Input("token_seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF,
                                      control_after_generate=False,
                                      tooltip="seed of the random tokens R and U in block-weight vectors")),
            ],
            outputs=[io.Image.Output("grid", display_name="grid", tooltip="the labelled grid"),
                     io.Image.Output("images", display_name="images", tooltip="the cells, row by row, as a batch"),
                     io.String.Output("json", display_name="json",
                                      tooltip="axes, size and per cell its box, settings and cache key")],
            hidden=[io.Hidden.unique_id],
            is_output_node=True,
        )

    @classmethod
    def validate_inputs(cls, x_axis: str | None = None, x_values: str | None = None, y_axis: str | None = None,
                        y_values: str | None = None, lora_name: str | None = None) -> bool | str:
        """Names and axes are checked before the prompt runs (a run axis left empty waits for its run)."""
        names = lora_names()
        if lora_name is not None and lora_name not in (NO_LORA, *names):
            return f"lora_name: {str(lora_name)[:200]!r} is not a LoRA in the loras folder list"
        for label, kind, values in (("x", x_axis, x_values), ("y", y_axis, y_values)):
            if kind is None or values is None or (kind == "run" and not values.strip()):
                continue
            try:
                parse_axis(kind, values, lora_names=names)
            except LoRALabError as e:
                return f"{label}_values: {e}"
        return True

    @classmethod
    def fingerprint_inputs(cls, lora_name: str = NO_LORA, x_axis: str = "", x_values: str = "", y_axis: str = "",
                           y_values: str = "", **kwargs: Any) -> Any:
        """The user presets and every LoRA file chosen (a run's checkpoints included): a changed or new
        file runs the node again."""
        named = _named_files(lora_name, [(x_axis, x_values), (y_axis, y_values)])
        return (file_stamp(user_presets_file()), tuple((n, picked_stamp(n)) for n in named))

    @classmethod
    def execute(cls, model, vae, latent_image: dict, x_axis: str, x_values: str, y_axis: str, y_values: str,
                lora_name: str, strength_model: float, strength_clip: float, block_weights: str, prompt: str,
                negative_prompt: str, seed: int, steps: int, cfg: float, sampler_name: str, scheduler: str,
                denoise: float, a: float, b: float, token_seed: int, clip=None, positive=None, negative=None,
                run=None) -> io.NodeOutput:
        names = lora_names()
        x, y = _axis(x_axis, x_values, names, run), _axis(y_axis, y_values, names, run)
        typed = _prompting(clip, positive, negative, x, y)
        _check_latent(latent_image)
        defaults = {"lora_name": lora_name, "strength_model": strength_model, "strength_clip": strength_clip,
                    "block_weights": block_weights, "seed": seed, **({"prompt": prompt} if typed else {})}
        cells = grid_cells(defaults, x, y)
        loras = sorted({c.settings["lora_name"] for c in cells} - {NO_LORA})
        for spec in sorted({c.settings["block_weights"] for c in cells if c.settings["lora_name"] != NO_LORA}):
            check_block_weights(model, spec, a, b, token_seed)  # a spec that cannot apply stops before any cell
        sampler = {"steps": steps, "cfg": cfg, "sampler_name": sampler_name, "scheduler": scheduler,
                   "denoise": denoise}
        try:
            shared = {"model": _identity(model), "vae": _identity(vae), "latent": _fingerprint(latent_image),
                      "sampler": sampler, "tokens": [a, b, token_seed], "presets": file_stamp(user_presets_file()),
                      **({"clip": _identity(clip), "negative_prompt": negative_prompt} if typed else
                         {"positive": _fingerprint(positive), "negative": _fingerprint(negative)})}
        except _Uncacheable:
            shared = None
        node = getattr(cls.hidden, "unique_id", None)
        slots = {name: (f"{node}:compare", i) for i, name in enumerate(loras)}  # one file cache per LoRA
        progress = progress_callback(len(cells), node)
        images, keys, cached = [], [], []
        for cell in cells:
            progress(cell.index, len(cells))  # Cancel stops here, between cells
            s = cell.settings
            key = None
            if shared is not None:
                stamp = None if s["lora_name"] == NO_LORA else file_stamp(picked_lora(s["lora_name"]))
                key = cell_key({**shared, "cell": s, "file": stamp})
            image = CELLS.get(key) if key else None
            cached.append(image is not None)
            if image is None:
                image = _render(model, clip, vae, latent_image, positive, negative, s, negative_prompt, sampler,
                                a, b, token_seed, typed, slots.get(s["lora_name"]))
                if key:
                    CELLS.put(key, image)
            images.append(image)
            keys.append(key or "")
        progress(len(cells), len(cells))
        grid, layout = grid_image(images, x, y)
        data = grid_json(x, y, cells, layout, keys, {"sampler": sampler, "prompts": "typed" if typed else "connected",
                                                     "rendered": cached.count(False), "from_cache": cached.count(True)})
        for entry, hit in zip(data["cells"], cached):
            entry["cached"] = hit
        return io.NodeOutput(grid, torch.stack(images), json.dumps(data, ensure_ascii=False, allow_nan=False),
                             ui=ui.PreviewImage(grid, cls=cls))


def _render(model, clip, vae, latent: dict, positive, negative, s: dict, negative_prompt: str, sampler: dict,
            a: float, b: float, token_seed: int, typed: bool, file_slot: tuple[str, int] | None) -> torch.Tensor:
    """One cell ``[H, W, 3]``: the LoRA applied as LoRA Loader (Block Weights) applies it, the prompts
    encoded with the patched CLIP, sampled and decoded as KSampler and VAE Decode do."""
    if file_slot is not None:
        model, clip, _ = apply_lora(model, clip, s["lora_name"], s["strength_model"], s["strength_clip"],
                                    s["block_weights"], a, b, token_seed, file_slot)
    if typed:
        positive, negative = sampling.encode(clip, s["prompt"]), sampling.encode(clip, negative_prompt)
    samples = sampling.ksample(model, s["seed"], sampler["steps"], sampler["cfg"], sampler["sampler_name"],
                               sampler["scheduler"], positive, negative, latent, sampler["denoise"])
    return sampling.decode(vae, samples)[0]


NODES = [LoRALabCompare]
