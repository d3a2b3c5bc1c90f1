"""Training nodes: one-node training (``LoRALabTrain``) and training runs as graph objects
(``LoRALabTrainInit`` → ``LoRALabTrainSteps`` → ``LoRALabTrainPreview`` / ``LoRALabTrainSave``,
``LoRALabTrainResume``, ``LoRALabTrainExtend``).

A ``LORALAB_RUN`` never changes once a node has output it: the steps node trains a copy, so
ComfyUI's cache may hand any earlier run to a re-executed node and it still is what it was.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import folder_paths
import node_helpers
import torch
from comfy_api.latest import io, ui
from PIL import Image

from ..loralab.errors import LoRALabError
from ..loralab.files.paths import sanitize_output_name, unused_path
from ..loralab.train.checkpoint import STATE_EXTENSION, lora_tensors, save_checkpoint, save_lora_file
from ..loralab.train.losscurve import render_loss_curve
from ..loralab.train.memory import BASE_DTYPES, FITS_IN, gib
from ..loralab.train.network import ALGORITHMS, PRESETS, is_text_encoder_key
from ..loralab.train.optim import OPTIMIZERS, available_optimizers
from ..loralab.train.precision import PRECISIONS
from ..loralab.train.run import SAVE_DTYPES, TrainRun, TrainSettings
from ..loralab.train.schedules import SCHEDULES
from ..loralab.train.timesteps import FLOW_SAMPLERS
from .common import CATEGORY, advanced, display_name, node_id, unlisted
from .dataset import DatasetType
from .host.folders import file_stamp, lora_names, lora_path, output_folder, picked_stamp
from .host.progress import progress_callback
from .host.training import (graph_model_files, init_run, lora_model, lora_model_and_clip, raise_interrupt,
                            report_saved, resume_run, source_model_name, train_steps)

RunType = io.Custom("LORALAB_RUN")
MODEL_TIP = "the diffusion model to train on (SD1.x, SD2, SDXL, SD3 or Flux); fp8/bf16 weights are fine"
DATASET_TIP = "images and captions from a LoRA Dataset node (encoded with this model's VAE and CLIP)"
RUN_TIP = "a training run from Start Training Run, Training Steps or Resume Training Run"
TRAIN_CATEGORY = f"{CATEGORY}/Train"
#: the ``init_lora`` choice for fresh factors
NONE = "None"


def settings_inputs(steps_name: str) -> list:
    """The widgets every run is defined by (Init and the one-node trainer share them)."""
    return [
        io.Combo.Input("algorithm", options=list(ALGORITHMS), default="lora",
                       tooltip="lora (usual); locon = lora that also trains convolutions; loha; lokr; dora"),
        io.Int.Input("rank", default=16, min=1, max=1024,
                     tooltip="size of the LoRA: 8-32 for a style or character (16 is usual), 64+ for more detail; "
                             "higher ranks make bigger files"),
        io.Float.Input("alpha", default=16.0, min=0.0, max=4096.0, step=0.5,
                       tooltip="scale = alpha / rank; alpha = rank (scale 1) or rank / 2 is usual"),
        io.Combo.Input("targets", options=list(PRESETS), default="attention_mlp",
                       tooltip="which diffusion-model weights train: attention, attention_mlp (usual), all_linear, "
                               "all_linear_convs"),
        io.String.Input("blocks", default="", tooltip="empty (usual): every block trains. Else a block selection in "
                        "the loader's syntax, e.g. 'default=0, OUT=1' or 'IN=0.5': 0 = not trained, other values "
                        "scale that block's rate"),
        io.Combo.Input("optimizer", options=list(OPTIMIZERS), default="adamw",
                       tooltip="adamw (usual); adamw8bit needs bitsandbytes, prodigy prodigyopt (learning_rate 1), "
                               "adafactor transformers. Installed here: " + ", ".join(available_optimizers())),
        io.Float.Input("learning_rate", default=1e-4, min=1e-8, max=10.0, step=1e-6, round=1e-8,
                       tooltip="step size: 1e-4 is usual for LoRA with adamw (5e-5 to 5e-4); 1 for prodigy"),
        advanced(io.Float.Input("weight_decay", default=0.01, min=0.0, max=1.0, step=0.001,
                                tooltip="adamw's decoupled weight decay (0.01 is usual; 0 = off)")),
        io.Combo.Input("lr_scheduler", options=list(SCHEDULES), default="constant",
                       tooltip="how the learning rate changes over the steps: constant (usual), linear or cosine "
                               "decay to 0"),
        advanced(io.Int.Input("warmup_steps", default=0, min=0, max=1_000_000,
                              tooltip="steps over which the learning rate rises from 0 (0 = none; ~5% of the steps "
                                      "is common)")),
        io.Int.Input(steps_name, default=1000, min=1, max=1_000_000,
                     tooltip="optimizer steps to train (1000-3000 is usual for 10-50 images)" if steps_name == "steps"
                     else "the planned length of the run: the learning-rate schedule spans it (Training Steps "
                          "nodes advance the run)"),
        io.Int.Input("batch_size", default=1, min=1, max=256,
                     tooltip="images per step (1-4 is usual; more needs more memory)"),
        advanced(io.Int.Input("grad_accumulation", default=1, min=1, max=1024,
                              tooltip="batches summed per optimizer step: a larger effective batch without the "
                                      "memory (1 = off)")),
        advanced(io.Float.Input("max_grad_norm", default=1.0, min=0.0, max=1000.0, step=0.1,
                                tooltip="clip the gradient norm to this (1 is usual; 0 = no clipping)")),
        advanced(io.Boolean.Input("gradient_checkpointing", default=False,
                                  tooltip="less memory, about 30% slower steps; fits_in turns it on where needed "
                                          "(manual: as set; otherwise on = always)")),
        advanced(io.Int.Input("seed", default=0, min=0, max=2 ** 63 - 1, control_after_generate=False,
                              tooltip="seed of the initial weights, noise and data order: the same seed and settings "
                                      "give the same LoRA")),
        advanced(io.Float.Input("min_snr_gamma", default=0.0, min=0.0, max=100.0, step=0.5,
                                tooltip="ε/v-prediction models (SD1.x, SD2, SDXL); 0 = off, 5 is common")),
        advanced(io.Float.Input("noise_offset", default=0.0, min=0.0, max=1.0, step=0.01,
                                tooltip="ε/v-prediction models: helps very dark or bright images (0 = off, 0.05-0.1 "
                                        "when used)")),
        advanced(io.Combo.Input("timestep_sampling", options=list(FLOW_SAMPLERS), default="sigmoid",
                                tooltip="flow models (Flux, Chroma, Flux.2, SD3, Wan, Qwen-Image, Z-Image) only: how "
                                        "training noise levels are drawn; sigmoid (usual), flux_shift for Flux, "
                                        "model_shift (the model's own sampling shift) for SD3, Wan, Qwen-Image, "
                                        "Z-Image, Chroma and Flux.2")),
        advanced(io.Float.Input("sigmoid_scale", default=1.0, min=0.01, max=10.0, step=0.01,
                                tooltip="timestep_sampling sigmoid: spread of the drawn noise levels (1 is usual)")),
        advanced(io.Float.Input("shift", default=3.0, min=0.01, max=100.0, step=0.01,
                                tooltip="timestep_sampling shift: pushes training to noisier levels (3 is usual for "
                                        "Flux)")),
        advanced(io.Float.Input("logit_mean", default=0.0, min=-10.0, max=10.0, step=0.01,
                                tooltip="timestep_sampling logit_normal: centre of the noise levels (0 is usual)")),
        advanced(io.Float.Input("logit_std", default=1.0, min=0.01, max=10.0, step=0.01,
                                tooltip="timestep_sampling logit_normal: spread of the noise levels (1 is usual)")),
        advanced(io.Float.Input("guidance", default=1.0, min=0.0, max=100.0, step=0.1,
                                tooltip="guidance-distilled flow models (Flux dev) only: their guidance input while "
                                        "training (1 is usual)")),
        advanced(io.Combo.Input("precision", options=list(PRECISIONS), default="auto",
                                tooltip="the dtype the model computes in (LoRA weights stay fp32): auto (usual) = "
                                        "bf16 where the GPU has it, fp32 on the CPU, else fp16; fp16 always trains "
                                        "with loss scaling")),
        advanced(io.Combo.Input("init_lora", options=[NONE, *lora_names()], default=NONE,
                                tooltip="None (usual): fresh weights. Else start from this LoRA file (same targets; "
                                        "its rank and alpha replace the widgets')")),
        advanced(io.Int.Input("lokr_factor", default=-1, min=-1, max=1024,
                              tooltip="lokr only: size of its small Kronecker factor; -1 (usual) picks the divisor "
                                      "pair closest to a square")),
        io.String.Input("name", default="my_lora", tooltip="file name (sub-folders allowed) in the loras folder"),
        advanced(io.Combo.Input("save_dtype", options=list(SAVE_DTYPES), default="fp16",
                                tooltip="dtype of the saved LoRA: fp16 (usual), bf16 or fp32")),
        io.Int.Input("save_every", default=0, min=0, max=1_000_000,
                     tooltip="write a checkpoint every N steps to resume from (0 = off; e.g. 500)"),
        advanced(io.Int.Input("keep_last", default=3, min=0, max=1000,
                              tooltip="periodic checkpoints kept, older ones deleted (0 = all; 3 is usual)")),
        io.Combo.Input("fits_in", options=list(FITS_IN), default="auto", optional=True,
                       tooltip="the GPU memory training must fit: auto (usual) = this GPU's; 24/16/12/8 GB pick "
                               "fp8 base weights, block swap and checkpointing from the memory estimate; manual = "
                               "the advanced inputs as set. Refuses to start when the estimate does not fit"),
        advanced(io.Combo.Input("base_weights", options=list(BASE_DTYPES), default="as loaded", optional=True,
                                tooltip="fp8: keep the frozen model weights in fp8 (e4m3) and compute in the run's "
                                        "precision (half the memory of bf16, slightly different results); fits_in "
                                        "other than manual may choose fp8 anyway")),
        advanced(io.Int.Input("swap_blocks", default=0, min=0, max=1000, optional=True,
                              tooltip="transformer blocks kept on the CPU and streamed in ahead of use (same results, "
                                      "slower); 0 = none; fits_in other than manual may swap more")),
        advanced(io.Boolean.Input("offload_activations", default=False, optional=True,
                                  tooltip="with gradient checkpointing: keep the saved block inputs on the CPU (same "
                                          "results, less GPU memory, slower)")),
    ]


def run_extra_inputs() -> list:
    """Optional inputs of every new run (after the required widgets: saved workflows keep their values)."""
    return [
        io.Clip.Input("clip", optional=True,
                      tooltip="optional: the CLIP to train with text_encoder_lr (the one the dataset was encoded "
                              "with); Train gives it back with the LoRA applied"),
        DatasetType.Input("validation", optional=True,
                          tooltip="optional: a LoRA Dataset of validation images, never trained on (instead of "
                                  "validation_split)"),
        advanced(io.Float.Input("text_encoder_lr", default=0.0, min=0.0, max=10.0, step=1e-6, round=1e-8,
                                optional=True,
                                tooltip="learning rate of a LoRA on the text encoders (CLIP-L, CLIP-G, T5) as kohya "
                                        "trains it; 0 (usual) = text encoders not trained; 5e-5 is common. Needs "
                                        "the clip input; captions are then encoded every step")),
        advanced(io.Float.Input("validation_split", default=0.0, min=0.0, max=0.9, step=0.01, optional=True,
                                tooltip="fraction of the dataset's images held out of training to measure "
                                        "validation loss (0 = none; 0.1 is common)")),
        io.Int.Input("validation_every", default=100, min=0, max=1_000_000, optional=True,
                     tooltip="validation loss every N steps, drawn on the loss chart (needs validation_split or a "
                             "validation dataset; 0 = never)"),
        advanced(io.Int.Input("validation_seed", default=0, min=0, max=2 ** 63 - 1, control_after_generate=False,
                              optional=True,
                              tooltip="chooses the held-out images and the validation noise; keep it to compare "
                                      "runs")),
        advanced(io.Float.Input("ema_decay", default=0.0, min=0.0, max=0.99999, step=0.0001, round=0.00001,
                                optional=True,
                                tooltip="keep an exponential moving average of the LoRA weights and save it instead "
                                        "(0 = off; 0.999 is usual for runs of thousands of steps)")),
    ]


def sample_inputs() -> list:
    """Train's optional sample-image inputs (after every other widget)."""
    return [
        io.String.Input("sample_prompts", multiline=True, default="", optional=True,
                        tooltip="one prompt per line (include the trigger word): each line is sampled every "
                                "sample_every steps and at the end, with fixed seeds at the dataset's resolution, "
                                "shown on the node and given as samples; empty (usual) = no samples"),
        io.Int.Input("sample_every", default=0, min=0, max=1_000_000, optional=True,
                     tooltip="sample the prompts every N steps (e.g. 250; 0 = only at the end). Each sampling "
                             "takes about sample_steps model steps per prompt"),
        advanced(io.Int.Input("sample_seed", default=0, min=0, max=2 ** 63 - 1, control_after_generate=False,
                              optional=True,
                              tooltip="line i uses seed + i every time, so the samples show what training changed")),
        advanced(io.Int.Input("sample_steps", default=20, min=1, max=1000, optional=True,
                              tooltip="sampling steps per image (20 is usual)")),
        advanced(io.Float.Input("sample_cfg", default=7.0, min=0.0, max=100.0, step=0.1, optional=True,
                                tooltip="classifier-free guidance of the samples: 5-8 for SD1.x/SDXL, 1 for Flux "
                                        "(which samples with guidance 3.5)")),
    ]


