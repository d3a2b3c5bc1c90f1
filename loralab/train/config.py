"""Run config files: what ``loralab train`` trains, written by hand or exported from a training
state, as TOML or JSON.

Tables (TOML) or objects (JSON):

* ``[model]``: ``checkpoint`` (a checkpoint with its VAE and text encoders), or ``unet`` (a
  diffusion model, with ``weight_dtype``) plus ``vae`` and ``clip`` (a list) and ``clip_type``.
  Each a file path, or a name in ComfyUI's model folders.
* ``[dataset]``: ``folder`` (kohya's ``N_name`` repeat-folder layout) and the LoRA Dataset node's
  settings (``resolution``, ``min_side``, ``max_side``, ``caption_extensions``, ``trigger_word``,
  ``caption_dropout``, ``shuffle_captions``, ``keep_tokens``, ``shuffle_variants``, ``flip``,
  ``frames``, ``frame_extraction``), ``cache_folder``; or ``kohya = "dataset.toml"``. kohya's
  dataset config (``[general]``, ``[[datasets]]``, ``[[datasets.subsets]]``; musubi-tuner's
  ``target_frames`` and ``frame_extraction`` for clips) may also stand in the run config itself.
* ``[train]``: the training settings (the Start Training Run node's widgets; ``total_steps``).
* ``[output]``: ``name``, ``folder``, ``save_dtype``, ``save_every``, ``keep_last``.

Relative paths are relative to the config file's folder. Unknown keys are refused by name.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import TrainingError
from ..files.atomic import write_bytes_atomic
from .dataset import FRAME_EXTRACTIONS, DatasetSettings, Subset
from .run import TrainSettings

#: TrainSettings fields set in ``[output]`` (how files are written)
OUTPUT_KEYS = ("name", "save_dtype", "save_every", "keep_last")
#: ``[dataset]`` keys named as the LoRA Dataset node names its inputs, mapped to DatasetSettings fields
DATASET_KEYS = {"resolution": "resolution", "min_side": "min_side", "max_side": "max_side",
                "caption_extensions": "caption_extensions", "trigger_word": "trigger",
                "caption_dropout": "caption_dropout", "shuffle_captions": "shuffle_captions",
                "keep_tokens": "keep_tokens", "shuffle_variants": "shuffle_variants", "flip": "flip",
                "frames": "frames", "frame_extraction": "frame_extraction"}
MODEL_KEYS = ("checkpoint", "unet", "weight_dtype", "vae", "clip", "clip_type")
#: kohya dataset-config keys (and musubi-tuner's video keys) and the DatasetSettings field each one sets
KOHYA_DATASET_KEYS = {"resolution": "resolution", "min_bucket_reso": "min_side", "max_bucket_reso": "max_side",
                      "caption_extension": "caption_extensions", "caption_dropout_rate": "caption_dropout",
                      "shuffle_caption": "shuffle_captions", "keep_tokens": "keep_tokens", "flip_aug": "flip",
                      "target_frames": "frames", "frame_extraction": "frame_extraction"}
KOHYA_SUBSET_KEYS = ("image_dir", "num_repeats", "class_tokens")
#: kohya keys that describe what LoRA Lab always does
KOHYA_NOOP = {"enable_bucket": True, "bucket_no_upscale": True, "bucket_reso_steps": 64, "is_reg": False}


@dataclass(frozen=True)
class ModelFiles:
    """Where the model comes from: a checkpoint, or a diffusion model with its VAE and text encoders."""

    checkpoint: str = ""
    unet: str = ""
    weight_dtype: str = "default"
    vae: str = ""
    clip: tuple[str, ...] = ()
    clip_type: str = "stable_diffusion"

    @property
    def name(self) -> str:
        """The model's file name, as a run records it."""
        return os.path.basename(self.checkpoint or self.unet)


@dataclass(frozen=True)
class RunConfig:
    """A run config, checked: the model files, the dataset, the settings and where files go."""

    model: ModelFiles
    #: a folder in kohya's repeat-folder layout, or kohya-style subsets
    dataset: str | tuple[Subset, ...]
    dataset_settings: DatasetSettings
    settings: TrainSettings
    #: "" = ComfyUI's loras folder
    output_folder: str = ""
    #: "" = ComfyUI's user folder's loralab_cache (the one the dataset node uses)
    cache_folder: str = ""


def _bad(msg: str, path: str | None, hint: str | None = None) -> TrainingError:
    return TrainingError(f"{path}: {msg}" if path else msg, hint=hint)


