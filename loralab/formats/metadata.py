"""A LoRA's ``__metadata__``, typed: kohya ``ss_*`` (JSON-in-string fields decoded, numbers and
booleans as such), SAI ``modelspec.*``, ai-toolkit's ``software``/``training_info``/``name``/
``version``, diffusers' ``lora_adapter_metadata`` (the PEFT ``LoraConfig``); anything else kept raw.
Plus the training summary people ask for first.

Metadata is attacker-controlled text: nothing here evaluates it beyond ``json.loads`` and number
parsing, and a field that does not decode is kept raw and named in ``errors``.
"""
from __future__ import annotations

import datetime
import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping

#: kohya fields holding JSON text
KOHYA_JSON_FIELDS = ("ss_tag_frequency", "ss_dataset_dirs", "ss_reg_dataset_dirs", "ss_datasets",
                     "ss_network_args", "ss_bucket_info")
#: ai-toolkit's top-level fields (``software`` and ``training_info`` hold JSON)
AITOOLKIT_FIELDS = ("software", "training_info", "name", "version")
_AITOOLKIT_JSON = ("software", "training_info")
#: diffusers' field holding the PEFT ``LoraConfig`` as JSON (its keys prefixed per component when
#: the pipeline saved several: ``transformer.r``)
DIFFUSERS_FIELD = "lora_adapter_metadata"

_INT = re.compile(r"^[+-]?\d+$")
_FLOAT = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")
_TUPLE = re.compile(r"^\(\s*(\d+)\s*,\s*(\d+)\s*\)$")
_SIZE = re.compile(r"^\s*(\d+)\s*[x×,]\s*(\d+)\s*$")


def _keeps_text(key: str) -> bool:
    """Fields that look numeric but are names, ids or hashes."""
    return "hash" in key or "name" in key or key in ("ss_training_comment", "ss_session_id")


def typed_value(key: str, value: str) -> Any:
    """A kohya metadata string as the value it stands for (``"None"`` -> None, ``"True"`` -> True,
    ``"16"`` -> 16, ``"(512, 512)"`` -> [512, 512]); text stays text."""
    if _keeps_text(key):
        return value
    if value == "None":
        return None
    if value in ("True", "False"):
        return value == "True"
    if _INT.match(value) and len(value) <= 20:  # longer digit strings stay text (and within int()'s limits)
        return int(value)
    if _FLOAT.match(value) and math.isfinite(float(value)):
        return float(value)
    m = _TUPLE.match(value)
    if m:
        return [int(m.group(1)), int(m.group(2))]
    return value


@dataclass
class Metadata:
    """The metadata split by producer, typed; ``raw`` is the file's dict as it is."""

    raw: dict[str, str]
    kohya: dict[str, Any] = field(default_factory=dict)  # ss_* and sshs_* keys, typed
    modelspec: dict[str, str] = field(default_factory=dict)  # modelspec.* without the prefix
    aitoolkit: dict[str, Any] = field(default_factory=dict)
    diffusers: dict[str, Any] = field(default_factory=dict)  # the decoded lora_adapter_metadata
    other: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # key -> why it could not be decoded

    def get(self, key: str, default: Any = None) -> Any:
        """A typed kohya value (``ss_network_dim``...)."""
        return self.kohya.get(key, default)

    @property
    def software_name(self) -> str:
        sw = self.aitoolkit.get("software")
        return str(sw.get("name", "")) if isinstance(sw, dict) else str(sw or "")

    def to_dict(self) -> dict:
        return {"kohya": self.kohya, "modelspec": self.modelspec, "aitoolkit": self.aitoolkit,
                "diffusers": self.diffusers, "other": self.other, "errors": self.errors}


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float | str:
    """A JSON number as a float; one too large for a float (``1e999``) stays text."""
    n = float(text)
    return n if math.isfinite(n) else text


def _decode_json(md: Metadata, key: str, value: str) -> Any:
    try:
        return json.loads(value, parse_constant=_no_constants, parse_float=_finite_float)
    except (ValueError, RecursionError) as e:
        md.errors[key] = f"not valid JSON ({str(e)[:80]})"
        return value


