"""TEST-ONLY STAND-INS for the browser test (tests/e2e); never part of the pack.

The browser test loads this folder as a second custom-node pack, after LoRA Lab (from a custom
nodes folder ComfyUI reads later). Each stand-in registers only when the pack does not provide
the real thing, so on the integrated tree the test drives the real nodes and the real route:

* ``GET /loralab/lora_info`` (real: the inspect engineer's route): a summary of the file's header
  in the same JSON shape (loralab/inspect.py, schema 1), reduced to the fields the panel shows.
* ``LoRALabLoader``, ``LoRALabStack``, ``LoRALabInspect``: the inputs of the real nodes, as the
  frontend sees them; they do nothing but (Inspect) return a report built from the metadata.

Always registered (no real counterpart): ``LoRALabTrainE2EProbe``, an output node that sends
``loralab.train.progress`` events exactly as the training nodes do, so the chart is tested
without training; ``LoRALabE2ETinyModel``, a tiny SD1.5-layout MODEL with the host tests' tiny
CLIP and VAE, so nodes that sample run in seconds; ``LoRALabE2ETinySDXL`` (a tiny random SDXL MODEL
with the real key layout) and ``LoRALabE2EModelSink`` (an output node that takes a MODEL), so a page
can run the LoRA Stack (the tiny models where ../shared/tools/comfy-host has make_tiny_models.py);
and ``GET /loralab_e2e/standins``, which stand-ins this run uses.
"""
from __future__ import annotations

import json
import math
import os
import sys
import time

import folder_paths
import nodes
import server
from aiohttp import web

REPO = os.environ.get("LORALAB_E2E_REPO", "")
if REPO and REPO not in sys.path:
    sys.path.insert(0, REPO)

from loralab.lora import Lora  # noqa: E402  (the engine of the checkout under test)

STAND_IN = " (E2E stand-in)"


def _lora_names() -> list[str]:
    return ["None"] + folder_paths.get_filename_list("loras")


def _distribution(values: list) -> dict:
    counts: dict = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    ordered = sorted(counts.items(), key=lambda kv: -kv[1])
    return {"summary": ", ".join(f"{v} ×{n}" for v, n in ordered),
            "values": [{"value": v, "count": n} for v, n in ordered], "varies": len(ordered) > 1, "by_group": []}


def _summary(name: str) -> dict:
    path = folder_paths.get_full_path_or_raise("loras", name)
    with Lora.open(path) as lora:
        det = lora.detection
        entries = [e for e in lora.entries if e.kind == "lora"]
        md = dict(lora.source.metadata)
        ranks = [e.rank() for e in entries]
        alphas = [e.alpha for e in entries]
        algorithms = {"LoRA": len(entries)}
    triggers = []
    if md.get("modelspec.trigger_phrase"):
        triggers.append({"word": md["modelspec.trigger_phrase"], "kind": "trigger_phrase",
                         "source": "modelspec.trigger_phrase", "likely": True})
    images = {k: v.get("img_count") for k, v in json.loads(md.get("ss_dataset_dirs", "{}")).items()}
    for folder, tags in json.loads(md.get("ss_tag_frequency", "{}")).items():
        head, _, tokens = folder.partition("_")
        if head.isdigit() and tokens:
            triggers.append({"word": tokens, "kind": "class_tokens", "source": f'ss_tag_frequency folder "{folder}"',
                             "likely": True})
        for tag, count in tags.items():
            triggers.append({"word": tag, "kind": "tag", "source": f'ss_tag_frequency["{folder}"]', "count": count,
                             "images": images.get(folder), "likely": count >= (images.get(folder) or 1e9)})
    return {
        "schema": 1, "name": os.path.basename(name), "path": name, "file_size": os.path.getsize(path),
        "format": {"id": det.format, "name": det.format_name}, "algorithms": algorithms,
        "arch": {"id": det.arch, "name": det.arch_name, "variant": det.arch_variant, "metadata_claim": det.metadata_arch},
        "rank": _distribution(ranks), "alpha": _distribution([a if a is None or math.isfinite(a) else None
                                                               for a in alphas]),
        "training": {"trainer": md.get("ss_sd_scripts_commit_hash") and "kohya sd-scripts",
                     "steps": int(md["ss_steps"]) if "ss_steps" in md else None,
                     "max_steps": int(md["ss_max_train_steps"]) if "ss_max_train_steps" in md else None,
                     "resolution": md.get("ss_resolution")},
        "triggers": triggers, "trigger_words": [t["word"] for t in triggers if t["likely"]],
        "warnings": [{"code": "stand_in", "message": md.get("ss_training_comment", "stand-in summary"), "count": 1,
                      "items": [md.get("ss_sd_model_name", "")]}],
    }


