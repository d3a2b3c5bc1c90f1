"""``loralab convert``: files and folders of any producer's LoRAs rewritten into kohya keys that
ComfyUI loads, exactly; broken files reported and skipped; nothing overwritten unless asked."""
import json
import os
import subprocess
import sys

import torch

from loralab.files.safetensors import read_header
from loralab.lora import Lora
from loralab.ops.inspect import summarize
from loralab_testkit import REPO, materialize


def run(*args):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "loralab", *args], capture_output=True, text=True, env=env, cwd=REPO)


def _probed(path):
    """Model key -> ΔW·X for a fixed random X (float64), pieces of one weight summed into their rows:
    equal for every key means equal ΔW (up to a null set), without building any ΔW."""
    out = {}
    with Lora.open(path) as lora:
        for m in lora.mapped():
            b, a = lora.adapter(m.entry).low_rank(torch.float64)
            x = torch.randn(a.shape[1], 3, generator=torch.Generator().manual_seed(a.shape[1]), dtype=torch.float64)
            shape = lora.layout.shapes[m.target.key]
            full = out.setdefault(m.target.key, torch.zeros(shape[0], 3, dtype=torch.float64))
            start, rows = m.target.rows or (0, shape[0])
            full[start:start + rows] += b @ (a @ x)
    return out


def test_a_folder_converts_to_files_comfyui_loads_with_the_same_deltas(tmp):
    src = os.path.join(tmp, "loras")
    os.makedirs(os.path.join(src, "sub"))
    wan = materialize("peft_default_wan21_t2v_1_3b_lora", os.path.join(src, "wan_peft.safetensors"), rank=2,
                      dtype=torch.float32)
    sdxl = materialize("kohya_sdxl_lora", os.path.join(src, "sdxl.safetensors"), rank=2, seed=3, dtype=torch.float32)
    materialize("xlabs_flux_lora", os.path.join(src, "sub", "xlabs.safetensors"), rank=2, dtype=torch.float32)
    with open(os.path.join(src, "broken.safetensors"), "wb") as f:
        f.write(b"\x80\x04\x95 not safetensors at all")
    with open(os.path.join(src, "notes.txt"), "w") as f:
        f.write("not a LoRA")
    assert summarize(wan).host_dropped == summarize(wan).tensor_count  # ComfyUI drops this file whole

    out = os.path.join(tmp, "converted")
    r = run("convert", src, "--out-dir", out)
    assert r.returncode == 1, r.stdout + r.stderr  # one file could not be converted
    assert "converted 2 file(s), 1 not converted" in r.stdout
    assert "broken.safetensors: not converted:" in r.stderr
    assert sorted(os.listdir(out)) == ["sdxl.safetensors", "wan_peft.safetensors"]  # sub/ only with -r
    for source in (wan, sdxl):
        converted = os.path.join(out, os.path.basename(source))
        s = summarize(converted)
        assert s.format in ("kohya", "musubi") and s.host_dropped == 0 and not s.unmapped  # musubi: kohya names for DiTs
        assert s.arch == summarize(source).arch
        want, got = _probed(source), _probed(converted)
        assert want.keys() == got.keys()
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=1e-6, atol=1e-9)
        meta = read_header(converted).metadata
        assert json.loads(meta["loralab.recipe"])["method"] == "convert"
        assert meta["ss_network_dim"] == "2"
    # the kohya source's training metadata is carried over, its network facts rewritten
    assert read_header(os.path.join(out, "sdxl.safetensors")).metadata["ss_num_train_images"] == \
        read_header(sdxl).metadata["ss_num_train_images"]

    before = os.path.getmtime(os.path.join(out, "sdxl.safetensors"))
    r = run("convert", src, "--out-dir", out, "-r")
    assert "sub/xlabs.safetensors" in r.stdout.replace(os.sep, "/")
    assert "already exists" in r.stderr and os.path.getmtime(os.path.join(out, "sdxl.safetensors")) == before
    assert os.path.exists(os.path.join(out, "sub", "xlabs.safetensors"))


def test_in_place_needs_a_suffix_and_one_file_takes_o(tmp):
    folder = os.path.join(tmp, "loras")
    os.makedirs(folder)
    src = materialize("xlabs_flux_lora", os.path.join(folder, "x.safetensors"), rank=2)
    size = os.path.getsize(src)
    r = run("convert", folder, "--out-dir", folder)
    assert r.returncode == 1 and "would replace its own source" in r.stderr and os.path.getsize(src) == size
    r = run("convert", folder, "--out-dir", folder, "--suffix", "_comfy", "-q")
    assert r.returncode == 0, r.stderr
    assert summarize(os.path.join(folder, "x_comfy.safetensors")).host_dropped == 0
    r = run("convert", src, "-o", os.path.join(tmp, "one.safetensors"), "--dtype", "fp32")
    assert r.returncode == 0 and "one.safetensors: 84 modules" in r.stdout, r.stderr
    r = run("convert", src, src, "-o", os.path.join(tmp, "two.safetensors"))
    assert r.returncode == 1 and "give --out-dir" in r.stderr
