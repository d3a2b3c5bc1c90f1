"""``loralab demo``: a first run that needs no file of one's own. Writes three small LoRAs in the
real key layouts of their base models (kohya LoRA and LyCORIS LoHa for SD1.5, kohya LoRA for SDXL;
seeded random weights on the attention and MLP layers) and runs inspect, a block-weight spec
check, a merge and a resize on them, saying what it does and where every file is."""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile

from ..errors import LoRALabError
from .terminal import terminal_safe

#: the block-weight spec the demo checks and merges with: SD1.5's 17 blocks, input blocks off
SPEC = "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1"


def _trained(key: str, shape: tuple[int, ...]) -> bool:
    """The layers a typical LoRA trains: attention and MLP linears of the UNet and text encoders."""
    return len(shape) == 2 and key.endswith(".weight") and (
        ".transformer_blocks." in key or ".self_attn." in key or ".mlp." in key)


def write_demo_lora(path: str, arch_id: str, kind: str, rank: int, seed: int) -> str:
    """Write a kohya-named LoRA (``kind`` "lora" or "loha") of ``arch_id``'s layout with small
    seeded random fp16 factors; returns the path."""
    import torch

    from ..adapters import LoHa, LoRA
    from ..formats.writer import kohya_tensors, lora_metadata, save_with_hashes
    from ..layouts import Target, layout_for
    layout = layout_for(arch_id)
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.05

    items = []
    for key, shape in layout.shapes.items():
        if not _trained(key, shape):
            continue
        out, inn = shape[0], math.prod(shape[1:])
        if kind == "loha":
            adapter = LoHa(w1a=rand(out, rank), w1b=rand(rank, inn), w2a=rand(out, rank), w2b=rand(rank, inn),
                           alpha=float(rank))
        else:
            adapter = LoRA(up=rand(out, rank), down=rand(rank, inn), alpha=rank / 2)
        items.append((Target(key), adapter))
    tensors = kohya_tensors(items, layout, torch.float16)
    title = os.path.splitext(os.path.basename(path))[0]
    return save_with_hashes(path, tensors, lora_metadata(arch_id, tensors, title=title), overwrite=True)


def _cmd_demo(args: argparse.Namespace) -> int:
    from ..blocks.spec import parse_block_weights
    from ..lora import Lora
    from ..ops.inspect import inspect_lora
    from ..ops.lowrank import RankRule
    from ..ops.merge import MergeInput, merge, resize
    folder = os.path.abspath(args.dir or tempfile.mkdtemp(prefix="loralab-demo-"))
    os.makedirs(folder, exist_ok=True)
    say = print
    say(terminal_safe(f"LoRA Lab demo: files go to {folder}"))
    try:
        say("\n1. write three small LoRAs in real layouts (random weights)")
        sd15 = write_demo_lora(os.path.join(folder, "demo_sd15_kohya_lora.safetensors"), "sd1", "lora", 8, 0)
        loha = write_demo_lora(os.path.join(folder, "demo_sd15_lycoris_loha.safetensors"), "sd1", "loha", 4, 1)
        sdxl = write_demo_lora(os.path.join(folder, "demo_sdxl_kohya_lora.safetensors"), "sdxl", "lora", 8, 2)
        for p in (sd15, loha, sdxl):
            say(terminal_safe(f"   wrote {p} ({os.path.getsize(p) / 2**20:.1f} MiB)"))

        say("\n2. inspect them (loralab inspect --blocks FILE): format, base model, rank, block strengths, health")
        for p in (sd15, loha, sdxl):
            say(terminal_safe("\n".join("   " + line for line in inspect_lora(p, blocks=True).to_text().splitlines())))
            say()

        say(f"3. check a block-weight spec for SD1.5: {SPEC!r} (input blocks off)")
        weights = parse_block_weights(SPEC, "sd1")
        with Lora.open(sd15) as lora:
            keys = [m.target.key for m in lora.mapped()]
        for block, w, n in weights.table(keys):
            say(f"   {block:<6} weight {w:g}  ({n} weights of this LoRA)")

        merged = os.path.join(folder, "demo_sd15_merged.safetensors")
        say(f"\n4. merge the two SD1.5 LoRAs (loralab merge {os.path.basename(sd15)} {os.path.basename(loha)} "
            f"-w 1 -w 0.5 -b '{SPEC}' -b '' --rank 16)")
        inputs = [MergeInput.open(sd15, 1.0, SPEC), MergeInput.open(loha, 0.5)]
        result = merge(inputs, "svd", RankRule("fixed", 16), title="demo_sd15_merged")
        result.save(merged, overwrite=True)
        say(terminal_safe("\n".join("   " + line for line in result.report().splitlines())))
        say(terminal_safe(f"   wrote {merged}"))

        small = os.path.join(folder, "demo_sdxl_resized.safetensors")
        say(f"\n5. resize the SDXL LoRA from rank 8 to 4 (loralab resize {os.path.basename(sdxl)} --rank 4)")
        result = resize(MergeInput.open(sdxl), RankRule("fixed", 4), title="demo_sdxl_resized")
        result.save(small, overwrite=True)
        say(terminal_safe("\n".join("   " + line for line in result.report().splitlines())))
        say(terminal_safe(f"   wrote {small}"))
    except (LoRALabError, OSError) as e:
        print(terminal_safe(f"error: {e}"), file=sys.stderr)
        return 1
    say(terminal_safe(f"\ndone: try `loralab inspect {merged}` or your own LoRA; the files stay in {folder}"))
    return 0


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="write three small LoRAs and run inspect, a block-weight check, merge and "
                                    "resize on them (no file of your own needed)")
    p.add_argument("--dir", help="folder for the demo files (default: a new temporary folder, kept)")
    p.set_defaults(func=_cmd_demo)
