"""Training outside the graph (``loralab train CONFIG``): the model loaded by ComfyUI's own loader
nodes, the dataset encoded, the run created, resumed, trained and saved by the code the training
nodes use, so a run started in the graph continues here and the other way round.

In a world of several processes (``torchrun``) each loads the model onto its own GPU, the first
process of each machine encodes the dataset first (the others then read it from the cache), all
train the run together (see :mod:`loralab.train.distributed`) and only the main one writes files.
"""
from __future__ import annotations

import dataclasses
import inspect
import os
import signal
import sys
import time
from typing import Any, Callable

import folder_paths
import nodes as comfy_nodes

from ...loralab.cli.terminal import terminal_safe
from ...loralab.errors import LoRALabError, TrainingError
from ...loralab.train.checkpoint import save_checkpoint
from ...loralab.train.config import ModelFiles, RunConfig, load_config
from ...loralab.train.run import TrainRun
from .folders import output_folder
from .training import cache_folder, encode_dataset, init_run, resume_run, training_model


def _call(cls: type, **inputs: Any) -> tuple:
    """Run one of ComfyUI's loader nodes (a V1 node's FUNCTION or a V3 node's ``execute``)."""
    if hasattr(cls, "FUNCTION") and not hasattr(cls, "define_schema"):
        return tuple(getattr(cls(), cls.FUNCTION)(**inputs))
    out = cls.execute(**inputs)
    if inspect.isawaitable(out):
        import asyncio
        out = asyncio.run(out)
    return tuple(out.args)


def _choices(cls: type, name: str) -> list[str]:
    return list(cls.INPUT_TYPES()["required"][name][0])


def loader_name(folder: str, value: str) -> str:
    """The name a loader node takes for ``value``: a file in ComfyUI's ``folder`` folders by its
    name, or a file path (its folder is put first among them, as extra_model_paths.yaml does)."""
    if os.path.isfile(value):
        parent, name = os.path.split(os.path.abspath(value))
        folder_paths.add_model_folder_path(folder, parent, is_default=True)
        return name
    if folder_paths.get_full_path(folder, value) is None:
        raise TrainingError(f"{value!r} is neither a file nor a file in ComfyUI's {folder} folders",
                            path=value, hint="give a path (relative to the config file) or a name as ComfyUI lists it")
    return value


def load_models(files: ModelFiles) -> tuple[Any, Any, Any]:
    """MODEL, CLIP and VAE, loaded as Load Checkpoint, or Load Diffusion Model, Load VAE and
    Load CLIP / DualCLIPLoader load them."""
    if files.checkpoint:
        model, clip, vae = _call(comfy_nodes.CheckpointLoaderSimple,
                                 ckpt_name=loader_name("checkpoints", files.checkpoint))[:3]
        if clip is None or vae is None:
            raise TrainingError("the checkpoint has no text encoder or no VAE", path=files.checkpoint,
                                hint="give [model] unet, vae and clip instead of checkpoint")
        return model, clip, vae
    dtypes = _choices(comfy_nodes.UNETLoader, "weight_dtype")
    if files.weight_dtype not in dtypes:
        raise TrainingError(f"unknown weight_dtype {files.weight_dtype!r} (known: {', '.join(dtypes)})")
    if len(files.clip) not in (1, 2):
        raise TrainingError(f"[model] clip names {len(files.clip)} files; give one (SD1.x) or two (SDXL, Flux)")
    loader = comfy_nodes.CLIPLoader if len(files.clip) == 1 else comfy_nodes.DualCLIPLoader
    clip_type = files.clip_type or ("stable_diffusion" if len(files.clip) == 1 else "")
    types = _choices(loader, "type")
    if clip_type not in types:
        raise TrainingError(f"clip_type {clip_type!r} does not fit {len(files.clip)} text encoder file(s) "
                            f"(known: {', '.join(types)})")
    model = _call(comfy_nodes.UNETLoader, unet_name=loader_name("diffusion_models", files.unet),
                  weight_dtype=files.weight_dtype)[0]
    vae = _call(comfy_nodes.VAELoader, vae_name=loader_name("vae", files.vae))[0]
    names = [loader_name("text_encoders", c) for c in files.clip]
    if len(names) == 1:
        clip = _call(loader, clip_name=names[0], type=clip_type)[0]
    else:
        clip = _call(loader, clip_name1=names[0], clip_name2=names[1], type=clip_type)[0]
    return model, clip, vae


