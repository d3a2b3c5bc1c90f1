"""Every workflow in workflows/ runs in the real ComfyUI: converted from the UI format with the
host's own /object_info (a node type, input or widget that no longer exists fails here), its model
loaders and text encoders swapped for tiny models with the real key layouts, LoRAs under the names
it uses rebuilt from real fixture layouts for those models, steps and sizes scaled down; then it
must succeed and leave the outputs it exists for (images, LoRA files that ComfyUI's own loader
takes without dropping a key, reports). Every node of the pack appears in some workflow."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field

import pytest

from host import train_kit
from host.train_setup import dataset_in_input, one_thread, tiny_model_file, train_host  # noqa: F401 (fixtures)
from host.workflow_kit import LORAS, WorkflowError, load_workflow, object_info, to_api, workflow_files
from loralab_testkit import fit_fixture_to_layout, fixture, materialize

#: loaders -> (the input that names the file, or the CLIP type; where each output comes from in the
#: stand-in: "model" the tiny diffusion model, 0 the tiny VAE, 1 the tiny CLIP)
LOADERS = {
    "CheckpointLoaderSimple": ("ckpt_name", {0: "model", 1: 1, 2: 0}),
    "UNETLoader": ("unet_name", {0: "model"}),
    "DualCLIPLoader": ("type", {0: 1}),
    "CLIPLoader": ("clip_name", {0: 1}),
    "VAELoader": ("vae_name", {0: 0}),
}
#: what a loader names -> (architecture of the tiny stand-in, seed of its diffusion model)
STAND_INS = {
    "v1-5-pruned-emaonly.safetensors": ("sd15", 0),
    "sd_xl_base_1.0.safetensors": ("sdxl", 0),
    "flux1-dev.safetensors": ("flux", 0),
    "my_finetune.safetensors": ("sd15", 1),
    "flux": ("flux", 0),
    "ae.safetensors": ("flux", 0),
    "wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors": ("wan", 0),
    "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors": ("wan", 1),
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": ("wan", 0),
    "wan_2.1_vae.safetensors": ("wan", 0),
    "qwen_image_fp8_e4m3fn.safetensors": ("qwen", 0),
    "qwen_2.5_vl_7b_fp8_scaled.safetensors": ("qwen", 0),
    "qwen_image_vae.safetensors": ("qwen", 0),
}

DATASET = "wf_dataset"
#: widget values scaled down for the tiny models, per node type
SMALL = {
    "EmptyLatentImage": {"width": 64, "height": 64},
    "EmptySD3LatentImage": {"width": 64, "height": 64},
    "EmptyHunyuanLatentVideo": {"width": 64, "height": 64, "length": 1},
    "KSampler": {"steps": 1},
    "LoRALabDataset": {"folder": DATASET, "resolution": 64, "min_side": 64, "max_side": 64},
    "LoRALabTrain": {"steps": 2, "rank": 4, "alpha": 4.0},
    "LoRALabTrainInit": {"total_steps": 3, "save_every": 1, "keep_last": 2, "rank": 4, "alpha": 4.0, "batch_size": 2},
    "LoRALabTrainSteps": {"steps": 1},
    "LoRALabTrainExtend": {"total_steps": 4},
    "LoRALabTrainPreview": {"steps": 2, "width": 64, "height": 64},
    "LoRALabMerge": {"rank": 4},
    "LoRALabResize": {"rank": 2},
    "LoRALabExtract": {"rank": 4},
    "LoRALabCompare": {"steps": 1},
}


@dataclass
class Expect:
    """What a workflow must leave: ``images`` node type -> how many images each node of it shows; ``texts``
    node type -> words its shown text holds; ``loras`` files written into loras/ (ComfyUI's loader
    takes each one onto the tiny model of ``arch`` with no key dropped); ``absent`` files it must
    not write there; ``outputs`` files written into output/."""

    arch: str
    images: dict[str, int] = field(default_factory=dict)
    texts: dict[str, tuple[str, ...]] = field(default_factory=dict)
    loras: tuple[str, ...] = ()
    absent: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    run_name: str | None = None  # training runs are renamed so that no other test's files are in the way


IMAGE = {"SaveImage": 1}
TRAINED = {"SaveImage": 1, "PreviewImage": 1}  # the test image and the loss curve
ZEROED = "left out at strength x block weight 0"  # the preset left some blocks out
EXPECT = {
    "inspect_lora.json": Expect("sd15", images={"PreviewImage": 1}, texts={
        "LoRALabInspect": ("my_style.safetensors", "format: kohya", "of 48 mapped", "block strength")}),
    "block_weights_sd15.json": Expect("sd15", images=IMAGE, texts={"LoRALabLoader": ("block weights: OUTALL", ZEROED)}),
    "block_weights_sdxl.json": Expect("sdxl", images=IMAGE,
                                      texts={"LoRALabLoader": ("block weights: SDXL-OUTALL", ZEROED)}),
    "block_weights_flux.json": Expect("flux", images=IMAGE,
                                      texts={"LoRALabLoader": ("block weights: FLUX-DOUBLE", ZEROED)}),
    "coverage_doctor.json": Expect("sdxl", images=IMAGE, texts={"LoRALabLoader": (
        "\nnote: diffusers-format keys: ", "own LoRA loader drops ", "of these modules; LoRA Lab applies them\n",
        "nothing applied: an SD1.x LoRA on an SDXL model\nfix: pick a LoRA made for SDXL, or load an SD1.x model\n")}),
    "library_picker.json": Expect("sdxl", images=IMAGE, texts={"LoRALabLoader": ("LoRA: my_style_xl.safetensors",)}),
    "lora_stack.json": Expect("sdxl", images=IMAGE, texts={"LoRALabStack": (
        "[1] applied ", "\nLoRA: my_style_xl", "[2] applied ", "\nLoRA: my_character_xl", "[3] applied ",
        "\nLoRA: my_detail_xl", "block weights: SDXL-INALL"), "LoRALabStackReport": ("my_style_xl",)}),
    "merge_loras.json": Expect("sd15", images=IMAGE, loras=("merged_style_r32.safetensors",), texts={
        "LoRALabMerge": ("(svd, rank 4)",), "LoRALabSave": ("file: loras/merged_style_r32",)}),
    "resize_lora.json": Expect("sdxl", loras=("my_style_xl_r16.safetensors",),
                               texts={"LoRALabResize": ("my_style_xl_r16",)}),
    "extract_lora.json": Expect("sd15", loras=("my_finetune_lora.safetensors",),
                                texts={"LoRALabExtract": ("my_finetune_lora",)}),
    "convert_folder.json": Expect("sdxl", loras=("converted/my_character_xl.safetensors",
                                                 "converted/my_detail_xl.safetensors"),
                                  texts={"LoRALabConvert": ("converted 2 of 2 LoRA(s)",)}),
    "bake_loras.json": Expect("sd15", texts={"LoRALabBake": ("baked from 2 LoRAs",)},
                              outputs=("checkpoints/v1-5_my_style_baked_00001_.safetensors",)),
    "train_lora_sd15.json": Expect("sd15", images=TRAINED, loras=("my_lora_sd15.safetensors",)),
    "train_lora_sdxl.json": Expect("sdxl", images=TRAINED, loras=("my_lora_sdxl.safetensors",)),
    "train_lora_flux.json": Expect("flux", images=TRAINED, loras=("my_lora_flux.safetensors",)),
    # three stages of one step: periodic checkpoints every step (the last 2 kept), a save after each
    # stage beside them, the final save without a state file
    "train_run_previews.json": Expect(
        "sd15", images={"LoRALabTrainPreview": 2, "PreviewImage": 1}, run_name="wf_run",
        loras=("wf_run_step000002.safetensors", "wf_run_step000003.safetensors",
               "wf_run_step000001_00001.safetensors", "wf_run_step000002_00001.safetensors",
               "wf_run_step000003_00001.safetensors", "wf_run_final_step000003.safetensors"),
        absent=("wf_run_step000001.loralab-state", "wf_run_final_step000003.loralab-state")),
    # resumed from a state file of step 1, extended to 4 steps, one more step: step 2 (a fresh run would stop at 1)
    "train_resume.json": Expect("sd15", images={"PreviewImage": 1}, run_name="wf_resume",
                                loras=("wf_resume_step000002.safetensors",)),
    # one step saved (step 1) compared at three strengths: a grid on the node and saved
    # both experts sample one step each, each patched with its own file of the pair
    "wan22_pair.json": Expect("wan", images={"SaveAnimatedWEBP": 1}, texts={"LoRALabWanPair": (
        "[high noise] applied ", "wan22/my_motion_high_noise.safetensors", "[low noise] applied ",
        "wan22/my_motion_low_noise.safetensors")}),
    "block_weights_qwen_image.json": Expect("qwen", images=IMAGE, texts={"LoRALabLoader": (
        "LoRA: my_style_qwen.safetensors", "block weights: QWEN-EARLY")}),
    "compare_checkpoints.json": Expect("sd15", images={"LoRALabCompare": 1, "SaveImage": 1}, run_name="wf_compare",
                                       loras=("wf_compare_step000001.safetensors",)),
}


def fewer_steps(node: dict, steps: int) -> None:
    """A KSamplerAdvanced scaled to ``steps``, its start and end at the same fractions of the run."""
    inputs = node["inputs"]
    old = inputs["steps"]
    for key in ("start_at_step", "end_at_step"):
        inputs[key] = min(inputs[key], old) * steps // old
    inputs["steps"] = steps


def swap_loaders(host, tiny_models, prompt: dict) -> None:
    """Model loaders and text encoders -> the tiny diffusion models and the tiny encoders (one per arch)."""
    moved = {}
    for nid, node in list(prompt.items()):
        if node["class_type"] not in LOADERS:
            continue
        key, outputs = LOADERS[node["class_type"]]
        named = node["inputs"][key]
        assert named in STAND_INS, f"node {nid} ({node['class_type']}) loads {named!r}: add it to STAND_INS"
        arch, seed = STAND_INS[named]
        del prompt[nid]
        for slot, source in outputs.items():
            if source == "model":
                model = f"tiny_model_{arch}_{seed}"
                prompt[model] = {"class_type": "TinyDiffusionModelLoader",
                                 "inputs": {"unet_name": tiny_model_file(host, tiny_models, arch, seed)}}
                moved[(nid, slot)] = [model, 0]
            else:
                prompt[f"tiny_encoders_{arch}"] = {"class_type": "LoRALabTestTinyEncoders",
                                                   "inputs": {"arch": arch, "seed": 0}}
                moved[(nid, slot)] = [f"tiny_encoders_{arch}", source]
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if isinstance(value, list) and (value[0], value[1]) in moved:
                node["inputs"][name] = moved[(value[0], value[1])]


def tiny_layout(host, tiny_models, arch: str):
    """The tiny model of an architecture (seed 0) and LoRA Lab's layout of it."""
    model = tiny_models.load_tiny_model(os.path.join(host.folder("diffusion_models"),
                                                     tiny_model_file(host, tiny_models, arch, 0)))
    return model, host.module("nodes.host.models").model_layout(model)


