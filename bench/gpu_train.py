#!/usr/bin/env python3
"""GPU training benchmark: SDXL and Flux LoRAs on the real model architectures (ComfyUI's own
classes, random weights of the real shapes, nothing downloaded) in each memory mode, beside core's
TrainLoraNode on the same settings, with seconds per step, peak VRAM and the memory estimator's
prediction.

    source ~/.cache/loralab-comfy-host-0.33/env
    $COMFYUI_PYTHON bench/gpu_train.py [--archs sdxl,flux] [--ranks 16,64] [--sizes 512,1024]
                                       [--batches 1,4] [--modes all] [--steps 6] [--no-core] [--out r.json]
    $COMFYUI_PYTHON bench/gpu_train.py --estimate        # the fits_in table of the README (no GPU needed)

Models: SDXL (UNet, 320 channels, [1, 2, 4], transformer depths [0, 0, 2, 2, 10, 10], 2.6 G
parameters) and Flux.1-dev (19 double + 38 single blocks, hidden 3072, 11.9 G parameters), in bf16
on the GPU. Data: random latents of the size's shape and random text conditioning of the real
shapes (SDXL 77×2048 + pooled 1280; Flux T5 512×4096 + pooled 768), encoded once into a LoRA Lab
dataset, the same latents and conditioning handed to core's node. Each configuration trains
``--steps`` steps after one warm-up step; s/it is the mean of those, peak VRAM
``torch.cuda.max_memory_allocated`` over them. A configuration that runs out of memory is reported
as such. Modes (LoRA Lab, ``fits_in manual``): ``loaded`` (as loaded), ``ckpt`` (checkpointing),
``fp8`` (+ fp8 base), ``swap`` (+ half the blocks swapped), ``offload`` (+ activations on the CPU).
Core runs with gradient checkpointing as the mode has it, bf16 compute and fp32 LoRA weights.

On a machine without a GPU it says so and runs a tiny configuration instead (the micro SDXL and
Flux layouts, 64² images, rank 4, 2 steps, every mode) in well under a minute: the code path, not
the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)

MODES = ("loaded", "ckpt", "fp8", "swap", "offload")
#: text tokens and widths of the conditioning each family's encoders give
CONDS = {"sdxl": {"cross_attn": (77, 2048), "pooled_output": (1280,)},
         "flux": {"cross_attn": (512, 4096), "pooled_output": (768,)}}
LATENT_CHANNELS = {"sdxl": 4, "flux": 16}


def unet_config(channels: int, mult: list[int], depth: list[int], depth_out: list[int], middle: int) -> dict:
    return {"use_checkpoint": False, "image_size": 32, "use_spatial_transformer": True, "legacy": False,
            "adm_in_channels": 2816, "num_classes": "sequential", "in_channels": 4, "out_channels": 4,
            "model_channels": channels, "num_res_blocks": [2, 2, 2], "transformer_depth": depth,
            "transformer_depth_output": depth_out, "channel_mult": mult, "transformer_depth_middle": middle,
            "use_linear_in_transformer": True, "context_dim": 2048, "use_temporal_resblock": False,
            "use_temporal_attention": False}


def flux_config(hidden: int, heads: int, depth: int, single: int, axes: list[int]) -> dict:
    return {"image_model": "flux", "in_channels": 16, "patch_size": 2, "out_channels": 16, "vec_in_dim": 768,
            "context_in_dim": 4096, "hidden_size": hidden, "mlp_ratio": 4.0, "num_heads": heads, "depth": depth,
            "depth_single_blocks": single, "axes_dim": axes, "theta": 10000, "qkv_bias": True,
            "guidance_embed": True}


#: (supported_models class, config) for the real models and the micro ones of the tiny run
MODELS = {
    ("sdxl", True): ("SDXL", unet_config(320, [1, 2, 4], [0, 0, 2, 2, 10, 10], [0, 0, 0, 2, 2, 2, 10, 10, 10], 10)),
    ("flux", True): ("Flux", flux_config(3072, 24, 19, 38, [16, 56, 56])),
    ("sdxl", False): ("SDXL", unet_config(32, [1, 2, 2], [0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, 1, 2, 2, 2], 1)),
    ("flux", False): ("Flux", flux_config(64, 2, 2, 2, [8, 12, 12])),
}


def _host_config(cfg: dict) -> dict:
    """Newer ComfyUI (0.33) wants Flux's ``txt_ids_dims``, which 0.3.64 does not know."""
    import dataclasses
    cfg = dict(cfg)
    if cfg.get("image_model") == "flux":
        from comfy.ldm.flux.model import FluxParams
        if "txt_ids_dims" in {f.name for f in dataclasses.fields(FluxParams)}:
            cfg.setdefault("txt_ids_dims", [])
    return cfg


