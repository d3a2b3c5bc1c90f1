"""The command line: exit codes and output of ``loralab inspect``."""
import json
import os
import subprocess
import sys

from loralab_testkit import REPO, materialize


def run(*args, python=()):
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, *python, "-m", "loralab", *args], capture_output=True, text=True, env=env,
                          cwd=REPO)


def imported(stderr: str) -> set[str]:
    """The top-level packages a ``-X importtime`` run imported."""
    return {line.rsplit("|", 1)[1].strip().split(".")[0] for line in stderr.splitlines()
            if line.startswith("import time:") and "|" in line}


def test_header_commands_never_import_torch(tmp):
    """inspect without --blocks, --help and --version answer at once: no torch (nor numpy) import."""
    path = materialize("kohya_sdxl_lora", os.path.join(tmp, "k.safetensors"), rank=2)
    for args in (("inspect", path), ("inspect", "--json", path), ("--help",), ("--version",), ("inspect", "--help"),
                 ("train", "--help")):
        r = run(*args, python=("-X", "importtime"))
        assert r.returncode == 0, r.stderr[-2000:]
        mods = imported(r.stderr)
        assert "loralab" in mods and not mods & {"torch", "numpy"}, args
    r = run("inspect", "--blocks", path, python=("-X", "importtime"))
    assert r.returncode == 0 and "torch" in imported(r.stderr)  # the check can fail: --blocks needs torch


def test_help():
    r = run("--help")
    assert r.returncode == 0 and "inspect" in r.stdout


def test_inspect_text_then_json_with_blocks_and_hashes(tmp):
    sdxl = materialize("kohya_sdxl_lora", os.path.join(tmp, "k.safetensors"), rank=2)
    sd15 = materialize("kohya_sd15_lora", os.path.join(tmp, "s.safetensors"), rank=2)
    r = run("inspect", sdxl)
    assert r.returncode == 0, r.stderr
    assert "kohya sd-scripts" in r.stdout and "SDXL" in r.stdout and "986 of 986 mapped" in r.stdout
    assert "trigger words: ohwx woman" in r.stdout
    assert "block strength" not in r.stdout and "sha256" not in r.stdout  # header only by default
    r = run("inspect", "--json", "--blocks", "--hashes", sdxl, sd15)
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert [d["arch"]["id"] for d in data] == ["sdxl", "sd1"] and data[0]["format"]["id"] == "kohya"
    assert data[0]["rank"]["summary"] == "2 ×986"
    for d in data:
        touched = {b["block"] for b in d["blocks"]["items"] if b["modules"]}
        assert touched == set(d["coverage"]["blocks"])
        assert len(d["hashes"]["sha256"]) == 64 and d["hashes"]["autov2"] == d["hashes"]["sha256"][:10]


def test_inspect_unreadable_file_fails_with_message(tmp):
    bad = os.path.join(tmp, "bad.safetensors")
    with open(bad, "wb") as f:
        f.write(b"\x80\x04garbage")
    missing = os.path.join(tmp, "missing.safetensors")
    good = materialize("kohya_sd15_lora", os.path.join(tmp, "good.safetensors"), rank=2)
    r = run("inspect", bad, good, missing)
    assert r.returncode == 1
    assert "bad.safetensors" in r.stderr and "pickle" in r.stderr
    assert "missing.safetensors" in r.stderr and "not found" in r.stderr
    assert "SD1.x" in r.stdout and "Traceback" not in r.stderr


def test_file_controlled_text_cannot_drive_the_terminal(tmp):
    import torch
    from loralab.files.safetensors import save_tensors
    evil = "lora_unet_x\x1b]0;owned\x07\u202e.alpha"
    path = save_tensors(os.path.join(tmp, "t\x1b[2J.safetensors"), {evil: torch.tensor(1.0)})
    r = run("inspect", path, os.path.join(tmp, "missing\x1b[31m.safetensors"))
    assert r.returncode == 1
    for text in (r.stdout, r.stderr):
        assert not any(c in text for c in "\x1b\x07\u202e"), text
    assert "\\x1b]0;owned\\x07\\u202e" in r.stdout and "missing\\x1b[31m" in r.stderr


def test_demo_runs_every_step_and_writes_where_it_says(tmp):
    r = run("demo", "--dir", tmp)
    assert r.returncode == 0, r.stderr[-2000:]
    for step in ("1. write", "2. inspect", "3. check a block-weight spec", "4. merge", "5. resize", "done:"):
        assert step in r.stdout, step
    wrote = [line.split("wrote ", 1)[1].split(" (")[0] for line in r.stdout.splitlines() if "wrote " in line]
    assert len(wrote) == 5 and all(os.path.dirname(p) == tmp and os.path.getsize(p) > 0 for p in wrote), wrote
    assert "SD1.x" in r.stdout and "SDXL" in r.stdout and "LoHa ×232" in r.stdout
    assert "health: no problems found" in r.stdout and "rank histogram: 4 ×964" in r.stdout