#: Train's samples output when it sampled nothing (one black 64² image)
NO_SAMPLES = torch.zeros(1, 64, 64, 3)


def train_sampling(run: TrainRun, prompts: str, seed: int, steps: int, cfg: float) -> "Sampling | None":
    """How Train samples its prompts (None when there are none): the dataset's resolution, euler
    with the normal schedule (simple for flow models)."""
    lines = tuple(p.strip() for p in prompts.splitlines() if p.strip())
    if not lines:
        return None
    res = run.dataset.settings.resolution
    return Sampling(lines, "", seed, steps, cfg, 3.5, res, res, "euler", "simple" if run.kind == "flow" else "normal")


def show_on_node(node: str | None, images: torch.Tensor, step: int, total: int) -> None:
    """Show an IMAGE batch side by side as the node's live preview (ComfyUI's progress preview)."""
    row = torch.cat(list(images), dim=1).clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
    comfy.utils.ProgressBar(total, node_id=node).update_absolute(step, total, ("JPEG", Image.fromarray(row), 1024))


def settings_from(values: dict, steps_name: str) -> TrainSettings:
    fields = dict(values)
    fields["total_steps"] = fields.pop(steps_name)
    if fields.get("init_lora") == NONE:
        fields["init_lora"] = ""
    return TrainSettings(**fields)


