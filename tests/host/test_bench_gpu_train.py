"""bench/gpu_train.py in its tiny mode (no GPU here): every memory mode of LoRA Lab trains the
micro SDXL and Flux layouts beside core's TrainLoraNode, in CI-sized time, and the modes that
must not change the numbers do not."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_gpu_train_bench_runs_its_tiny_configuration(host, tmp_path):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the bench would run its full configuration")
    out = tmp_path / "result.json"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "bench", "gpu_train.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no GPU here: a tiny configuration" in proc.stdout
    result = json.loads(out.read_text())
    rows = {(r["arch"], r["mode"]): r for r in result["results"]}
    assert not result["cuda"] and len(rows) == 10
    for arch in ("sdxl", "flux"):
        ours = {mode: rows[(arch, mode)]["ours"] for mode in ("loaded", "ckpt", "fp8", "swap", "offload")}
        assert all("error" not in o and o["s_it"] > 0 for o in ours.values()), ours
        # swapping and offloading change no number; they add to fp8 + checkpointing
        assert ours["swap"]["loss"] == ours["fp8"]["loss"] == ours["offload"]["loss"]
        assert "blocks swapped to the CPU" in ours["swap"]["mode"]
        assert ours["ckpt"]["estimate"] < ours["loaded"]["estimate"]
        assert "s_it" in rows[(arch, "ckpt")]["core"]  # core trained beside it
