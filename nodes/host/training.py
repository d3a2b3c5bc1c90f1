"""Host glue for training: ComfyUI's model, encoders, progress and Cancel, as the engine's
training code expects them.

Training runs on the graph's own MODEL: a clone of its ModelPatcher gets the run's modules as
weight wrappers (``add_weight_wrapper``), ComfyUI loads it as it loads any model, and every step
calls ``BaseModel.apply_model`` with conditioning built by the model's own ``extra_conds``. So the
base weights stay in whatever dtype ComfyUI loaded them (fp8, bf16, ...), and any architecture
ComfyUI runs trains the same way. The run's compute dtype (its ``precision``) is applied with
``torch.autocast``: an fp16-loaded model computes in bf16 where the run asks for it.

A run that trains the text encoders does the same to a clone of the graph's CLIP: its modules are
weight wrappers there, and every step encodes the captions through ``CLIP.encode_from_tokens``.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import threading
import time
from typing import Any, Callable, Iterable, Iterator, Sequence

import comfy.model_management
import comfy.model_sampling
import comfy.patcher_extension
import comfy.samplers
import comfy.sd
import comfy.utils
import folder_paths
import torch
from server import PromptServer

from ...loralab.errors import TrainingError
from ...loralab.train.cache import TensorCache, fingerprint
from ...loralab.train.checkpoint import restore_run
from ...loralab.train.dataset import Dataset, DatasetSettings, Subset, build_dataset
from ...loralab.train.inplace import copy_norm_inputs
from ...loralab.train.memory import MemoryMode
from ...loralab.train.network import InitLoRA, is_text_encoder_key, select_targets, select_text_encoder_targets
from ...loralab.train.run import TrainRun, TrainSettings
from .compat import trainable_clone, training_mode, unload
from .folders import picked_lora
from .memory import loads_in_part, memory_mode, plan
from .models import WAN_BASE_MODELS, model_arch, model_layout, model_name

log = logging.getLogger("loralab")
PROGRESS_EVENT = "loralab.train.progress"
CACHE_FOLDER = "loralab_cache"
#: node inputs that name the model file a MODEL came from, by loader
_MODEL_NAME_INPUTS = ("ckpt_name", "unet_name", "model_name", "model_path")


def prediction_kind(model) -> str:
    """``eps``, ``v`` or ``flow`` for a MODEL; TrainingError for parameterisations we do not train."""
    ms = model.get_model_object("model_sampling")
    if isinstance(ms, (comfy.model_sampling.EDM, comfy.model_sampling.X0)):
        raise TrainingError(f"{type(ms).__name__} models are not trainable here (only ε-, v-prediction and flow)")
    if isinstance(ms, comfy.model_sampling.V_PREDICTION):
        return "v"
    if isinstance(ms, comfy.model_sampling.EPS):
        return "eps"
    if isinstance(ms, comfy.model_sampling.CONST):
        return "flow"
    raise TrainingError(f"this model's sampling ({type(ms).__name__}) is not trainable here")


def diffusion_shapes(model) -> dict[str, tuple[int, ...]]:
    """Every diffusion-model weight of a MODEL with its shape (ComfyUI keys)."""
    return {k: tuple(v.shape) for k, v in model.model.state_dict().items() if k.startswith("diffusion_model.")}


def _walk_tensors(prefix: str, value: Any, out: list[tuple[str, torch.Tensor]], extra: list[str]) -> None:
    if torch.is_tensor(value):
        out.append((prefix, value))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _walk_tensors(f"{prefix}.{i}", v, out, extra)
    elif hasattr(value, "weights") and not callable(value):
        extra.append(f"{prefix}:{type(value).__name__}")
        _walk_tensors(prefix, value.weights, out, extra)
    elif isinstance(value, (int, float, str, bool)) or value is None:
        extra.append(f"{prefix}={value!r}")


def _patch_fingerprint_parts(patcher) -> tuple[list[tuple[str, torch.Tensor]], list[str]]:
    """The weight patches (LoRAs already applied) of a ModelPatcher as tensors and scalars."""
    tensors: list[tuple[str, torch.Tensor]] = []
    extra: list[str] = []
    for key in sorted(patcher.patches):
        for i, patch in enumerate(patcher.patches[key]):
            strength, data, strength_model = patch[0], patch[1], patch[2]
            extra.append(f"{key}#{i}:{strength}:{strength_model}")
            _walk_tensors(f"patch.{key}.{i}", data, tensors, extra)
    return tensors, extra


def model_fingerprint(model) -> str:
    """Identity of a MODEL's weights and the patches on it (a sampled hash; see cache.fingerprint)."""
    tensors, extra = _patch_fingerprint_parts(model)
    weights = [(k, v) for k, v in model.model.state_dict().items() if k.startswith("diffusion_model.")]
    return fingerprint(weights + tensors, type(model.model).__name__, *extra)