def put_loras(host, tiny_models, prompt: dict) -> None:
    """The LoRAs a prompt names, rebuilt from real fixture layouts for the tiny models (diffusion
    model modules only: the tiny text encoders have fewer layers than the fixtures'); those LORAS
    gives no architecture, at the fixture's real shapes."""
    from safetensors.torch import save_file
    Lora = host.module("loralab.lora").Lora
    named = {v for node in prompt.values() for k, v in node["inputs"].items()
             if isinstance(v, str) and v.endswith(".safetensors") and k.startswith("lora")}
    folders = {os.path.dirname(n) for n in named if "/" in n}  # a LoRA of a folder brings the folder's others
    named |= {n for n in LORAS if os.path.dirname(n) in folders}
    named |= {row["lora"] for node in prompt.values() if isinstance(node["inputs"].get("loras"), str)
              for row in json.loads(node["inputs"]["loras"])}  # the rows of the LoRA Stack and the Stack Report
    for name in named:
        path = os.path.join(host.folder("loras"), *name.split("/"))
        if os.path.exists(path):
            continue
        assert name in LORAS, f"the workflow names the LoRA {name!r}: add it to LORAS"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        arch, fixture_name, seed = LORAS[name]
        if arch is None:
            materialize(fixture_name, path, rank=4, seed=seed)
            continue
        _, layout = tiny_layout(host, tiny_models, arch)
        tensors = fit_fixture_to_layout(fixture_name, layout, rank=4, seed=seed)
        unet = {key for item in Lora.from_state_dict(tensors, layout=layout).items if item.component == "unet"
                for key in item.entry.keys.values()}
        save_file({k: v.contiguous() for k, v in tensors.items() if k in unet}, path,
                  fixture("loras", fixture_name).get("metadata") or None)


