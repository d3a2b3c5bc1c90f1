"""UI-format workflows (what the frontend saves and the template browser opens) as API prompts, read
with the host's own ``/object_info``: widget values are matched to inputs in the order the frontend
creates widgets, with the extra "control after generate" value the frontend stores after seed-like
inputs. Anything the converter cannot place (an unknown node type, a widget count that does not
match, a link that does not exist) raises :class:`WorkflowError` naming the node."""
from __future__ import annotations

import json
import os

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKFLOWS = os.path.join(REPO, "workflows")
#: input types the frontend (comfyui-frontend-package 1.27) shows as widgets
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
#: INT inputs the frontend gives a control widget unless their spec says control_after_generate: false
SEED_NAMES = ("seed", "noise_seed")
#: inputs ComfyUI 0.33 added to core nodes, whose values the workflows (saved for 0.33) store last: an
#: older host's node lacks them, and its frontend drops their values when it loads the workflow
NEWER_CORE_INPUTS = {"LoraModelLoader": ("bypass",)}
#: node types that exist in the frontend only and never reach the server
FRONTEND_ONLY = {"Note", "MarkdownNote"}

#: LoRA files the workflows name -> (architecture, fixture, seed): the host test rebuilds the fixture for that
#: architecture's tiny model (architecture None: writes it at its real shapes, text encoders included, as
#: a LoRA for another model than the workflow's, which the coverage doctor names by its sizes); the browser
#: test writes every one at its real shapes, so the panels show real files
LORAS = {
    "my_style.safetensors": ("sd15", "kohya_sd15_lora", 0),
    "my_character.safetensors": ("sd15", "comfyui_trainer_sd15_lora", 1),
    "my_detail.safetensors": ("sd15", "lycoris_sd15_loha", 2),
    "my_style_xl.safetensors": ("sdxl", "kohya_sdxl_lora", 0),
    "my_character_xl.safetensors": ("sdxl", "diffusers_sdxl_dreambooth_lora", 1),
    "my_detail_xl.safetensors": ("sdxl", "kohya_sdxl_lora", 2),
    "my_style_flux.safetensors": ("flux", "aitoolkit_flux_lora", 0),
    # a folder of downloads to convert: a format ComfyUI drops, and a kohya one
    "downloads/my_character_xl.safetensors": ("sdxl", "diffusers_sdxl_dreambooth_lora", 1),
    "downloads/my_detail_xl.safetensors": ("sdxl", "kohya_sdxl_lora", 2),
    "my_sd15_lora.safetensors": (None, "kohya_sd15_lora", 3),
    "my_style_qwen.safetensors": ("qwen", "musubi_qwen_image_lora", 0),
    # a Wan 2.2 A14B pair (the low-noise file found by name)
    "wan22/my_motion_high_noise.safetensors": ("wan", "musubi_wan21_t2v_14b_lora", 0),
    "wan22/my_motion_low_noise.safetensors": ("wan", "musubi_wan21_t2v_14b_lora", 1),
}
#: checkpoints the workflows name -> the released model's header the browser test writes under that name
#: (loralab_testkit.sparse_model_file: real keys and shapes over sparse zeros), so the coverage doctor
#: reads the architecture a real file of that name has; no test may load one
CHECKPOINT_HEADERS = {
    "sd_xl_base_1.0.safetensors": [("sdxl", "model.diffusion_model."), ("clip_l", "conditioner.embedders.0.transformer.")],
    "v1-5-pruned-emaonly.safetensors": [("sd15", "model.diffusion_model."), ("clip_l", "cond_stage_model.transformer.")],
}


class WorkflowError(AssertionError):
    """A workflow that does not fit the host's nodes."""


def workflow_files() -> list[str]:
    return sorted(f for f in os.listdir(WORKFLOWS) if f.endswith(".json"))


def load_workflow(name: str) -> dict:
    with open(os.path.join(WORKFLOWS, name), encoding="utf-8") as f:
        return json.load(f)


def object_info(host) -> dict:
    """``GET /object_info`` of the booted host, answered by the server's own route handler."""
    from aiohttp.test_utils import make_mocked_request
    route = next(r for r in host.server.routes if getattr(r, "path", None) == "/object_info" and r.method == "GET")
    response = host.loop.run_until_complete(route.handler(make_mocked_request("GET", "/object_info")))
    return json.loads(response.body)


