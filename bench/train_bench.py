#!/usr/bin/env python3
"""Training speed and memory: LoRA Lab's trainer against ComfyUI core's TrainLoraNode on the same
tiny SD1.5 model (make_tiny_models' ``sd15``: real layout, 320 channels, 36.7 M parameters), the
same images, latents and text encodings, the same rank, optimizer and dtype.

Each trainer runs in its own fresh process (so each has its own peak RSS); the runs alternate
and repeat, and the report gives steps per second, peak RSS and the ratios.

    source ~/.cache/loralab-comfy-host/env
    $COMFYUI_PYTHON bench/train_bench.py [--steps 30] [--size 128] [--rank 8] [--repeats 3] [--threads 1]
                                         [--checkpointing]

Trainers: ``core`` (TrainLoraNode: every weight of 2+ dims gets a LoRA, every 1-dim weight and
bias a full difference; fp32), ``ours_all`` (LoRA Lab, LoRA on every linear and convolution
weight, the closest to core's set), ``ours_default`` (LoRA Lab's default attention + MLP targets).
Gradient checkpointing is off for all, or on for all with ``--checkpointing`` (core's default).
Figures are medians over the repeats (machines are shared: compare the ratios of one run).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
TRAINERS = ("core", "ours_all", "ours_default")


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(trainer: str, steps: int, size: int, rank: int, threads: int, checkpointing: bool) -> dict:
    """One trainer in this process: boot ComfyUI with the pack, build model and data, train."""
    import torch
    torch.set_num_threads(threads)
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from host.conftest import PACK_DIR_NAME, Host, _harness_dir
    from host import train_kit
    sys.path.insert(0, os.path.dirname(_harness_dir()))
    base = tempfile.mkdtemp(prefix="loralab-bench-")
    for d in ("models/loras", "custom_nodes", "input", "output", "temp", "user"):
        os.makedirs(os.path.join(base, d), exist_ok=True)
    os.symlink(REPO, os.path.join(base, "custom_nodes", PACK_DIR_NAME))
    host = Host(base)
    import make_tiny_models
    model = make_tiny_models.build_patcher("sd15")
    train_kit.write_dataset(os.path.join(base, "input", "bench"), n=4, size=(size, size), seed=0)
    node = host.nodes.NODE_CLASS_MAPPINGS["LoRALabDataset"]
    vae, clip = train_kit.tiny_vae("sd15"), train_kit.tiny_clip("sd15")
    with torch.inference_mode():
        ds = node.execute(**{**train_kit.schema_defaults(node), "folder": "bench", "vae": vae, "clip": clip,
                             "resolution": size, "min_side": 64, "max_side": size}).args[0]
    setup_rss = _peak_rss_mb()
    t0 = time.perf_counter()
    with torch.inference_mode():
        if trainer == "core":
            from comfy_extras.nodes_train import TrainLoraNode
            latents = torch.stack([ds.latent(i) for i in range(len(ds.items))])
            positive = []
            for i in range(len(ds.items)):
                c = ds.cond(i)
                positive.append([c["cross_attn"], {k: v for k, v in c.items() if k != "cross_attn"}])
            TrainLoraNode().train(model, {"samples": latents}, positive, batch_size=1, steps=steps,
                                  grad_accumulation_steps=1, learning_rate=1e-4, rank=rank, optimizer="AdamW",
                                  loss_function="MSE", seed=0, training_dtype="fp32", lora_dtype="fp32",
                                  algorithm="LoRA", gradient_checkpointing=checkpointing, existing_lora="[None]")
        else:
            tr = host.module("nodes.train")
            run_mod = host.module("loralab.train.run")
            targets = "all_linear_convs" if trainer == "ours_all" else "attention_mlp"
            settings = run_mod.TrainSettings(rank=rank, alpha=float(rank), targets=targets, learning_rate=1e-4,
                                             total_steps=steps, batch_size=1, seed=0, max_grad_norm=0.0,
                                             gradient_checkpointing=checkpointing)
            run = tr.advance(tr.init_run(model, ds, settings, None), steps, None)
            assert run.step == steps
    elapsed = time.perf_counter() - t0
    return {"trainer": trainer, "steps": steps, "seconds": round(elapsed, 3), "steps_per_s": round(steps / elapsed, 3),
            "peak_rss_mb": round(_peak_rss_mb(), 1), "setup_rss_mb": round(setup_rss, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--size", type=int, default=128, help="image side in pixels (latents are size/8)")
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--checkpointing", action="store_true", help="gradient checkpointing on for every trainer")
    ap.add_argument("--one", choices=TRAINERS, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print("RESULT " + json.dumps(measure(a.one, a.steps, a.size, a.rank, a.threads, a.checkpointing)), flush=True)
        return 0
    results: dict[str, list[dict]] = {t: [] for t in TRAINERS}
    for _ in range(a.repeats):
        for trainer in TRAINERS:
            out = subprocess.run([sys.executable, __file__, "--one", trainer, "--steps", str(a.steps), "--size",
                                  str(a.size), "--rank", str(a.rank), "--threads", str(a.threads)]
                                 + (["--checkpointing"] if a.checkpointing else []),
                                 capture_output=True, text=True, check=True)
            line = next(ln for ln in out.stdout.splitlines() if ln.startswith("RESULT "))
            results[trainer].append(json.loads(line[len("RESULT "):]))
            print(line[len("RESULT "):], flush=True)
    speed = {t: statistics.median(r["steps_per_s"] for r in rs) for t, rs in results.items()}
    peak = {t: statistics.median(r["peak_rss_mb"] for r in rs) for t, rs in results.items()}
    print(f"\nsd15 tiny (36.7M params), {a.size}x{a.size} images, rank {a.rank}, {a.steps} steps, "
          f"{a.threads} thread(s), gradient checkpointing {'on' if a.checkpointing else 'off'}; "
          f"median of {a.repeats}")
    print(f"{'trainer':14s} {'steps/s':>9s} {'peak RSS MB':>12s} {'speed vs core':>14s} {'RSS vs core':>12s}")
    for t in TRAINERS:
        print(f"{t:14s} {speed[t]:9.3f} {peak[t]:12.1f} {speed[t] / speed['core']:13.2f}x {peak[t] / peak['core']:11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