def _say(world, text: str) -> None:
    if world.main:
        print(text, flush=True)


def prepare_run(config: RunConfig, world, resume: str | None = None) -> TrainRun:
    """The config's run on its model (the first process of each machine encodes the dataset
    first), continued from the state file ``resume`` when given."""
    model, clip, vae = load_models(config.model)
    cache = config.cache_folder or cache_folder()
    first_here = world.local_rank == 0  # encodes into this machine's cache while the others wait
    if not first_here:
        world.barrier()
    dataset = encode_dataset(config.dataset, config.dataset_settings, vae, clip, cache)
    if first_here:
        world.barrier()
    _say(world, dataset.summary())
    files = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config.model).items() if v}
    run = init_run(model, dataset, config.settings, config.model.name, files)
    if resume:
        run = resume_run(run, resume)
        note = run.attachments.get("memory_note")
        _say(world, f"resumed {resume} at step {run.step} of {run.settings.total_steps}" + (f" ({note})" if note else ""))
    return run


def _stop_flag() -> Callable[[], bool]:
    """A flag Ctrl-C and SIGTERM set (the second Ctrl-C stops at once)."""
    asked = []

    def handler(signum, frame) -> None:
        if asked and signum == signal.SIGINT:
            raise KeyboardInterrupt
        asked.append(signum)
        print("stopping after this step; a checkpoint will be written (Ctrl-C again to stop at once)", flush=True)

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
    return lambda: bool(asked)


def train_config(config_path: str, world, *, resume: str | None = None, steps: int | None = None) -> int:
    """Train the run of a config file (up to ``steps`` more steps, never past its total) and save
    its LoRA with its state file; periodic checkpoints as ``save_every`` says. Returns the exit
    code: 0; 130 when a stop was asked for (the last finished step is saved); 1 when the run
    cannot be trained (the reason printed)."""
    try:
        return _train(config_path, world, resume, steps)
    except LoRALabError as e:
        print(terminal_safe(f"error: {e}"), file=sys.stderr)
        return 1


def _train(config_path: str, world, resume: str | None, steps: int | None) -> int:
    config = load_config(config_path)
    folder = config.output_folder or output_folder("loras")
    run = prepare_run(config, world, resume)
    s = run.settings
    todo = s.total_steps - run.step if steps is None else max(0, min(steps, s.total_steps - run.step))
    _say(world, f"training {todo} steps (step {run.step} of {s.total_steps}) on {world.size} process(es), "
                f"batch {s.batch_size} x {s.grad_accumulation}, computing in {run.precision}")
    started = time.monotonic()
    first = run.step
    saved_at: set[int] = set()

    def on_step(r: TrainRun, loss: float) -> None:
        rate = (r.step - first) / max(time.monotonic() - started, 1e-9)
        _say(world, f"step {r.step}/{s.total_steps}  loss {loss:.4f}  avg {r.loss_avg():.4f}  "
                    f"lr {r.current_lr():.3g}  {rate:.2f} it/s")
        if s.save_every and r.step % s.save_every == 0 and world.main:
            _say(world, f"checkpoint {save_checkpoint(r, folder)[0]}")
            saved_at.add(r.step)

    with training_model(run) as model:
        stopped = run.train(model, todo, on_step=on_step, should_stop=_stop_flag(), world=world)
    if world.main and run.step > first and run.step not in saved_at:
        lora, state = save_checkpoint(run, folder, periodic=False)
        _say(world, f"saved {lora}\n  and its state {state}")
    world.barrier()
    return 130 if stopped else 0
