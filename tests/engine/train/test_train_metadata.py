"""Trained-LoRA metadata: every value a string, the keys kohya's readers and SAI model spec
readers look for, and values true of the run."""
import json

import pytest

from loralab.train.checkpoint import lora_tensors
from loralab.train.metadata import training_metadata
from loralab_testkit.train_toys import ToyModel, make_dataset, make_run, one_thread, train  # noqa: F401 (fixture)

#: keys kohya's trainer writes that A1111/Forge, Civitai and kohya's tools read
KOHYA_KEYS = [
    "ss_session_id", "ss_training_started_at", "ss_training_finished_at", "ss_output_name", "ss_learning_rate",
    "ss_unet_lr", "ss_text_encoder_lr", "ss_num_train_images", "ss_num_reg_images", "ss_num_batches_per_epoch",
    "ss_num_epochs", "ss_gradient_checkpointing", "ss_gradient_accumulation_steps", "ss_max_train_steps",
    "ss_lr_warmup_steps", "ss_lr_scheduler", "ss_network_module", "ss_network_dim", "ss_network_alpha",
    "ss_network_args", "ss_mixed_precision", "ss_v2", "ss_base_model_version", "ss_clip_skip", "ss_cache_latents",
    "ss_seed", "ss_noise_offset", "ss_optimizer", "ss_max_grad_norm", "ss_caption_dropout_rate",
    "ss_min_snr_gamma", "ss_batch_size_per_device", "ss_total_batch_size", "ss_resolution", "ss_flip_aug",
    "ss_shuffle_caption", "ss_enable_bucket", "ss_bucket_no_upscale", "ss_min_bucket_reso", "ss_max_bucket_reso",
    "ss_keep_tokens", "ss_dataset_dirs", "ss_reg_dataset_dirs", "ss_tag_frequency", "ss_bucket_info",
    "ss_sd_model_name", "ss_steps", "ss_epoch",
]
MODELSPEC_KEYS = ["modelspec.sai_model_spec", "modelspec.architecture", "modelspec.implementation", "modelspec.title",
                  "modelspec.date", "modelspec.resolution", "modelspec.prediction_type", "modelspec.trigger_phrase"]


@pytest.mark.parametrize("algorithm,module,dim", [("lora", "networks.lora", "4"), ("loha", "lycoris.kohya", "4"),
                                                  ("dora", "lycoris.kohya", "4")])
def test_metadata_strings_and_kohya_keys(tmp_path, algorithm, module, dim):
    ds = make_dataset(str(tmp_path / "data"), str(tmp_path / "cache"), trigger="sks", flip=True)
    model = ToyModel()
    run = make_run(ds, model, algorithm=algorithm, learning_rate=1e-3, total_steps=10, batch_size=2)
    run.model_info["name"] = "tiny.safetensors"
    train(run, model, 3)
    meta = training_metadata(run, lora_tensors(run), title="my lora")
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
    missing = [k for k in KOHYA_KEYS + MODELSPEC_KEYS if k not in meta]
    assert not missing, missing
    assert meta["ss_network_module"] == module and meta["ss_network_dim"] == dim and meta["ss_network_alpha"] == "4.0"
    assert meta["ss_steps"] == "3" and meta["ss_max_train_steps"] == "10" and meta["ss_epoch"] == "2"
    assert meta["ss_num_train_images"] == "4" and meta["ss_num_batches_per_epoch"] == "2"
    assert meta["ss_resolution"] == "(64, 64)" and meta["modelspec.resolution"] == "64x64"
    assert meta["ss_base_model_version"] == "sd_v1" and meta["ss_v2"] == "False"
    assert meta["modelspec.trigger_phrase"] == "sks" and meta["modelspec.prediction_type"] == "epsilon"
    assert meta["ss_sd_model_name"] == "tiny.safetensors" and meta["ss_flip_aug"] == "True"
    assert meta["ss_optimizer"] == "torch.optim.adamw.AdamW(weight_decay=0.01)"
    tags = json.loads(meta["ss_tag_frequency"])
    assert tags == {"data": {"sks": 4, "red": 1, "round": 1, "blue": 1, "square": 1, "green": 1, "tall": 1,
                             "yellow": 1, "wide": 1}}
    assert json.loads(meta["ss_dataset_dirs"]) == {"data": {"n_repeats": 1, "img_count": 4}}
    buckets = json.loads(meta["ss_bucket_info"])
    assert buckets["buckets"] == {"0": {"resolution": [64, 64], "count": 4}}
    args = json.loads(meta["ss_network_args"])
    assert args["preset"] == "all_linear_convs" and args["conv_dim"] == "4"
    if algorithm == "dora":
        assert args["dora_wd"] == "True" and args["algo"] == "lora"
