"""Run config files (TOML, JSON, kohya's dataset config) read into the settings a run is made of,
refused by name where wrong, and exported from a training state; kohya-style subsets scanned."""
import json
import os

import pytest

from loralab.errors import FileExistsRefusedError, TrainingError
from loralab.train.checkpoint import read_state, save_checkpoint
from loralab.train.config import ModelFiles, config_data, load_config, to_toml, write_config
from loralab.train.dataset import DatasetSettings, Subset, build_dataset
from loralab.train.cache import TensorCache
from loralab.train.run import TrainSettings
from loralab_testkit.train_toys import FakeEncoders, ToyModel, make_dataset, make_run, train, write_caption, write_image

CONFIG = """
[model]
unet = "flux1-dev.safetensors"
weight_dtype = "fp8_e4m3fn"
vae = "ae.safetensors"
clip = ["clip_l.safetensors", "t5xxl_fp16.safetensors"]
clip_type = "flux"

[dataset]
folder = "images"
resolution = 1024
caption_extensions = [".txt"]
trigger_word = "sks"
flip = true

[train]
rank = 32
alpha = 16
learning_rate = 2e-4
total_steps = 1500
batch_size = 4
timestep_sampling = "shift"

[output]
name = "my_flux_lora"
folder = "out"
save_every = 250
"""


def write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


def test_a_toml_config_gives_the_model_dataset_settings_and_output(tmp_path):
    cfg = load_config(write(tmp_path / "run.toml", CONFIG))
    assert cfg.model.unet == "flux1-dev.safetensors" and cfg.model.clip == ("clip_l.safetensors", "t5xxl_fp16.safetensors")
    assert cfg.model.weight_dtype == "fp8_e4m3fn" and cfg.model.clip_type == "flux" and cfg.model.name == "flux1-dev.safetensors"
    assert cfg.dataset == str(tmp_path / "images")  # relative to the config's folder
    assert cfg.dataset_settings == DatasetSettings(resolution=1024, caption_extensions=(".txt",), trigger="sks", flip=True)
    assert cfg.settings == TrainSettings(rank=32, alpha=16.0, learning_rate=2e-4, total_steps=1500, batch_size=4,
                                         timestep_sampling="shift", name="my_flux_lora", save_every=250)
    assert cfg.output_folder == str(tmp_path / "out") and cfg.cache_folder == ""


def test_json_reads_like_toml(tmp_path):
    data = {"model": {"checkpoint": "/models/sd15.safetensors"}, "dataset": {"folder": "/data/set", "resolution": 512},
            "train": {"rank": 8, "total_steps": 10}}
    cfg = load_config(write(tmp_path / "run.json", json.dumps(data)))
    assert cfg.model.checkpoint == "/models/sd15.safetensors" and cfg.dataset == "/data/set"
    assert cfg.settings == TrainSettings(rank=8, total_steps=10) and cfg.dataset_settings.resolution == 512


def test_a_model_file_beside_the_config_is_found_by_its_relative_path(tmp_path):
    write(tmp_path / "sd15.safetensors", "x")
    cfg = load_config(write(tmp_path / "run.toml", '[model]\ncheckpoint = "sd15.safetensors"\n[dataset]\nfolder = "d"\n'))
    assert cfg.model.checkpoint == str(tmp_path / "sd15.safetensors")


@pytest.mark.parametrize("text, match", [
    ('[model]\ncheckpoint = "a"\n[dataset]\nfolder = "d"\n[train]\nrnak = 4\n', "unknown key in \\[train\\]: rnak"),
    ('[model]\ncheckpoint = "a"\n[dataset]\nfolder = "d"\n[train]\nrank = "4"\n', "train.rank must be int"),
    ('[model]\ncheckpoint = "a"\n[dataset]\nfolder = "d"\n[train]\nlearning_rate = true\n', "learning_rate must be float"),
    ('[model]\n[dataset]\nfolder = "d"\n', "either checkpoint or unet"),
    ('[model]\nunet = "u"\n[dataset]\nfolder = "d"\n', "unet needs vae and clip"),
    ('[model]\ncheckpoint = "a"\nvae = "v"\n[dataset]\nfolder = "d"\n', "a checkpoint brings its own"),
    ('[model]\ncheckpoint = "a"\n[dataset]\nresolution = 512\n', "exactly one of"),
    ('[model]\ncheckpoint = "a"\n[dataset]\nfolder = "d"\n[output]\nname = "x"\nrank = 3\n', "unknown key in \\[output\\]"),
    ('[model]\ncheckpoint = "a"\n[dataset]\nfolder = "d"\n[extra]\n', "unknown key in the config: extra"),
    ('[model]\ncheckpoint = "a"\n[dataset\n', "not valid TOML"),
])
def test_wrong_configs_are_refused_by_name(tmp_path, text, match):
    with pytest.raises(TrainingError, match=match) as e:
        load_config(write(tmp_path / "run.toml", text))
    assert "run.toml" in str(e.value)


