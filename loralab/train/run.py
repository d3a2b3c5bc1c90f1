"""A training run: network, optimizer, step, random state, data order and loss history in one
object that advances step by step, forks, and is saved and restored exactly.

The model is reached through a :class:`TrainModel` (the host's glue to ComfyUI): it turns VAE
latents into model latents and gives the denoised estimate for noisy latents, noise levels and
the samples' conditioning, with the run's network patched in. Everything else — which samples,
which noise, which timesteps, the target, the weighting, the optimizer step — happens here.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import random
import time
import uuid
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

import torch

from ..errors import TrainingError
from ..layouts import ModelLayout
from .dataset import Dataset
from .distributed import SINGLE, World
from .memory import BASE_DTYPES, FITS_IN
from .network import ALGORITHMS, PRESETS, Network, build_network, is_text_encoder_key
from .network import InitLoRA
from .objectives import loss_weights, noisy_input, prediction_target, raw_output, sample_noise
from .optim import OPTIMIZERS, make_optimizer
from .precision import NAMES as PRECISION_NAMES
from .precision import PRECISIONS, LossScaler, compute_dtype
from .rng import global_rng_of, seeded_global
from .schedules import SCHEDULES, lr_factor
from .timesteps import FLOW_SAMPLERS, image_tokens, sample_discrete_sigmas, sample_flow_sigmas
from .validation import held_out, validation_loss

SAVE_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
#: losses averaged for ``loss_avg`` (the smoothed value the progress events carry)
LOSS_WINDOW = 20


@dataclass(frozen=True)
class TrainSettings:
    """Everything that decides what a run computes, plus how it writes files."""

    algorithm: str = "lora"
    rank: int = 16
    alpha: float = 16.0
    targets: str = "attention_mlp"
    blocks: str = ""
    lokr_factor: int = -1
    optimizer: str = "adamw"
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    lr_scheduler: str = "constant"
    warmup_steps: int = 0
    total_steps: int = 1000
    #: the steps the learning-rate schedule spans (0 = total_steps); set by extending a run
    decay_steps: int = 0
    batch_size: int = 1
    grad_accumulation: int = 1
    max_grad_norm: float = 1.0
    gradient_checkpointing: bool = False
    seed: int = 0
    min_snr_gamma: float = 0.0
    noise_offset: float = 0.0
    timestep_sampling: str = "sigmoid"
    sigmoid_scale: float = 1.0
    shift: float = 3.0
    logit_mean: float = 0.0
    logit_std: float = 1.0
    guidance: float = 1.0
    precision: str = "auto"
    #: the LoRA file the network started from (its name; empty = fresh factors)
    init_lora: str = ""
    #: learning rate of the text encoders' modules (kohya's text_encoder_lr; 0 = not trained)
    text_encoder_lr: float = 0.0
    #: fraction of the dataset's images held out of training for validation (0 = none)
    validation_split: float = 0.0
    #: seed of the held-out images and of the validation noise (see :mod:`.validation`)
    validation_seed: int = 0
    #: decay of the exponential moving average of the factors (0 = off; the EMA is what is saved)
    ema_decay: float = 0.0
    #: the memory budget the memory mode is chosen for (see :mod:`.memory`); ``manual``: the
    #: details below and ``gradient_checkpointing`` as set, otherwise the least each may be
    fits_in: str = "auto"
    base_weights: str = "as loaded"
    swap_blocks: int = 0
    offload_activations: bool = False
    # how files are written: may differ when a run is resumed
    name: str = "lora"
    save_dtype: str = "fp16"
    save_every: int = 0
    keep_last: int = 3
    #: the validation loss every N steps (0 = never)
    validation_every: int = 0

    #: fields a resumed run may change (they do not alter what is trained)
    OUTPUT_FIELDS = frozenset({"name", "save_dtype", "save_every", "keep_last", "validation_every", "swap_blocks",
                               "offload_activations"})

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "TrainSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def horizon(self) -> int:
        """The steps the learning-rate schedule spans."""
        return self.decay_steps or self.total_steps

    def extended(self, total_steps: int) -> "TrainSettings":
        """These settings with a longer run and the schedule's horizon kept where it was."""
        if total_steps <= self.total_steps:
            raise TrainingError(f"extending needs more steps than the run's {self.total_steps}, got {total_steps}")
        return dataclasses.replace(self, total_steps=total_steps, decay_steps=self.horizon)

    def changes(self, other: "TrainSettings") -> list[str]:
        """``field: mine → theirs`` for every training field that differs (the schedule's
        horizon only where the schedule decays: a constant one is the same whatever it is)."""
        out = []
        for f in dataclasses.fields(self):
            if f.name in self.OUTPUT_FIELDS or f.name == "decay_steps":
                continue
            a, b = getattr(self, f.name), getattr(other, f.name)
            if a != b:
                out.append(f"{f.name}: {a!r} → {b!r}")
        if "constant" not in (self.lr_scheduler, other.lr_scheduler) and self.horizon != other.horizon:
            out.append(f"schedule horizon (decay_steps): {self.horizon} → {other.horizon}")
        return out

    def check(self, kind: str) -> None:
        """Refuse settings that cannot work, or cannot work for this kind of model."""
        def bad(msg: str, hint: str | None = None) -> None:
            raise TrainingError(msg, hint=hint)

        if self.algorithm not in ALGORITHMS:
            bad(f"unknown network algorithm {self.algorithm!r} (known: {', '.join(ALGORITHMS)})")
        if self.targets not in PRESETS:
            bad(f"unknown target preset {self.targets!r} (known: {', '.join(PRESETS)})")
        if self.optimizer not in OPTIMIZERS:
            bad(f"unknown optimizer {self.optimizer!r} (known: {', '.join(OPTIMIZERS)})")
        if self.lr_scheduler not in SCHEDULES:
            bad(f"unknown learning-rate schedule {self.lr_scheduler!r} (known: {', '.join(SCHEDULES)})")
        if self.precision not in PRECISIONS:
            bad(f"unknown precision {self.precision!r} (known: {', '.join(PRECISIONS)})")
        if self.fits_in not in FITS_IN:
            bad(f"unknown fits_in {self.fits_in!r} (known: {', '.join(FITS_IN)})")
        if self.base_weights not in BASE_DTYPES:
            bad(f"unknown base_weights {self.base_weights!r} (known: {', '.join(BASE_DTYPES)})")
        if self.swap_blocks < 0:
            bad(f"swap_blocks cannot be negative, got {self.swap_blocks}")
        if self.save_dtype not in SAVE_DTYPES:
            bad(f"unknown save dtype {self.save_dtype!r} (known: {', '.join(SAVE_DTYPES)})")
        if self.rank < 1 or self.total_steps < 1 or self.batch_size < 1 or self.grad_accumulation < 1:
            bad("rank, total steps, batch size and gradient accumulation must be at least 1")
        if not self.learning_rate > 0:
            bad(f"learning rate must be positive, got {self.learning_rate}")
        if self.decay_steps < 0:
            bad(f"decay_steps cannot be negative, got {self.decay_steps}")
        if not 0 <= self.warmup_steps < self.horizon:
            bad(f"warm-up ({self.warmup_steps} steps) must be shorter than the schedule ({self.horizon} steps)")
        if kind == "flow":
            if self.min_snr_gamma:
                bad("min-SNR-γ weighting is defined for ε- and v-prediction models",
                    "set min_snr_gamma to 0 for flow-matching models (Flux)")
            if self.timestep_sampling not in FLOW_SAMPLERS:
                bad(f"unknown timestep sampling {self.timestep_sampling!r} (known: {', '.join(FLOW_SAMPLERS)})")
        if self.min_snr_gamma < 0 or self.noise_offset < 0:
            bad("min_snr_gamma and noise_offset cannot be negative")
        if self.text_encoder_lr < 0 or self.validation_every < 0:
            bad("text_encoder_lr and validation_every cannot be negative")
        if not 0 <= self.validation_split < 1:
            bad(f"validation_split must be at least 0 and under 1, got {self.validation_split}")
        if not 0 <= self.ema_decay < 1:
            bad(f"ema_decay must be at least 0 and under 1, got {self.ema_decay}", "0.999 is usual; 0 = off")


