"""``loralab merge``, ``resize`` and ``extract`` end to end: files in, files out, exit codes, messages."""
import json
import os
import subprocess
import sys

import torch

from loralab.layouts import layout_for
from loralab.lora import Lora
from loralab.files.safetensors import read_header, save_tensors
from loralab_testkit import REPO, fixture_tensors, materialize


def run(*args):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "loralab", *args], capture_output=True, text=True, env=env, cwd=REPO)


def test_merge_resize_and_refusals(tmp):
    a = materialize("kohya_sd15_lora", os.path.join(tmp, "a.safetensors"), rank=2, seed=1)
    b = materialize("lycoris_sd15_loha", os.path.join(tmp, "b.safetensors"), rank=2, seed=2)
    out = os.path.join(tmp, "m.safetensors")
    r = run("merge", a, b, "-w", "0.5", "-w", "-1", "-b", "OUT=0", "-b", "", "--rank", "3", "-o", out,
            "--title", "my pack", "--dtype", "fp32")
    assert r.returncode == 0, r.stderr
    assert "modules written (svd, rank 3)" in r.stdout and "rank histogram: 3 ×" in r.stdout
    meta = read_header(out).metadata
    assert meta["modelspec.title"] == "my pack" and meta["ss_network_dim"] == "3"
    recipe = json.loads(meta["loralab.recipe"])
    assert [i["weight"] for i in recipe["inputs"]] == [0.5, -1.0]
    assert recipe["inputs"][0]["block_weights"] == "OUT=0" and recipe["inputs"][1]["block_weights"] is None
    merged = Lora.open(out)
    assert merged.detection.arch == "sd1" and not list(merged.unmapped())

    r = run("merge", a, b, "--rank", "3", "-o", out)
    assert r.returncode == 1 and "already exists" in r.stderr and os.path.getsize(out) > 0
    r = run("merge", a, b, "-w", "1", "--rank", "3", "-o", os.path.join(tmp, "x.safetensors"))
    assert r.returncode == 1 and "1 weight given for 2 LoRAs" in r.stderr
    r = run("merge", a, "-m", "svd", "-o", os.path.join(tmp, "y.safetensors"))
    assert r.returncode == 1 and "needs a rank" in r.stderr
    assert not os.path.exists(os.path.join(tmp, "x.safetensors")) and not os.path.exists(os.path.join(tmp, "y.safetensors"))

    small = os.path.join(tmp, "r.safetensors")
    r = run("resize", a, "--sv-fro", "0.8", "--max-rank", "2", "-o", small)
    assert r.returncode == 0, r.stderr
    assert "sv_fro 0.8, max rank 2" in r.stdout
    assert json.loads(read_header(small).metadata["loralab.recipe"])["rank"] == {"mode": "sv_fro", "value": 0.8,
                                                                                "max_rank": 2}


def test_extract_from_checkpoint_files(tmp):
    layout = layout_for("sd1")
    keys = ["diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight",  # 320 × 768: SD1.x, not SD2
            "diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"]
    g = torch.Generator().manual_seed(0)
    base = {"model." + k: torch.randn(*layout.shapes[k], generator=g) for k in keys}
    tuned = {k: v.clone() for k, v in base.items()}
    delta = torch.randn(320, 2, generator=g) @ torch.randn(2, 768, generator=g)
    tuned["model." + keys[0]] += delta
    bpath = save_tensors(os.path.join(tmp, "base.safetensors"), base)
    tpath = save_tensors(os.path.join(tmp, "tuned.safetensors"), tuned)
    out = os.path.join(tmp, "e.safetensors")
    r = run("extract", tpath, bpath, "--rank", "4", "--dtype", "fp32", "-o", out)
    assert r.returncode == 0, r.stderr
    assert "1 modules written" in r.stdout and "not included: 1" in r.stdout
    lo = Lora.open(out)
    (m,) = list(lo.mapped())
    assert m.target.key == keys[0]
    assert torch.allclose(lo.adapter(m.entry).delta_flat(torch.float64), delta.double(), atol=1e-4)


def test_names_from_files_reach_the_terminal_escaped(tmp):
    tensors = {"lora_unet_down_blocks_0_attentions_0_proj_in\x1b[2J.lora_up.weight": torch.zeros(320, 2),
               "lora_unet_down_blocks_0_attentions_0_proj_in\x1b[2J.lora_down.weight": torch.zeros(2, 320)}
    tensors.update(fixture_tensors("kohya_sd15_lora", rank=2))
    a = save_tensors(os.path.join(tmp, "a.safetensors"), tensors, {"ss_output_name": "evil\u202etitle"})
    r = run("merge", a, "--rank", "2", "-o", os.path.join(tmp, "m.safetensors"))
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\u202e" not in r.stdout
    assert "proj_in\\x1b[2J" in r.stdout  # the skipped module is listed, escaped


def test_split_qkv_files_are_saved_as_loaded_by_default_and_as_trained_on_request(tmp):
    from loralab_testkit.split_qkv import LINEAR1, META, QKV, kohya_split_file, trained_delta
    tensors, parts = kohya_split_file()
    src = save_tensors(os.path.join(tmp, "split.safetensors"), {k: v.float() for k, v in tensors.items()}, META)

    def delta(path, module):
        with Lora.open(path) as lora:
            entry = next(e for e in lora.entries if e.module == module)
            return lora.adapter(entry).delta_flat(torch.float64)

    for flag, divisor in (("as-loaded", {QKV: 3, LINEAR1: 4}), ("as-trained", {QKV: 1, LINEAR1: 1})):
        out = os.path.join(tmp, f"concat_{flag}.safetensors")
        r = run("merge", src, "-m", "concat", "--dtype", "fp32", "--split-qkv", flag, "-o", out)
        assert r.returncode == 0, r.stderr
        meta = read_header(out).metadata
        assert json.loads(meta["loralab.recipe"])["inputs"][0]["split_qkv"] == flag.replace("-", " ")
        assert "ss_network_args" not in meta  # the output is no split file: nobody corrects it twice
        with Lora.open(out) as merged:
            assert merged.split_qkv() == {}
        for module in (QKV, LINEAR1):
            want = trained_delta(*[[t.float().double() for t in ts] for ts in parts[module]]) / divisor[module]
            torch.testing.assert_close(delta(out, module), want, rtol=1e-5, atol=1e-9)

    out = os.path.join(tmp, "resized.safetensors")
    r = run("resize", src, "--rank", "64", "--dtype", "fp32", "--split-qkv", "as-trained", "-o", out)
    assert r.returncode == 0, r.stderr
    assert json.loads(read_header(out).metadata["loralab.recipe"])["inputs"][0]["split_qkv"] == "as trained"
    want = trained_delta(*[[t.float().double() for t in ts] for ts in parts[QKV]])
    torch.testing.assert_close(delta(out, QKV), want, rtol=1e-4, atol=1e-8)
