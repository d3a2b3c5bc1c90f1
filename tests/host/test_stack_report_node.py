"""Stack Report in the real ComfyUI (0.3.64 and later), on a tiny real-layout Flux model: the node's
JSON against its inputs, relative strength from the MODEL, a LoRA and its negation named as
fighting, and the proposed block weights wired straight into the LoRA Stack in a prompt."""
import json
import os

import pytest
import torch

from loralab_testkit.fitted import fitted_lora

NODE = "LoRALabStackReport"
SUBDIR = "stackreport"
MODEL_FILE = "stack_report_flux_micro.safetensors"


def _rows(*rows):
    """A ``loras`` value: one row per (lora, strength[, block_weights[, on]])."""
    return json.dumps([{"on": r[3] if len(r) > 3 else True, "lora": r[0], "strength_model": r[1],
                        "strength_clip": 1.0, "block_weights": r[2] if len(r) > 2 else ""} for r in rows])


def _inputs(loras):
    return {"loras": loras, "cos_threshold": 0.1, "overlap_threshold": 0.5, "balance": 0.25, "lower": 0.0,
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
    assert [o.io_type for o in schema.outputs] == ["STRING", "STRING", "IMAGE", "STRING"]
    rows = [(names["style"], 1.0), (names["undo"], 0.5), (names["style"], 1.0, "IN=0", False),
            (names["ait"], 1.0, "S=0.5")]
    report, data, image, proposed = cls.execute(model=model, **_inputs(_rows(*rows))).args
    d = json.loads(data)
    assert d["arch"]["id"] == "flux" and d["relative"] is True and [x["row"] for x in d["loras"]] == [1, 2, 4]
    assert [x["weight"] for x in d["loras"]] == [1.0, 0.5, 1.0] and d["loras"][2]["block_weights"] == "S=0.5"
    touched = [b for b in d["blocks"] if b["modules"][0]]
    assert touched and all(b["relative"][0] > 0 for b in touched)
    for b in touched:  # undo = −style at half weight: opposed everywhere both write
        pair = next(p for p in b["pairs"] if (p["i"], p["j"]) == (0, 1))
        assert abs(pair["cos"] + 1) < 1e-9 and abs(pair["overlap"] - 1) < 1e-9 and pair["conflict"] == 1.0
        assert b["strength"][1] == 0.5 * b["strength"][0] or abs(b["strength"][1] / b["strength"][0] - 0.5) < 1e-9
    fought = {f["block"] for f in d["fights"] if (f["i"], f["j"]) == (0, 1)}
    assert fought == {b["block"] for b in touched if b["modules"][1]}
    specs = json.loads(proposed)  # one entry per row, in row order; the row that is off keeps its spec
    assert [e["lora"] for e in specs] == [r[0] for r in rows]
    assert [specs[0]["block_weights"], specs[2]["block_weights"]] == ["", "IN=0"]
    assert specs[3]["block_weights"] == "S=0.5"  # never lowered: its own spec
    parsed = parse_block_weights(specs[1]["block_weights"], "flux")
    assert all(parsed.weight(b) == 0.0 for b in fought)
    assert d["loras"][1]["proposed_block_weights"] == specs[1]["block_weights"]
    assert "opposed" in report and image.dim() == 4 and image.shape[-1] == 3

    stack_rows = _rows((names["style"], 1.0), (names["undo"], 0.5))
    prompt = {
        "1": {"class_type": "TinyDiffusionModelLoader", "inputs": {"unet_name": MODEL_FILE}},
        "2": {"class_type": NODE, "inputs": {**_inputs(stack_rows), "model": ["1", 0]}},
        "3": {"class_type": "LoRALabStack", "inputs": {"model": ["1", 0], "a": 1.0, "b": 1.0, "seed": 0,
                                                       "loras": stack_rows, "block_weights": ["2", 3]}},
        "9": {"class_type": "ModelWeightChecksum", "inputs": {"model": ["3", 0]}},
    }
    ok, history, messages = host.run_prompt(prompt)
    assert ok, (history, messages)
    assert "stack report: 2 LoRAs for Flux" in history["outputs"]["2"]["text"][0]
    info = history["outputs"]["3"]["text"][0]
    assert info.startswith("[1] applied ") and "\nLoRA: " + names["style"] in info
    assert "\n\n[2] " in info and "\nLoRA: " + names["undo"] in info
    wired = json.loads(history["outputs"]["9"]["text"][0])

    # the same Stack with the proposal typed into its rows: the same weights
    lowered = json.loads(stack_rows)
    proposed_undo = json.loads(cls.execute(model=model, **_inputs(stack_rows)).args[3])[1]["block_weights"]
    lowered[1]["block_weights"] = proposed_undo
    assert proposed_undo and ", " in proposed_undo
    typed = {**prompt, "3": {**prompt["3"], "inputs": {**prompt["3"]["inputs"], "loras": json.dumps(lowered)}}}
    del typed["3"]["inputs"]["block_weights"], typed["2"]
    ok, history, messages = host.run_prompt(typed)
    assert ok, (history, messages)
    assert json.loads(history["outputs"]["9"]["text"][0]) == wired
    assert torch.is_tensor(image)


def test_stack_report_rows_are_checked(host):
    cls = host.nodes.NODE_CLASS_MAPPINGS[NODE]
    assert cls.validate_inputs(loras=_rows(("gone.safetensors", 1.0, "", False))) is True
    assert cls.validate_inputs(loras=_rows(("gone.safetensors", 1.0))) == \
        "loras row 1: 'gone.safetensors' is not a LoRA in the loras folder list"
    assert cls.validate_inputs(loras="[{").startswith("key 'loras': not valid JSON")
    with pytest.raises(host.module("loralab.errors").SpecError, match="no LoRA on: add a row"):
        cls.execute(**_inputs(_rows(("gone.safetensors", 1.0, "", False))))


def test_a_proposal_that_does_not_fit_the_rows_is_refused(host):
    """The Stack's block_weights input: one entry per row, for the LoRA of that row; empty entries keep
    the row's own spec."""
    rows_mod = host.module("nodes.stack_rows")
    SpecError = host.module("loralab.errors").SpecError
    rows = rows_mod.parse_rows(_rows(("a.safetensors", 1.0, "OUT=0"), ("b.safetensors", 0.5, "IN=0", False)))
    got = rows_mod.with_proposal(rows, json.dumps([{"lora": "a.safetensors", "block_weights": ""}, "M00=0"]))
    assert [(r.lora, r.block_weights, r.on) for r in got] == [("a.safetensors", "OUT=0", True),
                                                              ("b.safetensors", "M00=0", False)]
    assert rows_mod.with_proposal(rows, '[null, ""]') == rows
    for text, problem in [
        ('["M00=0"]', "1 entries for 2 rows"),
        (json.dumps([{"lora": "b.safetensors", "block_weights": "M00=0"}, ""]),
         "entry 1 is for 'b.safetensors', row 1 is 'a.safetensors'"),
        ("M00=0", "not valid JSON"),
        ('{"a": 1}', "is not a JSON list of block-weight specs, one per row"),
        ("[1, 2]", "entry 1 is 1, not a block-weight spec"),
    ]:
        with pytest.raises(SpecError) as e:
            rows_mod.with_proposal(rows, text)
        assert str(e.value).startswith("key 'block_weights': ") and problem in str(e.value), str(e.value)
        assert "wire the Stack Report's proposed_block_weights, with the same rows as this Stack" in str(e.value)
