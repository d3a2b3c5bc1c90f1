"""Training nodes: one-node training (``LoRALabTrain``)."""
from __future__ import annotations

import os

import comfy.model_management
import comfy.utils
import torch
from comfy_api.latest import io

from ..loralab.errors import TrainingError
from ..loralab.paths import sanitize_output_name, unused_path
from ..loralab.train.checkpoint import lora_tensors, save_checkpoint, save_lora_file
from ..loralab.train.losscurve import render_loss_curve
from ..loralab.train.network import ALGORITHMS, PRESETS, select_targets
from ..loralab.train.optim import OPTIMIZERS
from ..loralab.train.run import SAVE_DTYPES, TrainRun, TrainSettings
from ..loralab.train.schedules import SCHEDULES
from ..loralab.train.timesteps import FLOW_SAMPLERS
from .common import CATEGORY, display_name, model_layout, node_id, output_folder
from .dataset import DatasetType
from .train_host import diffusion_shapes, lora_model, model_info, raise_interrupt, source_model_name, train_steps

TRAIN_CATEGORY = f"{CATEGORY}/Train"


def settings_inputs(steps_name: str) -> list:
    """The widgets every run is defined by (Init and the one-node trainer share them)."""
    return [
        io.Combo.Input("algorithm", options=list(ALGORITHMS), default="lora",
                       tooltip="lora; locon = lora that also trains convolutions; loha; lokr; dora"),
        io.Int.Input("rank", default=16, min=1, max=1024),
        io.Float.Input("alpha", default=16.0, min=0.0, max=4096.0, step=0.5, tooltip="scale = alpha / rank"),
        io.Combo.Input("targets", options=list(PRESETS), default="attention_mlp"),
        io.String.Input("blocks", default="", tooltip="block selection in the loader's syntax, e.g. "
                        "'default=0, OUT=1' or 'IN=0.5': 0 = not trained, other values scale that block's rate"),
        io.Combo.Input("optimizer", options=list(OPTIMIZERS), default="adamw"),
        io.Float.Input("learning_rate", default=1e-4, min=1e-8, max=10.0, step=1e-6, round=1e-8),
        io.Float.Input("weight_decay", default=0.01, min=0.0, max=1.0, step=0.001),
        io.Combo.Input("lr_scheduler", options=list(SCHEDULES), default="constant"),
        io.Int.Input("warmup_steps", default=0, min=0, max=1_000_000),
        io.Int.Input(steps_name, default=1000, min=1, max=1_000_000),
        io.Int.Input("batch_size", default=1, min=1, max=256),
        io.Int.Input("grad_accumulation", default=1, min=1, max=1024),
        io.Float.Input("max_grad_norm", default=1.0, min=0.0, max=1000.0, step=0.1, tooltip="0 = no clipping"),
        io.Boolean.Input("gradient_checkpointing", default=False),
        io.Int.Input("seed", default=0, min=0, max=2 ** 63 - 1),
        io.Float.Input("min_snr_gamma", default=0.0, min=0.0, max=100.0, step=0.5,
                       tooltip="ε/v-prediction models; 0 = off, 5 is common"),
        io.Float.Input("noise_offset", default=0.0, min=0.0, max=1.0, step=0.01),
        io.Combo.Input("timestep_sampling", options=list(FLOW_SAMPLERS), default="sigmoid",
                       tooltip="flow models (Flux)"),
        io.Float.Input("sigmoid_scale", default=1.0, min=0.01, max=10.0, step=0.01),
        io.Float.Input("shift", default=3.0, min=0.01, max=100.0, step=0.01),
        io.Float.Input("logit_mean", default=0.0, min=-10.0, max=10.0, step=0.01),
        io.Float.Input("logit_std", default=1.0, min=0.01, max=10.0, step=0.01),
        io.Float.Input("guidance", default=1.0, min=0.0, max=100.0, step=0.1,
                       tooltip="the guidance input of guidance-distilled flow models (Flux dev) while training"),
        io.Int.Input("lokr_factor", default=-1, min=-1, max=1024),
        io.String.Input("name", default="my_lora", tooltip="file name (sub-folders allowed) in the loras folder"),
        io.Combo.Input("save_dtype", options=list(SAVE_DTYPES), default="fp16"),
        io.Int.Input("save_every", default=0, min=0, max=1_000_000, tooltip="checkpoint every N steps (0 = off)"),
        io.Int.Input("keep_last", default=3, min=0, max=1000, tooltip="periodic checkpoints kept (0 = all)"),
    ]