def _loss_image(run: TrainRun) -> torch.Tensor:
    arr = render_loss_curve(run.losses, title=f"loss ({run.settings.name}, step {run.step})")
    return torch.from_numpy(arr).float().div(255.0)[None]


def _loras_folder() -> str:
    return output_folder("loras")


def _relative(path: str) -> str:
    return os.path.relpath(path, _loras_folder()).replace(os.sep, "/")


def run_info(run: TrainRun) -> str:
    s = run.settings
    params = sum(p.numel() for p in run.network.parameters())
    blocks = f", blocks '{s.blocks}'" if s.blocks else ""
    start = f", from {s.init_lora}" if s.init_lora else ""
    scaled = (f", loss scale {run.scaler.scale:g}, {run.scaler.skipped} steps skipped"
              if run.precision == "fp16" else "")
    te = sum(is_text_encoder_key(k) for k in run.network.keys)
    encoders = f", {te} of them in the text encoders at lr {s.text_encoder_lr:g}" if te else ""
    found = run.validation_set()
    validation = (f"; validation on {len(found[1])} images" + (f" every {s.validation_every} steps"
                                                              if s.validation_every else " (validation_every 0)")
                  if found else "")
    ema = f"; EMA {s.ema_decay:g} saved" if run.ema is not None else ""
    mode, est = run.attachments.get("memory_mode"), run.attachments.get("memory_estimate")
    memory = f"; memory: {mode.describe()}, estimated peak {gib(est.total)}" if mode is not None else ""
    if run.attachments.get("memory_note"):
        memory += f" ({run.attachments['memory_note']})"
    return (f"{s.algorithm} rank {s.rank} alpha {s.alpha:g} on {len(run.network)} modules ({s.targets}{blocks}{start}"
            f"{encoders}), {params:,} trained parameters; {run.model_info['arch']} {run.kind} model "
            f"'{run.model_info.get('name') or 'unknown'}'; step {run.step} of {s.total_steps}, "
            f"batch {s.batch_size}x{s.grad_accumulation}; computes in {run.precision}{scaled}; "
            f"{len(run.dataset.items) - len(run.held_out)} training images{validation}{ema}{memory}")


