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
    assert "kohya sd-scripts" in r.stdout and "SDXL" in r.stdout and "986 of 986 mapped" in r.stdout
    assert "trigger words: ohwx woman" in r.stdout
    assert "block strength" not in r.stdout and "sha256" not in r.stdout
    r = run("inspect", "--json", path)
    data = json.loads(r.stdout)
    assert data[0]["arch"]["id"] == "sdxl" and data[0]["format"]["id"] == "kohya"
    assert data[0]["rank"]["summary"] == "2 ×986"
    assert data[0]["blocks"] is None and data[0]["hashes"] is None


def test_inspect_blocks_and_hashes(tmp):
    path = materialize("kohya_sd15_lora", os.path.join(tmp, "k.safetensors"), rank=2)
    r = run("inspect", "--blocks", "--hashes", path)
    assert r.returncode == 0, r.stderr
    assert "block strength ‖ΔW‖" in r.stdout and "AutoV2" in r.stdout and "AutoV3" in r.stdout
    data = json.loads(run("inspect", "--json", "--blocks", "--hashes", path).stdout)[0]
    touched = {b["block"] for b in data["blocks"]["items"] if b["modules"]}
    assert touched == set(data["coverage"]["blocks"])
    assert len(data["hashes"]["sha256"]) == 64 and data["hashes"]["autov2"] == data["hashes"]["sha256"][:10]


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