def settings_from(values: dict, steps_name: str) -> TrainSettings:
    fields = dict(values)
    fields["total_steps"] = fields.pop(steps_name)
    return TrainSettings(**fields)


def _loss_image(run: TrainRun) -> torch.Tensor:
    arr = render_loss_curve(run.losses, title=f"loss ({run.settings.name}, step {run.step})")
    return torch.from_numpy(arr).float().div(255.0)[None]


def _loras_folder() -> str:
    return output_folder("loras")


def _relative(path: str) -> str:
    return os.path.relpath(path, _loras_folder()).replace(os.sep, "/")


def init_run(model, dataset, settings: TrainSettings, model_name: str | None) -> TrainRun:
    """A new run on the graph's MODEL (nothing trained yet)."""
    info = model_info(model, model_name)
    layout = model_layout(model)
    shapes = diffusion_shapes(model)
    targets = select_targets(shapes, info["arch"], settings.targets, settings.blocks,
                             convs=settings.algorithm == "locon", layout=layout)
    unwritable = [k for k in targets if tuple(layout.shapes.get(k, ())) != shapes[k]]
    if unwritable:
        raise TrainingError(f"{len(unwritable)} target weights are not in LoRA Lab's layout of this model",
                            key=unwritable[0], hint="report this model; its LoRA could not be saved with kohya names")
    base_weight = None
    if settings.algorithm == "dora":
        comfy.model_management.load_models_gpu([model])
        base_weight = lambda key: comfy.utils.get_attr(model.model, key)  # noqa: E731
    return TrainRun.create(settings, dataset, shapes, targets, info, base_weight=base_weight,
                           device=model.load_device, layout=layout, attachments={"model": model})


def advance(run: TrainRun, steps: int, node: str | None, *, copy: bool = True) -> TrainRun:
    """``run`` (a copy of it unless ``copy`` is false) trained ``steps`` more steps, with periodic
    checkpoints; on Cancel a checkpoint of the last finished step is written, then the Cancel
    goes on."""
    if copy:
        run = run.fork()
    folder = _loras_folder()
    saved_at = {-1}

    def on_step(r: TrainRun, loss: float) -> None:
        if r.settings.save_every and r.step % r.settings.save_every == 0:
            save_checkpoint(r, folder)
            saved_at.add(r.step)

    if train_steps(run, steps, node_id=node, on_step=on_step):
        if run.step not in saved_at:
            save_checkpoint(run, folder)
        raise_interrupt()
    return run


class LoRALabTrain(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("Train"),
            display_name=display_name("Train LoRA"),
            category=TRAIN_CATEGORY,
            description="Train a LoRA on the graph's MODEL from a LoRA Lab dataset and save it (kohya format and "
                        "metadata) into the loras folder. Cancel stops within one step and saves what was trained.",
            inputs=[io.Model.Input("model"), DatasetType.Input("dataset"), *settings_inputs("steps")],
            outputs=[io.Model.Output(display_name="model"), io.LoraModel.Output(display_name="lora"),
                     io.String.Output(display_name="file"), io.Image.Output(display_name="loss_curve")],
            hidden=[io.Hidden.unique_id, io.Hidden.prompt],
            is_output_node=True,
        )

    @classmethod
    def execute(cls, model, dataset, **kwargs) -> io.NodeOutput:
        node = cls.hidden.unique_id
        settings = settings_from(kwargs, "steps")
        run = advance(init_run(model, dataset, settings, source_model_name(cls.hidden.prompt, node)),
                      settings.total_steps, node, copy=False)
        name = sanitize_output_name(settings.name, extension=".safetensors", default="lora")
        path = save_lora_file(run, unused_path(_loras_folder(), name), title=os.path.splitext(os.path.basename(name))[0])
        tensors = lora_tensors(run, SAVE_DTYPES[settings.save_dtype])
        return io.NodeOutput(lora_model(model, tensors), tensors, _relative(path), _loss_image(run))


NODES = [LoRALabTrain]
