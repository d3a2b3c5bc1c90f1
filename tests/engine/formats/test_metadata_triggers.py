"""Typed metadata, the training summary and trigger words, on the trainers' real metadata
(tests/fixtures/metadata)."""
from loralab.formats.metadata import folder_images, parse_metadata, training_summary, typed_value
from loralab.formats.triggers import class_tokens, find_triggers, trigger_words
from loralab_testkit import fixture


def meta(name):
    return parse_metadata(fixture("metadata", name)["metadata"])


def test_typed_values():
    assert typed_value("ss_network_dim", "16") == 16
    assert typed_value("ss_network_alpha", "8.0") == 8.0
    assert typed_value("ss_learning_rate", "5e-05") == 5e-05
    assert typed_value("ss_network_dropout", "None") is None
    assert typed_value("ss_cache_latents", "True") is True
    assert typed_value("ss_resolution", "(512, 512)") == [512, 512]
    assert typed_value("ss_network_dim", "Dynamic") == "Dynamic"
    assert typed_value("ss_sd_model_hash", "12345678") == "12345678"  # hashes and names stay text
    assert typed_value("ss_output_name", "1234") == "1234"


def test_kohya_sd15_metadata_is_split_and_decoded():
    md = meta("kohya_sd15_train_network")
    assert md.get("ss_tag_frequency")["10_ohwx woman"]["ohwx woman"] == 25
    assert md.get("ss_dataset_dirs") == {"10_ohwx woman": {"n_repeats": 10, "img_count": 25}}
    assert md.get("ss_bucket_info")["buckets"]["2"] == {"resolution": [512, 512], "count": 100}
    assert md.get("ss_network_args") is None and md.get("ss_reg_dataset_dirs") == {}
    assert md.modelspec["architecture"] == "stable-diffusion-v1/lora"
    assert md.get("sshs_legacy_hash") == "de2f2560"
    assert not md.other and not md.errors and not md.aitoolkit
    assert len(md.kohya) + len(md.modelspec) == len(md.raw) == 94


def test_kohya_sd15_training_summary():
    t = training_summary(meta("kohya_sd15_train_network"))
    assert t.trainer == "kohya sd-scripts 48d368fa55"
    assert (t.steps, t.max_steps, t.epochs, t.max_epochs) == (1280, 1280, 10, 10)
    assert t.resolution == "512x512"
    assert (t.images, t.train_images, t.reg_images, t.batch_size) == (25, 250, 0, 2)
    assert (t.optimizer, t.optimizer_args) == ("AdamW8bit", None)
    assert (t.learning_rate, t.unet_lr, t.text_encoder_lr) == (1e-4, 1e-4, 5e-5)
    assert (t.network_module, t.network_dim, t.network_alpha) == ("networks.lora", 16, 8.0)
    assert t.base_model == "v1-5-pruned-emaonly.safetensors" and t.base_model_version == "sd_v1"
    assert t.started_at == "2026-03-01 00:00:00 UTC" and t.finished_at == "2026-03-01 00:30:43 UTC"
    assert t.title == "ohwx_woman_sd15" and t.seed == 42 and t.lr_scheduler == "cosine"


def test_kohya_flux_dataset_config_summary():
    md = meta("kohya_flux_train_network")
    t = training_summary(md)
    assert t.resolution == "1024x1024"  # from ss_datasets: this run has no ss_resolution
    assert (t.images, t.train_images, t.steps, t.epochs, t.batch_size) == (40, 400, 1600, 10, 2)
    assert t.network_args == {"train_blocks": "all"} and t.network_module == "networks.lora_flux"
    assert folder_images(md) == {"ohwx_woman": 40}


def test_aitoolkit_training_summary():
    md = meta("aitoolkit_flux")
    assert md.software_name == "ai-toolkit"
    assert md.aitoolkit["training_info"] == {"step": 2000, "epoch": 99}
    assert md.other == {"format": "pt"}
    t = training_summary(md)
    assert t.trainer == "ai-toolkit 0.12.26"
    assert (t.steps, t.epochs, t.title) == (2000, 99, "my_first_flux_lora_v1")
    assert t.base_model_version == "flux.1" and t.network_module is None


def test_bad_json_is_kept_raw_and_named():
    md = parse_metadata({"ss_tag_frequency": "{not json", "software": "{\"name\": 1", "custom": "x"})
    assert md.get("ss_tag_frequency") == "{not json"
    assert set(md.errors) == {"ss_tag_frequency", "software"}
    assert md.other == {"custom": "x"}
    assert find_triggers(md) == []
    assert training_summary(parse_metadata({})).is_empty()


def test_class_tokens_of_folder_names():
    assert class_tokens("10_ohwx woman") == "ohwx woman"
    assert class_tokens("1_p3r5on") == "p3r5on"
    assert class_tokens("ohwx_woman") is None
    assert class_tokens("5_") is None


def _by_kind(triggers):
    out = {}
    for t in triggers:
        out.setdefault(t.kind, []).append(t)
    return out


