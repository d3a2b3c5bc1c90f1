"""DiT configs as the running ComfyUI's model classes take them: newer hosts (0.33) require config
fields 0.3.64 does not know (Chroma's ``txt_ids_dims`` and ``vec_in_dim``; HunyuanVideo's
``use_cond_type_embedding``, ``vision_in_dim`` and ``meanflow_sum``). They are filled in with the
values the host's own model detection writes for the released models, and only where the host's
parameter class has the field."""
from __future__ import annotations

import dataclasses
import importlib

#: image_model -> (module, parameter class, the values model detection writes for the released model)
_NEWER_FIELDS = {
    "chroma": ("comfy.ldm.chroma.model", "ChromaParams", {"txt_ids_dims": [], "vec_in_dim": None}),
    "hunyuan_video": ("comfy.ldm.hunyuan_video.model", "HunyuanVideoParams",
                      {"use_cond_type_embedding": False, "vision_in_dim": None, "meanflow_sum": False}),
}


def host_dit_config(cfg: dict) -> dict:
    """``cfg`` with the fields the running host's parameter class requires and the config lacks."""
    cfg = dict(cfg)
    spec = _NEWER_FIELDS.get(cfg.get("image_model"))
    if spec is None:
        return cfg
    module, cls, values = spec
    fields = {f.name for f in dataclasses.fields(getattr(importlib.import_module(module), cls))}
    for name, value in values.items():
        if name in fields:
            cfg.setdefault(name, value)
    return cfg
