"""Stack Report in the real ComfyUI (0.3.64 and later), on a tiny real-layout Flux model: the node's
JSON against its inputs, relative strength from the MODEL, a LoRA and its negation named as
fighting, and the proposed block weights wired straight into the LoRA Stack in a prompt."""
import json
import os

import torch

from loralab_testkit.fitted import fitted_lora

NODE = "LoRALabStackReport"
SUBDIR = "stackreport"
MODEL_FILE = "stack_report_flux_micro.safetensors"


def _slots(**chosen):
    slots = {}
    for i in range(1, 6):
        slots.update({f"lora_name_{i}": "None", f"strength_{i}": 1.0, f"block_weights_{i}": ""})
    slots.update(chosen)
    return {**slots, "cos_threshold": 0.1, "overlap_threshold": 0.5, "balance": 0.25, "lower": 0.0,
            "samples": 256, "seed": 0}


def test_stack_report_node_json_and_wiring_into_the_stack(host, tiny_models):
    import comfy.utils
    from loralab.layouts import ModelLayout
    from loralab.blocks.spec import parse_block_weights
    tiny_models.setup_comfy()
    path = os.path.join(host.folder("diffusion_models"), MODEL_FILE)
    if not os.path.exists(path):
        tiny_models.write_model("flux_micro", path, dtype="fp32")
    model = tiny_models.load_tiny_model(path)
    layout = ModelLayout.from_config("flux", model.model.model_config.unet_config)
    folder = os.path.join(host.folder("loras"), SUBDIR)
    os.makedirs(folder, exist_ok=True)
    kohya = fitted_lora("kohya_flux_lora", layout, rank=3, seed=1)
    files = {"style": kohya, "undo": {k: -v if k.endswith("lora_up.weight") else v for k, v in kohya.items()},
             "ait": fitted_lora("aitoolkit_flux_lora", layout, rank=2, seed=2)}
    for name, tensors in files.items():
        comfy.utils.save_torch_file(tensors, os.path.join(folder, f"{name}.safetensors"))
    names = {n: f"{SUBDIR}/{n}.safetensors" for n in files}
    host.nodes.NODE_CLASS_MAPPINGS["LoraLoaderModelOnly"].INPUT_TYPES()  # refresh the loras list

    cls = host.nodes.NODE_CLASS_MAPPINGS[NODE]
    schema = cls.GET_SCHEMA()
    assert schema.display_name == "Stack Report (LoRA Lab)" and schema.category == "LoRA Lab/Inspect"
    assert [o.io_type for o in schema.outputs] == ["STRING", "STRING", "IMAGE"] + ["STRING"] * 5
    inputs = _slots(lora_name_1=names["style"], lora_name_2=names["undo"], strength_2=0.5,
                    lora_name_4=names["ait"], block_weights_4="S=0.5")
    report, data, image, *specs = cls.execute(model=model, **inputs).args
    d = json.loads(data)
    assert d["arch"]["id"] == "flux" and d["relative"] is True and [x["slot"] for x in d["loras"]] == [1, 2, 4]
    assert [x["weight"] for x in d["loras"]] == [1.0, 0.5, 1.0] and d["loras"][2]["block_weights"] == "S=0.5"
    touched = [b for b in d["blocks"] if b["modules"][0]]
    assert touched and all(b["relative"][0] > 0 for b in touched)
    for b in touched:  # undo = −style at half weight: opposed everywhere both write
        pair = next(p for p in b["pairs"] if (p["i"], p["j"]) == (0, 1))
        assert abs(pair["cos"] + 1) < 1e-9 and abs(pair["overlap"] - 1) < 1e-9 and pair["conflict"] == 1.0
        assert b["strength"][1] == 0.5 * b["strength"][0] or abs(b["strength"][1] / b["strength"][0] - 0.5) < 1e-9
    fought = {f["block"] for f in d["fights"] if (f["i"], f["j"]) == (0, 1)}
    assert fought == {b["block"] for b in touched if b["modules"][1]}
    assert specs[0] == "" and specs[2] == "" and specs[4] == ""  # never lowered / empty slots pass through
    parsed = parse_block_weights(specs[1], "flux")
    assert all(parsed.weight(b) == 0.0 for b in fought)
    assert d["loras"][1]["proposed_block_weights"] == specs[1]
    assert "opposed" in report and image.dim() == 4 and image.shape[-1] == 3

    prompt = {
        "1": {"class_type": "TinyDiffusionModelLoader", "inputs": {"unet_name": MODEL_FILE}},
        "2": {"class_type": NODE, "inputs": {**_slots(lora_name_1=names["style"], lora_name_2=names["undo"],
                                                      strength_2=0.5), "model": ["1", 0]}},
        "3": {"class_type": "LoRALabStack", "inputs": {
            "model": ["1", 0], "a": 1.0, "b": 1.0, "seed": 0,
            **{k: v for i in range(1, 6) for k, v in ((f"lora_name_{i}", "None"), (f"strength_model_{i}", 1.0),
                                                        (f"strength_clip_{i}", 1.0), (f"block_weights_{i}", ""))},
            "lora_name_1": names["style"], "lora_name_2": names["undo"], "strength_model_2": 0.5,
            "block_weights_1": ["2", 3], "block_weights_2": ["2", 4]}},
        "9": {"class_type": "ModelWeightChecksum", "inputs": {"model": ["3", 0]}},
    }
    ok, history, messages = host.run_prompt(prompt)
    assert ok, (history, messages)
    assert "stack report: 2 LoRAs for Flux" in history["outputs"]["2"]["text"][0]
    info = history["outputs"]["3"]["text"][0]
    assert info.startswith("[1] applied ") and "\nLoRA: " + names["style"] in info
    assert "\n\n[2] " in info and "\nLoRA: " + names["undo"] in info
    assert torch.is_tensor(image)