def _typed(value: Any, default: Any, where: str, path: str | None) -> Any:
    """``value`` checked against the type of the field's ``default`` (ints widen to floats)."""
    if isinstance(default, bool):
        ok = isinstance(value, bool)
    elif isinstance(default, int):
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(default, float):
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        value = float(value) if ok else value
    elif isinstance(default, tuple):
        value = [e.strip() for e in value.split(",") if e.strip()] if isinstance(value, str) else value
        ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    else:
        ok = isinstance(value, str)
    if not ok:
        raise _bad(f"{where} must be {type(default).__name__}, got {value!r}", path)
    return value


def _table(data: Mapping[str, Any], name: str, path: str | None) -> dict[str, Any]:
    table = data.get(name, {})
    if not isinstance(table, dict):
        raise _bad(f"[{name}] must be a table", path)
    return dict(table)


def _unknown(table: Mapping[str, Any], known, where: str, path: str | None) -> None:
    extra = sorted(set(table) - set(known))
    if extra:
        raise _bad(f"unknown key{'s' if len(extra) > 1 else ''} in {where}: {', '.join(extra)}", path,
                   hint=f"known: {', '.join(sorted(known))}")


def _resolve(base: str, value: str) -> str:
    return os.path.normpath(os.path.join(base, os.path.expanduser(value))) if value else value


def _model_file(base: str, value: str) -> str:
    """A model file's path when it exists as given (relative to the config's folder), else the
    name as given (a name in ComfyUI's model folders)."""
    path = _resolve(base, value)
    return path if value and os.path.isfile(path) else value


