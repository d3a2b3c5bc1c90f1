"""GPU check of LoRA Lab on a ComfyUI test host: a few training steps of SD1.5-micro and Flux-micro,
then the trained LoRA loaded by LoRA Lab's loader and by core's LoraLoaderModelOnly, once with
Dynamic VRAM on (ComfyUI's default on GPUs since 0.33) and once with ``--disable-dynamic-vram``.

Checks: in each mode LoRA Lab's patched weights equal core's (checksums bit for bit), and the
losses of the two modes agree (``--rtol``). The model is loaded as a Dynamic VRAM patcher where
the host has one, with a reloader, as core's loaders give it. On a machine without a GPU it says
so and runs the CPU path once (no Dynamic VRAM there).

    source ~/.cache/loralab-comfy-host-0.33/env
    $COMFYUI_PYTHON bench/gpu_check.py [--steps 3] [--rtol 1e-3] [--out result.json]

Exit code 0 when every check holds, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TESTS = os.path.join(REPO, "tests")
ARCHS = ("sd15", "flux")


def _boot(base: str, gpu: bool, dynamic: bool):
    """ComfyUI booted in this process on ``base`` with the pack and the harness nodes."""
    sys.path.insert(0, TESTS)
    from host import conftest
    for d in ("models/loras", "models/diffusion_models", "custom_nodes", "input", "output", "temp", "user"):
        os.makedirs(os.path.join(base, d), exist_ok=True)
    os.symlink(REPO, os.path.join(base, "custom_nodes", conftest.PACK_DIR_NAME))
    harness = conftest._harness_dir()
    if harness is None:
        raise SystemExit("comfyhost_testing not found: build the host with ../shared/tools/comfy-host/setup")
    os.symlink(harness, os.path.join(base, "custom_nodes", "comfyhost_testing"))
    sys.path.insert(0, os.path.dirname(harness))
    host = conftest.Host(base, {"cpu": not gpu, "disable_dynamic_vram": not dynamic})
    return host


def _loader_node(tiny_models):
    """A MODEL loader node for the micro files that gives what core's loaders give on this host:
    a Dynamic VRAM patcher (where ComfyUI makes one) that can reload itself non-dynamically."""
    import comfy.model_patcher
    import folder_paths

    def reload(path: str, disable_dynamic: bool = False):
        return tiny_models.load_tiny_model(path)

    class GpuCheckModelLoader:
        RETURN_TYPES = ("MODEL",)
        FUNCTION = "load"
        CATEGORY = "testing"

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"unet_name": ("STRING", {"default": ""})}}

        def load(self, unet_name: str):
            path = folder_paths.get_full_path_or_raise("diffusion_models", unet_name)
            mp = tiny_models.load_tiny_model(path)
            core = getattr(comfy.model_patcher, "CoreModelPatcher", None)
            if core is not None:
                mp = core(mp.model, mp.load_device, mp.offload_device)
                mp.cached_patcher_init = (reload, (path,))
            return (mp,)
    return GpuCheckModelLoader


def child(args: argparse.Namespace) -> dict:
    """One mode in this process: losses, checksums, whether the model was dynamic."""
    import torch
    gpu = torch.cuda.is_available()
    host = _boot(tempfile.mkdtemp(prefix="gpu-check-"), gpu, args.dynamic)
    import make_tiny_models as tiny_models
    from host import train_kit, train_setup
    host.nodes.NODE_CLASS_MAPPINGS["LoRALabTestTinyEncoders"] = train_kit.LoRALabTestTinyEncoders
    host.nodes.NODE_CLASS_MAPPINGS["GpuCheckModelLoader"] = _loader_node(tiny_models)
    compat = host.module("nodes.host.compat")
    events: list[dict] = []
    send = host.server.send_sync

    def capture(event, data, sid=None):
        if event == host.module("nodes.host.training").PROGRESS_EVENT:
            events.append(data)
        return send(event, data, sid)
    host.server.send_sync = capture
    out = {"device": "cuda" if gpu else "cpu", "dynamic_requested": args.dynamic, "version": host.version,
           "archs": {}}
    for arch in ARCHS:
        variant = train_setup.VARIANTS[arch]
        model_file = f"tiny_{variant}.safetensors"
        tiny_models.write_model(variant, os.path.join(host.folder("diffusion_models"), model_file), dtype="fp32")
        folder = train_setup.dataset_in_input(host, f"ds_{arch}", n=3)
        prompt = train_setup.base_prompt(host, arch, folder)
        prompt["1"] = {"class_type": "GpuCheckModelLoader", "inputs": {"unet_name": model_file}}
        name = f"gpu_check_{arch}"
        prompt["4"] = {"class_type": "LoRALabTrain", "inputs": {
            **train_setup.settings(host, "LoRALabTrain", steps=args.steps, name=name, batch_size=2),
            "model": ["1", 0], "dataset": ["3", 0]}}
        events.clear()
        ok, _, messages = host.run_prompt(prompt)
        if not ok:
            out["archs"][arch] = {"error": [m for m in messages if m[0] == "execution_error"]}
            continue
        losses = [e["loss"] for e in events]
        sums = {}
        host.nodes.NODE_CLASS_MAPPINGS["LoraLoaderModelOnly"].INPUT_TYPES()  # refresh the loras list
        for label, node in (("core", {"class_type": "LoraLoaderModelOnly", "inputs": {
                "model": ["1", 0], "lora_name": f"{name}.safetensors", "strength_model": 1.0}}),
                            ("ours", {"class_type": "LoRALabLoader", "inputs": {
                "model": ["1", 0], "lora_name": f"{name}.safetensors", "strength_model": 1.0,
                "strength_clip": 1.0, "block_weights": "", "a": 1.0, "b": 1.0, "seed": 0}})):
            check = {"1": prompt["1"], "2": node, "9": {"class_type": "ModelWeightChecksum",
                                                          "inputs": {"model": ["2", 0]}}}
            ok, _, messages = host.run_prompt(check)
            sums[label] = json.loads(host.executor.history_result["outputs"]["9"]["text"][0]) if ok else \
                {"error": [m for m in messages if m[0] == "execution_error"]}
        mp = _loader_node(tiny_models)().load(model_file)[0]
        out["archs"][arch] = {"losses": losses, "checksums": sums, "dynamic": compat.is_dynamic(mp)}
    return out


def _compare(results: list[dict], rtol: float) -> list[str]:
    """The failed checks (empty when all hold)."""
    failed = []
    for r in results:
        for arch, a in r["archs"].items():
            tag = f"{arch} (dynamic {'on' if r['dynamic_requested'] else 'off'})"
            if "error" in a:
                failed.append(f"{tag}: training failed: {a['error']}")
                continue
            core, ours = a["checksums"]["core"], a["checksums"]["ours"]
            if "error" in core or "error" in ours or (core["sum"], core["abs_sum"]) != (ours["sum"], ours["abs_sum"]):
                failed.append(f"{tag}: LoRA Lab's patched weights differ from core's: {ours} vs {core}")
    if len(results) == 2:
        for arch in ARCHS:
            a, b = (r["archs"].get(arch, {}).get("losses") for r in results)
            if a is None or b is None or len(a) != len(b):
                failed.append(f"{arch}: the two modes trained a different number of steps")
                continue
            for i, (x, y) in enumerate(zip(a, b)):
                if abs(x - y) > rtol * max(abs(x), abs(y)):
                    failed.append(f"{arch}: step {i + 1} loss {x} (dynamic on) vs {y} (off) beyond rtol {rtol}")
    return failed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rtol", type=float, default=1e-3, help="loss agreement between the two modes")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--dynamic", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not os.environ.get("COMFYUI_PATH"):
        raise SystemExit("set COMFYUI_PATH: source ~/.cache/loralab-comfy-host-0.33/env (see ../shared/tools/README.md)")
    if args.child:
        print("RESULT " + json.dumps(child(args)))
        return 0
    import torch
    modes = [True, False] if torch.cuda.is_available() else [False]
    if len(modes) == 1:
        print("no GPU on this machine: running the CPU path once (no Dynamic VRAM on a CPU)")
    results = []
    for dynamic in modes:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", "--steps", str(args.steps)]
        proc = subprocess.run(cmd + (["--dynamic"] if dynamic else []), capture_output=True, text=True)
        line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(proc.stdout[-3000:] + proc.stderr[-3000:])
            print(f"the {'dynamic' if dynamic else 'non-dynamic'} run failed (exit {proc.returncode})")
            return 1
        results.append(json.loads(line[len("RESULT "):]))
    for r in results:
        for arch, a in r["archs"].items():
            print(f"{r['device']} dynamic {'on ' if r['dynamic_requested'] else 'off'} {arch}: "
                  f"model dynamic {a.get('dynamic')}, losses {a.get('losses')}, "
                  f"checksums core {a.get('checksums', {}).get('core')} ours {a.get('checksums', {}).get('ours')}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    failed = _compare(results, args.rtol)
    print("\n".join(failed) if failed else "all checks hold")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