def _is_widget(spec: list) -> bool:
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    return (isinstance(kind, list) or kind in WIDGET_TYPES) and not opts.get("forceInput")


def _has_control(name: str, spec: list) -> bool:
    """The frontend's rule: INT inputs take ``control_after_generate`` from their options, defaulting
    to True for inputs named seed/noise_seed; combos only when the option is true."""
    kind, opts = spec[0], (spec[1] if len(spec) > 1 else {})
    if kind == "INT":
        return opts.get("control_after_generate", name in SEED_NAMES) is True
    return bool(opts.get("control_after_generate")) and (isinstance(kind, list) or kind == "COMBO")


def widget_slots(info: dict) -> list[str | None]:
    """One entry per value the frontend stores in ``widgets_values``: the input name, or None for a
    control-after-generate value (never sent to the server)."""
    slots: list[str | None] = []
    for section in ("required", "optional"):
        specs = info["input"].get(section, {})
        for name in info.get("input_order", {}).get(section, list(specs)):
            spec = specs[name]
            if _is_widget(spec):
                slots.append(name)
                if _has_control(name, spec):
                    slots.append(None)
    return slots


def _defaults_of_added_inputs(node: dict, info: dict, slots: list[str | None], stored: int) -> list | None:
    """The defaults of the trailing widgets a core node gained after the workflow was saved (0.33's
    LoraModelLoader ``bypass``), as the frontend fills them in; None where that does not apply (a
    LoRA Lab node, a missing value without a default, a control value)."""
    if node["type"].startswith("LoRALab") or stored >= len(slots):
        return None
    specs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
    added = []
    for name in slots[stored:]:
        opts = specs[name][1] if name is not None and len(specs[name]) > 1 else {}
        if name is None or "default" not in opts:
            return None
        added.append(opts["default"])
    return added


def widget_values(node: dict, info: dict) -> dict:
    """The node's widget values by input name; raises when their count does not match (except for
    trailing inputs a core node gained since, which get their defaults)."""
    slots = widget_slots(info)
    values = node.get("widgets_values", [])
    newer = [name for name in NEWER_CORE_INPUTS.get(node.get("type"), ()) if name not in slots]
    if newer and len(values) == len(slots) + len(newer):
        values = values[:len(slots)]  # as an older host's frontend does
    added = _defaults_of_added_inputs(node, info, slots, len(values))
    if added is not None:
        values = [*values, *added]
    if len(values) != len(slots):
        names = ", ".join(s or "control_after_generate" for s in slots)
        raise WorkflowError(f"node {node['id']} ({node['type']}): {len(values)} widget values stored, the host's "
                            f"{node['type']} has {len(slots)} ({names})")
    return {name: value for name, value in zip(slots, values) if name is not None}


def to_api(workflow: dict, info: dict) -> dict:
    """The API prompt of a UI-format workflow (``info``: the host's object_info)."""
    links = {link[0]: link for link in workflow.get("links", [])}
    ids = {node["id"] for node in workflow["nodes"]}
    prompt = {}
    for node in workflow["nodes"]:
        kind = node["type"]
        if kind in FRONTEND_ONLY:
            continue
        if kind not in info:
            raise WorkflowError(f"node {node['id']}: the host has no node type {kind!r}")
        if node.get("mode", 0) != 0:
            raise WorkflowError(f"node {node['id']} ({kind}) is muted or bypassed; example workflows run every node")
        inputs = widget_values(node, info[kind])
        known = {**info[kind]["input"].get("required", {}), **info[kind]["input"].get("optional", {})}
        for inp in node.get("inputs", []):
            if inp["name"] not in known:
                raise WorkflowError(f"node {node['id']} ({kind}): the host's {kind} has no input {inp['name']!r}")
            if inp.get("link") is None:
                continue
            link = links.get(inp["link"])
            if link is None or link[3] != node["id"] or link[1] not in ids:
                raise WorkflowError(f"node {node['id']} ({kind}) input {inp['name']!r}: link {inp['link']} is not "
                                    "in the workflow's links or does not lead here")
            inputs[inp["name"]] = [str(link[1]), link[2]]
        prompt[str(node["id"])] = {"class_type": kind, "inputs": inputs}
    return prompt