def vae_identity(vae) -> str:
    """Identity of a VAE as an encoder (weights, class, dtype)."""
    return fingerprint(vae.first_stage_model.state_dict().items(), type(vae.first_stage_model).__name__,
                       vae.vae_dtype, vae.latent_channels)


def clip_identity(clip) -> str:
    """Identity of a CLIP as a text encoder: weights, patches, layer choice and tokenizer options."""
    tensors, extra = _patch_fingerprint_parts(clip.patcher)
    return fingerprint(list(clip.cond_stage_model.state_dict().items()) + tensors, type(clip.cond_stage_model).__name__,
                       clip.layer_idx, json.dumps(clip.tokenizer_options, sort_keys=True, default=str), *extra)


def image_encoder(vae) -> Callable[[torch.Tensor], torch.Tensor]:
    """IMAGE [T, H, W, 3] (an image, or a clip's frames) -> the VAE's latent [C, h, w] (a video
    VAE's: [C, T', h, w]) (CPU, fp32)."""
    def encode(pixels: torch.Tensor) -> torch.Tensor:
        return vae.encode(pixels[:, :, :, :3])[0].detach().to("cpu", torch.float32)
    return encode


def temporal_compression(vae) -> int | None:
    """How many frames a video VAE folds into one latent frame (Wan's, HunyuanVideo's: 4); None
    for a VAE that encodes images only."""
    formula = getattr(vae, "downscale_index_formula", None)
    if getattr(vae, "latent_dim", 2) != 3 or getattr(vae, "not_video", False) or not formula:
        return None
    return int(formula[0]) if isinstance(formula[0], int) else None


def text_conds(clip, text: str) -> dict[str, torch.Tensor]:
    """A caption's conditioning tensors (``cross_attn``, ``pooled_output``, ...) as the CLIP gives them."""
    out = clip.encode_from_tokens(clip.tokenize(text), return_pooled=True, return_dict=True)
    cond = {"cross_attn": out.pop("cond")}
    cond.update({k: v for k, v in out.items() if torch.is_tensor(v)})
    return cond


def text_encoder(clip) -> Callable[[str], dict[str, torch.Tensor]]:
    """Caption -> its conditioning tensors on the CPU (what the dataset caches)."""
    def encode(text: str) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu").contiguous() for k, v in text_conds(clip, text).items()}
    return encode


def text_encoder_shapes(clip) -> dict[str, tuple[int, ...]]:
    """Every weight of a CLIP's text encoders with its shape (``clip_l.transformer...``)."""
    return {k: tuple(v.shape) for k, v in clip.cond_stage_model.state_dict().items()}


def _loader_inputs(prompt: dict | None, node_id: str | None, input_name: str,
                   keys: tuple[str, ...]) -> dict[str, Any] | None:
    """The inputs of the first node upstream of a node's ``input_name`` that names a file in one of
    ``keys`` (nodes in between, such as LoRA loaders, are followed through their input of the
    same name)."""
    if not prompt or node_id is None:
        return None
    seen: set[str] = set()
    node = str(node_id)
    while node in prompt and node not in seen:
        seen.add(node)
        link = prompt[node].get("inputs", {}).get(input_name)
        if not isinstance(link, list) or len(link) != 2:
            return None
        node = str(link[0])
        inputs = prompt.get(node, {}).get("inputs", {})
        if any(isinstance(inputs.get(k), str) for k in keys):
            return inputs
    return None


