"""The crafted LoRA of the browser test: a real SDXL kohya LoRA (the fixture's key layout, rank 2)
whose metadata carries a payload in every field the widgets show."""
from __future__ import annotations

import json
import os

#: strings that would run script if any widget put them into the page as markup
PAYLOADS = {
    "script": '<script>window.__xss=(window.__xss||0)+1;alert("xss-script")</script>',
    "img": "<img src=x onerror=\"window.__xss=(window.__xss||0)+1;alert('xss-img')\">",
    "svg": '"><svg/onload=alert("xss-svg")>',
    "js_url": 'javascript:alert("xss-url")',
    "entities": "&lt;b&gt;bold&lt;/b&gt; &amp;amp; &#60;i&#62;",
    "rtl": "safe\u202egnp.exe\u202c",
    "zero_width": "oh\u200bwx",
    "long": "L" * 5000,
}
#: the LoRA whose metadata carries the payloads (ComfyUI's own combo menu renders file names as
#: markup, so a name with a payload is not offered at all: MARKUP_FILE)
XSS_FILE = "xss_payloads.safetensors"
MARKUP_FILE = "markup_<img src=x onerror=alert(9)>.safetensors"


def xss_metadata() -> dict[str, str]:
    """Kohya-style metadata with a payload in every field the panel or report shows."""
    p = PAYLOADS
    folder = "10_" + p["img"]
    return {
        "ss_base_model_version": "sdxl_base_v1-0", "ss_network_module": "networks.lora",
        "ss_network_dim": "2", "ss_network_alpha": "1.0", "ss_steps": "1280", "ss_max_train_steps": "1280",
        "ss_num_epochs": "10", "ss_epoch": "10", "ss_resolution": "(1024, 1024)",
        "ss_sd_scripts_commit_hash": "48d368fa557731ad0488c07304dfeba8c07910eb",
        "ss_output_name": p["img"], "modelspec.trigger_phrase": p["script"], "modelspec.title": p["svg"],
        "ss_tag_frequency": json.dumps({folder: {p["js_url"]: 10, p["entities"]: 10, p["rtl"]: 10, p["zero_width"]: 10}}),
        "ss_dataset_dirs": json.dumps({folder: {"n_repeats": 10, "img_count": 10}}),
        "ss_sd_model_name": p["long"], "ss_training_comment": p["entities"],
        "ss_optimizer": f"torch.optim.AdamW({p['svg']})", "ss_lr_scheduler": p["script"],
        "ss_network_args": json.dumps({"algo": p["img"]}), "ss_learning_rate": "0.0001",
    }


def write_loras(folder: str) -> None:
    """The test's loras folder: the XSS LoRA (SDXL), one with markup in its name, a Flux LoRA, and a file
    that is not safetensors."""
    from loralab.files.safetensors import save_tensors
    from loralab_testkit import fixture_tensors

    save_tensors(os.path.join(folder, XSS_FILE), fixture_tensors("kohya_sdxl_lora", rank=2), xss_metadata())
    save_tensors(os.path.join(folder, MARKUP_FILE), fixture_tensors("kohya_sdxl_lora", rank=2), xss_metadata())
    save_tensors(os.path.join(folder, "flux_kohya.safetensors"), fixture_tensors("kohya_flux_lora", rank=2),
                 {"ss_base_model_version": "flux1", "ss_network_module": "networks.lora_flux",
                  "modelspec.trigger_phrase": "flux style"})
    with open(os.path.join(folder, "broken.safetensors"), "wb") as f:
        f.write(b"\xff" * 64)