KOHYA = """
[general]
shuffle_caption = true
caption_extension = ".txt"
keep_tokens = 1

[[datasets]]
resolution = [768, 512]
batch_size = 2
enable_bucket = true
min_bucket_reso = 256
max_bucket_reso = 1024

  [[datasets.subsets]]
  image_dir = "set/alice"
  class_tokens = "alice woman"
  num_repeats = 10

  [[datasets.subsets]]
  image_dir = "set/style"
  num_repeats = 2
  flip_aug = false
"""


def test_kohyas_dataset_config_maps_to_subsets_settings_and_batch(tmp_path):
    cfg = load_config(write(tmp_path / "inline.toml", KOHYA + '[model]\ncheckpoint = "m"\n'))
    assert cfg.dataset == (Subset(str(tmp_path / "set" / "alice"), 10, "alice woman"),
                           Subset(str(tmp_path / "set" / "style"), 2, ""))
    # [768, 512] is a bucket area of 627²
    assert cfg.dataset_settings == DatasetSettings(resolution=627, min_side=256, max_side=1024,
                                                   caption_extensions=(".txt",), shuffle_captions=True,
                                                   keep_tokens=1, flip=False)
    assert cfg.settings.batch_size == 2
    os.makedirs(tmp_path / "k")
    write(tmp_path / "k" / "dataset.toml", KOHYA)
    separate = load_config(write(tmp_path / "run.toml", '[model]\ncheckpoint = "m"\n[dataset]\nkohya = "k/dataset.toml"\n'
                                 'trigger_word = "sks"\n'))
    assert separate.dataset[0].folder == str(tmp_path / "k" / "set" / "alice")  # relative to the kohya file
    assert separate.dataset_settings.trigger == "sks" and separate.dataset_settings.keep_tokens == 1


@pytest.mark.parametrize("change, match", [
    (("num_repeats = 2\n  flip_aug = false", "num_repeats = 2\n  flip_aug = true\n  keep_tokens = 3"), "disagree on keep_tokens"),
    (("enable_bucket = true", "enable_bucket = true\ncolor_aug = true"), "color_aug"),
    (("enable_bucket = true", "bucket_reso_steps = 32"), "bucket_reso_steps = 32 is not supported"),
    (("num_repeats = 10", "num_repeats = 10\n  is_reg = true"), "is_reg"),
    (("[[datasets]]", "[[datasets]]\n[[datasets]]"), "exactly one \\[\\[datasets\\]\\]"),
])
def test_kohya_settings_lora_lab_cannot_follow_are_refused(tmp_path, change, match):
    with pytest.raises(TrainingError, match=match):
        load_config(write(tmp_path / "run.toml", KOHYA.replace(*change) + '[model]\ncheckpoint = "m"\n'))


def test_musubis_video_keys_set_the_clip_frames(tmp_path):
    video = KOHYA.replace("[[datasets]]", '[[datasets]]\ntarget_frames = [33]\nframe_extraction = "uniform"')
    cfg = load_config(write(tmp_path / "run.toml", video + '[model]\ncheckpoint = "m"\n'))
    assert (cfg.dataset_settings.frames, cfg.dataset_settings.frame_extraction) == (33, "uniform")
    single = load_config(write(tmp_path / "one.toml", KOHYA.replace("[[datasets]]", "[[datasets]]\ntarget_frames = 17")
                               + '[model]\ncheckpoint = "m"\n'))
    assert (single.dataset_settings.frames, single.dataset_settings.frame_extraction) == (17, "head")
    own = load_config(write(tmp_path / "own.toml", '[model]\ncheckpoint = "m"\n[dataset]\nfolder = "clips"\n'
                            'frames = 9\nframe_extraction = "uniform"\n'))
    assert (own.dataset_settings.frames, own.dataset_settings.frame_extraction) == (9, "uniform")


@pytest.mark.parametrize("keys, match", [
    ("target_frames = [1, 25, 45]", "target_frames = \\[1, 25, 45\\]: LoRA Lab trains one frame count per dataset"),
    ('frame_extraction = "slide"', "frame_extraction = 'slide' is not supported"),
    ('target_frames = "33"', "target_frames must be int"),
])
def test_musubi_video_settings_lora_lab_cannot_follow_are_refused(tmp_path, keys, match):
    with pytest.raises(TrainingError, match=match):
        load_config(write(tmp_path / "run.toml", KOHYA.replace("[[datasets]]", "[[datasets]]\n" + keys)
                          + '[model]\ncheckpoint = "m"\n'))


def test_a_batch_size_in_both_places_must_agree(tmp_path):
    with pytest.raises(TrainingError, match="batch_size 3 and kohya's batch_size 2 differ"):
        load_config(write(tmp_path / "run.toml", KOHYA + '[model]\ncheckpoint = "m"\n[train]\nbatch_size = 3\n'))