def source_model_name(prompt: dict | None, node_id: str | None) -> str | None:
    """The file name of the loader a node's MODEL input comes from, following the graph upstream."""
    inputs = _loader_inputs(prompt, node_id, "model", _MODEL_NAME_INPUTS) or {}
    return next((inputs[k] for k in _MODEL_NAME_INPUTS if isinstance(inputs.get(k), str)), None)


def graph_model_files(prompt: dict | None, node_id: str | None) -> dict[str, Any]:
    """The files a training node's model and dataset come from, as a run config's ``[model]``
    names them: the checkpoint, or the diffusion model with the VAE and text encoders the
    dataset node was given (empty where the graph does not say)."""
    model = _loader_inputs(prompt, node_id, "model", ("ckpt_name", "unet_name"))
    if model is None:
        return {}
    if isinstance(model.get("ckpt_name"), str):
        return {"checkpoint": model["ckpt_name"]}
    files: dict[str, Any] = {"unet": model["unet_name"], "weight_dtype": str(model.get("weight_dtype", "default"))}
    link = prompt[str(node_id)].get("inputs", {}).get("dataset")
    dataset = str(link[0]) if isinstance(link, list) and len(link) == 2 else None
    vae = _loader_inputs(prompt, dataset, "vae", ("vae_name",))
    if vae is not None:
        files["vae"] = vae["vae_name"]
    clip = _loader_inputs(prompt, dataset, "clip", ("clip_name", "clip_name1"))
    if clip is not None:
        files["clip"] = [clip[k] for k in ("clip_name", "clip_name1", "clip_name2") if isinstance(clip.get(k), str)]
        if isinstance(clip.get("type"), str):
            files["clip_type"] = clip["type"]
    return files


def model_info(model, name: str | None, files: dict[str, Any] | None = None) -> dict[str, Any]:
    """What a run records about its base model (``files``: where it and its encoders were loaded
    from, as a run config's ``[model]`` names them)."""
    arch = model_arch(model)
    if arch is None:
        raise TrainingError(f"LoRA Lab has no layout for {model_name(model)} models yet",
                            hint="training supports SD1.x, SD2.x, SDXL, Flux.1, SD3/SD3.5, Wan 2.1/2.2 and Qwen-Image")
    if arch.startswith("wan") and type(model.model.model_config).__name__ not in WAN_BASE_MODELS:
        raise TrainingError(f"LoRA Lab trains on the Wan base models only, not on {model_name(model)}: its forward "
                            "takes inputs of its own", hint="load the Wan T2V or I2V model of this size to train; "
                            "its LoRA applies to this model too")
    base = model.model
    ms = model.get_model_object("model_sampling")
    weight = next((p for n, p in base.diffusion_model.named_parameters() if p.dim() > 1), None)
    return {"arch": arch, "kind": prediction_kind(model), "fingerprint": model_fingerprint(model), "name": name,
            "weight_dtype": str(weight.dtype) if weight is not None else "",
            "zsnr": bool(getattr(ms, "zsnr", False)), "files": dict(files or {})}


def check_precision(model, dtype: torch.dtype) -> None:
    """Refuse fp32 compute on a model ComfyUI loaded to compute in less (autocast only lowers)."""
    loaded = model.model.manual_cast_dtype or model.model.get_dtype()
    if dtype == torch.float32 and loaded != torch.float32:
        raise TrainingError(f"precision fp32 needs the model in fp32, but ComfyUI loaded it to compute in {loaded}",
                            hint="choose precision auto or bf16, or start ComfyUI with --force-fp32")


