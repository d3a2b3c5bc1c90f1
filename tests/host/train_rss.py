"""Measure the peak memory of training a tiny ComfyUI model in this (child) process, for the
memory estimator's host test. Usage: python train_rss.py BASE_DIR ARCH SIZE BATCH MODE_JSON...

Boots ComfyUI on the host base folder BASE_DIR (the test's, which holds the tiny models), builds
a dataset of BATCH SIZE×SIZE images, trains the tiny ARCH model one step in the memory mode (so
torch's kernels and runtime buffers are paged in) and drops it, reads the resident memory (the
baseline: Python, torch, ComfyUI and the dataset) and resets the high-water mark to it, then
loads the model afresh and trains it two steps in the mode. Prints JSON: the peak increase over
the baseline in bytes (``measured``) and the estimate training planned (``estimate``, ``parts``)."""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/

import torch  # noqa: E402

from host import train_kit  # noqa: E402
from host.conftest import Host, _harness_dir  # noqa: E402
from host.train_setup import SMALL_RUN, VARIANTS  # noqa: E402
from loralab_testkit.rss import high_water, start_peak  # noqa: E402


def main(base: str, arch: str, size: int, batch: int, modes_json: list[str]) -> None:
    torch.set_num_threads(1)
    host = Host(base)
    sys.path.insert(0, os.path.dirname(_harness_dir()))
    import comfy.model_management
    import make_tiny_models
    path = os.path.join(host.folder("diffusion_models"), f"tiny_{VARIANTS[arch]}.safetensors")
    folder = os.path.join(host.folder_paths.get_input_directory(), f"ds_rss_{arch}_{size}_{batch}")
    if not os.path.isdir(folder):
        train_kit.write_dataset(folder, n=batch, size=(size, size))
    node = host.nodes.NODE_CLASS_MAPPINGS["LoRALabDataset"]
    ds = node.execute(**{**train_kit.schema_defaults(node), "resolution": size, "min_side": size, "max_side": size,
                         "trigger_word": "sks", "folder": os.path.basename(folder), "vae": train_kit.tiny_vae(arch),
                         "clip": train_kit.tiny_clip(arch)}).args[0]
    modes = [{"fits_in": "manual", **json.loads(m)} for m in modes_json]
    load = make_tiny_models.load_tiny_model
    out = []
    for mode in modes:
        _train(host, load(path), ds, batch, mode, 1)  # pages in what the mode runs
        comfy.model_management.unload_all_models()  # ComfyUI keeps the last run's model loaded otherwise
        baseline = start_peak()
        est = _train(host, load(path), ds, batch, mode, 2).attachments["memory_estimate"]
        out.append({"measured": high_water() - baseline, "estimate": est.total, "parts": dict(est.parts),
                    "baseline": baseline})
    print(json.dumps(out))


def _train(host, model, ds, batch: int, mode: dict, steps: int):
    tr = host.module("nodes.train")
    settings = host.module("loralab.train.run").TrainSettings(
        **{k: SMALL_RUN[k] for k in ("rank", "alpha", "targets", "learning_rate")}, total_steps=steps,
        batch_size=batch, seed=5, **mode)
    return tr.advance(tr.init_run(model, ds, settings, None), steps, None)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5:])