def parse_metadata(raw: Mapping[str, str]) -> Metadata:
    """Split and type a safetensors ``__metadata__`` dict."""
    md = Metadata(raw=dict(raw))
    for key, value in raw.items():
        if key.startswith(("ss_", "sshs_")):
            if key in KOHYA_JSON_FIELDS:
                md.kohya[key] = None if value == "None" else _decode_json(md, key, value)
            else:
                md.kohya[key] = typed_value(key, value)
        elif key.startswith("modelspec."):
            md.modelspec[key[len("modelspec."):]] = value
        elif key in AITOOLKIT_FIELDS:
            md.aitoolkit[key] = _decode_json(md, key, value) if key in _AITOOLKIT_JSON and value[:1] in "{[" else value
        elif key == DIFFUSERS_FIELD:
            config = _decode_json(md, key, value)
            if isinstance(config, dict):
                md.diffusers = config
            else:
                md.other[key] = value
                md.errors.setdefault(key, f"a JSON {type(config).__name__}, not an object")
        else:
            md.other[key] = value
    return md


def _number(value: Any) -> float | None:
    """A finite number, or None (decoded JSON can hold 1e999, which is infinite)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        n = float(value)
    except OverflowError:  # an integer of hundreds of digits
        return None
    return n if math.isfinite(n) else None


def _int(value: Any) -> int | None:
    n = _number(value)
    return int(n) if n is not None and n == int(n) else None


def _timestamp(value: Any) -> str | None:
    n = _number(value)
    if n is None or not 0 < n < 1e11:
        return None
    return datetime.datetime.fromtimestamp(n, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _optimizer(value: Any) -> tuple[str | None, str | None]:
    """``bitsandbytes.optim.adamw.AdamW8bit(weight_decay=0.1)`` -> ("AdamW8bit", "weight_decay=0.1")."""
    if not isinstance(value, str) or not value:
        return None, None
    name, _, args = value.partition("(")
    return name.rsplit(".", 1)[-1].strip() or None, (args[:-1] if args.endswith(")") else args) or None


def folder_images(md: Metadata) -> dict[str, int]:
    """Training folder name -> number of images in it (repeats not counted), from
    ``ss_dataset_dirs`` or the subsets of ``ss_datasets``."""
    out: dict[str, int] = {}
    dirs = md.get("ss_dataset_dirs")
    if isinstance(dirs, dict):
        for folder, info in dirs.items():
            if isinstance(info, dict) and _int(info.get("img_count")) is not None:
                out[str(folder)] = _int(info.get("img_count"))  # type: ignore[assignment]
    datasets = md.get("ss_datasets")
    if isinstance(datasets, list):
        for ds in datasets:
            for sub in (ds.get("subsets") or []) if isinstance(ds, dict) else []:
                if isinstance(sub, dict) and not sub.get("is_reg") and _int(sub.get("img_count")) is not None:
                    out.setdefault(str(sub.get("image_dir", "")), _int(sub.get("img_count")))  # type: ignore[arg-type]
    return out


def _resolution(md: Metadata) -> str | None:
    res = md.get("ss_resolution")
    if isinstance(res, list) and len(res) == 2:
        return f"{res[0]}x{res[1]}"
    datasets = md.get("ss_datasets")
    if isinstance(datasets, list):
        sizes = sorted({f"{d['resolution'][0]}x{d['resolution'][1]}" for d in datasets
                        if isinstance(d, dict) and isinstance(d.get("resolution"), list) and len(d["resolution"]) == 2})
        if sizes:
            return ", ".join(sizes)
    m = _SIZE.match(md.modelspec.get("resolution", ""))
    if m:
        return f"{m.group(1)}x{m.group(2)}"
    return None


@dataclass
class Training:
    """How a LoRA was trained, as far as its metadata says (None where it does not)."""

    trainer: str | None = None
    title: str | None = None
    base_model: str | None = None
    base_model_version: str | None = None
    steps: int | None = None
    max_steps: int | None = None
    epochs: int | None = None
    max_epochs: int | None = None
    resolution: str | None = None
    images: int | None = None  # distinct training images (repeats not counted)
    train_images: int | None = None  # images per epoch, repeats counted (ss_num_train_images)
    reg_images: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None
    optimizer_args: str | None = None
    learning_rate: float | None = None
    unet_lr: float | None = None
    text_encoder_lr: float | None = None
    lr_scheduler: str | None = None
    network_module: str | None = None
    network_algo: str | None = None  # LyCORIS ``algo`` of ss_network_args; PEFT "lora" or "dora"
    network_dim: int | str | None = None
    network_alpha: float | str | None = None
    network_args: dict | None = None
    mixed_precision: str | None = None
    seed: int | None = None
    started_at: str | None = None
    finished_at: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def is_empty(self) -> bool:
        return all(v is None for v in asdict(self).values())


def peft_config(md: Metadata) -> dict[str, Any]:
    """The PEFT ``LoraConfig`` of diffusers' ``lora_adapter_metadata`` (``r``, ``lora_alpha``,
    ``use_dora``...); where it is packed per component (``transformer.r``, ``unet.r``), the
    transformer's or the U-Net's, else the first component's."""
    config = md.diffusers
    if not config or "r" in config or "peft_type" in config:
        return config
    groups: dict[str, dict[str, Any]] = {}
    for key, value in config.items():
        prefix, dot, name = str(key).partition(".")
        if dot:
            groups.setdefault(prefix, {})[name] = value
    for prefix in ("transformer", "unet"):
        if prefix in groups:
            return groups[prefix]
    return next(iter(groups.values()), {})


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _trainer(md: Metadata) -> str | None:
    if md.software_name:
        sw = md.aitoolkit.get("software")
        version = sw.get("version") if isinstance(sw, dict) else None
        return f"{md.software_name} {version}" if version else md.software_name
    commit = md.get("ss_sd_scripts_commit_hash")
    if isinstance(commit, str) and commit:
        return f"kohya sd-scripts {commit[:10]}"
    if md.get("ss_network_module") is not None or md.get("ss_session_id") is not None:
        return "kohya sd-scripts"
    impl = md.modelspec.get("implementation_version")
    if impl:
        return impl
    return "diffusers (PEFT)" if peft_config(md) else None