def test_kohya_dreambooth_triggers_with_sources():
    triggers = find_triggers(meta("kohya_sd15_train_network"))
    kinds = _by_kind(triggers)
    assert [(t.word, t.source) for t in kinds["class_tokens"]] == [
        ("ohwx woman", 'ss_dataset_dirs folder "10_ohwx woman"')]
    tags = kinds["tag"]
    assert [t.word for t in tags[:3]] == ["ohwx woman", "1girl", "solo"]  # ranked by count
    assert all(t.source == 'ss_tag_frequency["10_ohwx woman"]' and t.images == 25 for t in tags)
    assert [t.word for t in tags if t.likely] == ["ohwx woman"]  # the only tag in every caption
    assert [(t.word, t.source) for t in kinds["output_name"]] == [("ohwx_woman_sd15", "ss_output_name")]
    assert trigger_words(triggers) == ["ohwx woman"]


def test_dataset_config_class_tokens():
    kinds = _by_kind(find_triggers(meta("kohya_flux_train_network")))
    assert [(t.word, t.source) for t in kinds["class_tokens"]] == [
        ("ohwx woman", "ss_datasets[0].subsets[0].class_tokens")]
    assert kinds["tag"][0].word == "ohwx woman" and kinds["tag"][0].count == 40 and kinds["tag"][0].likely


def test_aitoolkit_trigger():
    triggers = find_triggers(meta("aitoolkit_flux"))
    kinds = _by_kind(triggers)
    assert [(t.word, t.source) for t in kinds["aitoolkit_trigger"]] == [
        ("p3r5on", 'ss_tag_frequency["1_p3r5on"] (ai-toolkit)')]
    assert trigger_words(triggers) == ["p3r5on"]


def test_modelspec_trigger_phrase_comes_first():
    raw = dict(fixture("metadata", "kohya_sd15_train_network")["metadata"],
               **{"modelspec.trigger_phrase": "OHWX Woman"})
    triggers = find_triggers(parse_metadata(raw))
    assert (triggers[0].word, triggers[0].kind, triggers[0].source) == (
        "OHWX Woman", "trigger_phrase", "modelspec.trigger_phrase")
    assert trigger_words(triggers) == ["OHWX Woman"]  # "ohwx woman" from the folder is the same word


def test_non_finite_numbers_never_reach_json(tmp):
    import json
    import os

    import torch

    from loralab.ops.inspect import summarize
    from loralab.files.safetensors import save_tensors
    meta = {"ss_learning_rate": "nan", "ss_unet_lr": "1e999", "ss_tag_frequency": '{"1_x": {"x": NaN}}',
            "training_info": '{"step": Infinity}', "software": '{"name": "ai-toolkit"}'}
    md = parse_metadata(meta)
    assert md.get("ss_learning_rate") == "nan" and md.get("ss_unet_lr") == "1e999"
    assert set(md.errors) == {"ss_tag_frequency", "training_info"}
    t = {"lora_unet_x.lora_up.weight": torch.randn(4, 2), "lora_unet_x.lora_down.weight": torch.randn(2, 4),
         "lora_unet_x.alpha": torch.tensor(float("nan"))}
    path = save_tensors(os.path.join(tmp, "n.safetensors"), t, meta)
    json.dumps(summarize(path).to_dict(), allow_nan=False)


def test_network_module_names_the_lycoris_algorithm():
    for name, algo in (("lycoris_sd15_loha", "loha"), ("lycoris_sd15_lokr", "lokr"), ("lycoris_sd15_locon_dora", "locon")):
        t = training_summary(parse_metadata(fixture("loras", name)["metadata"]))
        assert (t.network_module, t.network_algo) == ("lycoris.kohya", algo), name
    t = training_summary(meta("kohya_sd15_train_network"))
    assert (t.network_module, t.network_algo) == ("networks.lora", None)
    t = training_summary(parse_metadata({"ss_network_module": "lycoris.kohya", "ss_network_args": '{"algo": 7}'}))
    assert (t.network_module, t.network_algo) == ("lycoris.kohya", None)  # an algo that is no text is left out


def test_base_checkpoint_from_each_trainer():
    assert training_summary(meta("kohya_sd15_train_network")).base_model == "v1-5-pruned-emaonly.safetensors"
    aitoolkit = dict(fixture("metadata", "aitoolkit_flux")["metadata"], ss_base_model="black-forest-labs/FLUX.1-dev")
    t = training_summary(parse_metadata(aitoolkit))
    assert (t.base_model, t.base_model_version) == ("black-forest-labs/FLUX.1-dev", "flux.1")
    t = training_summary(parse_metadata({"modelspec.architecture": "stable-diffusion-xl-v1-base/lora"}))
    assert (t.base_model, t.base_model_version) == (None, "stable-diffusion-xl-v1-base/lora")