def prepare(host, tiny_models, prompt: dict, expect: Expect) -> None:
    """Stand-ins, LoRAs, the dataset, scaled-down values; a state file for a workflow that resumes."""
    swap_loaders(host, tiny_models, prompt)
    put_loras(host, tiny_models, prompt)
    if not os.path.isdir(os.path.join(host.folder_paths.get_input_directory(), DATASET)):
        dataset_in_input(host, DATASET, n=3)
    for node in prompt.values():
        node["inputs"].update(SMALL.get(node["class_type"], {}))
        if node["class_type"] == "KSamplerAdvanced":
            fewer_steps(node, 2)
        if expect.run_name and node["class_type"] == "LoRALabTrainInit":
            node["inputs"]["name"] = expect.run_name
        if expect.run_name and node["class_type"] == "LoRALabTrainSave" and node["inputs"]["name"]:
            node["inputs"]["name"] = f"{expect.run_name}_{node['inputs']['name'].removeprefix('my_lora_')}"
    for node in list(prompt.values()):
        if node["class_type"] == "LoRALabTrainResume":
            write_state_to_resume(host, prompt, node["inputs"]["run"], node["inputs"]["checkpoint"])


def write_state_to_resume(host, prompt: dict, run: list, checkpoint: str) -> None:
    """Run the part of ``prompt`` that starts the run, one step of it and a save with its state,
    and put that state file in loras/ under the name the workflow resumes from."""
    needed, todo = {}, [run[0]]
    while todo:
        nid = todo.pop()
        needed[nid] = prompt[nid]
        todo += [v[0] for v in prompt[nid]["inputs"].values() if isinstance(v, list) and v[0] not in needed]
    needed["first_step"] = {"class_type": "LoRALabTrainSteps", "inputs": {"run": run, "steps": 1}}
    needed["first_save"] = {"class_type": "LoRALabTrainSave",
                            "inputs": {"run": ["first_step", 0], "name": "wf_resume_from", "with_state": True}}
    ok, history, messages = host.run_prompt(needed)
    assert ok, (history, messages)
    state = os.path.join(host.folder("loras"), "wf_resume_from_step000001.loralab-state")
    shutil.copyfile(state, os.path.join(host.folder("loras"), checkpoint))


