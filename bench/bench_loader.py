"""Benchmark: LoRA Loader (Block Weights) with a 12-value SDXL vector vs ComfyUI's LoraLoader
(target: <= 1.1x core's time), in one process of the real ComfyUI host.

The model is a stock-detectable tiny SDXL (``sdxl``: Segmind Vega's layout) or ``sdxl_full`` (SDXL's
exact transformer depths) from ../shared/tools/comfy-host/make_tiny_models.py; the LoRA is the
kohya SDXL fixture fitted to that model at its real rank 32. The vector has 11 distinct values on
the diffusion model (the most patch groups a 12-value vector can make). Both loaders run the same
way, interleaved, with the file in the page cache:

* cold: a fresh node each time, so the file is read and parsed every time;
* cached: the same node again with the same file (core keeps the last file's tensors per node;
  LoRA Lab keeps the tensors and the parsed LoRA per node and slot).

    source ~/.cache/loralab-comfy-host/env
    $COMFYUI_PYTHON bench/bench_loader.py [--model sdxl|sdxl_full] [--repeat 15]
"""
from __future__ import annotations

import argparse
import gc
import importlib
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tools() -> str:
    """../shared/tools/comfy-host, found through the host's harness link as tests/host does."""
    harness = os.path.join(os.environ.get("COMFYHOST_BASE", ""), "custom_nodes", "comfyhost_testing")
    if os.path.isdir(harness):
        return os.path.dirname(os.path.realpath(harness))
    return os.path.normpath(os.path.join(REPO, "..", "shared", "tools", "comfy-host"))


VECTOR = "1,0.9,0.8,0.7,0.6,0.5,0.4,0.3,0.2,0.1,0.15,0.25"  # BASE, IN04, IN05, IN07, IN08, M00, OUT00..OUT05
LORA_FILE = "bench_kohya_sdxl_r32.safetensors"


def boot(base: str):
    """ComfyUI in-process with this repository installed as a custom node; returns (nodes, pack)."""
    os.makedirs(os.path.join(base, "custom_nodes"), exist_ok=True)
    for d in ("models/loras", "input", "output", "temp", "user"):
        os.makedirs(os.path.join(base, d), exist_ok=True)
    link = os.path.join(base, "custom_nodes", "lora-lab")
    if not os.path.exists(link):
        os.symlink(REPO, link)
    sys.path[:0] = [_tools(), os.path.join(REPO, "tests"), REPO]  # the test kit writes the fitted LoRA
    import run_inprocess
    import logging
    state = run_inprocess.boot(base)
    logging.disable(logging.WARNING)  # core logs every TE key it cannot place when no CLIP is given
    return state["nodes"], sys.modules[link.replace(".", "_x_")]


def timed(fn) -> float:
    gc.collect()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sdxl", choices=["sdxl", "sdxl_full"])
    ap.add_argument("--repeat", type=int, default=15)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as base:
        nodes, pack = boot(base)
        import make_tiny_models
        from loralab_testkit import materialize_fitted
        common = importlib.import_module(pack.__name__ + ".nodes.common")
        loader = importlib.import_module(pack.__name__ + ".nodes.loader")
        model = make_tiny_models.build_patcher(args.model)
        path = materialize_fitted("kohya_sdxl_lora", os.path.join(base, "models", "loras", LORA_FILE),
                                  common.model_layout(model), rank=32)
        print(f"model {args.model}: {len(model.model.state_dict())} weights; LoRA {os.path.getsize(path) / 2**20:.1f} MiB, "
              f"rank 32; vector {VECTOR}")

        core_node = nodes.LoraLoader()
        fresh = iter(range(10**9))
        runs = {
            "core cold": lambda: nodes.LoraLoader().load_lora(model, None, LORA_FILE, 1.0, 1.0),
            "ours cold": lambda: loader.apply_lora(model, None, LORA_FILE, 1.0, 1.0, VECTOR, 1.0, 1.0, 0,
                                                   ("cold", next(fresh))),
            "core cached": lambda: core_node.load_lora(model, None, LORA_FILE, 1.0, 1.0),
            "ours cached": lambda: loader.apply_lora(model, None, LORA_FILE, 1.0, 1.0, VECTOR, 1.0, 1.0, 0,
                                                     ("cached", 0)),
        }
        patched, _, info = runs["ours cached"]()
        print(info.split("\nnot applied")[0])
        print(f"patch groups on the model: {len({p[0] for ps in patched.patches.values() for p in ps})}")
        for fn in runs.values():
            fn()  # warm up: page cache, imports, layouts
        times: dict[str, list[float]] = {k: [] for k in runs}
        names = list(runs)
        for i in range(args.repeat):
            for name in names[i % len(names):] + names[:i % len(names)]:
                times[name].append(timed(runs[name]) * 1000)
        for name, ts in times.items():
            print(f"{name:12s} median {statistics.median(ts):7.1f} ms   best {min(ts):7.1f} ms")
        for kind in ("cold", "cached"):
            ratio = statistics.median(times[f"ours {kind}"]) / statistics.median(times[f"core {kind}"])
            best = min(times[f"ours {kind}"]) / min(times[f"core {kind}"])
            print(f"{kind}: ours / core = {ratio:.2f} (medians), {best:.2f} (bests)  target <= 1.10")


if __name__ == "__main__":
    main()