def test_subsets_scan_their_images_with_their_repeats_and_class_tokens(tmp_path):
    write_caption(write_image(str(tmp_path / "a" / "0.png"), 64, 64, seed=0), "red")
    write_image(str(tmp_path / "a" / "1.png"), 64, 64, seed=1)
    write_image(str(tmp_path / "b" / "2.png"), 64, 64, seed=2)
    enc = FakeEncoders()
    write_image(str(tmp_path / "c" / "3.png"), 64, 64, seed=3)
    ds = build_dataset((Subset(str(tmp_path / "a"), 3, "alice"), Subset(str(tmp_path / "b"), 1, "style"),
                        Subset(str(tmp_path / "c"), 0, "")),
                       DatasetSettings(resolution=64, min_side=64, max_side=64), TensorCache(str(tmp_path / "cache")),
                       encode_image=enc.encode_image, encode_text=enc.encode_text, encoders={"vae": "v", "clip": "c"})
    assert ds.folder == str(tmp_path)
    assert [(i.id, i.repeats, i.caption) for i in ds.items] == [("a/0.png", 3, "red"), ("a/1.png", 3, "alice"),
                                                                ("b/2.png", 1, "style")]
    assert ds.skipped == [("c/", "num_repeats 0: the folder is not used")]
    assert ds.num_entries == 7 and ds.dataset_dirs() == {"a": {"n_repeats": 3, "img_count": 2},
                                                         "b": {"n_repeats": 1, "img_count": 1}}


def test_a_states_config_exports_and_reads_back_as_the_same_run(tmp_path):
    ds = make_dataset(str(tmp_path / "data"), str(tmp_path / "cache"), trigger="sks")
    model = ToyModel()
    run = make_run(ds, model, lr_scheduler="cosine", save_every=5)
    train(run, model, 2)
    run.model_info["name"] = "toy.safetensors"
    _, state = save_checkpoint(run, str(tmp_path / "out"))
    _, meta = read_state(state)
    data = config_data(TrainSettings.from_json(meta["settings"]), meta["dataset"], meta["model"])
    for name in ("again.toml", "again.json"):
        cfg = load_config(write_config(str(tmp_path / name), data))
        assert cfg.settings == run.settings and cfg.dataset_settings == ds.settings
        assert cfg.dataset == ds.folder and cfg.model == ModelFiles(checkpoint="toy.safetensors")
    with pytest.raises(FileExistsRefusedError):
        write_config(str(tmp_path / "again.toml"), data)
    # the files a run recorded (the graph's loaders, or a config's [model]) are its [model]
    files = {"unet": "flux.safetensors", "weight_dtype": "fp8_e4m3fn", "vae": "ae.safetensors",
             "clip": ["clip_l.safetensors", "t5.safetensors"], "clip_type": "flux"}
    data = config_data(run.settings, meta["dataset"], {"name": "flux.safetensors", "files": files})
    cfg = load_config(write_config(str(tmp_path / "files.toml"), data))
    assert cfg.model == ModelFiles(unet="flux.safetensors", weight_dtype="fp8_e4m3fn", vae="ae.safetensors",
                                   clip=("clip_l.safetensors", "t5.safetensors"), clip_type="flux")


def test_a_run_on_kohya_subsets_exports_them_and_resumes_from_the_exported_config(tmp_path):
    for i, sub in enumerate(("a", "b")):
        for j in range(2):
            write_caption(write_image(str(tmp_path / "set" / sub / f"{j}.png"), 64, 64, seed=2 * i + j), f"tag {i}")
    write(tmp_path / "run.toml", KOHYA.replace("set/alice", "set/a").replace("set/style", "set/b")
          .replace("resolution = [768, 512]", "resolution = 64").replace("min_bucket_reso = 256", "min_bucket_reso = 64")
          .replace("max_bucket_reso = 1024", "max_bucket_reso = 64") + '[model]\ncheckpoint = "m"\n[train]\nrank = 4\n')
    cfg = load_config(str(tmp_path / "run.toml"))
    enc = FakeEncoders()
    ds = build_dataset(cfg.dataset, cfg.dataset_settings, TensorCache(str(tmp_path / "cache")),
                       encode_image=enc.encode_image, encode_text=enc.encode_text, encoders={"vae": "v", "clip": "c"})
    assert ds.num_entries == 2 * 10 + 2 * 2
    model = ToyModel()
    run = make_run(ds, model, **{k: v for k, v in cfg.settings.to_json().items() if k in ("rank", "batch_size")})
    train(run, model, 1)
    run.model_info["name"] = "toy.safetensors"
    _, state = save_checkpoint(run, str(tmp_path / "out"))
    _, meta = read_state(state)
    data = config_data(run.settings, meta["dataset"], meta["model"])
    assert "[[datasets.subsets]]" in to_toml(data)
    for name in ("exported.toml", "exported.json"):
        again = load_config(write_config(str(tmp_path / name), data))
        assert again.dataset == cfg.dataset and again.dataset_settings == cfg.dataset_settings
        assert again.settings == run.settings
        rebuilt = build_dataset(again.dataset, again.dataset_settings, TensorCache(str(tmp_path / "cache")),
                                encode_image=enc.encode_image, encode_text=enc.encode_text,
                                encoders={"vae": "v", "clip": "c"})
        assert rebuilt.fingerprint == ds.fingerprint  # the same dataset: the state resumes on it