def test_diffusers_peft_config_gives_module_rank_alpha_and_base():
    """diffusers' lora_adapter_metadata: the PEFT LoraConfig, flat or packed per component."""
    import json
    config = {"r": 4, "lora_alpha": 8, "peft_type": "LORA", "use_dora": False, "target_modules": ["to_q", "to_k"],
              "base_model_name_or_path": "stabilityai/stable-diffusion-xl-base-1.0"}
    md = parse_metadata({"format": "pt", "lora_adapter_metadata": json.dumps(config)})
    assert md.diffusers == config and md.other == {"format": "pt"} and not md.errors
    t = training_summary(md)
    assert (t.network_module, t.network_algo, t.network_dim, t.network_alpha) == ("peft", "lora", 4, 8.0)
    assert t.base_model == "stabilityai/stable-diffusion-xl-base-1.0" and t.trainer == "diffusers (PEFT)"
    packed = {"text_encoder.r": 2, "transformer.r": 16, "transformer.lora_alpha": 16, "transformer.use_dora": True}
    t = training_summary(parse_metadata({"lora_adapter_metadata": json.dumps(packed)}))
    assert (t.network_module, t.network_algo, t.network_dim, t.network_alpha) == ("peft", "dora", 16, 16.0)
    md = parse_metadata({"lora_adapter_metadata": "[1, 2]"})
    assert md.diffusers == {} and md.other == {"lora_adapter_metadata": "[1, 2]"} and "not an object" in md.errors[
        "lora_adapter_metadata"]
    assert training_summary(md).network_module is None


def test_top_tags_sum_every_folder():
    from loralab.formats.triggers import tag_summary
    s = tag_summary(meta("kohya_sd15_train_network"))
    assert s.top == [("ohwx woman", 25), ("1girl", 23), ("solo", 22), ("long hair", 17), ("looking at viewer", 14),
                     ("brown hair", 13), ("smile", 11), ("upper body", 9)]
    assert (s.distinct, s.folders, s.skipped, s.problem) == (12, 1, 0, None)
    two = parse_metadata({"ss_tag_frequency": '{"5_a": {"x": 3, "y": 4, "b": 1}, "2_b": {"x": 2, "b": 3, "c": 9}}'})
    s = tag_summary(two, limit=3)
    assert s.top == [("c", 9), ("x", 5), ("b", 4)] and (s.distinct, s.folders) == (4, 2)  # b (4) before y (4)


def test_hostile_tag_frequency_gives_a_partial_answer():
    """Whatever shape ss_tag_frequency has, the tags that are tag: count are counted, the rest is
    counted as skipped, and a field that cannot be read at all says why; nothing raises."""
    import json

    from loralab.formats.triggers import tag_frequency, tag_folders, tag_summary

    def summary(text):
        md = parse_metadata({"ss_tag_frequency": text})
        find_triggers(md)
        return tag_summary(md)

    mixed = {"1_a": {"good": 3, "str": "7", "bool": True, "neg": -1, "list": [1], "null": None, "float": 2.9,
                     "huge": 10**30, "inf": 1e999}, "2_b": [1, 2], "3_c": "x", "4_d": {"good": 1}}
    s = summary(json.dumps(mixed).replace("Infinity", "1e999"))
    assert s.top == [("good", 4), ("float", 2)] and s.skipped == 9 and s.problem is None
    s = summary("{not json")
    assert s.top == [] and s.problem.startswith("ss_tag_frequency is not valid JSON")
    s = summary("[[1, 2]]")
    assert s.top == [] and s.problem == "ss_tag_frequency is a JSON list, not {folder: {tag: count}}"
    s = summary("[" * 100000 + "]" * 100000)
    assert s.top == [] and "not valid JSON" in s.problem
    s = summary('{"1_x": {"a": NaN}}')
    assert s.problem.startswith("ss_tag_frequency is not valid JSON")
    assert summary("None") == summary("{}") == type(s)([], 0, 0)
    many = {f"{i}_f": {f"tag{j}": j + i for j in range(2000)} for i in range(50)}
    md = parse_metadata({"ss_tag_frequency": json.dumps(many)})
    s = tag_summary(md)
    assert s.top[0] == ("tag1999", sum(1999 + i for i in range(50))) and len(s.top) == 8 and s.distinct == 2000
    table = tag_frequency(tag_folders(md), {"0_f": 12})
    assert table[0]["folder"] == "0_f" and table[0]["images"] == 12 and table[1]["images"] is None
    assert table[0]["tags"][0] == {"tag": "tag1999", "count": 1999} and len(table[0]["tags"]) == 2000


def test_numbers_too_large_for_a_float_stay_text():
    """1e999 in a JSON field would be infinite: it stays text, and image counts and steps built from
    it are left out instead of raising."""
    md = parse_metadata({"ss_dataset_dirs": '{"10_x": {"img_count": 1e999, "n_repeats": 10}}',
                         "training_info": '{"step": 1e999, "epoch": 2}', "software": '{"name": "ai-toolkit"}',
                         "ss_network_args": '{"conv_alpha": -1e999}', "ss_network_alpha": "1e999"})
    assert md.get("ss_dataset_dirs")["10_x"]["img_count"] == "1e999" and not md.errors
    t = training_summary(md)
    assert (t.images, t.steps, t.epochs, t.network_alpha) == (None, None, 2, "1e999")
    assert t.network_args == {"conv_alpha": "-1e999"}
