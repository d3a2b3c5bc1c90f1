"""Training runs in the real ComfyUI (issue 6): chained steps with previews and saves, exact resume
in a fresh process, Cancel during a steps node leaving a checkpoint that resumes exactly, refused
and corrupt checkpoints through the Resume node, and the example workflow end to end."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from host import train_kit
from host.train_setup import base_prompt, dataset_in_input, one_thread, settings, train_host  # noqa: F401

HERE = os.path.dirname(os.path.abspath(__file__))
RUN = {"total_steps": 6, "seed": 11, "batch_size": 2, "name": "run", "algorithm": "lora", "targets": "all_linear",
       "save_dtype": "fp32"}


def _init(host, prompt, node="4", **kw):
    prompt[node] = {"class_type": "LoRALabTrainInit",
                    "inputs": {**settings(host, "LoRALabTrainInit", **{**RUN, **kw}), "model": ["1", 0],
                               "dataset": ["3", 0]}}


def _steps(prompt, node, run, steps):
    prompt[node] = {"class_type": "LoRALabTrainSteps", "inputs": {"run": [run, 0], "steps": steps}}


def _save(prompt, node, run, name, with_state=True):
    prompt[node] = {"class_type": "LoRALabTrainSave", "inputs": {"run": [run, 0], "name": name, "with_state": with_state}}


def _tensors(host, rel):
    import comfy.utils
    return comfy.utils.load_torch_file(os.path.join(host.folder("loras"), rel))


def _network(host, rel):
    ckpt = host.module("loralab.train.checkpoint")
    tensors, meta = ckpt.read_state(os.path.join(host.folder("loras"), rel))
    return {k: v for k, v in tensors.items() if k.startswith(("network.", "optim."))}, meta


def _same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _run_fresh(host, prompt, tmp_path):
    path = tmp_path / "prompt.json"
    path.write_text(json.dumps(prompt))
    out = subprocess.run([sys.executable, os.path.join(HERE, "run_fresh.py"), host.base, str(path)],
                         capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, out.stderr[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def _error(messages):
    return next(m[1] for m in messages if m[0] == "execution_error")


def _init_steps_save(host, folder, steps, **run):
    """Init -> Steps(steps) -> Save (under the run's name)."""
    prompt = base_prompt(host, "sd15", folder)
    _init(host, prompt, **run)
    _steps(prompt, "5", "4", steps)
    _save(prompt, "6", "5", "")
    return prompt


def _resume(host, folder, checkpoint, **run):
    """Init -> Resume(checkpoint) (node "10")."""
    prompt = base_prompt(host, "sd15", folder)
    _init(host, prompt, **run)
    prompt["10"] = {"class_type": "LoRALabTrainResume", "inputs": {"run": ["4", 0], "checkpoint": checkpoint}}
    return prompt


def test_chained_steps_previews_saves_and_exact_resume_in_a_fresh_process(train_host, tmp_path):
    host = train_host
    folder = dataset_in_input(host, "ds_runs", n=3)
    prompt = base_prompt(host, "sd15", folder)
    _init(host, prompt)
    _steps(prompt, "5", "4", 3)
    _save(prompt, "6", "5", "half")
    prompt["7"] = {"class_type": "LoRALabTrainPreview",
                   "inputs": {**train_kit.schema_defaults(host.nodes.NODE_CLASS_MAPPINGS["LoRALabTrainPreview"]),
                              "run": ["5", 0], "prompts": "sks, a yellow ring\nsks on blue", "steps": 2,
                              "width": 64, "height": 64, "cfg": 2.0}}
    _steps(prompt, "8", "5", 3)
    _save(prompt, "9", "8", "whole")
    ok, history, messages = host.run_prompt(prompt)
    assert ok, messages
    images = history["outputs"]["7"]["images"]
    assert len(images) == 2 and all(i["type"] == "temp" for i in images)
    half, half_meta = _network(host, "half_step000003.loralab-state")
    assert half_meta["step"] == 3 and len(half_meta["order"]["batches"]) == 2

    # a fresh ComfyUI process: Init with the same settings, Resume from the half-way state, 3 steps
    fresh = _resume(host, folder, "half_step000003.loralab-state")
    _steps(fresh, "11", "10", 3)
    _save(fresh, "12", "11", "resumed")
    result = _run_fresh(host, fresh, tmp_path)
    assert result["ok"], result
    whole, _ = _network(host, "whole_step000006.loralab-state")
    resumed, resumed_meta = _network(host, "resumed_step000006.loralab-state")
    assert _same(whole, resumed)  # bit-exact: factors and optimizer state
    assert _same(_tensors(host, "whole_step000006.safetensors"), _tensors(host, "resumed_step000006.safetensors"))
    assert resumed_meta["step"] == 6 and len(resumed_meta["order"]["batches"]) == 2


def test_cancel_during_steps_leaves_a_checkpoint_that_resumes_exactly(train_host, monkeypatch):
    import comfy.model_management
    host = train_host
    folder = dataset_in_input(host, "ds_cancel_runs", n=3)
    ok, _, messages = host.run_prompt(_init_steps_save(host, folder, 7, name="onego", total_steps=7))
    assert ok, messages

    cancelled = _init_steps_save(host, folder, 7, name="cut", total_steps=7, save_every=2, keep_last=1)
    original = host.server.send_sync

    def spy(event, data, sid=None):
        if event == "loralab.train.progress" and data["step"] == 3:
            comfy.model_management.interrupt_current_processing()
        return original(event, data, sid)
    monkeypatch.setattr(host.server, "send_sync", spy)
    ok, _, messages = host.run_prompt(cancelled)
    monkeypatch.setattr(host.server, "send_sync", original)
    assert not ok and any(m[0] == "execution_interrupted" for m in messages)
    loras = os.listdir(host.folder("loras"))
    assert "cut_step000003.loralab-state" in loras and "cut_step000003.safetensors" in loras
    assert "cut_step000002.safetensors" not in loras  # keep_last=1 pruned the periodic step-2 checkpoint

    resume = _resume(host, folder, "cut_step000003.loralab-state", name="cut", total_steps=7, save_every=2, keep_last=1)
    _steps(resume, "11", "10", 7)
    _save(resume, "12", "11", "continued")
    ok, _, messages = host.run_prompt(resume)
    assert ok, messages
    a, _ = _network(host, "onego_step000007.loralab-state")
    b, meta = _network(host, "continued_step000007.loralab-state")
    assert _same(a, b) and meta["step"] == 7


def test_resume_node_refuses_other_settings_and_corrupt_states(train_host, tmp_path):
    host = train_host
    folder = dataset_in_input(host, "ds_refuse", n=2)
    ok, _, messages = host.run_prompt(_init_steps_save(host, folder, 2, name="ref", total_steps=4))
    assert ok, messages
    loras = host.folder("loras")
    before = sorted(os.listdir(loras))

    other = _resume(host, folder, "ref_step000002.loralab-state", name="ref", total_steps=4, learning_rate=5e-4, rank=8)
    _save(other, "11", "10", "never")
    ok, _, messages = host.run_prompt(other)
    err = _error(messages)
    assert not ok and err["exception_type"].endswith("CheckpointError")
    assert "setting rank: 4 → 8" in err["exception_message"] and "learning_rate: 0.001 → 0.0005" in err["exception_message"]

    with open(os.path.join(loras, "ref_step000002.loralab-state"), "rb") as f:
        data = f.read()
    with open(os.path.join(loras, "broken.loralab-state"), "wb") as f:
        f.write(data[: len(data) // 3])
    broken = _resume(host, folder, "broken.loralab-state", name="ref", total_steps=4)
    _save(broken, "11", "10", "never")
    ok, _, messages = host.run_prompt(broken)
    err = _error(messages)
    assert not ok and "broken.loralab-state" in err["exception_message"] and "cannot be read" in err["exception_message"]
    assert sorted(os.listdir(loras)) == sorted(before + ["broken.loralab-state"])  # nothing else written


def test_adafactor_runs_resume_exactly(train_host, tmp_path):
    host = train_host
    tr = host.module("nodes.train")
    ckpt = host.module("loralab.train.checkpoint")
    run_mod = host.module("loralab.train.run")
    folder = dataset_in_input(host, "ds_adafactor", n=2)
    node = host.nodes.NODE_CLASS_MAPPINGS["LoRALabDataset"]
    from host.train_setup import SMALL_DATASET, VARIANTS
    ds = node.execute(**{**train_kit.schema_defaults(node), **SMALL_DATASET, "folder": folder,
                         "vae": train_kit.tiny_vae("sd15"), "clip": train_kit.tiny_clip("sd15")}).args[0]
    import make_tiny_models
    model = make_tiny_models.load_tiny_model(os.path.join(host.folder("diffusion_models"),
                                                          f"tiny_{VARIANTS['sd15']}.safetensors"))
    s = run_mod.TrainSettings(optimizer="adafactor", rank=4, alpha=4.0, targets="attention", total_steps=4,
                              learning_rate=1e-3, lr_scheduler="cosine", warmup_steps=1)
    whole = tr.advance(tr.init_run(model, ds, s, None), 4, None)
    half = tr.advance(tr.init_run(model, ds, s, None), 2, None)
    state = ckpt.write_state(str(tmp_path / "a.loralab-state"), half)
    resumed = tr.advance(ckpt.restore_run(tr.init_run(model, ds, s, None), state), 2, None)
    assert _same(whole.network.state_tensors(), resumed.network.state_tensors())
