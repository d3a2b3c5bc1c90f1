"""The command line: exit codes and output of ``loralab inspect``."""
import json
import os
import subprocess
import sys

from loralab_testkit import REPO, materialize


def run(*args):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "loralab", *args], capture_output=True, text=True, env=env, cwd=REPO)


def test_help():
    r = run("--help")
    assert r.returncode == 0 and "inspect" in r.stdout


def test_inspect_text_and_json(tmp):
    path = materialize("kohya_sdxl_lora", os.path.join(tmp, "k.safetensors"), rank=2)
    r = run("inspect", path)
    assert r.returncode == 0, r.stderr
    assert "kohya sd-scripts" in r.stdout and "SDXL" in r.stdout and "986 mapped, 0 not mapped" in r.stdout
    r = run("inspect", "--json", path)
    data = json.loads(r.stdout)
    assert data[0]["arch"] == "sdxl" and data[0]["format"] == "kohya" and data[0]["ranks"] == "2 ×986"


def test_inspect_unreadable_file_fails_with_message(tmp):
    bad = os.path.join(tmp, "bad.safetensors")
    with open(bad, "wb") as f:
        f.write(b"\x80\x04garbage")
    good = materialize("kohya_sd15_lora", os.path.join(tmp, "good.safetensors"), rank=2)
    r = run("inspect", bad, good)
    assert r.returncode == 1
    assert "bad.safetensors" in r.stderr and "pickle" in r.stderr
    assert "SD1.x" in r.stdout


def test_file_controlled_text_cannot_drive_the_terminal(tmp):
    import torch
    from loralab.safetensors_io import save_tensors
    evil = "lora_unet_x\x1b]0;owned\x07\u202e.alpha"
    path = save_tensors(os.path.join(tmp, "t\x1b[2J.safetensors"), {evil: torch.tensor(1.0)})
    r = run("inspect", path, os.path.join(tmp, "missing\x1b[31m.safetensors"))
    assert r.returncode == 1
    for text in (r.stdout, r.stderr):
        assert not any(c in text for c in "\x1b\x07\u202e"), text
    assert "\\x1b]0;owned\\x07\\u202e" in r.stdout and "missing\\x1b[31m" in r.stderr
