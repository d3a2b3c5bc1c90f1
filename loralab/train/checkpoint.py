"""Saving a run: its LoRA file (kohya format, loadable like any other) and, beside it, a state
file from which the run continues exactly.

The state file is a safetensors file with the extension ``.loralab-state`` (so LoRA lists do not
offer it): tensors for the network factors (fp32) and their EMA where the run keeps one, the
optimizer state, the random-number generators, the loss and validation-loss histories; JSON in its metadata for everything else (settings, step, data
order, loss scaler, dataset and model identity, and the sha256 of the LoRA file saved with it). It is never a pickle. Restoring checks every part against
the run being resumed before anything is changed, and says what differs.
"""
from __future__ import annotations

import datetime as _dt
import json
import os
from typing import Any

import torch

from ..errors import CheckpointError, LoRALabError
from ..files.paths import sanitize_output_name, unused_path
from ..files.safetensors import SafetensorsFile, save_tensors
from ..files.hashes import file_hashes
from ..formats.writer import kohya_tensors, save_with_hashes
from .memory import MemoryMode
from .metadata import training_metadata
from .optim import load_optimizer_state, optimizer_state
from .precision import LossScaler
from .rng import global_from_saved, global_to_saved
from .dataset import DatasetSettings
from .run import SAVE_DTYPES, DataOrder, TrainRun, TrainSettings

STATE_EXTENSION = ".loralab-state"
STATE_KEY = "loralab.train_state"
STATE_FORMAT = "loralab-train-state"
STATE_VERSION = 1
#: the EMA of factor ``network.<key>.<factor>`` is saved as ``ema.network.<key>.<factor>``
EMA_PREFIX = "ema."
#: sections every state file has
REQUIRED = ("settings", "dataset", "model", "targets", "optimizer", "order", "rng", "step", "run_id", "started_at",
            "scaler")


def state_path_for(lora_path: str) -> str:
    """The state file that belongs beside a LoRA file."""
    return os.path.splitext(lora_path)[0] + STATE_EXTENSION


def lora_tensors(run: TrainRun, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The run's network as kohya-named tensors (what a LoRA file and LORA_MODEL hold): its EMA
    where the run keeps one."""
    return kohya_tensors(run.saved_network().writer_items(), run.layout, dtype)


def save_lora_file(run: TrainRun, path: str, *, title: str) -> str:
    """Write the run's LoRA with its metadata and its own ``sshs_*`` hashes (atomic; never
    overwrites)."""
    tensors = lora_tensors(run, SAVE_DTYPES[run.settings.save_dtype])
    return save_with_hashes(path, tensors, training_metadata(run, tensors, title=title))


def run_state(run: TrainRun, lora_file: str | None = None,
              lora_sha256: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Everything needed to continue ``run`` exactly: tensors and JSON (``lora_file`` and its
    ``lora_sha256`` name the LoRA file saved with the state)."""
    tensors = dict(run.network.state_tensors())
    opt_tensors, opt_meta = optimizer_state(run.optimizer)
    tensors.update(opt_tensors)
    rng_tensors, rng_meta = global_to_saved(run.global_rng)
    tensors.update(rng_tensors)
    tensors["rng.generator"] = run.generator.get_state()
    tensors["losses"] = torch.tensor(run.losses, dtype=torch.float64)
    tensors["val_losses"] = torch.tensor(run.val_losses, dtype=torch.float64).reshape(-1, 2)
    if run.ema is not None:
        tensors.update({EMA_PREFIX + k: v.detach() for k, v in run.ema.items()})
    ds = run.dataset
    mode = run.attachments.get("memory_mode")  # the memory mode the run trains in (host runs)
    meta = {
        "format": STATE_FORMAT, "version": STATE_VERSION, "run_id": run.run_id, "step": run.step,
        "started_at": run.started_at, "saved_at": _dt.datetime.now().replace(microsecond=0).isoformat(),
        "lora_file": lora_file, "lora_sha256": lora_sha256, "settings": run.settings.to_json(),
        "dataset": {"folder": ds.folder, "fingerprint": ds.fingerprint, "settings": ds.settings.to_json(),
                    "encoders": ds.encoders, "items": ds.item_fingerprints(),
                    **({"subsets": [[s.folder, s.repeats, s.class_tokens] for s in ds.subsets]} if ds.subsets else {})},
        "model": run.model_info, "targets": run.network.lr_mults, "optimizer": opt_meta,
        "order": run.order.to_json(), "rng": rng_meta, "checkpoints": run.checkpoints,
        "scaler": run.scaler.to_json(),
        "validation": None if run.validation is None else run.validation.fingerprint,
        "memory_mode": None if mode is None else mode.to_json(),
    }
    return tensors, meta