def to_normal_tensors(module: torch.nn.Module) -> int:
    """Replace inference-mode parameters and buffers (what ComfyUI's loaders create) with normal
    copies, which autograd may save; returns how many were replaced."""
    n = 0
    with torch.inference_mode(False):
        for m in module.modules():
            for name, p in list(m._parameters.items()):
                if p is not None and p.is_inference():
                    m._parameters[name] = torch.nn.Parameter(p.clone(), requires_grad=False)
                    n += 1
            for name, b in list(m._buffers.items()):
                if b is not None and b.is_inference():
                    m._buffers[name] = b.clone()
                    n += 1
    return n


def flow_shift(model_sampling) -> float | None:
    """The linear shift k (t·k / (1 + (k − 1)·t)) a flow model samples with: ComfyUI's
    ``model_sampling.shift``, which for Flux's sampling (Flux.1, Chroma, Flux.2) is μ of its
    exponential shift e^μ / (e^μ + 1/t − 1), so k = e^μ; None for a sampling without a shift."""
    shift = getattr(model_sampling, "shift", None)
    if shift is None:
        return None
    if isinstance(model_sampling, comfy.model_sampling.ModelSamplingFlux):
        return math.exp(float(shift))
    return float(shift)


class ComfyTrainModel:
    """The engine's TrainModel over a loaded ModelPatcher (with the run's weight wrappers)."""

    def __init__(self, patcher, guidance: float, dtype: torch.dtype, clip=None, device=None) -> None:
        self.patcher = patcher
        #: the CLIP with the run's text-encoder modules (runs that train the text encoders)
        self.clip = clip
        self.compute_dtype = dtype
        self.base = patcher.model
        ms = patcher.get_model_object("model_sampling")
        self.kind = prediction_kind(patcher)
        self.sigma_data = float(getattr(ms, "sigma_data", 1.0))
        self.sigmas = ms.sigmas.detach().float().cpu() if self.kind != "flow" else None
        self.flow_shift = flow_shift(ms) if self.kind == "flow" else None
        #: the training device (ComfyUI's load device, where the model may be loaded on its offload device)
        self.device = device if device is not None else patcher.load_device
        self.guidance = guidance
        #: what the memory mode applied (see host.memory.memory_mode), while training
        self.memory: dict[str, Any] = {}

    def latent_in(self, latents: torch.Tensor) -> torch.Tensor:
        return self.base.process_latent_in(latents)

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.compute_dtype, enabled=self.compute_dtype != torch.float32)

    def encode_text(self, text: str) -> dict[str, torch.Tensor]:
        if self.clip is None:
            raise TrainingError("this run trains no text encoder")
        with self._autocast():
            return text_conds(self.clip, text)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, conds: list[dict[str, Any]]) -> torch.Tensor:
        per_sample = []
        for i, cond in enumerate(conds):
            params = dict(cond, device=self.device, noise=x[i:i + 1], prompt_type="positive")
            if self.kind == "flow":
                params["guidance"] = self.guidance
            out = self.base.extra_conds(**params)
            per_sample.append({k: v.process_cond(batch_size=1, area=None) for k, v in out.items()})
        c = comfy.samplers.cond_cat(per_sample)
        options = self.patcher.model_options
        transformer_options = comfy.patcher_extension.copy_nested_dicts(options.get("transformer_options", {}))
        transformer_options["wrappers"] = comfy.patcher_extension.copy_nested_dicts(self.patcher.wrappers)
        transformer_options.update(sigmas=sigma, cond_or_uncond=[0], uuids=[None])
        c["transformer_options"] = transformer_options
        wrapper = options.get("model_function_wrapper")
        with self._autocast():
            if wrapper is not None:
                return wrapper(self.base.apply_model, {"input": x, "timestep": sigma, "c": c, "cond_or_uncond": [0]})
            return self.base.apply_model(x, sigma, **c)


def cache_folder() -> str:
    """Where encoded samples are cached (ComfyUI's user directory, outside every user's own files)."""
    return os.path.join(folder_paths.get_user_directory(), CACHE_FOLDER)