class TrainModel(Protocol):
    """The host's model, as training sees it. It computes its forward and backward in the run's
    ``compute_dtype`` (the trainer scales the loss when that is fp16)."""

    kind: str  # "eps" | "v" | "flow"
    sigma_data: float
    sigmas: torch.Tensor | None  # the discrete schedule of ε/v models (index = timestep)
    #: flow models: the shift of the model's own sampling schedule (None where it has none)
    flow_shift: float | None
    device: torch.device

    def latent_in(self, latents: torch.Tensor) -> torch.Tensor:
        """VAE latents -> the model's latent space."""

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, conds: list[dict[str, Any]]) -> torch.Tensor:
        """The denoised estimate for noisy latents ``x`` at noise levels ``sigma``."""

    def encode_text(self, text: str) -> dict[str, torch.Tensor]:
        """A caption's conditioning through the text encoders with the run's network patched in
        (differentiable); needed only by runs that train the text encoders."""


class DataOrder:
    """Epochs of batches: every image × its repeats once per epoch, batches within one bucket and
    frame count, the order drawn from the run's own ``random.Random``."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.epoch = 0
        self.batches: list[list[int]] = []
        self.cursor = 0

    def next_batch(self, dataset: Dataset, batch_size: int, indices: list[int] | None = None) -> list[int]:
        """The next batch of item indices (drawn from ``indices``, default all items)."""
        if self.cursor >= len(self.batches):
            self._new_epoch(dataset, batch_size, indices)
        batch = self.batches[self.cursor]
        self.cursor += 1
        return batch

    def _new_epoch(self, dataset: Dataset, batch_size: int, indices: list[int] | None) -> None:
        by_bucket: dict[tuple[int, int, int], list[int]] = {}
        for idx in range(len(dataset.items)) if indices is None else indices:
            item = dataset.items[idx]
            by_bucket.setdefault(item.group, []).extend([idx] * item.repeats)
        batches: list[list[int]] = []
        for bucket in sorted(by_bucket):
            entries = by_bucket[bucket]
            self.rng.shuffle(entries)
            batches += [entries[i:i + batch_size] for i in range(0, len(entries), batch_size)]
        self.rng.shuffle(batches)
        self.batches, self.cursor = batches, 0
        self.epoch += 1

    def to_json(self) -> dict[str, Any]:
        version, internal, gauss = self.rng.getstate()
        return {"epoch": self.epoch, "cursor": self.cursor, "batches": self.batches,
                "rng": [version, list(internal), gauss]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any], num_items: int) -> "DataOrder":
        order = cls(0)
        version, internal, gauss = data["rng"]
        order.rng.setstate((int(version), tuple(int(v) for v in internal), gauss))
        order.epoch, order.cursor = int(data["epoch"]), int(data["cursor"])
        order.batches = [[int(i) for i in b] for b in data["batches"]]
        if not 0 <= order.cursor <= len(order.batches) or any(not 0 <= i < num_items for b in order.batches for i in b):
            raise ValueError("data order does not fit the dataset")
        return order


def batches_per_epoch(dataset: Dataset, batch_size: int, indices: list[int] | None = None) -> int:
    """Batches in one epoch of ``indices`` (default all items)."""
    counts: dict[tuple[int, int, int], int] = {}
    for idx in range(len(dataset.items)) if indices is None else indices:
        item = dataset.items[idx]
        counts[item.group] = counts.get(item.group, 0) + item.repeats
    return sum(math.ceil(c / batch_size) for c in counts.values())


def _sample_cond(dataset: Dataset, index: int, flipped: bool, variant: int, dropped: bool,
                 encode: Callable[[str], Mapping[str, torch.Tensor]] | None) -> dict[str, Any]:
    item = dataset.items[index]
    p = item.placement
    if encode is not None:
        cond: dict[str, Any] = dict(encode("" if dropped else dataset.text(index, variant)))
    else:
        cond = dict(dataset.empty() if dropped else dataset.cond(index, variant))
    crop_w = p.resized[0] - p.crop[0] - p.bucket[0] if flipped else p.crop[0]
    cond.update(width=p.size[0], height=p.size[1], crop_w=crop_w, crop_h=p.crop[1],
                target_width=p.bucket[0], target_height=p.bucket[1])
    return cond


def batch_loss(model: TrainModel, dataset: Dataset, settings: TrainSettings, indices: list[int],
               generator: torch.Generator, *, augment: bool = True,
               share: range | None = None,
               encode: Callable[[str], Mapping[str, torch.Tensor]] | None = None) -> torch.Tensor | None:
    """The weighted loss of one batch (differentiable); every random draw comes from ``generator``
    in a fixed order: per sample flip, caption dropout, caption variant; then noise; then σ.
    ``encode`` (a run that trains the text encoders) encodes each caption now instead of reading
    the dataset's cached encoding.

    With ``share`` (positions in ``indices``: a process's part, see :class:`.distributed.World`)
    every draw is still made for the whole batch, but only the shared samples are computed, and
    their loss is the batch's mean loss restricted to them (the shares' losses sum to the batch's);
    None for an empty share."""
    draws = []
    for idx in indices:
        flipped = augment and dataset.settings.flip and bool(torch.rand((), generator=generator) < 0.5)
        dropped = augment and dataset.settings.caption_dropout > 0 and bool(
            torch.rand((), generator=generator) < dataset.settings.caption_dropout)
        n_variants = len(dataset.items[idx].conds)
        variant = int(torch.randint(0, n_variants, (), generator=generator)) if augment and n_variants > 1 else 0
        draws.append((flipped, dropped, variant))
    part = list(range(len(indices)) if share is None else share)
    shown = part or [0]  # an empty share still needs the batch's latent shape to draw its noise
    latents = [dataset.latent(indices[i], draws[i][0]) for i in shown]
    x0 = model.latent_in(torch.stack(latents).to(model.device, torch.float32)).float()
    full = (len(indices), *x0.shape[1:])
    noise = sample_noise(full, generator, settings.noise_offset)
    if model.kind == "flow":
        sigma = sample_flow_sigmas(settings.timestep_sampling, len(indices), generator,
                                   sigmoid_scale=settings.sigmoid_scale, shift=settings.shift,
                                   logit_mean=settings.logit_mean, logit_std=settings.logit_std,
                                   tokens=image_tokens(x0.shape[-2], x0.shape[-1]),
                                   model_shift=getattr(model, "flow_shift", None))
    else:
        sigma = sample_discrete_sigmas(model.sigmas, len(indices), generator)
    if not part:
        return None
    if len(part) != len(indices):
        noise, sigma = noise[part], sigma[part]
    noise, sigma = noise.to(model.device), sigma.to(model.device)
    conds = [_sample_cond(dataset, indices[i], draws[i][0], draws[i][2], draws[i][1], encode) for i in part]
    x = noisy_input(model.kind, x0, noise, sigma)
    denoised = model.denoise(x, sigma, conds).float()
    pred = raw_output(model.kind, x, sigma, denoised, model.sigma_data)
    target = prediction_target(model.kind, x0, noise, sigma, model.sigma_data)
    per_sample = ((pred - target) ** 2).mean(dim=tuple(range(1, pred.dim())))
    weights = loss_weights(model.kind, sigma, settings.min_snr_gamma, model.sigma_data).to(per_sample.device)
    loss = (per_sample * weights).mean()
    return loss if len(part) == len(indices) else loss * (len(part) / len(indices))


def eval_loss(model: TrainModel, dataset: Dataset, settings: TrainSettings, indices: list[int], *,
              seed: int = 0, draws: int = 4) -> float:
    """Mean loss over fixed draws (noise and σ from ``seed``) for the given images, no
    augmentation, no gradients: comparable across the life of a run."""
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    with torch.no_grad():
        for _ in range(draws):
            for idx in indices:
                total += float(batch_loss(model, dataset, settings, [idx], gen, augment=False))
    return total / (draws * len(indices))


class TrainRun:
    """A run's complete state. :meth:`fork` copies it; :meth:`train` advances it;
    :meth:`extend` gives it more steps."""

    def __init__(self, settings: TrainSettings, dataset: Dataset, network: Network, *, model_info: dict[str, Any],
                 generator: torch.Generator, order: DataOrder, global_rng: dict[str, Any], run_id: str,
                 started_at: float, dtype: torch.dtype, step: int = 0, losses: list[float] | None = None,
                 checkpoints: list[list[str]] | None = None, optimizer_state: dict | None = None,
                 scaler: LossScaler | None = None, layout: ModelLayout | None = None,
                 attachments: dict[str, Any] | None = None, validation: Dataset | None = None,
                 val_losses: list[tuple[int, float]] | None = None,
                 ema: dict[str, torch.Tensor] | None = None) -> None:
        self.settings = settings
        #: the dtype the model computes in (the factors and optimizer state stay fp32)
        self.compute_dtype = dtype
        #: the loss scaler, used while ``compute_dtype`` is fp16 (its state is saved in every precision)
        self.scaler = scaler or LossScaler()
        self.layout = layout
        #: host objects travelling with the run (the MODEL it trains on)
        self.attachments = dict(attachments or {})
        self.dataset = dataset
        self.network = network
        network.set_output_dtype(dtype)
        self.optimizer = make_optimizer(settings.optimizer, network.param_groups(), settings.learning_rate,
                                        settings.weight_decay)
        if optimizer_state is not None:
            self.optimizer.load_state_dict(optimizer_state)
        self.model_info = dict(model_info)
        self.generator = generator
        self.order = order
        self.global_rng = global_rng
        self.run_id = run_id
        self.started_at = started_at
        self.step = step
        self.losses = list(losses or [])
        self.checkpoints = [list(c) for c in (checkpoints or [])]
        #: the validation folder's dataset (None: validation images are held out of ``dataset``)
        self.validation = validation
        #: (step, validation loss) at every validation so far
        self.val_losses = [(int(st), float(v)) for st, v in (val_losses or [])]
        #: the exponential moving average of every factor (by state-tensor name), or None
        self.ema = ema
        #: the dataset's images held out for validation (see :func:`.validation.held_out`)
        self.held_out = [] if validation is not None else held_out(dataset, settings.validation_split,
                                                                   settings.validation_seed)
        out = set(self.held_out)
        #: the images training draws from (None: all)
        self.train_indices = [i for i in range(len(dataset.items)) if i not in out] if out else None

    @classmethod
    def create(cls, settings: TrainSettings, dataset: Dataset, shapes: Mapping[str, tuple[int, ...]],
               targets: Mapping[str, float], model_info: Mapping[str, Any], *,
               base_weight: Callable[[str], torch.Tensor] | None = None, device: torch.device | str = "cpu",
               layout: ModelLayout | None = None, attachments: dict[str, Any] | None = None,
               init: InitLoRA | None = None, validation: Dataset | None = None) -> "TrainRun":
        """A fresh run at step 0; ``targets`` maps model weight keys to learning-rate multipliers
        (text-encoder keys, ``clip_l.transformer...``, train at ``text_encoder_lr``). With
        ``init`` the factors start from that LoRA file, whose rank and alpha replace the
        settings' (its modules must be exactly the targets). ``validation``: a dataset of
        validation images (instead of holding some out with ``validation_split``)."""
        if init is not None:
            settings = dataclasses.replace(settings, rank=init.rank, alpha=init.alpha, init_lora=init.name)
        settings.check(model_info.get("kind", ""))
        te_keys = [k for k in targets if is_text_encoder_key(k)]
        if settings.text_encoder_lr > 0 and not te_keys:
            raise TrainingError("text_encoder_lr is set but no text-encoder weight is among the targets",
                                hint="connect the CLIP to train, or set text_encoder_lr to 0")
        if te_keys and not settings.text_encoder_lr > 0:
            raise TrainingError(f"{len(te_keys)} text-encoder weights are targets but text_encoder_lr is 0",
                                key=te_keys[0], hint="set text_encoder_lr (e.g. 5e-5) to train the text encoders")
        if validation is not None and settings.validation_split > 0:
            raise TrainingError("a validation dataset and validation_split both choose validation images",
                                hint="set validation_split to 0, or disconnect the validation dataset")
        dtype = compute_dtype(settings.precision, device)
        generator = torch.Generator().manual_seed(settings.seed)
        with torch.inference_mode(False):  # hosts run nodes in inference mode; trained tensors must not be
            network = build_network(shapes, targets, settings.algorithm, settings.rank, settings.alpha, generator,
                                    base_weight=base_weight, lokr_factor=settings.lokr_factor, device=device)
            if init is not None:
                init.load_into(network)
            ema = ({k: v.clone() for k, v in network.state_tensors().items()} if settings.ema_decay > 0 else None)
            return cls(settings, dataset, network, model_info=model_info, generator=generator,
                       order=DataOrder(settings.seed), global_rng=seeded_global(settings.seed),
                       run_id=uuid.uuid4().hex, started_at=time.time(), dtype=dtype, layout=layout,
                       attachments=attachments, validation=validation, ema=ema)

    def fork(self, settings: TrainSettings | None = None, device: torch.device | str | None = None) -> "TrainRun":
        """An independent copy (new tensors, on ``device`` when given); ``settings`` may change
        output fields only."""
        settings = settings or self.settings
        if settings.changes(self.settings):
            raise TrainingError("a run's training settings cannot change: " + "; ".join(self.settings.changes(settings)))
        return self._copy(settings, device)

    def extend(self, total_steps: int) -> "TrainRun":
        """A copy of this run (finished or not) that goes on to ``total_steps``; everything else,
        the schedule's horizon included, stays (see :mod:`.schedules`). Training it on gives
        bit for bit what a run started with the longer total and ``decay_steps`` = the old
        horizon gives: with a constant schedule, what a run started with the longer total gives."""
        return self._copy(self.settings.extended(total_steps), None)

    def _copy(self, settings: TrainSettings, device: torch.device | str | None) -> "TrainRun":
        generator = torch.Generator().manual_seed(0)
        generator.set_state(self.generator.get_state())
        with torch.inference_mode(False):
            network = copy.deepcopy(self.network)
            ema = None if self.ema is None else {k: v.clone() for k, v in self.ema.items()}
            if device is not None:
                network.to(device)
                ema = None if ema is None else {k: v.to(device) for k, v in ema.items()}
            return TrainRun(settings, self.dataset, network, model_info=self.model_info,
                            generator=generator, order=copy.deepcopy(self.order),
                            global_rng=copy.deepcopy(self.global_rng), run_id=self.run_id,
                            started_at=self.started_at, dtype=self.compute_dtype, step=self.step,
                            losses=self.losses, checkpoints=self.checkpoints,
                            optimizer_state=copy.deepcopy(self.optimizer.state_dict()),
                            scaler=copy.deepcopy(self.scaler), layout=self.layout, attachments=self.attachments,
                            validation=self.validation, val_losses=self.val_losses, ema=ema)

    def to(self, device: torch.device | str) -> "TrainRun":
        """Move the network and optimizer state (values unchanged); returns the run."""
        with torch.inference_mode(False):
            self.network.to(device)
            for state in self.optimizer.state.values():
                for k, v in state.items():
                    if torch.is_tensor(v) and v.device != torch.device(device) and k != "step":
                        state[k] = v.to(device)
            if self.ema is not None:
                self.ema = {k: v.to(device) for k, v in self.ema.items()}
        return self

    @property
    def precision(self) -> str:
        """The compute dtype's name: ``bf16``, ``fp16`` or ``fp32``."""
        return PRECISION_NAMES[self.compute_dtype]

    @property
    def kind(self) -> str:
        return self.model_info.get("kind", "")

    @property
    def complete(self) -> bool:
        return self.step >= self.settings.total_steps

    def loss_avg(self) -> float:
        """Mean of the last :data:`LOSS_WINDOW` step losses (0 before the first step)."""
        tail = self.losses[-LOSS_WINDOW:]
        return sum(tail) / len(tail) if tail else 0.0

    def current_lr(self, text_encoder: bool = False) -> float:
        """The base learning rate the next step uses (block multipliers apply on top): the
        diffusion model's, or with ``text_encoder`` the text encoders'."""
        s = self.settings
        base = s.text_encoder_lr if text_encoder else s.learning_rate
        return base * lr_factor(s.lr_scheduler, self.step, s.horizon, s.warmup_steps)

    @property
    def trains_text_encoder(self) -> bool:
        return self.settings.text_encoder_lr > 0

    def _encoder(self, model: TrainModel) -> Callable[[str], Mapping[str, torch.Tensor]] | None:
        return model.encode_text if self.trains_text_encoder else None

    def validation_set(self) -> tuple[Dataset, list[int]] | None:
        """The validation images (a dataset and its indices), or None when the run has none."""
        if self.validation is not None:
            return self.validation, list(range(len(self.validation.items)))
        return (self.dataset, list(self.held_out)) if self.held_out else None

    def validate(self, model: TrainModel) -> float:
        """The validation loss of the run's current factors (see :mod:`.validation`): the same
        for the same factors whatever the run's random state, and the run's random state is
        left as it was."""
        found = self.validation_set()
        if found is None:
            raise TrainingError("this run has no validation images",
                                hint="set validation_split or connect a validation dataset")
        dataset, indices = found
        with global_rng_of(seeded_global(self.settings.validation_seed)), torch.inference_mode(False):
            return validation_loss(model, dataset, indices, seed=self.settings.validation_seed,
                                   encode=self._encoder(model))

    def update_ema(self) -> None:
        """Move the EMA one step toward the current factors: e ← d·e + (1 − d)·p."""
        d = self.settings.ema_decay
        with torch.no_grad():
            for name, p in self.network.state_tensors().items():
                self.ema[name].mul_(d).add_(p, alpha=1 - d)

    def saved_network(self) -> Network:
        """The factors a LoRA file gets: the EMA where the run keeps one, else the trained ones."""
        if self.ema is None:
            return self.network
        with torch.inference_mode(False):
            network = copy.deepcopy(self.network)
            network.load_state_tensors(self.ema)
        return network

    def params(self) -> list[torch.Tensor]:
        """The trained factors, in the optimizer's order."""
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def compute_gradients(self, model: TrainModel, world: World = SINGLE) -> tuple[float, bool]:
        """The next step's gradients, in the factors' ``.grad`` (fp32, unscaled): the step's
        batches (``grad_accumulation`` of them) forward and backward, the loss multiplied by the
        loss scale when computing in fp16 and the gradients divided by it after. In a ``world`` of
        several processes each computes its share of every batch and the gradients and loss are
        summed over them (see :mod:`.distributed`). Returns the step's loss and whether the
        gradients are finite (False: the scaler has halved its scale, the step must be skipped).
        Raises when the loss itself is not finite."""
        s = self.settings
        scaled = self.compute_dtype == torch.float16
        scale = self.scaler.scale if scaled else 1.0
        total = 0.0
        for _ in range(s.grad_accumulation):
            indices = self.order.next_batch(self.dataset, s.batch_size, self.train_indices)
            loss = batch_loss(model, self.dataset, s, indices, self.generator, share=world.share(len(indices)),
                              encode=self._encoder(model))
            if loss is None:
                continue
            loss = loss / s.grad_accumulation
            (loss * scale).backward()
            total += float(loss.detach())
        total = world.sum(total)
        world.all_reduce_grads(self.params())
        if not math.isfinite(total):
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingError(f"the loss is not finite at step {self.step + 1} ({total})",
                                hint="lower the learning rate or check the dataset and model"
                                     + ("" if self.compute_dtype == torch.float32 else
                                        f"; the model computes in {self.precision}: try precision fp32"))
        return total, self.scaler.unscale(self.params()) if scaled else True

    def train(self, model: TrainModel, steps: int, *, on_step: Callable[["TrainRun", float], None] | None = None,
              should_stop: Callable[[], bool] | None = None, world: World = SINGLE) -> bool:
        """Advance up to ``steps`` steps (never past ``total_steps``). ``should_stop`` is asked
        before every step (in a ``world`` of several processes, a stop in any stops all); returns
        True when it stopped the run early. A step whose loss is not finite raises before the
        optimizer sees it; a loss-scaled (fp16) step whose gradients are not finite counts as a
        step but changes no factor (see :class:`LossScaler`). Every ``validation_every`` steps
        the validation loss is recorded (before ``on_step``)."""
        params = self.params()
        s = self.settings
        with global_rng_of(self.global_rng), torch.inference_mode(False), torch.enable_grad():
            for _ in range(steps):
                if self.complete:
                    return False
                if should_stop is not None and world.any(should_stop()):
                    return True
                for group in self.optimizer.param_groups:
                    group["lr"] = self.current_lr(group.get("text_encoder", False)) * group.get("lr_mult", 1.0)
                total, finite = self.compute_gradients(model, world)
                if finite:
                    if s.max_grad_norm > 0:
                        torch.nn.utils.clip_grad_norm_(params, s.max_grad_norm)
                    self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                if self.ema is not None:
                    self.update_ema()
                self.step += 1
                self.losses.append(total)
                if s.validation_every and self.step % s.validation_every == 0 and self.validation_set():
                    self.val_losses.append((self.step, self.validate(model)))
                if on_step is not None:
                    on_step(self, total)
        return False