async def lora_info(request: web.Request) -> web.Response:
    name = request.query.get("name", "")
    try:
        return web.json_response(_summary(name))
    except Exception as e:  # the stand-in reports every failure the way the panel expects
        return web.json_response({"error": f"{type(e).__name__}: {e}"}, status=400)


class _StandIn:
    CATEGORY = "LoRA Lab/E2E stand-ins"
    FUNCTION = "run"

    def run(self, **kwargs):
        return ()


class Loader(_StandIn):
    RETURN_TYPES = ("MODEL", "CLIP")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",), "clip": ("CLIP",), "lora_name": (_lora_names(),),
            "strength_model": ("FLOAT", {"default": 1.0, "min": -10, "max": 10, "step": 0.01}),
            "strength_clip": ("FLOAT", {"default": 1.0, "min": -10, "max": 10, "step": 0.01}),
            "block_weights": ("STRING", {"multiline": True, "default": ""}),
            "a": ("FLOAT", {"default": 1.0}), "b": ("FLOAT", {"default": 1.0}),
            "seed": ("INT", {"default": 0, "min": 0, "max": 2**32 - 1}),
        }}


class Stack(_StandIn):
    RETURN_TYPES = ("MODEL", "CLIP", "STRING")

    @classmethod
    def INPUT_TYPES(cls):
        names = folder_paths.get_filename_list("loras")
        return {"required": {"model": ("MODEL",),
                             "loras": ("STRING", {"default": "[]", "socketless": True, "lora_names": names}),
                             "a": ("FLOAT", {"default": 1.0}), "b": ("FLOAT", {"default": 1.0}),
                             "seed": ("INT", {"default": 0, "min": 0, "max": 2**32 - 1, "control_after_generate": False})},
                "optional": {"clip": ("CLIP",), "block_weights": ("STRING", {"forceInput": True})}}


class Inspect(_StandIn):
    RETURN_TYPES = ("STRING",)
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"lora_name": (folder_paths.get_filename_list("loras"),)}}

    def run(self, lora_name):
        s = _summary(lora_name)
        report = "\n".join([f"{s['name']}  {s['file_size']} bytes", f"base model: {s['arch']['name']}",
                            "trigger words: " + ", ".join(s["trigger_words"])])
        return {"ui": {"text": [report]}, "result": (report,)}


def send(data: dict) -> None:
    """Send a progress event through the pack's own sender (which keeps it for
    GET /loralab/train_progress) when it is loaded, else straight to the page."""
    for name, module in list(sys.modules.items()):
        if name.endswith("nodes.host.training") and hasattr(module, "send_progress_event"):
            return module.send_progress_event(data)
    server.PromptServer.instance.send_sync("loralab.train.progress", {**data, "t": time.time()})


