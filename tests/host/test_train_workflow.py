"""The example training workflow (workflows/train_run_previews.json, UI format) runs end to end in
the real ComfyUI: converted to an API prompt, its checkpoint loader swapped for the tiny model and
the tiny encoders, its step counts and sizes scaled down; previews come out, checkpoints and saves
are written, and the final LoRA loads in core's loader with no key dropped."""
from __future__ import annotations

import json
import os

from host import train_kit
from host.train_setup import VARIANTS, dataset_in_input, one_thread, train_host  # noqa: F401 (fixtures)

WORKFLOW = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "workflows", "train_run_previews.json")
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}


def widget_names(cls) -> list[str]:
    """The node's widget inputs in the order the UI stores their values."""
    names = []
    spec = cls.INPUT_TYPES()
    for section in ("required", "optional"):
        for name, value in spec.get(section, {}).items():
            kind, opts = value[0], (value[1] if len(value) > 1 else {})
            if isinstance(kind, list) or (kind in WIDGET_TYPES and not opts.get("forceInput")):
                names.append(name)
    return names


def to_api(host, workflow: dict) -> dict:
    """A UI-format workflow as an API prompt (links become [node, slot]; widget values by name)."""
    links = {link[0]: link for link in workflow["links"]}
    prompt = {}
    for node in workflow["nodes"]:
        if node.get("mode", 0) in (2, 4):
            continue
        cls = host.nodes.NODE_CLASS_MAPPINGS[node["type"]]
        inputs = dict(zip(widget_names(cls), node.get("widgets_values", [])))
        for inp in node.get("inputs", []):
            if inp.get("link") is not None:
                _, src, slot, *_ = links[inp["link"]]
                inputs[inp["name"]] = [str(src), slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def swap_checkpoint_loader(prompt: dict, arch: str) -> None:
    """CheckpointLoaderSimple (MODEL, CLIP, VAE) -> the tiny model loader and the tiny encoders."""
    loader = next(k for k, v in prompt.items() if v["class_type"] == "CheckpointLoaderSimple")
    prompt[loader] = {"class_type": "TinyDiffusionModelLoader", "inputs": {"unet_name": f"tiny_{VARIANTS[arch]}.safetensors"}}
    prompt["encoders"] = {"class_type": "LoRALabTestTinyEncoders", "inputs": {"arch": arch, "seed": 0}}
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and value[0] == loader and value[1] in (1, 2):
                node["inputs"][name] = ["encoders", 1 if value[1] == 1 else 0]


def test_example_workflow_runs_end_to_end(train_host, tiny_models):
    host = train_host
    with open(WORKFLOW, encoding="utf-8") as f:
        workflow = json.load(f)
    prompt = to_api(host, workflow)
    kinds = [v["class_type"] for v in prompt.values()]
    assert kinds.count("LoRALabTrainSteps") == 3 and kinds.count("LoRALabTrainPreview") == 3
    assert kinds.count("LoRALabTrainSave") == 4 and kinds.count("LoRALabTrainInit") == 1
    swap_checkpoint_loader(prompt, "sd15")
    folder = dataset_in_input(host, "ds_workflow", n=3)
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] == "LoRALabDataset":
            inputs.update(folder=folder, resolution=64, min_side=64, max_side=64)
        elif node["class_type"] == "LoRALabTrainInit":
            inputs.update(total_steps=3, save_every=1, keep_last=2, name="wf_lora", rank=4, alpha=4.0, batch_size=2)
        elif node["class_type"] == "LoRALabTrainSteps":
            inputs.update(steps=1)
        elif node["class_type"] == "LoRALabTrainPreview":
            inputs.update(steps=2, width=64, height=64)
        elif node["class_type"] == "LoRALabTrainSave" and inputs["name"]:
            inputs.update(name="wf_lora_final")
    ok, history, messages = host.run_prompt(prompt)
    assert ok, messages
    previews = [k for k, v in prompt.items() if v["class_type"] == "LoRALabTrainPreview"]
    assert all(len(history["outputs"][k]["images"]) == 2 for k in previews)
    loras = os.listdir(host.folder("loras"))
    # periodic checkpoints every step, the last 2 kept; the stage saves; the final save without state
    assert "wf_lora_step000001.loralab-state" not in loras
    for step in (2, 3):
        assert f"wf_lora_step{step:06d}.safetensors" in loras
    assert {"wf_lora_step000001_00001.safetensors", "wf_lora_step000002_00001.safetensors",
            "wf_lora_step000003_00001.safetensors"} <= set(loras)  # stage saves beside the checkpoints
    assert "wf_lora_final_step000003.safetensors" in loras and "wf_lora_final_step000003.loralab-state" not in loras
    import comfy.utils
    sd = comfy.utils.load_torch_file(os.path.join(host.folder("loras"), "wf_lora_final_step000003.safetensors"))
    model = tiny_models.load_tiny_model(os.path.join(host.folder("diffusion_models"), f"tiny_{VARIANTS['sd15']}.safetensors"))
    _, warnings, patches = train_kit.core_lora_patches(model, sd)
    assert warnings == [] and len(patches) == len({k.rsplit(".", 1)[0] for k in sd if k.endswith(".alpha")})
    assert history["outputs"][next(k for k, v in prompt.items() if v["class_type"] == "PreviewImage")]["images"]