def shown(history: dict, prompt: dict, kind: str, key: str) -> list:
    """What every node of one type showed (its ``ui`` output under ``key``), one list per node."""
    nodes = [nid for nid, node in prompt.items() if node["class_type"] == kind]
    assert nodes, f"no {kind} node in the prompt"
    return [history["outputs"].get(nid, {}).get(key, []) for nid in nodes]


def check_lora_loads(host, tiny_models, name: str, arch: str) -> None:
    """ComfyUI's own loader takes every key of the file onto the tiny model."""
    import comfy.utils
    sd = comfy.utils.load_torch_file(os.path.join(host.folder("loras"), name))
    model, _ = tiny_layout(host, tiny_models, arch)
    _, warnings, patches = train_kit.core_lora_patches(model, sd)
    modules = {k.split(".", 1)[0] for k in sd}
    assert warnings == [] and len(patches) >= len(modules) > 0, (name, warnings, len(patches), len(modules))


def _listing(folder: str) -> set[str]:
    """Every file under ``folder``, as a relative name with "/"."""
    return {os.path.relpath(os.path.join(root, f), folder).replace(os.sep, "/")
            for root, _, files in os.walk(folder) for f in files}


@pytest.mark.parametrize("name", workflow_files())
def test_workflow_runs(train_host, tiny_models, name):
    host = train_host
    assert name in EXPECT, f"{name}: add what it must produce to EXPECT"
    expect = EXPECT[name]
    prompt = to_api(load_workflow(name), object_info(host))
    prepare(host, tiny_models, prompt, expect)
    before = _listing(host.folder("loras"))
    ok, history, messages = host.run_prompt(prompt)
    assert ok, (history, messages)
    for kind, count in expect.images.items():
        counts = [len(images) for images in shown(history, prompt, kind, "images")]
        assert counts == [count] * len(counts), f"{name}: {kind} nodes show {counts} images, expected {count} each"
    for kind, words in expect.texts.items():
        text = "\n".join(t for node in shown(history, prompt, kind, "text") for t in node)
        assert all(w in text for w in words), f"{name}: {kind} shows {text[:2000]!r}, expected {words}"
    loras = _listing(host.folder("loras"))
    assert set(expect.loras) <= loras - before, (name, sorted(loras - before))
    assert not set(expect.absent) & loras, (name, sorted(set(expect.absent) & loras))
    for lora in expect.loras:
        check_lora_loads(host, tiny_models, lora, expect.arch)
    for out in expect.outputs:
        assert os.path.isfile(os.path.join(host.folder_paths.get_output_directory(), out)), (name, out)


def test_every_node_is_in_a_workflow(host):
    """Every node id the pack registers appears in at least one workflow."""
    pack = {cls.GET_SCHEMA().node_id for module in host.module("nodes").NODE_MODULES for cls in module.NODES}
    used = {node["type"] for name in workflow_files() for node in load_workflow(name)["nodes"]}
    assert pack and not pack - used, f"nodes in no workflow: {sorted(pack - used)}"


def _node(workflow: dict, kind: str) -> dict:
    return next(n for n in workflow["nodes"] if n["type"] == kind)


@pytest.mark.parametrize("break_it, message", [
    (lambda w: _node(w, "LoRALabTrainInit")["widgets_values"].pop(), "39 widget values stored"),
    (lambda w: _node(w, "LoRALabTrainSave").update(type="LoRALabNoSuchNode"), "no node type 'LoRALabNoSuchNode'"),
    (lambda w: w["links"].pop(), "is not in the workflow's links"),
    (lambda w: _node(w, "LoRALabTrainSteps")["inputs"][0].update(name="gone"), "has no input 'gone'"),
])
def test_a_workflow_that_no_longer_fits_fails(host, break_it, message):
    workflow = load_workflow("train_run_previews.json")
    info = object_info(host)
    to_api(workflow, info)
    break_it(workflow)
    with pytest.raises(WorkflowError, match=message):
        to_api(workflow, info)