def advance(run: TrainRun, steps: int, node: str | None, *, copy: bool = True, every: int = 0,
            at_every: Callable[[TrainRun], None] | None = None) -> TrainRun:
    """``run`` (a copy of it unless ``copy`` is false) trained ``steps`` more steps, with periodic
    checkpoints; on Cancel a checkpoint of the last finished step is written, then the Cancel
    goes on. With ``every``, ``at_every(run)`` is called outside training at every multiple of
    ``every`` steps."""
    if copy:
        model = run.attachments["model"]
        source, run = run, run.fork(device=model.load_device)
        source.to(model.offload_device)  # same values; earlier runs cached by the graph wait off the GPU
    folder = _loras_folder()
    saved_at = {-1}

    def on_step(r: TrainRun, loss: float) -> None:
        if r.settings.save_every and r.step % r.settings.save_every == 0:
            report_saved(r, _relative(save_checkpoint(r, folder)[0]), node)
            saved_at.add(r.step)

    todo = max(0, min(steps, run.settings.total_steps - run.step))
    done = 0
    while done < todo:
        chunk = todo - done if not (every and at_every) else min(todo - done, every - run.step % every)
        if train_steps(run, chunk, node_id=node, on_step=on_step, bar=(done, todo)):
            if run.step not in saved_at:
                report_saved(run, _relative(save_checkpoint(run, folder)[0]), node)
            raise_interrupt()
        done += chunk
        if every and at_every and run.step % every == 0:
            at_every(run)
    return run


