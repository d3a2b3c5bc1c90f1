"""``loralab train CONFIG`` against the real ComfyUI (COMFYUI_PATH, in its own process, no server):
a run started in the graph continues from the command line, from the config the state exports, and
a run started on the command line continues in the graph, both equal to the graph's straight run;
a config of another run is refused with what differs; the file the command line writes loads in
core with no dropped key; torchrun with two processes trains the single-process LoRA.

The model is the stock-detectable sd15 UNet and a real-size SD VAE and CLIP-L (random weights),
loaded in the graph by ComfyUI's stock loader nodes and on the command line from their files."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib

import torch

from host import train_kit
from host.conftest import COMFYUI_PATH, REPO
from host.train_setup import SMALL_DATASET, dataset_in_input, one_thread, settings, train_host  # noqa: F401

UNET, VAE, CLIP = "stock_sd15.safetensors", "stock_sd_vae.safetensors", "stock_clip_l.safetensors"
RUN = {"total_steps": 4, "seed": 7, "batch_size": 2, "name": "clirun", "targets": "all_linear", "save_dtype": "fp32",
       "rank": 4, "alpha": 4.0, "learning_rate": 1e-3, "lr_scheduler": "cosine"}


def _stock_files(host, tiny_models) -> dict[str, str]:
    unet = os.path.join(host.folder("diffusion_models"), UNET)
    if not os.path.exists(unet):
        tiny_models.write_model("sd15", unet, dtype="fp32")
    vae, clip = train_kit.write_stock_encoders(host.folder("vae"), host.folder("text_encoders"))
    return {"unet": unet, "vae": vae, "clip": clip}


def _graph(host, folder: str) -> dict:
    """Stock loaders, the dataset node and Start Training Run (nodes 1, 2, 7, 3, 4)."""
    ds = {**train_kit.schema_defaults(host.nodes.NODE_CLASS_MAPPINGS["LoRALabDataset"]), **SMALL_DATASET,
          "folder": folder, "vae": ["2", 0], "clip": ["7", 0]}
    return {
        "1": {"class_type": "UNETLoader", "inputs": {"unet_name": UNET, "weight_dtype": "default"}},
        "2": {"class_type": "VAELoader", "inputs": {"vae_name": VAE}},
        "7": {"class_type": "CLIPLoader", "inputs": host.node_inputs("CLIPLoader", {"clip_name": CLIP,
                                                                                    "type": "stable_diffusion"})},
        "3": {"class_type": "LoRALabDataset", "inputs": ds},
        "4": {"class_type": "LoRALabTrainInit", "inputs": {**settings(host, "LoRALabTrainInit", **RUN),
                                                           "model": ["1", 0], "dataset": ["3", 0]}},
    }


def _run(host, prompt: dict) -> None:
    ok, result, messages = host.run_prompt(prompt)
    assert ok, (result, [m for m in messages if m[0] == "execution_error"])


def _cli(*args: str, cwd: str, code: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO, "COMFYUI_PATH": COMFYUI_PATH, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "loralab", "train", *args], capture_output=True, text=True,
                          timeout=600, env=env, cwd=cwd)
    assert done.returncode == code, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def _lora(path: str) -> dict[str, torch.Tensor]:
    import comfy.utils
    return comfy.utils.load_torch_file(path)


def _largest_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def test_graph_and_command_line_continue_each_others_runs(train_host, tiny_models, tmp_path):
    host = train_host
    files = _stock_files(host, tiny_models)
    loras = host.folder("loras")
    folder = dataset_in_input(host, "ds_cli", n=4)
    # the graph: 2 steps saved with state, and the straight 4-step run
    prompt = _graph(host, folder)
    prompt["5"] = {"class_type": "LoRALabTrainSteps", "inputs": {"run": ["4", 0], "steps": 2}}
    prompt["6"] = {"class_type": "LoRALabTrainSave", "inputs": {"run": ["5", 0], "name": "graph_half", "with_state": True}}
    prompt["8"] = {"class_type": "LoRALabTrainSteps", "inputs": {"run": ["4", 0], "steps": 4}}
    prompt["9"] = {"class_type": "LoRALabTrainSave", "inputs": {"run": ["8", 0], "name": "graph_full", "with_state": False}}
    _run(host, prompt)
    graph_state = os.path.join(loras, "graph_half_step000002.loralab-state")
    straight = _lora(os.path.join(loras, "graph_full_step000004.safetensors"))

    # the graph's state exports its config, naming the loaders' files as ComfyUI lists them; here they
    # become paths (the command line's ComfyUI has other model folders), the output goes to loras/cli
    exported = str(tmp_path / "exported.toml")
    _cli("--export-config", graph_state, exported, cwd=str(tmp_path))
    with open(exported, "rb") as f:
        config = tomllib.load(f)
    assert config["model"] == {"unet": UNET, "weight_dtype": "default", "vae": VAE, "clip": [CLIP],
                               "clip_type": "stable_diffusion"}
    assert config["dataset"]["folder"] == os.path.join(host.folder_paths.get_input_directory(), folder)
    config["model"].update(unet=files["unet"], vae=files["vae"], clip=[files["clip"]])
    config["output"]["folder"] = os.path.join(loras, "cli")
    config["dataset"]["cache_folder"] = str(tmp_path / "cache")
    config_path = str(tmp_path / "run.json")
    with open(config_path, "w", encoding="utf-8") as f:
        json.dump(config, f)

    # a config of another run is refused, naming what differs
    with open(tmp_path / "other.json", "w", encoding="utf-8") as f:
        json.dump({**config, "train": {**config["train"], "learning_rate": 5e-4}}, f)
    done = _cli(str(tmp_path / "other.json"), "--resume", graph_state, cwd=str(tmp_path), code=1)
    assert "cannot resume" in done.stderr and "learning_rate: 0.001 → 0.0005" in done.stderr
    assert "Traceback" not in done.stderr

    # graph -> command line: steps 3 and 4 from the graph's state
    done = _cli(config_path, "--resume", graph_state, cwd=str(tmp_path))
    assert "resumed" in done.stdout and "step 4/4" in done.stdout
    resumed = _lora(os.path.join(loras, "cli", "clirun_step000004.safetensors"))
    diff = _largest_difference(resumed, straight)
    print(f"graph -> CLI: largest difference to the graph's straight run {diff:.2e}")
    assert diff <= 1e-6

    # command line -> graph: 2 steps on the command line, steps 3 and 4 in the graph
    _cli(config_path, "--steps", "2", cwd=str(tmp_path))
    prompt = _graph(host, folder)
    prompt["10"] = {"class_type": "LoRALabTrainResume",
                    "inputs": {"run": ["4", 0], "checkpoint": "cli/clirun_step000002.loralab-state"}}
    prompt["11"] = {"class_type": "LoRALabTrainSteps", "inputs": {"run": ["10", 0], "steps": 2}}
    prompt["12"] = {"class_type": "LoRALabTrainSave", "inputs": {"run": ["11", 0], "name": "from_cli",
                                                                 "with_state": False}}
    _run(host, prompt)
    diff = _largest_difference(_lora(os.path.join(loras, "from_cli_step000004.safetensors")), straight)
    print(f"CLI -> graph: largest difference to the graph's straight run {diff:.2e}")
    assert diff <= 1e-6

    # the command line's file loads in core with every key used
    model = host.call_node("UNETLoader", unet_name=UNET, weight_dtype="default")[0]
    _, dropped, patches = train_kit.core_lora_patches(model, resumed)
    modules = {k.rsplit(".lora_down.weight", 1)[0] for k in resumed if k.endswith(".lora_down.weight")}
    assert dropped == [] and len(patches) == len(modules) > 0


def test_torchrun_trains_the_single_process_run(train_host, tiny_models, tmp_path):
    """Two processes (gloo on the CPU) through ``torchrun -m loralab train``: one set of files, from
    rank 0, holding the LoRA one process trains at the same global batch. The sd15 UNet computes a
    batch of one and a batch of two with differently rounded convolutions (~1e-7 relative), which
    Adam carries into the weights; the toy model's bound is 1e-6 (tests/engine/train)."""
    files = _stock_files(train_host, tiny_models)
    data = train_kit.write_dataset(str(tmp_path / "data"), n=4)
    config = {"model": {"unet": files["unet"], "vae": files["vae"], "clip": [files["clip"]]},
              "dataset": {**SMALL_DATASET, "folder": data, "cache_folder": str(tmp_path / "cache")},
              "train": {k: v for k, v in RUN.items() if k not in ("name", "save_dtype")},
              "output": {"name": "one", "save_dtype": "fp32", "folder": str(tmp_path / "one")}}
    with open(tmp_path / "one.json", "w", encoding="utf-8") as f:
        json.dump(config, f)
    config["output"].update(name="two", folder=str(tmp_path / "two"))
    with open(tmp_path / "two.json", "w", encoding="utf-8") as f:
        json.dump(config, f)
    _cli(str(tmp_path / "one.json"), cwd=str(tmp_path))
    env = {**os.environ, "PYTHONPATH": REPO, "COMFYUI_PATH": COMFYUI_PATH, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           "-m", "loralab", "train", str(tmp_path / "two.json")], capture_output=True, text=True,
                          timeout=600, env=env, cwd=str(tmp_path))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "on 2 process(es)" in done.stdout and done.stdout.count("step 4/4") == 1  # rank 0 alone prints
    assert sorted(os.listdir(tmp_path / "two")) == ["two_step000004.loralab-state", "two_step000004.safetensors"]
    diff = _largest_difference(_lora(str(tmp_path / "two" / "two_step000004.safetensors")),
                               _lora(str(tmp_path / "one" / "one_step000004.safetensors")))
    print(f"torchrun x2 -> one process: largest difference {diff:.2e}")
    assert diff <= 1e-5
