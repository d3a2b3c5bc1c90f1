"""``loralab train`` without ComfyUI: a broken config or a missing ComfyUI is reported before
anything starts; ``--export-config`` writes the config of a saved run. (Training itself is tested
in the real host: tests/host/test_train_cli.py.)"""
from loralab.train.checkpoint import save_checkpoint
from loralab.train.config import load_config
from loralab_testkit.train_toys import ToyModel, make_dataset, make_run, train

from .test_cli import run

GOOD = '[model]\ncheckpoint = "m.safetensors"\n[dataset]\nfolder = "d"\n[train]\ntotal_steps = 5\n'


def write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


def test_a_broken_config_is_refused_before_comfyui_is_looked_for(tmp_path):
    r = run("train", write(tmp_path / "run.toml", GOOD.replace("total_steps", "total_stpes")))
    assert r.returncode == 1 and "unknown key in [train]: total_stpes" in r.stderr and "run.toml" in r.stderr


def test_without_comfyui_the_command_says_where_to_point_it(tmp_path):
    config = write(tmp_path / "run.toml", GOOD)
    r = run("train", config, "--comfyui", str(tmp_path))
    assert r.returncode == 1 and f"no ComfyUI at '{tmp_path}'" in r.stderr and "COMFYUI_PATH" in r.stderr
    r = run("train")
    assert r.returncode == 1 and "give the run config" in r.stderr
    r = run("train", config, "--steps", "0")
    assert r.returncode == 1 and "--steps must be at least 1" in r.stderr


def test_export_config_writes_the_run_a_state_belongs_to(tmp_path):
    ds = make_dataset(str(tmp_path / "data"), str(tmp_path / "cache"))
    model = ToyModel()
    saved = make_run(ds, model, lr_scheduler="linear", warmup_steps=2, name="toy_run")
    train(saved, model, 3)
    saved.model_info["name"] = "toy.safetensors"
    _, state = save_checkpoint(saved, str(tmp_path / "out"))
    out = str(tmp_path / "exported.toml")
    r = run("train", "--export-config", state, out)
    assert r.returncode == 0, r.stderr
    assert "step 3" in r.stdout and "unet, vae and clip" in r.stderr
    cfg = load_config(out)
    assert cfg.settings == saved.settings and cfg.dataset == ds.folder and cfg.dataset_settings == ds.settings
    assert cfg.model.checkpoint == "toy.safetensors"
    r = run("train", "--export-config", state, out)
    assert r.returncode == 1 and "exists" in r.stderr
    assert run("train", "--export-config", state, out, "--overwrite").returncode == 0