def build_model(arch: str, full: bool, dtype, device: str | None = None):
    """A ModelPatcher of the architecture (ComfyUI's classes) with random weights of its shapes;
    ``device="meta"`` builds shapes only (for the estimate)."""
    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.supported_models as sm
    import torch
    cls, cfg = MODELS[(arch, full)]
    config = getattr(sm, cls)(_host_config(cfg))
    config.set_inference_dtype(dtype, None)
    if device == "meta":
        with torch.device("meta"):
            model = config.get_model({}, "")
    else:
        model = config.get_model({}, "")
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, p in model.diffusion_model.named_parameters():
                if p.dim() >= 2:
                    p.normal_(0, max(1, p[0].numel()) ** -0.5, generator=g)
                else:
                    p.fill_(1.0 if "norm" in name or name.endswith(".scale") else 0.0)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=mm.get_torch_device(),
                                               offload_device=mm.unet_offload_device())
    patcher.cached_patcher_init = (_rebuild, (arch, full, dtype))  # core's trainer deep-copies through it
    return patcher


def _rebuild(arch: str, full: bool, dtype, disable_dynamic: bool = True):
    """The same model again, for ComfyUI's ``cached_patcher_init`` (the patcher built is never
    dynamic, whatever ``disable_dynamic`` asks)."""
    return build_model(arch, full, dtype)


def make_dataset(host, arch: str, size: int, n: int, folder: str):
    """A LoRA Lab dataset of ``n`` size² images whose latents and conditioning are random tensors
    of the family's shapes (seeded by content, so core gets the same)."""
    import torch
    from host import train_kit
    dataset = host.module("loralab.train.dataset")
    cache = host.module("loralab.train.cache")
    train_kit.write_dataset(folder, n=n, size=(size, size))
    g = torch.Generator().manual_seed(1)

    def encode_image(pixels):
        h, w = pixels.shape[1] // 8, pixels.shape[2] // 8
        return torch.randn(LATENT_CHANNELS[arch], h, w, generator=g)

    def encode_text(text):
        return {k: torch.randn(1, *shape, generator=g) for k, shape in CONDS[arch].items()}

    settings = dataset.DatasetSettings(resolution=size, min_side=64, max_side=size)
    return dataset.build_dataset(folder, settings, cache.TensorCache(os.path.join(folder, ".cache")),
                                 encode_image=encode_image, encode_text=encode_text,
                                 encoders={"vae": f"bench-{arch}", "clip": f"bench-{arch}"})


def mode_settings(mode: str, blocks: int) -> dict:
    """The manual memory settings of a benchmark mode."""
    out = {"fits_in": "manual", "gradient_checkpointing": mode != "loaded"}
    if mode in ("fp8", "swap", "offload"):
        out["base_weights"] = "fp8"
    if mode in ("swap", "offload"):
        out["swap_blocks"] = blocks // 2
    out["offload_activations"] = mode == "offload"
    return out


def _timed(step, steps: int, cuda: bool) -> tuple[float, float]:
    """(seconds per step, peak bytes) of ``steps`` calls of ``step`` after a warm-up call."""
    import torch
    step(1)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    step(steps)
    if cuda:
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() if cuda else 0
    return (time.perf_counter() - t0) / steps, peak