def training_summary(md: Metadata) -> Training:
    """The training facts of a LoRA's metadata."""
    g = md.get
    info = md.aitoolkit.get("training_info")
    info = info if isinstance(info, dict) else {}
    images = folder_images(md)
    optimizer, optimizer_args = _optimizer(g("ss_optimizer"))
    peft = peft_config(md)
    dim = g("ss_network_dim", peft.get("r"))
    alpha = g("ss_network_alpha", peft.get("lora_alpha"))
    args = g("ss_network_args")
    module, algo = _text(g("ss_network_module")), (_text(args.get("algo")) if isinstance(args, dict) else None)
    if module is None and peft:
        module, algo = "peft", "dora" if peft.get("use_dora") is True else (_text(peft.get("peft_type")) or "lora").lower()
    batch = g("ss_total_batch_size", g("ss_batch_size_per_device"))
    if batch is None and isinstance(g("ss_datasets"), list) and g("ss_datasets"):
        first = g("ss_datasets")[0]
        batch = first.get("batch_size_per_device") if isinstance(first, dict) else None
    return Training(
        trainer=_trainer(md),
        title=md.modelspec.get("title") or (md.aitoolkit.get("name") if isinstance(md.aitoolkit.get("name"), str)
                                           else None) or (g("ss_output_name") or None),
        base_model=_text(g("ss_sd_model_name")) or _text(g("ss_base_model")) or _text(peft.get("base_model_name_or_path")),
        base_model_version=(g("ss_base_model_version") or md.modelspec.get("architecture") or None),
        steps=_int(g("ss_steps")) if g("ss_steps") is not None else _int(info.get("step")),
        max_steps=_int(g("ss_max_train_steps")),
        epochs=_int(g("ss_epoch")) if g("ss_epoch") is not None else _int(info.get("epoch")),
        max_epochs=_int(g("ss_num_epochs")),
        resolution=_resolution(md),
        images=sum(images.values()) if images else None,
        train_images=_int(g("ss_num_train_images")),
        reg_images=_int(g("ss_num_reg_images")),
        batch_size=_int(batch),
        optimizer=optimizer,
        optimizer_args=optimizer_args,
        learning_rate=_number(g("ss_learning_rate")),
        unet_lr=_number(g("ss_unet_lr")),
        text_encoder_lr=_number(g("ss_text_encoder_lr")),
        lr_scheduler=g("ss_lr_scheduler") if isinstance(g("ss_lr_scheduler"), str) else None,
        network_module=module,
        network_algo=algo,
        network_dim=_int(dim) if _int(dim) is not None else _text(dim),
        network_alpha=_number(alpha) if _number(alpha) is not None else _text(alpha),
        network_args=args if isinstance(args, dict) else None,
        mixed_precision=g("ss_mixed_precision") if isinstance(g("ss_mixed_precision"), str) else None,
        seed=_int(g("ss_seed")),
        started_at=_timestamp(g("ss_training_started_at")),
        finished_at=_timestamp(g("ss_training_finished_at")),
    )