def write_state(path: str, run: TrainRun, lora_file: str | None = None, lora_sha256: str | None = None) -> str:
    """Write the state file atomically (never overwrites)."""
    tensors, meta = run_state(run, lora_file, lora_sha256)
    return save_tensors(path, tensors, {STATE_KEY: json.dumps(meta, separators=(",", ":"))})


def read_state(path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A state file's tensors and JSON; CheckpointError when it is not a readable LoRA Lab state."""
    try:
        with SafetensorsFile(path) as f:
            raw = f.metadata.get(STATE_KEY)
            if raw is None:
                raise CheckpointError("not a LoRA Lab training state (no training state in its metadata)", path=path)
            meta = json.loads(raw)
            tensors = {k: f.get(k) for k in f.keys()}
    except CheckpointError:
        raise
    except RecursionError:
        raise CheckpointError("the training state's JSON is nested too deeply", path=path,
                              hint="the file is damaged or hostile; resume from an earlier checkpoint") from None
    except (LoRALabError, OSError, ValueError) as e:
        raise CheckpointError(f"the training state cannot be read: {e}", path=path,
                              hint="the file is damaged; resume from an earlier checkpoint") from None
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT:
        raise CheckpointError("not a LoRA Lab training state (wrong format tag)", path=path)
    if meta.get("version") != STATE_VERSION:
        raise CheckpointError(f"training state version {meta.get('version')!r} is not supported "
                              f"(this LoRA Lab reads version {STATE_VERSION})", path=path)
    return tensors, meta


def _dataset_changes(run: TrainRun, saved: dict[str, Any]) -> list[str]:
    ds = run.dataset
    if saved.get("fingerprint") == ds.fingerprint:
        return []
    out: list[str] = []
    now_settings, then_settings = ds.settings.to_json(), saved.get("settings", {})
    defaults = DatasetSettings().to_json()  # a state from before a setting existed had its default
    out += [f"dataset {k}: {then_settings.get(k, defaults[k])!r} → {v!r}" for k, v in now_settings.items()
            if then_settings.get(k, defaults[k]) != v]
    for enc, ident in ds.encoders.items():
        if saved.get("encoders", {}).get(enc) != ident:
            out.append(f"the {'VAE' if enc == 'vae' else 'text encoder'} differs")
    then_items, now_items = saved.get("items", {}), ds.item_fingerprints()
    added = sorted(set(now_items) - set(then_items))
    removed = sorted(set(then_items) - set(now_items))
    changed = sorted(k for k in set(now_items) & set(then_items) if now_items[k] != then_items[k])
    for label, names in (("images added", added), ("images removed", removed), ("images or captions changed", changed)):
        if names:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            out.append(f"{len(names)} {label}: {shown}")
    return out or ["the dataset differs"]


def _model_changes(run: TrainRun, saved: dict[str, Any]) -> list[str]:
    out = []
    for key, label in (("arch", "architecture"), ("kind", "prediction type")):
        if saved.get(key) != run.model_info.get(key):
            out.append(f"model {label}: {saved.get(key)!r} → {run.model_info.get(key)!r}")
    if not out and saved.get("fingerprint") != run.model_info.get("fingerprint"):
        out.append("the base model's weights differ (another model, or other LoRAs applied to it)")
    if saved.get("text_encoder") != run.model_info.get("text_encoder"):
        out.append("the trained text encoders differ (another CLIP, or other LoRAs applied to it)")
    return out


def restore_run(template: TrainRun, path: str) -> TrainRun:
    """A copy of ``template`` (same settings, dataset and model) continued from the state file.
    A state of the run extended (more total steps) resumes as the template extended alike.
    Refuses, saying what differs, a state made with other settings, dataset or model; nothing is
    changed when it refuses. The memory mode the state was trained in is left in the run's
    ``attachments["trained_memory_mode"]`` (None where the state has none) for the host to keep."""
    tensors, meta = read_state(path)
    missing = [k for k in REQUIRED if k not in meta]
    if missing:
        raise CheckpointError(f"the training state is incomplete (no {', '.join(missing)})", path=path)
    try:
        saved_settings = TrainSettings.from_json(meta["settings"])
        extended = saved_settings.total_steps > template.settings.total_steps
        expected = template.settings.extended(saved_settings.total_steps) if extended else template.settings
        problems = [f"setting {c}" for c in saved_settings.changes(expected)]
        problems += _dataset_changes(template, meta["dataset"])
        problems += _model_changes(template, meta["model"])
        if not problems and {k: float(v) for k, v in meta["targets"].items()} != template.network.lr_mults:
            problems.append("the trained modules differ")
        now_validation = None if template.validation is None else template.validation.fingerprint
        if meta.get("validation") != now_validation:
            problems.append("the validation dataset differs")
    except (KeyError, TypeError, AttributeError, ValueError) as e:
        raise CheckpointError(f"the training state is malformed ({type(e).__name__}: {e})", path=path) from None
    if problems:
        raise CheckpointError("cannot resume: this checkpoint belongs to a different run — " + "; ".join(problems),
                              path=path, hint="resume with the settings, dataset and model the run started with")
    run = template.extend(saved_settings.total_steps) if extended else template.fork()
    with torch.inference_mode(False):  # the optimizer updates its state in place while training
        unfit = run.network.load_state_tensors(tensors)
        if unfit:
            raise CheckpointError("network factors do not fit: " + "; ".join(unfit[:5]), path=path)
        load_optimizer_state(run.optimizer, tensors, meta["optimizer"], path=path)
        if run.ema is not None:
            missing_ema = [k for k in run.ema if EMA_PREFIX + k not in tensors]
            if missing_ema:
                raise CheckpointError(f"the training state has no EMA of {len(missing_ema)} factors "
                                      f"(first: {missing_ema[0]})", path=path)
            run.ema = {k: tensors[EMA_PREFIX + k].to(v.device, v.dtype).clone() for k, v in run.ema.items()}
    try:
        run.generator.set_state(tensors["rng.generator"].to(torch.uint8))
        run.order = DataOrder.from_json(meta["order"], len(run.dataset.items))
        run.step = int(meta["step"])
        run.losses = [float(v) for v in tensors["losses"].tolist()]
        saved_val = tensors.get("val_losses")
        run.val_losses = ([] if saved_val is None else
                          [(int(st), float(v)) for st, v in saved_val.reshape(-1, 2).tolist()])
        run.run_id = str(meta["run_id"])
        run.started_at = float(meta["started_at"])
        run.checkpoints = [[str(p) for p in c] for c in meta.get("checkpoints", [])]
        run.scaler = LossScaler.from_json(meta["scaler"])
        saved_mode = meta.get("memory_mode")
        run.attachments["trained_memory_mode"] = None if saved_mode is None else MemoryMode.from_json(saved_mode)
    except (KeyError, ValueError, TypeError, RuntimeError, AttributeError) as e:
        raise CheckpointError(f"the training state is malformed ({type(e).__name__}: {e})", path=path) from None
    run.global_rng = global_from_saved(tensors, meta["rng"], path)
    if len(run.losses) != run.step:
        raise CheckpointError(f"loss history has {len(run.losses)} entries for {run.step} steps", path=path)
    return run


def _is_ours(state_path: str, run_id: str) -> bool:
    try:
        with SafetensorsFile(state_path) as f:
            meta = json.loads(f.metadata.get(STATE_KEY, "{}"))
            return isinstance(meta, dict) and meta.get("run_id") == run_id
    except (LoRALabError, OSError, ValueError, RecursionError):
        return False


def prune_checkpoints(run: TrainRun) -> list[str]:
    """Delete this run's oldest periodic checkpoints beyond ``keep_last`` (0 keeps all); only
    files whose state names this run are removed. Returns the paths deleted."""
    keep = run.settings.keep_last
    removed: list[str] = []
    while keep > 0 and len(run.checkpoints) > keep:
        lora_path, state_path = run.checkpoints.pop(0)
        if os.path.isfile(state_path) and _is_ours(state_path, run.run_id):
            for p in (lora_path, state_path):
                if os.path.isfile(p):
                    os.unlink(p)
                    removed.append(p)
    return removed


def save_checkpoint(run: TrainRun, folder: str, *, periodic: bool = True, name: str | None = None,
                    with_state: bool = True) -> tuple[str, str | None]:
    """Write ``<name>_step<N>.safetensors`` (``name`` defaults to the run's) and, unless told
    not to, its state file into ``folder``; a free name is picked, nothing is overwritten.
    Periodic checkpoints count toward ``keep_last``. Returns the LoRA and state paths."""
    base = sanitize_output_name(name or run.settings.name, extension="", default="lora")
    lora_path = unused_path(folder, f"{base}_step{run.step:06d}.safetensors")
    save_lora_file(run, lora_path, title=os.path.splitext(os.path.basename(lora_path))[0])
    if not (with_state or periodic):
        return lora_path, None
    state_path = state_path_for(lora_path)
    if periodic:
        run.checkpoints.append([lora_path, state_path])
    try:
        write_state(state_path, run, os.path.basename(lora_path), file_hashes(lora_path).sha256)
    except BaseException:
        if periodic:
            run.checkpoints.pop()
        raise
    if periodic:
        prune_checkpoints(run)
    return lora_path, state_path