def ours(host, model, ds, mode: str, rank: int, batch: int, steps: int, cuda: bool) -> dict:
    import torch
    tr = host.module("nodes.train")
    run_mod = host.module("loralab.train.run")
    blocks = len(host.module("nodes.host.memory").model_blocks(model.model.diffusion_model))
    settings = run_mod.TrainSettings(rank=rank, alpha=float(rank), targets="attention_mlp", learning_rate=1e-4,
                                     total_steps=steps + 1, batch_size=batch, seed=0, precision="auto",
                                     **mode_settings(mode, blocks))
    run = tr.init_run(model, ds, settings, None)
    state = {"run": run}

    def step(n):
        state["run"] = tr.advance(state["run"], n, None, copy=False)
    with torch.inference_mode():
        s_it, peak = _timed(step, steps, cuda)
    est = run.attachments["memory_estimate"]
    return {"s_it": s_it, "peak_vram": peak, "estimate": est.total, "mode": run.attachments["memory_mode"].describe(),
            "loss": state["run"].losses[-1]}


def core(model, ds, mode: str, rank: int, batch: int, steps: int, cuda: bool) -> dict:
    """Core's TrainLoraNode on the same latents and conditioning (its V1 ``train`` on 0.3.64, its
    V3 ``execute`` with list inputs on later ComfyUI)."""
    import torch
    from comfy_extras.nodes_train import TrainLoraNode
    latents = torch.stack([ds.latent(i) for i in range(len(ds.items))])
    positive = [[ds.cond(i)["cross_attn"], {k: v for k, v in ds.cond(i).items() if k != "cross_attn"}]
                for i in range(len(ds.items))]
    kw = dict(batch_size=batch, grad_accumulation_steps=1, learning_rate=1e-4, rank=rank, optimizer="AdamW",
              loss_function="MSE", seed=0, training_dtype="bf16" if cuda else "fp32", lora_dtype="fp32",
              algorithm="LoRA", gradient_checkpointing=mode != "loaded", existing_lora="[None]")

    def step(n):
        if hasattr(TrainLoraNode, "train"):
            TrainLoraNode().train(model, {"samples": latents}, positive, steps=n, **kw)
        else:
            extra = dict(quantized_backward=False, checkpoint_depth=1, offloading=mode == "offload",
                         bucket_mode=False, bypass_mode=False)
            args = {k: [v] for k, v in {**kw, **extra, "steps": n}.items()}
            TrainLoraNode.execute(model=[model], latents=[{"samples": latents}], positive=[positive], **args)
    with torch.inference_mode():
        s_it, peak = _timed(step, steps, cuda)
    return {"s_it": s_it, "peak_vram": peak}


def _attempt(fn, *args) -> dict:
    import comfy.model_management as mm
    import torch
    try:
        return fn(*args)
    except torch.OutOfMemoryError:
        return {"error": "out of memory"}
    except Exception as e:  # a failed configuration is a result of the benchmark, reported as such
        return {"error": f"{type(e).__name__}: {str(e)[:300]}"}
    finally:
        mm.unload_all_models()
        mm.soft_empty_cache()