@dataclass(frozen=True)
class Sampling:
    """How preview images are sampled: one per prompt line, line i with seed + i."""

    prompts: tuple[str, ...]
    negative: str = ""
    seed: int = 0
    steps: int = 20
    cfg: float = 7.0
    guidance: float = 3.5
    width: int = 512
    height: int = 512
    sampler_name: str = "euler"
    scheduler: str = "normal"


def sample_images(run: TrainRun, sampling: Sampling,
                  progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """The run's LoRA as it would be saved (on the model and, where the run trains it, the CLIP)
    sampled through ComfyUI's own sampler: an IMAGE batch, one image per prompt, encoded with the
    run's CLIP (the dataset's where the run has none)."""
    clip = run.attachments.get("clip") or run.dataset.attachments["clip"]
    vae = run.dataset.attachments["vae"]
    model, clip = lora_model_and_clip(run.attachments["model"], clip, lora_tensors(run))
    lines = [p.strip() for p in sampling.prompts if p.strip()] or [""]
    w, h, steps = sampling.width, sampling.height, sampling.steps
    neg = clip.encode_from_tokens_scheduled(clip.tokenize(sampling.negative))
    images = []
    for i, text in enumerate(lines):
        pos = clip.encode_from_tokens_scheduled(clip.tokenize(text))
        if run.kind == "flow":
            pos = node_helpers.conditioning_set_values(pos, {"guidance": sampling.guidance})
        latent = comfy.sample.fix_empty_latent_channels(model, torch.zeros([1, 4, h // 8, w // 8]))
        noise = comfy.sample.prepare_noise(latent, sampling.seed + i)
        callback = None
        if progress is not None:
            callback = lambda step, x0, x, total, i=i: progress(i * steps + step + 1, len(lines) * steps)  # noqa: E731
        samples = comfy.sample.sample(model, noise, steps, sampling.cfg, sampling.sampler_name, sampling.scheduler,
                                      pos, neg, latent, seed=sampling.seed + i, disable_pbar=True, callback=callback)
        images.append(vae.decode(samples)[..., :3].reshape(-1, h, w, 3))
    return torch.cat(images)


class _StartsARun(io.ComfyNode):
    """A node that starts a run, possibly from a LoRA file (``init_lora``)."""

    @classmethod
    def validate_inputs(cls, init_lora: str | None = None) -> bool | str:
        """This ComfyUI checks only V1-style combos against their options: the node checks its own."""
        return unlisted({"init_lora": init_lora}, [NONE, *lora_names()])

    @classmethod
    def fingerprint_inputs(cls, init_lora: str | None = None, **kwargs: Any) -> Any:
        """Size and modification time of the LoRA training starts from: a changed file trains again."""
        return picked_stamp(init_lora)


class LoRALabTrain(_StartsARun):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("Train"),
            display_name=display_name("Train LoRA"),
            category=TRAIN_CATEGORY,
            description="Train a LoRA on the graph's MODEL (and, with text_encoder_lr, the CLIP) from a LoRA Lab "
                        "dataset and save it (kohya format and metadata) into the loras folder. Cancel stops within "
                        "one step and saves what was trained.",
            inputs=[io.Model.Input("model", tooltip=MODEL_TIP), DatasetType.Input("dataset", tooltip=DATASET_TIP),
                    *settings_inputs("steps"), *run_extra_inputs(), *sample_inputs()],
            outputs=[io.Model.Output(display_name="model"), io.LoraModel.Output(display_name="lora"),
                     io.String.Output(display_name="file"), io.Image.Output(display_name="loss_curve"),
                     io.Clip.Output(display_name="clip"), io.Image.Output(display_name="samples")],
            hidden=[io.Hidden.unique_id, io.Hidden.prompt],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, dataset, clip=None, validation=None, sample_prompts: str = "", sample_every: int = 0,
                sample_seed: int = 0, sample_steps: int = 20, sample_cfg: float = 7.0, **kwargs) -> io.NodeOutput:
        node = cls.hidden.unique_id
        settings = settings_from(kwargs, "steps")
        prompt = cls.hidden.prompt
        run = init_run(model, dataset, settings, source_model_name(prompt, node), graph_model_files(prompt, node),
                       clip, validation)
        sampling = train_sampling(run, sample_prompts, sample_seed, sample_steps, sample_cfg)
        samples: list[torch.Tensor] = []

        def take_samples(r: TrainRun) -> None:
            samples.append(sample_images(r, sampling))
            show_on_node(node, samples[-1], r.step, r.settings.total_steps)

        run = advance(run, settings.total_steps, node, copy=False, every=sample_every if sampling else 0,
                      at_every=take_samples if sampling else None)
        if sampling is not None and not (sample_every and run.step % sample_every == 0):
            take_samples(run)
        name = sanitize_output_name(settings.name, extension=".safetensors", default="lora")
        path = save_lora_file(run, unused_path(_loras_folder(), name), title=os.path.splitext(os.path.basename(name))[0])
        report_saved(run, _relative(path), node)
        tensors = lora_tensors(run, SAVE_DTYPES[settings.save_dtype])
        if clip is None:
            out_model, out_clip = lora_model(model, tensors), None
        else:
            out_model, out_clip = lora_model_and_clip(model, clip, tensors)
        if not samples:
            return io.NodeOutput(out_model, tensors, _relative(path), _loss_image(run), out_clip, NO_SAMPLES)
        batch = torch.cat(samples)
        return io.NodeOutput(out_model, tensors, _relative(path), _loss_image(run), out_clip, batch,
                             ui=ui.PreviewImage(batch, cls=cls))


class LoRALabTrainInit(_StartsARun):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("TrainInit"),
            display_name=display_name("Start Training Run"),
            category=TRAIN_CATEGORY,
            description="A new training run (network, optimizer, schedule, random state) on the graph's MODEL; "
                        "advance it with Training Steps.",
            inputs=[io.Model.Input("model", tooltip=MODEL_TIP), DatasetType.Input("dataset", tooltip=DATASET_TIP),
                    *settings_inputs("total_steps"), *run_extra_inputs()],
            outputs=[RunType.Output(display_name="run"), io.String.Output(display_name="info")],
            hidden=[io.Hidden.unique_id, io.Hidden.prompt],
        )

    @classmethod
    def execute(cls, model, dataset, clip=None, validation=None, **kwargs) -> io.NodeOutput:
        prompt, node = cls.hidden.prompt, cls.hidden.unique_id
        run = init_run(model, dataset, settings_from(kwargs, "total_steps"), source_model_name(prompt, node),
                       graph_model_files(prompt, node), clip, validation)
        return io.NodeOutput(run, run_info(run))


class LoRALabTrainSteps(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("TrainSteps"),
            display_name=display_name("Training Steps"),
            category=TRAIN_CATEGORY,
            description="Advance a run by N steps (never past its total). Chain several; the input run is left "
                        "as it was. Cancel writes a checkpoint the run resumes from exactly.",
            inputs=[RunType.Input("run", tooltip=RUN_TIP),
                    io.Int.Input("steps", default=100, min=1, max=1_000_000,
                                 tooltip="steps to train now (e.g. 100-500 between previews); never past the run's "
                                         "total_steps")],
            outputs=[RunType.Output(display_name="run"), io.Image.Output(display_name="loss_curve")],
            hidden=[io.Hidden.unique_id],
        )

    @classmethod
    def execute(cls, run: TrainRun, steps: int) -> io.NodeOutput:
        run = advance(run, steps, cls.hidden.unique_id)
        return io.NodeOutput(run, _loss_image(run))


class LoRALabTrainPreview(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("TrainPreview"),
            display_name=display_name("Training Preview"),
            category=TRAIN_CATEGORY,
            description="Sample images with the run's current LoRA (its EMA where the run keeps one) through "
                        "ComfyUI's own sampler, one per prompt line, with the dataset's VAE and the run's CLIP (the "
                        "dataset's when the run trains none).",
            inputs=[
                RunType.Input("run", tooltip=RUN_TIP),
                io.String.Input("prompts", multiline=True, default="a photo",
                                tooltip="one prompt per line, one image each; include the trigger word"),
                io.String.Input("negative", default="", tooltip="negative prompt for every image (empty is fine)"),
                io.Int.Input("seed", default=0, min=0, max=2 ** 63 - 1, control_after_generate=False,
                             tooltip="line i uses seed + i; keep it fixed to compare previews across steps"),
                io.Int.Input("steps", default=20, min=1, max=1000, tooltip="sampling steps (20-30 is usual)"),
                io.Float.Input("cfg", default=7.0, min=0.0, max=100.0, step=0.1,
                               tooltip="classifier-free guidance: 5-8 for SD1.x/SDXL, 1 for Flux"),
                advanced(io.Float.Input("guidance", default=3.5, min=0.0, max=100.0, step=0.1,
                                        tooltip="guidance-distilled flow models (Flux dev) only: their guidance "
                                                "input (3.5 is usual)")),
                io.Int.Input("width", default=512, min=64, max=8192, step=64,
                             tooltip="image width: 512 for SD1.x, 1024 for SDXL and Flux"),
                io.Int.Input("height", default=512, min=64, max=8192, step=64,
                             tooltip="image height: 512 for SD1.x, 1024 for SDXL and Flux"),
                advanced(io.Combo.Input("sampler_name", options=comfy.samplers.KSampler.SAMPLERS, default="euler",
                                        tooltip="ComfyUI's sampler (euler is usual)")),
                advanced(io.Combo.Input("scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal",
                                        tooltip="ComfyUI's scheduler (normal; simple for Flux)")),
            ],
            outputs=[io.Image.Output(display_name="images")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, run: TrainRun, prompts: str, negative: str, seed: int, steps: int, cfg: float, guidance: float,
                width: int, height: int, sampler_name: str, scheduler: str) -> io.NodeOutput:
        sampling = Sampling(tuple(prompts.splitlines()), negative, seed, steps, cfg, guidance, width, height,
                            sampler_name, scheduler)
        lines = max(1, len([p for p in sampling.prompts if p.strip()]))
        batch = sample_images(run, sampling, progress_callback(lines * steps))
        return io.NodeOutput(batch, ui=ui.PreviewImage(batch, cls=cls))


class LoRALabTrainSave(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("TrainSave"),
            display_name=display_name("Save Training Run"),
            category=TRAIN_CATEGORY,
            description="Save the run's LoRA now as <name>_step<N>.safetensors in the loras folder, with its "
                        "state file beside it (resume from it with Resume Training Run).",
            inputs=[RunType.Input("run", tooltip=RUN_TIP),
                    io.String.Input("name", default="", tooltip="file name in loras; empty = the run's name"),
                    io.Boolean.Input("with_state", default=True, tooltip="also write the resumable state file")],
            outputs=[io.LoraModel.Output(display_name="lora"), io.String.Output(display_name="file"),
                     io.Image.Output(display_name="loss_curve")],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, run: TrainRun, name: str, with_state: bool) -> io.NodeOutput:
        path, _ = save_checkpoint(run, _loras_folder(), periodic=False, name=name.strip() or None,
                                  with_state=with_state)
        report_saved(run, _relative(path))
        return io.NodeOutput(lora_tensors(run, SAVE_DTYPES[run.settings.save_dtype]), _relative(path),
                             _loss_image(run))


def state_files() -> list[str]:
    """Training state files in the loras folders (relative names)."""
    out = []
    for root in folder_paths.get_folder_paths("loras"):
        if not os.path.isdir(root):
            continue
        for dirpath, dirs, files in os.walk(root, followlinks=True):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            out += [os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/")
                    for f in files if f.endswith(STATE_EXTENSION)]
    return sorted(set(out))


def _state_path(name: str) -> str:
    """The real path of a listed training state file."""
    return lora_path(name, (STATE_EXTENSION,), listing=state_files())


class LoRALabTrainResume(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("TrainResume"),
            display_name=display_name("Resume Training Run"),
            category=TRAIN_CATEGORY,
            description="Continue a run from a checkpoint's state file. Connect the run from Start Training Run "
                        "with the settings, dataset and model the run began with; anything else is refused, "
                        "naming what changed.",
            inputs=[RunType.Input("run", tooltip="a new run from Start Training Run with the settings, dataset and "
                                                 "model the checkpoint's run began with"),
                    io.Combo.Input("checkpoint", options=state_files(),
                                   tooltip="a .loralab-state file that Save Training Run or save_every wrote")],
            outputs=[RunType.Output(display_name="run"), io.String.Output(display_name="info")],
        )

    @classmethod
    def validate_inputs(cls, checkpoint: str | None = None) -> bool | str:
        """This ComfyUI checks only V1-style combos against their options: the node checks its own."""
        if checkpoint is not None and checkpoint not in state_files():
            return f"checkpoint: {str(checkpoint)[:200]!r} is not a training state file in the loras folders"
        return True

    @classmethod
    def fingerprint_inputs(cls, checkpoint: str | None = None, **kwargs: Any) -> Any:
        """Size and modification time of the state file: a rewritten checkpoint is read again."""
        try:
            return file_stamp(_state_path(checkpoint))
        except LoRALabError:
            return checkpoint

    @classmethod
    def execute(cls, run: TrainRun, checkpoint: str) -> io.NodeOutput:
        resumed = resume_run(run, _state_path(checkpoint))
        return io.NodeOutput(resumed, run_info(resumed))


class LoRALabTrainExtend(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("TrainExtend"),
            display_name=display_name("Extend Training Run"),
            category=TRAIN_CATEGORY,
            description="Give a run (finished or not) a longer total; everything else stays. The learning-rate "
                        "schedule keeps its horizon: a constant schedule trains on as one longer run would, a "
                        "decayed one goes on at the rate of its last planned step.",
            inputs=[RunType.Input("run", tooltip=RUN_TIP),
                    io.Int.Input("total_steps", default=2000, min=2, max=1_000_000,
                                 tooltip="the run's new planned length (more than its steps so far); the schedule "
                                         "spans it from here")],
            outputs=[RunType.Output(display_name="run"), io.String.Output(display_name="info")],
        )

    @classmethod
    def execute(cls, run: TrainRun, total_steps: int) -> io.NodeOutput:
        extended = run.extend(total_steps)
        return io.NodeOutput(extended, run_info(extended))


NODES = [LoRALabTrain, LoRALabTrainInit, LoRALabTrainSteps, LoRALabTrainPreview, LoRALabTrainSave,
         LoRALabTrainResume, LoRALabTrainExtend]
