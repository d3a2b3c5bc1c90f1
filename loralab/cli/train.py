"""``loralab train``: a run config trained with ComfyUI's own loaders, in-process (no server), on
one GPU or, launched by ``torchrun``, on several (see :mod:`loralab.train.distributed`).

The engine never imports ComfyUI. This command is the one place it reaches the pack's host seam:
when it runs, it loads ``nodes/host/boot.py`` by path from the pack folder this ``loralab`` is
part of, which imports ComfyUI from ``COMFYUI_PATH`` and then the pack as ComfyUI would.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys

from ..errors import TrainingError
from .merge import _guarded
from .terminal import terminal_safe

#: the pack's boot module, relative to the pack folder
BOOT = os.path.join("nodes", "host", "boot.py")


def pack_root() -> str:
    """The pack folder holding this ``loralab`` (it must hold the node layer too)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.isfile(os.path.join(root, BOOT)):
        raise TrainingError("loralab train runs from the LoRA Lab pack's folder, which holds the ComfyUI layer; "
                            f"this loralab ({root}) has none",
                            hint="run it as `python -m loralab train` in ComfyUI/custom_nodes/<this pack>, with "
                                 "ComfyUI's Python")
    return root


def comfyui_folder(given: str | None, root: str) -> str:
    """ComfyUI's folder: ``--comfyui``, else ``COMFYUI_PATH``, else the ComfyUI whose custom_nodes
    holds the pack."""
    candidates = [given] if given else [os.environ.get("COMFYUI_PATH", "")]
    if not candidates[0] and os.path.basename(os.path.dirname(root)) == "custom_nodes":
        candidates = [os.path.dirname(os.path.dirname(root))]
    path = os.path.abspath(os.path.expanduser(candidates[0])) if candidates[0] else ""
    if not path or not os.path.isfile(os.path.join(path, "comfy", "model_management.py")):
        raise TrainingError(f"no ComfyUI at {path!r}" if path else "where is ComfyUI?",
                            hint="set COMFYUI_PATH (or --comfyui) to ComfyUI's folder, the one holding main.py")
    return path


def _export(state: str, out: str, overwrite: bool) -> int:
    from ..train.checkpoint import read_state
    from ..train.config import config_data, write_config
    from ..train.run import TrainSettings
    _, meta = read_state(state)
    try:
        data = config_data(TrainSettings.from_json(meta["settings"]), meta["dataset"], meta["model"])
    except (KeyError, TypeError, AttributeError) as e:
        raise TrainingError(f"the training state is malformed ({type(e).__name__}: {e})", path=state) from None
    path = write_config(out, data, overwrite=overwrite)
    print(terminal_safe(f"wrote {path}: the run of {state} at step {meta.get('step')}"))
    if not data["model"].get("checkpoint", True):
        print("the state does not name its model: fill in [model]", file=sys.stderr)
    elif set(data["model"]) == {"checkpoint"} and not meta["model"].get("files"):
        print("check [model]: the state names the model file only; a diffusion model with separate encoders "
              "needs unet, vae and clip", file=sys.stderr)
    elif "unet" in data["model"] and not (data["model"].get("vae") and data["model"].get("clip")):
        print("fill in [model] vae and clip: the graph did not load them with Load VAE and Load CLIP", file=sys.stderr)
    return 0


@_guarded
def _cmd_train(args: argparse.Namespace) -> int:
    if not args.config:
        raise TrainingError("give the run config (CONFIG)", hint="see `loralab train --help`")
    if args.export_config:
        return _export(args.export_config, args.config, args.overwrite)
    if args.steps is not None and args.steps < 1:
        raise TrainingError(f"--steps must be at least 1, got {args.steps}")
    from ..train.config import load_config
    load_config(args.config)  # a broken config fails before ComfyUI starts
    root = pack_root()
    comfyui = comfyui_folder(args.comfyui, root)
    from ..train.distributed import close_world, init_world
    world = init_world()
    try:
        spec = importlib.util.spec_from_file_location("loralab_pack_boot", os.path.join(root, BOOT))
        boot = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(boot)
        standalone = boot.boot(comfyui, root, cpu=world.device.type == "cpu")
        return standalone.train_config(os.path.abspath(args.config), world, resume=args.resume, steps=args.steps)
    finally:
        close_world(world)


def add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a LoRA from a run config with ComfyUI's loaders (torchrun: several GPUs)")
    p.add_argument("config", nargs="?", metavar="CONFIG",
                   help="the run config (.toml or .json); with --export-config, the file to write")
    p.add_argument("--resume", metavar="STATE", help="continue the run from this .loralab-state file")
    p.add_argument("--steps", type=int, metavar="N", help="train at most N steps now (default: to the run's total)")
    p.add_argument("--export-config", metavar="STATE",
                   help="write the config of the run this .loralab-state file belongs to into CONFIG, and exit")
    p.add_argument("--overwrite", action="store_true", help="--export-config may replace CONFIG")
    p.add_argument("--comfyui", metavar="PATH",
                   help="ComfyUI's folder (default: $COMFYUI_PATH, else the ComfyUI this pack is installed in)")
    p.set_defaults(func=_cmd_train)