def encode_dataset(folder: str | Sequence[Subset], settings: DatasetSettings, vae, clip, cache: str,
                   progress: Callable[[int, int], None] | None = None) -> Dataset:
    """A dataset encoded with a VAE and CLIP (cached in ``cache``), which travel with it."""
    ds = build_dataset(folder, settings, TensorCache(cache), encode_image=image_encoder(vae),
                       encode_text=text_encoder(clip), encoders={"vae": vae_identity(vae), "clip": clip_identity(clip)},
                       progress=progress, temporal_compression=temporal_compression(vae))
    ds.attachments.update(vae=vae, clip=clip)
    return ds


def init_run(model, dataset, settings: TrainSettings, model_name: str | None,
             files: dict[str, Any] | None = None, clip=None, validation=None) -> TrainRun:
    """A new run on a MODEL (nothing trained yet), on the device ComfyUI loads it to; ``files``
    as :func:`model_info` records them; with ``text_encoder_lr`` also on the CLIP's text encoders;
    ``validation``: a dataset of held-out images."""
    info = model_info(model, model_name, files)
    layout = model_layout(model)
    shapes = diffusion_shapes(model)
    targets = select_targets(shapes, info["arch"], settings.targets, settings.blocks,
                             convs=settings.algorithm == "locon", layout=layout)
    if settings.text_encoder_lr > 0:
        if clip is None:
            raise TrainingError("text_encoder_lr is set but no CLIP is connected",
                                hint="connect the CLIP to train to the clip input, or set text_encoder_lr to 0")
        te_shapes = text_encoder_shapes(clip)
        shapes = {**shapes, **te_shapes}
        targets.update(select_text_encoder_targets(te_shapes, info["arch"], settings.targets))
        info["text_encoder"] = clip_identity(clip)
    unwritable = [k for k in targets if tuple(layout.shapes.get(k, ())) != shapes[k]]
    if unwritable:
        raise TrainingError(f"{len(unwritable)} target weights are not in LoRA Lab's layout of this model",
                            key=unwritable[0], hint="report this model; its LoRA could not be saved with kohya names")
    init = None
    if settings.init_lora:
        init = InitLoRA.read(picked_lora(settings.init_lora), layout, targets, settings.algorithm, settings.init_lora)
    base_weight = None
    if settings.algorithm == "dora":
        comfy.model_management.load_models_gpu([model])
        base_weight = lambda key: comfy.utils.get_attr(  # noqa: E731
            clip.cond_stage_model if is_text_encoder_key(key) else model.model, key)
    run = TrainRun.create(settings, dataset, shapes, targets, info, base_weight=base_weight,
                          device=model.load_device, layout=layout, attachments={"model": model, "clip": clip},
                          init=init, validation=validation)
    mode, estimate = plan(model, dataset, run.settings, targets, sum(p.numel() for p in run.params()))
    run.attachments.update(memory_mode=mode, memory_estimate=estimate)
    return run


def resume_run(template: TrainRun, path: str) -> TrainRun:
    """``template`` continued from the state file ``path`` (see checkpoint.restore_run), in a
    memory mode that computes what the state was trained in where this device fits one, so the
    continuation is bit for bit the run's had it not stopped; where none fits, in the mode the
    plan picks, with a note in the run's info (``attachments["memory_note"]``) and the log."""
    run = restore_run(template, path)
    trained, planned = run.attachments.get("trained_memory_mode"), run.attachments.get("memory_mode")
    if trained is None or planned is None or trained.same_numbers(planned):
        return run
    params = sum(p.numel() for p in run.params())
    try:
        mode, est = plan(run.attachments["model"], run.dataset, run.settings, run.network.lr_mults, params, keep=trained)
    except TrainingError as e:
        note = (f"trained so far with {trained.describe()}, continued with {planned.describe()}: the first does "
                f"not fit this device ({e}); from here the run's numbers differ from an uninterrupted run's")
        log.warning("LoRA Lab: %s: %s", path, note)
        run.attachments["memory_note"] = note
        return run
    run.attachments.update(memory_mode=mode, memory_estimate=est)
    return run