class TrainE2EProbe:
    """Sends ``loralab.train.progress`` events like the training nodes: a decaying noisy loss."""

    CATEGORY = "LoRA Lab/E2E stand-ins"
    FUNCTION = "run"
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 120, "min": 1, "max": 10000})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    def run(self, steps, unique_id):
        run_id = f"probe-{time.time()}"
        avg = None
        for step in range(1, steps + 1):
            loss = 0.08 + 0.25 * math.exp(-step / 30) + 0.03 * math.sin(step * 1.7) ** 2
            avg = loss if avg is None else 0.9 * avg + 0.1 * loss
            send({"node": unique_id, "run": run_id, "step": step, "total": steps, "loss": loss,
                  "loss_avg": avg, "lr": 1e-4 * (1 - step / steps)})
            time.sleep(0.005)
        send({"node": unique_id, "run": run_id, "step": steps, "total": steps, "saved": "probe/probe_lora.safetensors"})
        return {}


#: where the host harness keeps make_tiny_models.py (beside the repository, as the host tests find it)
TINY_TOOLS = os.path.join(REPO, "..", "shared", "tools", "comfy-host")


class TinyModel:
    """A tiny SD1.5-layout MODEL (random weights) with a tiny CLIP and VAE of the same layout."""

    CATEGORY = "LoRA Lab/E2E stand-ins"
    FUNCTION = "make"
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"weights_seed": ("INT", {"default": 0, "min": 0, "max": 1000})}}

    def make(self, weights_seed):
        seed = weights_seed
        for folder in (TINY_TOOLS, os.path.join(REPO, "tests")):
            if folder not in sys.path:
                sys.path.insert(0, folder)
        import make_tiny_models
        from host.train_kit import tiny_clip, tiny_vae
        return make_tiny_models.build_patcher("sd15_micro", seed), tiny_clip("sd15", seed), tiny_vae("sd15", seed)


class TinySDXL:
    """A tiny random SDXL (the real key layout, a few blocks): enough for a LoRA Stack to patch."""

    CATEGORY = "LoRA Lab/E2E stand-ins"
    FUNCTION = "run"
    RETURN_TYPES = ("MODEL",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def run(self):
        if TINY_TOOLS not in sys.path:
            sys.path.insert(0, TINY_TOOLS)
        import make_tiny_models
        return (make_tiny_models.build_patcher("sdxl_micro"),)


class ModelSink:
    """An output node for a MODEL, so that the nodes before it run."""

    CATEGORY = "LoRA Lab/E2E stand-ins"
    FUNCTION = "run"
    RETURN_TYPES = ()
    OUTPUT_NODE = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model": ("MODEL",)}}

    def run(self, model):
        return {}


_ALL = {"LoRALabLoader": Loader, "LoRALabStack": Stack, "LoRALabInspect": Inspect}
NODE_CLASS_MAPPINGS = {k: v for k, v in _ALL.items() if k not in nodes.NODE_CLASS_MAPPINGS}
NODE_CLASS_MAPPINGS["LoRALabTrainE2EProbe"] = TrainE2EProbe
NODE_CLASS_MAPPINGS["LoRALabE2EModelSink"] = ModelSink
PROBES = ["LoRALabTrainE2EProbe", "LoRALabE2EModelSink"]
if os.path.isfile(os.path.join(TINY_TOOLS, "make_tiny_models.py")):
    NODE_CLASS_MAPPINGS["LoRALabE2ETinyModel"] = TinyModel
    NODE_CLASS_MAPPINGS["LoRALabE2ETinySDXL"] = TinySDXL
    PROBES += ["LoRALabE2ETinyModel", "LoRALabE2ETinySDXL"]
NODE_DISPLAY_NAME_MAPPINGS = {k: k + STAND_IN for k in NODE_CLASS_MAPPINGS}

_routes = server.PromptServer.instance.routes
STANDIN_ROUTES = []
if not any(getattr(r, "path", None) == "/loralab/lora_info" for r in _routes):
    _routes.get("/loralab/lora_info")(lora_info)
    STANDIN_ROUTES.append("/loralab/lora_info")


async def standins(request: web.Request) -> web.Response:
    """Which stand-ins this run uses (the test reports it)."""
    return web.json_response({"nodes": sorted(set(NODE_CLASS_MAPPINGS) - set(PROBES)),
                              "routes": STANDIN_ROUTES})


_routes.get("/loralab_e2e/standins")(standins)
