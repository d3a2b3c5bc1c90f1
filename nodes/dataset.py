"""The dataset node: a folder of captioned images, bucketed and encoded once with the graph's VAE
and CLIP, cached on disk."""
from __future__ import annotations

import os

import folder_paths
from comfy_api.latest import io

from ..loralab.errors import UnsafeNameError
from ..loralab.files.paths import resolve_in_folder
from ..loralab.train.dataset import FRAME_EXTRACTIONS, DatasetSettings
from .common import CATEGORY, advanced, display_name, node_id
from .host.progress import progress_callback
from .host.training import cache_folder, encode_dataset

DatasetType = io.Custom("LORALAB_DATASET")


_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def serves_only_this_machine() -> bool:
    """Whether ComfyUI listens on loopback addresses only (its default): then whoever types a path
    sits at this machine. A server reachable from elsewhere must not read or list arbitrary folders."""
    from comfy.cli_args import args
    listen = [a.strip().strip("[]") for a in str(getattr(args, "listen", "127.0.0.1") or "").split(",") if a.strip()]
    return bool(listen) and all(a in _LOOPBACK or a.startswith("127.") for a in listen)


def dataset_folder(name: str) -> str:
    """A folder inside ComfyUI's input directory; or, on a server that only this machine can reach,
    an absolute folder as typed."""
    name = (name or "").strip()
    expanded = os.path.expanduser(name)
    if os.path.isabs(expanded) and serves_only_this_machine():
        return os.path.normpath(expanded)
    if os.path.isabs(expanded):
        raise UnsafeNameError("absolute dataset folders are refused because this ComfyUI server listens on "
                              "a network address", key=name,
                              hint="put the dataset in ComfyUI's input folder and give its name there")
    return resolve_in_folder(folder_paths.get_input_directory(), name, must_exist=False)


def _folder_signature(folder: str) -> str:
    """Names, sizes and modification times of the folder's files (top level and one below): a
    change makes ComfyUI run the node again instead of reusing its cached output."""
    parts = []
    if not os.path.isdir(folder):
        return "missing"
    for root in [folder] + [os.path.join(folder, d) for d in sorted(os.listdir(folder))
                            if not d.startswith(".") and os.path.isdir(os.path.join(folder, d))]:
        for name in sorted(os.listdir(root)):
            path = os.path.join(root, name)
            if os.path.isfile(path):
                st = os.stat(path)
                parts.append(f"{os.path.relpath(path, folder)}:{st.st_size}:{st.st_mtime_ns}")
    return "|".join(parts)


class LoRALabDataset(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id=node_id("Dataset"),
            display_name=display_name("LoRA Dataset"),
            category=f"{CATEGORY}/Train",
            description="A folder of images (and, for video models, animated clips) with captions for LoRA training: "
                        "kohya-style N_name repeat folders, trigger word, caption shuffle and dropout, aspect-ratio "
                        "buckets (never upscaled). "
                        "Encoded once with this VAE and CLIP and cached on disk.",
            inputs=[
                io.String.Input("folder", default="", tooltip="a folder inside ComfyUI's input directory, or an "
                                "absolute path when ComfyUI listens on this machine only; images at the top level train once, images in an 'N_name' "
                                "sub-folder N times per epoch"),
                io.Vae.Input("vae", tooltip="the VAE of the model you train (from its checkpoint loader)"),
                io.Clip.Input("clip", tooltip="the text encoder of the model you train (from its checkpoint loader)"),
                io.Int.Input("resolution", default=512, min=64, max=4096, step=64,
                             tooltip="bucket area is at most resolution²: 512 for SD1.x, 1024 for SDXL and Flux"),
                advanced(io.Int.Input("min_side", default=256, min=64, max=4096, step=64,
                                      tooltip="images whose bucket would have a shorter side are skipped (no "
                                              "upscaling; 256 is usual)")),
                advanced(io.Int.Input("max_side", default=1024, min=64, max=8192, step=64,
                                      tooltip="the longest side a bucket may have (1024 for SD1.x, 2048 for SDXL/Flux)")),
                advanced(io.String.Input("caption_extensions", default=".txt,.caption",
                                         tooltip="caption file extensions, first match wins")),
                io.String.Input("trigger_word", default="", tooltip="replaces [trigger] in captions; prepended "
                                "where a caption lacks it"),
                io.Float.Input("caption_dropout", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="chance that a step trains a sample with the empty caption"),
                io.Boolean.Input("shuffle_captions", default=False,
                                 tooltip="shuffle comma-separated tags (for tag-style captions; off for sentences)"),
                advanced(io.Int.Input("keep_tokens", default=0, min=0, max=64,
                                      tooltip="leading comma-separated tags kept in place when shuffling (1 keeps "
                                              "the trigger word first)")),
                advanced(io.Int.Input("shuffle_variants", default=4, min=1, max=32,
                                      tooltip="shuffled versions encoded per caption when shuffling (4 is usual)")),
                io.Boolean.Input("flip", default=False, tooltip="also train on the mirrored images"),
                advanced(io.Int.Input("frames", default=1, min=1, max=1025,
                                      tooltip="frames of each clip (animated GIF, WebP or PNG) for a video model: "
                                              "1 + 4·n for Wan's and HunyuanVideo's VAE (1, 5, 9, 17, 33, 81); "
                                              "clips with fewer are skipped; images stay one frame; 1 trains "
                                              "each clip's first frame")),
                advanced(io.Combo.Input("frame_extraction", options=list(FRAME_EXTRACTIONS), default="head",
                                        tooltip="head: a clip's first frames; uniform: frames spread evenly from "
                                                "its first to its last")),
            ],
            outputs=[DatasetType.Output(display_name="dataset"), io.String.Output(display_name="summary")],
        )

    @classmethod
    def fingerprint_inputs(cls, folder: str, **kwargs) -> str:
        try:
            return _folder_signature(dataset_folder(folder))
        except Exception as e:  # an unsafe or missing name fails in execute with its message
            return f"error:{e}"

    @classmethod
    def execute(cls, folder: str, vae, clip, resolution: int, min_side: int, max_side: int, caption_extensions: str,
                trigger_word: str, caption_dropout: float, shuffle_captions: bool, keep_tokens: int,
                shuffle_variants: int, flip: bool, frames: int, frame_extraction: str) -> io.NodeOutput:
        exts = tuple(e.strip() for e in caption_extensions.split(",") if e.strip())
        settings = DatasetSettings(resolution=resolution, min_side=min_side, max_side=max_side,
                                   caption_extensions=exts or (".txt",), trigger=trigger_word, caption_dropout=caption_dropout,
                                   shuffle_captions=shuffle_captions, keep_tokens=keep_tokens,
                                   shuffle_variants=shuffle_variants, flip=flip, frames=frames,
                                   frame_extraction=frame_extraction)
        ds = encode_dataset(dataset_folder(folder), settings, vae, clip, cache_folder(), progress_callback())
        return io.NodeOutput(ds, ds.summary())


NODES = [LoRALabDataset]