#: progress events kept per node for a page that reloads mid-run (GET /loralab/train_progress);
#: beyond this many, every other older event is dropped (the chart keeps its shape)
HISTORY_LIMIT = 4000
_HISTORY: dict[str, dict[str, Any]] = {}
_RUN_NODE: dict[str, str] = {}
_HISTORY_LOCK = threading.Lock()


def record_progress(data: dict[str, Any]) -> None:
    """Keep a progress event in the node's history of its last run (a new run id starts afresh);
    an event with ``saved`` (a file's path) is kept as the run's saved file."""
    node = data.get("node")
    if node is None:
        return
    node = str(node)
    with _HISTORY_LOCK:
        h = _HISTORY.get(node)
        if h is None or h["run"] != data.get("run"):
            h = _HISTORY[node] = {"node": node, "run": data.get("run"), "events": [], "saved": None}
        if data.get("saved") is not None:
            h["saved"] = dict(data)
            return
        _RUN_NODE[str(data.get("run"))] = node
        events = h["events"]
        events.append(dict(data))
        if len(events) > HISTORY_LIMIT:
            half = len(events) // 2
            events[:half] = events[:half:2]


def train_progress(node_id: str) -> dict[str, Any] | None:
    """The last run's history of a node: {node, run, events, saved}, or None when it has none."""
    with _HISTORY_LOCK:
        h = _HISTORY.get(str(node_id))
        return None if h is None else {**h, "events": list(h["events"])}


def trained_nodes() -> list[str]:
    """The nodes that have a history."""
    with _HISTORY_LOCK:
        return sorted(_HISTORY)


def send_progress_event(data: dict[str, Any]) -> None:
    """Send a ``loralab.train.progress`` event to the page and keep it for a reload."""
    data = {**data, "t": time.time()}
    record_progress(data)
    server = PromptServer.instance
    server.send_sync(PROGRESS_EVENT, data, server.client_id)


def report_saved(run: TrainRun, path: str, node_id: str | None = None) -> None:
    """Tell the chart of the node that trained ``run`` (or ``node_id``) where its file was saved."""
    node = _RUN_NODE.get(str(run.run_id), node_id)
    if node is not None:
        send_progress_event({"node": node, "run": run.run_id, "step": run.step, "total": run.settings.total_steps,
                             "saved": path})


def _send_progress(node_id: str | None, run: TrainRun, loss: float) -> None:
    server = PromptServer.instance
    data = {"node": node_id, "run": run.run_id, "step": run.step, "total": run.settings.total_steps,
            "loss": float(loss), "loss_avg": run.loss_avg(), "lr": run.current_lr()}
    validated = run.val_losses[-1] if run.val_losses and run.val_losses[-1][0] == run.step else None
    if validated is not None:
        data["val_loss"] = validated[1]
    send_progress_event(data)
    if node_id is not None:
        val = f"  val {validated[1]:.4f}" if validated is not None else ""
        server.send_progress_text(f"step {run.step}/{run.settings.total_steps}  loss {loss:.4f}  "
                                  f"avg {run.loss_avg():.4f}{val}", node_id)


def _remove_wrappers(model: torch.nn.Module, wrappers: Iterable[object]) -> None:
    ours = {id(w) for w in wrappers}
    for m in model.modules():
        for attr in ("weight_function", "bias_function"):
            fns = m.__dict__.get(attr)
            if fns:
                setattr(m, attr, [f for f in fns if id(f) not in ours])


