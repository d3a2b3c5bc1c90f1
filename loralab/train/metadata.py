"""The metadata of a trained LoRA: the ``ss_*`` fields kohya's trainer writes (what A1111/Forge,
Civitai, kohya's tools and ComfyUI's model library read) and SAI ``modelspec.*``, every value a
string, every value true of the run."""
from __future__ import annotations

import datetime as _dt
import json
import math
import time
from typing import Any, Mapping

import torch

from ..formats.writer import lora_metadata
from .run import TrainRun, batches_per_epoch

PREDICTION_TYPES = {"eps": "epsilon", "v": "v", "flow": "flow"}
OPTIMIZER_NAMES = {
    "adamw": "torch.optim.adamw.AdamW",
    "adamw8bit": "bitsandbytes.optim.adamw.AdamW8bit",
    "prodigy": "prodigyopt.prodigy.Prodigy",
    "adafactor": "transformers.optimization.Adafactor",
}


def _network_args(run: TrainRun) -> dict[str, str]:
    s = run.settings
    args = {"preset": s.targets}
    if s.blocks:
        args["blocks"] = s.blocks
    if s.algorithm in ("loha", "lokr"):
        args["algo"] = s.algorithm
        if s.algorithm == "lokr":
            args["factor"] = str(s.lokr_factor)
    elif s.algorithm == "dora":
        args.update(algo="lora", dora_wd="True")
    if s.algorithm == "locon" or s.targets == "all_linear_convs" or s.algorithm in ("loha", "lokr", "dora"):
        args.update(conv_dim=str(s.rank), conv_alpha=str(s.alpha))
    return args


def training_metadata(run: TrainRun, tensors: Mapping[str, torch.Tensor], *, title: str,
                      date: _dt.datetime | None = None) -> dict[str, str]:
    """ss_* and modelspec.* for a LoRA file holding ``tensors`` (kohya names) saved from ``run``."""
    s = run.settings
    ds = run.dataset
    info = run.model_info
    per_epoch = batches_per_epoch(ds, s.batch_size, run.train_indices)
    trained = range(len(ds.items)) if run.train_indices is None else run.train_indices
    epochs = math.ceil(s.total_steps * s.grad_accumulation / max(1, per_epoch))
    weight_dtype = str(info.get("weight_dtype", ""))
    mode = run.attachments.get("memory_mode")  # the memory mode the run was planned with (host)
    fp8 = weight_dtype.startswith("torch.float8") or getattr(mode, "base_dtype", "") == "fp8"
    extra: dict[str, Any] = {
        "ss_session_id": int(run.run_id[:8], 16),
        "ss_training_started_at": run.started_at,
        "ss_training_finished_at": time.time(),
        "ss_learning_rate": s.learning_rate,
        "ss_unet_lr": s.learning_rate,
        "ss_text_encoder_lr": s.text_encoder_lr or None,
        "ss_network_train_unet_only": not run.trains_text_encoder,
        "ss_num_train_images": sum(ds.items[i].repeats for i in trained),
        "ss_num_reg_images": 0,
        "ss_num_batches_per_epoch": per_epoch,
        "ss_num_epochs": epochs,
        "ss_gradient_checkpointing": mode.checkpointing if mode is not None else s.gradient_checkpointing,
        "ss_gradient_accumulation_steps": s.grad_accumulation,
        "ss_max_train_steps": s.total_steps,
        "ss_lr_warmup_steps": s.warmup_steps,
        "ss_lr_scheduler": s.lr_scheduler,
        "ss_network_dropout": None,
        "ss_network_args": json.dumps(_network_args(run)),
        "ss_mixed_precision": run.precision if run.precision != "fp32" else "no",
        "ss_full_fp16": False,
        "ss_clip_skip": None,
        "ss_max_token_length": None,
        "ss_cache_latents": True,
        "ss_seed": s.seed,
        "ss_lowram": False,
        "ss_noise_offset": s.noise_offset or None,
        "ss_multires_noise_iterations": None,
        "ss_multires_noise_discount": None,
        "ss_adaptive_noise_scale": None,
        "ss_zero_terminal_snr": bool(info.get("zsnr", False)),
        "ss_training_comment": "trained in ComfyUI with LoRA Lab",
        "ss_optimizer": f"{OPTIMIZER_NAMES[s.optimizer]}(weight_decay={s.weight_decay})",
        "ss_max_grad_norm": s.max_grad_norm,
        "ss_caption_dropout_rate": ds.settings.caption_dropout,
        "ss_caption_dropout_every_n_epochs": 0,
        "ss_caption_tag_dropout_rate": 0.0,
        "ss_face_crop_aug_range": None,
        "ss_prior_loss_weight": 1.0,
        "ss_min_snr_gamma": s.min_snr_gamma or None,
        "ss_scale_weight_norms": None,
        "ss_ip_noise_gamma": None,
        "ss_debiased_estimation": False,
        "ss_loss_type": "l2",
        "ss_fp8_base": fp8,
        "ss_fp8_base_unet": fp8,
        "ss_batch_size_per_device": s.batch_size,
        "ss_total_batch_size": s.batch_size * s.grad_accumulation,
        "ss_color_aug": False,
        "ss_flip_aug": ds.settings.flip,
        "ss_random_crop": False,
        "ss_shuffle_caption": ds.settings.shuffle_captions,
        "ss_enable_bucket": True,
        "ss_bucket_no_upscale": True,
        "ss_min_bucket_reso": ds.settings.min_side,
        "ss_max_bucket_reso": ds.settings.max_side,
        "ss_keep_tokens": ds.settings.keep_tokens,
        "ss_dataset_dirs": json.dumps(ds.dataset_dirs()),
        "ss_reg_dataset_dirs": json.dumps({}),
        "ss_tag_frequency": json.dumps(ds.tag_frequency()),
        "ss_bucket_info": json.dumps(ds.bucket_info()),
        "ss_sd_model_name": info.get("name") or "unknown",
        "ss_steps": run.step,
        "ss_epoch": run.order.epoch,
    }
    if s.validation_split:
        extra.update(ss_validation_split=s.validation_split, ss_validation_seed=s.validation_seed)
    if s.algorithm == "dora":
        extra["ss_network_module"] = "lycoris.kohya"
    if run.kind == "flow":
        extra.update({
            "ss_guidance_scale": s.guidance,
            "ss_timestep_sampling": s.timestep_sampling,
            "ss_sigmoid_scale": s.sigmoid_scale,
            "ss_discrete_flow_shift": s.shift,
            "ss_logit_mean": s.logit_mean,
            "ss_logit_std": s.logit_std,
            "ss_model_prediction_type": "raw",
            "ss_weighting_scheme": "none",
        })
    res = ds.settings.resolution
    return lora_metadata(info["arch"], tensors, title=title, resolution=(res, res),
                         prediction_type=PREDICTION_TYPES.get(run.kind), trigger_phrase=ds.settings.trigger or None,
                         extra={k: str(v) for k, v in extra.items()}, date=date)