def estimate_table(host) -> list[dict]:
    """What ``fits_in`` picks for each model at 1024², batch 1, rank 16, and the estimate, from
    the real architectures built on the meta device."""
    import torch
    mem = host.module("nodes.host.memory")
    memory = host.module("loralab.train.memory")
    network = host.module("loralab.train.network")
    rows = []
    for arch, arch_id in (("sdxl", "sdxl"), ("flux", "flux")):
        model = build_model(arch, True, torch.bfloat16, device="meta")
        shapes = {k: tuple(v.shape) for k, v in model.model.state_dict().items() if k.startswith("diffusion_model.")}
        targets = network.select_targets(shapes, arch_id, "attention_mlp")
        params = sum(16 * (s[0] + s[1]) for k, s in shapes.items() if k in targets)
        text, text_width = CONDS[arch]["cross_attn"]
        cost = mem.model_cost(model, targets, (128, 128), text, text_width)  # a GPU's flash attention: no scores
        for budget in ("24 GB", "16 GB", "12 GB", "8 GB"):
            mode, est = memory.choose_mode(cost, memory.BUDGETS[budget] - memory.GPU_RESERVE, batch=1,
                                           trained_params=params, optimizer="adamw", compute_itemsize=2)
            rows.append({"model": arch, "fits_in": budget, "mode": mode.describe(), "estimate_gib":
                         round(est.total / memory.GIB, 1), "fits": est.total <= memory.BUDGETS[budget] - memory.GPU_RESERVE})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--archs", default="sdxl,flux")
    ap.add_argument("--ranks", default="16,64")
    ap.add_argument("--sizes", default="512,1024")
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--modes", default="all", help="comma list of " + ", ".join(MODES))
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--no-core", action="store_true", help="skip core's TrainLoraNode")
    ap.add_argument("--estimate", action="store_true", help="print the fits_in table and stop")
    ap.add_argument("--out", help="write the results as JSON here")
    a = ap.parse_args()
    import torch
    from gpu_check import _boot
    cuda = torch.cuda.is_available()
    host = _boot(tempfile.mkdtemp(prefix="gpu-train-"), cuda, False)
    if a.estimate:
        rows = estimate_table(host)
        for r in rows:
            print(f"{r['model']:5s} {r['fits_in']:6s} {r['estimate_gib']:6.1f} GiB  {r['mode']}"
                  + ("" if r["fits"] else "  (does not fit)"))
        return 0
    modes = MODES if a.modes == "all" else tuple(a.modes.split(","))
    if cuda:
        archs, ranks = a.archs.split(","), [int(r) for r in a.ranks.split(",")]
        sizes, batches, steps, dtype = [int(s) for s in a.sizes.split(",")], [int(b) for b in a.batches.split(",")], \
            a.steps, torch.bfloat16
        print(f"GPU: {torch.cuda.get_device_name()}, real SDXL / Flux architectures", flush=True)
    else:
        archs, ranks, sizes, batches, steps, dtype = ["sdxl", "flux"], [4], [64], [1], 2, torch.float32
        torch.set_num_threads(1)
        print("no GPU here: a tiny configuration (micro SDXL and Flux layouts, 64² images, rank 4, 2 steps) that "
              "runs the code path; its figures say nothing about GPU speed", flush=True)
    results = []
    for arch in archs:
        model = build_model(arch, cuda, dtype)
        for size in sizes:
            ds = make_dataset(host, arch, size, max(batches), os.path.join(host.base, "input", f"{arch}_{size}"))
            for rank in ranks:
                for batch in batches:
                    for mode in modes:
                        row = {"arch": arch, "size": size, "rank": rank, "batch": batch, "mode": mode,
                               "ours": _attempt(ours, host, model, ds, mode, rank, batch, steps, cuda)}
                        if not a.no_core and mode in ("loaded", "ckpt"):
                            row["core"] = _attempt(core, model, ds, mode, rank, batch, steps, cuda)
                        results.append(row)
                        print(json.dumps(row), flush=True)
    print(f"\n{'arch':5s} {'size':>5s} {'rank':>4s} {'batch':>5s} {'mode':8s} {'s/it':>8s} {'VRAM GiB':>9s} "
          f"{'est GiB':>8s} {'core s/it':>10s} {'core GiB':>9s}")
    for r in results:
        o, c = r["ours"], r.get("core", {})

        def fig(d, key, scale=1.0, fmt="{:.3f}"):
            return d.get("error", "")[:8] if key not in d else fmt.format(d[key] / scale)
        print(f"{r['arch']:5s} {r['size']:5d} {r['rank']:4d} {r['batch']:5d} {r['mode']:8s} {fig(o, 's_it'):>8s} "
              f"{fig(o, 'peak_vram', 2 ** 30, '{:.2f}'):>9s} {fig(o, 'estimate', 2 ** 30, '{:.2f}'):>8s} "
              f"{fig(c, 's_it') if c else '':>10s} {fig(c, 'peak_vram', 2 ** 30, '{:.2f}') if c else '':>9s}")
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump({"cuda": cuda, "results": results}, f, indent=1)
    failed = [r for r in results if "error" in r["ours"]]
    return 1 if failed and not cuda else 0


if __name__ == "__main__":
    sys.exit(main())