@contextlib.contextmanager
def training_model(run: TrainRun) -> Iterator[ComfyTrainModel]:
    """The run's MODEL loaded with the run's modules as weight wrappers, ready for autograd, in
    the run's memory mode (``run.attachments["memory_mode"]``, set when the run was planned;
    else gradient checkpointing as the settings say: see host.memory), with ComfyUI in training
    mode (see compat.training_mode); the wrappers are removed and the model's weights put back
    on exit. A MODEL that streams its weights (Dynamic VRAM) is trained on a fully loaded copy.
    A mode that keeps part of the model off the device (fp8, block swap) has ComfyUI load it on
    its offload device, the training device freed of other models, and only what the mode keeps
    resident placed on the device (see host.memory.loads_in_part)."""
    model = run.attachments["model"]
    check_precision(model, run.compute_dtype)
    mode = run.attachments.get("memory_mode") or MemoryMode(checkpointing=run.settings.gradient_checkpointing)
    patcher = trainable_clone(model)
    device = patcher.load_device
    in_part = loads_in_part(patcher, mode)
    if in_part:
        patcher.load_device = patcher.offload_device
        if torch.device(device).type != "cpu":
            comfy.model_management.free_memory(1e30, device)
    modules = [module for _, module in run.network.items()]
    clip = trainable_clip(run.attachments["clip"]) if run.trains_text_encoder else None
    for key, module in run.network.items():
        (clip.patcher if is_text_encoder_key(key) else patcher).add_weight_wrapper(key, module)
    patchers = [patcher] + ([clip.patcher] if clip is not None else [])
    comfy.model_management.load_models_gpu(patchers, memory_required=1e20, force_full_load=True)
    if in_part:
        patcher.model_patches_to(device)  # the graph's model patches compute beside the model
    for p in patchers:
        to_normal_tensors(p.model)
        p.model.requires_grad_(False)
    root = patcher.model.diffusion_model
    try:
        with memory_mode(patcher, mode, device) as applied, copy_norm_inputs(root), \
                copy_norm_inputs(clip.patcher.model if clip is not None else torch.nn.Module()), training_mode():
            tm = ComfyTrainModel(patcher, run.settings.guidance, run.compute_dtype, clip, device)
            tm.memory = applied
            yield tm
    finally:
        for p in patchers:
            _remove_wrappers(p.model, modules)
        if in_part:
            unload(patcher)
            patcher.load_device = device


def trainable_clip(clip):
    """A clone of a CLIP whose ModelPatcher loads its weights fully (see compat.trainable_clone)."""
    out = clip.clone()
    out.patcher = trainable_clone(clip.patcher)
    out.cond_stage_model = out.patcher.model
    return out


def train_steps(run: TrainRun, steps: int, *, node_id: str | None = None,
                on_step: Callable[[TrainRun, float], None] | None = None,
                bar: tuple[int, int] | None = None) -> bool:
    """Advance ``run`` by up to ``steps`` steps on its MODEL, with progress, live loss events and
    Cancel checked before every step. Returns True when Cancel stopped it (the interrupt is left
    pending for the caller to raise after saving). ``bar`` (steps done before, steps in all)
    places these steps on a progress bar that spans several calls."""
    todo = max(0, min(steps, run.settings.total_steps - run.step))
    before, shown = bar or (0, todo)
    progress = comfy.utils.ProgressBar(shown, node_id=node_id)
    first = run.step

    def step_done(r: TrainRun, loss: float) -> None:
        progress.update_absolute(before + r.step - first, shown)
        _send_progress(node_id, r, loss)
        if on_step is not None:
            on_step(r, loss)

    with training_model(run) as tm:
        return run.train(tm, todo, on_step=step_done, should_stop=comfy.model_management.processing_interrupted)


def lora_model(model, tensors: dict[str, torch.Tensor]):
    """A clone of ``model`` with LoRA tensors loaded the way core's loaders load a file."""
    return comfy.sd.load_lora_for_models(model, None, tensors, 1.0, 0)[0]


def lora_model_and_clip(model, clip, tensors: dict[str, torch.Tensor]) -> tuple[Any, Any]:
    """Clones of ``model`` and ``clip`` with LoRA tensors loaded as core's LoraLoader loads a file
    (strength 1 on both)."""
    return comfy.sd.load_lora_for_models(model, clip, tensors, 1.0, 1.0)


def raise_interrupt() -> None:
    """Raise ComfyUI's Cancel exception (the pending interrupt flag is consumed)."""
    comfy.model_management.throw_exception_if_processing_interrupted()
    raise comfy.model_management.InterruptProcessingException()