def read_config_file(path: str) -> dict[str, Any]:
    """A TOML (``.toml``) or JSON file as a dict; TrainingError naming the file when it cannot be."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise _bad(f"cannot read the config ({e.strerror or e})", path) from None
    try:
        if path.lower().endswith(".json"):
            data = json.loads(raw.decode("utf-8"))
        else:
            data = _toml().loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise _bad(f"not valid {'JSON' if path.lower().endswith('.json') else 'TOML'}: {e}", path) from None
    if not isinstance(data, dict):
        raise _bad("the config must be a table of tables", path)
    return data


def _toml():
    try:
        import tomllib
    except ImportError:  # Python 3.10
        raise TrainingError("reading TOML needs Python 3.11 or later", hint="write the config as JSON") from None
    return tomllib


def kohya_dataset(data: Mapping[str, Any], base: str, path: str | None
                  ) -> tuple[tuple[Subset, ...], dict[str, Any], int | None]:
    """kohya's dataset config: its subsets, the DatasetSettings fields it sets and its batch size.
    Settings may stand in ``[general]``, ``[[datasets]]`` or a subset (the nearer wins) but must
    agree across subsets: LoRA Lab trains one dataset with one set of settings."""
    _unknown(data, ("general", "datasets"), "kohya's dataset config", path)
    general = _table(data, "general", path)
    datasets = data.get("datasets", [])
    if not isinstance(datasets, list) or len(datasets) != 1 or not isinstance(datasets[0], dict):
        found = len(datasets) if isinstance(datasets, list) else 0
        raise _bad(f"kohya's dataset config needs exactly one [[datasets]] (found {found})", path,
                   hint="put every image folder as a [[datasets.subsets]] of one [[datasets]]")
    dataset = dict(datasets[0])
    subsets_raw = dataset.pop("subsets", [])
    if not isinstance(subsets_raw, list) or not subsets_raw:
        raise _bad("kohya's [[datasets]] has no [[datasets.subsets]]", path, hint="add one with image_dir")
    known = set(KOHYA_DATASET_KEYS) | set(KOHYA_NOOP) | {"batch_size"}
    _unknown(general, known | {"class_tokens", "num_repeats"}, "[general] (LoRA Lab does not support it)", path)
    _unknown(dataset, known | {"class_tokens", "num_repeats"}, "[[datasets]] (LoRA Lab does not support it)", path)
    subsets: list[Subset] = []
    found: dict[str, Any] = {}
    for n, raw in enumerate(subsets_raw):
        if not isinstance(raw, dict):
            raise _bad("every [[datasets.subsets]] must be a table", path)
        _unknown(raw, known | set(KOHYA_SUBSET_KEYS), f"subset {n + 1} (LoRA Lab does not support it)", path)
        merged = {**general, **dataset, **raw}
        for key, value in merged.items():
            if key in KOHYA_NOOP and value != KOHYA_NOOP[key]:
                raise _bad(f"{key} = {value!r} is not supported (LoRA Lab trains as {key} = {KOHYA_NOOP[key]!r})",
                           path)
            if key in KOHYA_DATASET_KEYS or key == "batch_size":
                if key in found and found[key] != value:
                    raise _bad(f"subsets disagree on {key} ({found[key]!r} and {value!r})", path,
                               hint="LoRA Lab trains one dataset with one set of settings")
                found[key] = value
        if not isinstance(merged.get("image_dir"), str):
            raise _bad(f"subset {n + 1} has no image_dir", path)
        repeats = _typed(merged.get("num_repeats", 1), 1, "num_repeats", path)
        tokens = _typed(merged.get("class_tokens", ""), "", "class_tokens", path)
        subsets.append(Subset(_resolve(base, merged["image_dir"]), repeats, tokens))
    fields: dict[str, Any] = {}
    defaults = DatasetSettings()
    for key, field in KOHYA_DATASET_KEYS.items():
        if key not in found:
            continue
        value = found[key]
        if key == "resolution" and isinstance(value, list) and len(value) == 2:
            value = int(round(math.sqrt(value[0] * value[1])))  # the bucket area kohya's [w, h] gives
        if key == "caption_extension":
            value = [value] if isinstance(value, str) else value
        if key == "target_frames" and isinstance(value, list):
            if len(value) != 1:
                raise _bad(f"target_frames = {value!r}: LoRA Lab trains one frame count per dataset", path,
                           hint="give one count, e.g. target_frames = [33]")
            value = value[0]
        if key == "frame_extraction" and value not in FRAME_EXTRACTIONS:
            raise _bad(f"frame_extraction = {value!r} is not supported", path,
                       hint="use " + " or ".join(repr(v) for v in FRAME_EXTRACTIONS))
        fields[field] = _typed(value, getattr(defaults, field), key, path)
    batch = _typed(found["batch_size"], 1, "batch_size", path) if "batch_size" in found else None
    return tuple(subsets), fields, batch


def parse_config(data: Mapping[str, Any], base: str, path: str | None = None) -> RunConfig:
    """A run config from its parsed file (``base``: the folder relative paths start from)."""
    kohya_inline = "general" in data or "datasets" in data
    _unknown(data, ("model", "dataset", "train", "output", "general", "datasets"), "the config", path)
    model = _table(data, "model", path)
    _unknown(model, MODEL_KEYS, "[model]", path)
    clip = model.get("clip", [])
    model["clip"] = [clip] if isinstance(clip, str) else clip
    defaults = ModelFiles()
    files = {k: _typed(v, getattr(defaults, k), f"model.{k}", path) for k, v in model.items()}
    for key in ("checkpoint", "unet", "vae"):
        files[key] = _model_file(base, files.get(key, ""))
    files["clip"] = tuple(_model_file(base, c) for c in files.get("clip", ()))
    files = ModelFiles(**files)
    if bool(files.checkpoint) == bool(files.unet):
        raise _bad("[model] needs either checkpoint or unet", path,
                   hint="checkpoint = a checkpoint with its VAE and text encoders; unet = a diffusion model, "
                        "with vae and clip")
    if files.unet and not (files.vae and files.clip):
        raise _bad("[model] unet needs vae and clip (the dataset is encoded with them)", path)
    if not files.unet and (files.vae or files.clip):
        raise _bad("[model] vae and clip go with unet; a checkpoint brings its own", path)

    ds = _table(data, "dataset", path)
    _unknown(ds, ("folder", "kohya", "cache_folder", *DATASET_KEYS), "[dataset]", path)
    ds_defaults = DatasetSettings()
    ds_fields = {DATASET_KEYS[k]: _typed(v, getattr(ds_defaults, DATASET_KEYS[k]), f"dataset.{k}", path)
                 for k, v in ds.items() if k in DATASET_KEYS}
    kohya_batch = None
    sources = [s for s in ("folder", "kohya") if s in ds] + (["kohya's [general]/[[datasets]]"] if kohya_inline else [])
    if len(sources) != 1:
        raise _bad(f"the dataset needs exactly one of [dataset] folder, [dataset] kohya or kohya's tables "
                   f"(found {', '.join(sources) or 'none'})", path)
    if "folder" in ds:
        dataset: str | tuple[Subset, ...] = _resolve(base, _typed(ds["folder"], "", "dataset.folder", path))
    else:
        if "kohya" in ds:
            kohya_path = _resolve(base, _typed(ds["kohya"], "", "dataset.kohya", path))
            kohya, kohya_base = read_config_file(kohya_path), os.path.dirname(kohya_path)
        else:
            kohya, kohya_base, kohya_path = {k: data[k] for k in ("general", "datasets") if k in data}, base, path
        dataset, fields, kohya_batch = kohya_dataset(kohya, kohya_base, kohya_path)
        clash = sorted(set(fields) & set(ds_fields))
        if clash:
            raise _bad(f"[dataset] and kohya's dataset config both set {', '.join(clash)}", path)
        ds_fields.update(fields)

    train = _table(data, "train", path)
    output = _table(data, "output", path)
    setting_names = [f.name for f in dataclasses.fields(TrainSettings) if f.name not in OUTPUT_KEYS]
    _unknown(train, setting_names, "[train]", path)
    _unknown(output, ("folder", *OUTPUT_KEYS), "[output]", path)
    if kohya_batch is not None:
        if "batch_size" in train and train["batch_size"] != kohya_batch:
            raise _bad(f"[train] batch_size {train['batch_size']} and kohya's batch_size {kohya_batch} differ", path)
        train["batch_size"] = kohya_batch
    s_defaults = TrainSettings()
    values = {k: _typed(v, getattr(s_defaults, k), f"train.{k}" if k in train else f"output.{k}", path)
              for k, v in [*train.items(), *((k, v) for k, v in output.items() if k != "folder")]}
    settings = TrainSettings(**values)
    return RunConfig(files, dataset, DatasetSettings(**ds_fields), settings,
                     output_folder=_resolve(base, _typed(output.get("folder", ""), "", "output.folder", path)),
                     cache_folder=_resolve(base, _typed(ds.get("cache_folder", ""), "", "dataset.cache_folder", path)))


def load_config(path: str) -> RunConfig:
    """Read and check a run config file."""
    path = os.path.abspath(path)
    return parse_config(read_config_file(path), os.path.dirname(path), path)


def config_data(settings: TrainSettings, dataset: Mapping[str, Any], model: Mapping[str, Any]) -> dict[str, Any]:
    """The config of a run as a training state records it (its ``dataset`` and ``model``
    sections), ready to write. ``[model]`` holds the files the run recorded, else the model's file
    name as ``checkpoint`` (a diffusion model with separate encoders then needs ``unet``, ``vae``,
    ``clip``); a dataset of subsets is written as kohya's ``[[datasets.subsets]]``."""
    train = {k: v for k, v in settings.to_json().items() if k not in OUTPUT_KEYS and k != "decay_steps"}
    if settings.decay_steps:
        train["decay_steps"] = settings.decay_steps
    names = {v: k for k, v in DATASET_KEYS.items()}
    ds = {names[k]: v for k, v in dataset["settings"].items() if k in names}
    files = {k: v for k, v in (model.get("files") or {}).items() if k in MODEL_KEYS}
    data: dict[str, Any] = {"model": files or {"checkpoint": model.get("name") or ""}}
    if dataset.get("subsets"):
        data["dataset"] = ds
        data["datasets"] = [{"subsets": [{"image_dir": folder, "num_repeats": repeats, "class_tokens": tokens}
                                         for folder, repeats, tokens in dataset["subsets"]]}]
    else:
        data["dataset"] = {"folder": dataset["folder"], **ds}
    data.update(train=train, output={k: getattr(settings, k) for k in OUTPUT_KEYS})
    return data


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _toml_table(header: str, values: Mapping[str, Any]) -> list[str]:
    """A table's scalars and lists, then its arrays of tables (``[[header.key]]``)."""
    arrays = {k: v for k, v in values.items() if isinstance(v, list) and v and all(isinstance(e, dict) for e in v)}
    out = [header] + [f"{k} = {_toml_value(v)}" for k, v in values.items() if k not in arrays] + [""]
    name = header.strip("[]")
    for key, entries in arrays.items():
        for entry in entries:
            out += _toml_table(f"[[{name}.{key}]]", entry)
    return out


def to_toml(data: Mapping[str, Any]) -> str:
    """Tables and arrays of tables of scalars and lists as TOML (what :func:`config_data` gives)."""
    out: list[str] = []
    for name, values in data.items():
        if isinstance(values, list):
            for entry in values:
                out += _toml_table(f"[[{name}]]", entry)
        else:
            out += _toml_table(f"[{name}]", values)
    return "\n".join(out)


def write_config(path: str, data: Mapping[str, Mapping[str, Any]], *, overwrite: bool = False) -> str:
    """Write a config as TOML, or JSON when ``path`` ends in ``.json`` (atomic)."""
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n" if path.lower().endswith(".json") else to_toml(data)
    write_bytes_atomic(path, text.encode("utf-8"), overwrite=overwrite)
    return path
