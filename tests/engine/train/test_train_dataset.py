"""Datasets: bucketing (right aspect, never upscaled), caption processing, folder scanning, bad
files, and the on-disk cache."""
import math
import os
import random

import pytest
from hypothesis import given, settings, strategies as st

from loralab.errors import DatasetError
from loralab.train.cache import TensorCache, cache_key
from loralab.train.dataset import (BUCKET_STEP, DatasetSettings, apply_trigger, build_dataset, caption_tags,
                                   caption_variants, place_image, read_caption, scan_folder, shuffle_caption)
from loralab_testkit.train_toys import FakeEncoders, png_header_only, write_caption, write_image


@settings(max_examples=400, deadline=None)
@given(st.integers(64, 8000), st.integers(64, 8000), st.sampled_from([512, 768, 1024]),
       st.sampled_from([64, 256]), st.sampled_from([1024, 2048]))
def test_every_image_lands_in_a_bucket_of_its_aspect_without_upscaling(w, h, res, min_side, max_side):
    p = place_image(w, h, res, min_side, max_side)
    if isinstance(p, str):
        # skipped only when its largest possible bucket is too small
        scale = min(1.0, math.sqrt(res * res / (w * h)), max_side / max(w, h))
        assert min(round(w * scale), round(h * scale)) < max(BUCKET_STEP, min_side) + BUCKET_STEP
        assert "never upscaled" in p
        return
    (rw, rh), (bw, bh), (cx, cy) = p.resized, p.bucket, p.crop
    assert rw <= w and rh <= h  # never upscaled
    assert bw % BUCKET_STEP == 0 and bh % BUCKET_STEP == 0
    assert 0 <= rw - bw < BUCKET_STEP and 0 <= rh - bh < BUCKET_STEP  # only a sub-step crop
    assert min(bw, bh) >= max(min_side, BUCKET_STEP) and max(bw, bh) <= max_side
    assert bw * bh <= res * res
    assert 0 <= cx <= rw - bw and 0 <= cy <= rh - bh
    # the resize keeps the aspect (to rounding) and the crop moves it by under one step per side
    assert abs(rw / rh - w / h) <= (w / h) * (1 / rh + 1 / rw) * 1.01
    bound = math.log(rw / (rw - (rw - bw))) + math.log(rh / (rh - (rh - bh))) + 2 / min(rw, rh)
    assert abs(math.log(bw / bh) - math.log(w / h)) <= bound + 1e-9


def test_bucket_examples():
    assert place_image(512, 512, 512, 256, 1024).bucket == (512, 512)
    assert place_image(1024, 1024, 512, 256, 1024).resized == (512, 512)
    p = place_image(1000, 600, 512, 256, 1024)  # 600k px > 512²: scaled to 661x397
    assert p.resized == (661, 397) and p.bucket == (640, 384) and p.crop == (10, 6)
    assert place_image(700, 300, 1024, 256, 1024).bucket == (640, 256)  # small image: crop only
    assert "too small" in place_image(200, 900, 512, 256, 1024)


def test_trigger_and_captions():
    assert apply_trigger("[trigger] in a garden", "sks") == ("sks in a garden", False)
    assert apply_trigger("a dog, grass", "sks") == ("sks, a dog, grass", True)
    assert apply_trigger("photo of SKS dog", "sks") == ("photo of SKS dog", False)
    assert apply_trigger("", "sks") == ("sks", True)
    assert apply_trigger("sksx, a dog", "sks") == ("sks, sksx, a dog", True)  # whole words only
    assert apply_trigger("[Trigger], red", "") == (", red", False)
    assert caption_tags(" a, b ,, c ") == ["a", "b", "c"]


def test_shuffle_keeps_tokens_and_variants_are_distinct():
    cap = "sks, red, blue, green, yellow, pink"
    for seed in range(20):
        out = shuffle_caption(cap, 2, random.Random(seed)).split(", ")
        assert out[:2] == ["sks", "red"] and sorted(out[2:]) == sorted(["blue", "green", "yellow", "pink"])
    s = DatasetSettings(shuffle_captions=True, shuffle_variants=4)
    variants = caption_variants(cap, s, prepended=True)
    assert len(variants) == len(set(variants)) and 1 < len(variants) <= 4
    assert all(v.startswith("sks, ") for v in variants)  # a prepended trigger stays first
    assert caption_variants(cap, s, prepended=True) == variants  # deterministic
    assert caption_variants(cap, DatasetSettings(), prepended=False) == [cap]


def test_read_caption_extension_order(tmp):
    img = write_image(os.path.join(tmp, "a.png"), 64, 64)
    assert read_caption(img, (".txt", ".caption")) is None
    write_caption(img, "from  caption\nfile", ".caption")
    assert read_caption(img, (".txt", ".caption")) == "from caption file"
    write_caption(img, "from txt")
    assert read_caption(img, (".txt", ".caption")) == "from txt"
    assert read_caption(img, ("caption",)) == "from caption file"


def _folder(tmp):
    root = os.path.join(tmp, "data")
    write_caption(write_image(os.path.join(root, "top.png"), 128, 64, 1), "a red thing, outdoors")
    write_caption(write_image(os.path.join(root, "3_sks dog", "d1.png"), 64, 64, 2), "[trigger] sitting, grass")
    write_image(os.path.join(root, "3_sks dog", "d2.jpg"), 96, 64, 3)  # no caption: folder name
    write_caption(write_image(os.path.join(root, "plain", "p.webp"), 64, 128, 4), "tall, outdoors")
    write_image(os.path.join(root, "0_unused", "x.png"), 64, 64, 5)
    write_image(os.path.join(root, ".loralab_cache", "ignored.png"), 64, 64, 6)
    with open(os.path.join(root, "broken.png"), "wb") as f:
        f.write(b"this is not an image")
    png_header_only(os.path.join(root, "bomb.png"), 30000, 30000)
    png_header_only(os.path.join(root, "big.png"), 10000, 9000)
    full = write_image(os.path.join(root, "cut.png"), 256, 256, 7)
    with open(full, "r+b") as f:
        f.truncate(os.path.getsize(full) // 2)
    write_image(os.path.join(root, "tiny.png"), 40, 200, 8)
    return root


def test_scan_folder(tmp):
    root = _folder(tmp)
    entries, skipped = scan_folder(root)
    ids = {e.id: e for e in entries}
    assert set(ids) == {"top.png", "broken.png", "bomb.png", "big.png", "cut.png", "tiny.png",
                        "3_sks dog/d1.png", "3_sks dog/d2.jpg", "plain/p.webp"}
    assert ids["3_sks dog/d1.png"].repeats == 3 and ids["3_sks dog/d1.png"].class_tokens == "sks dog"
    assert ids["plain/p.webp"].repeats == 1 and ids["top.png"].dir == "data"
    assert skipped == [("0_unused/", "repeat count 0: the folder is not used")]


def _build(root, cache_dir, enc, **kw):
    s = DatasetSettings(resolution=128, min_side=64, max_side=256, trigger="sks", **kw)
    return build_dataset(root, s, TensorCache(cache_dir), encode_image=enc.encode_image, encode_text=enc.encode_text,
                         encoders={"vae": "vae-1", "clip": "clip-1"})


def test_build_reports_every_bad_file_and_keeps_the_others(tmp):
    root = _folder(tmp)
    enc = FakeEncoders()
    ds = _build(root, os.path.join(tmp, "cache"), enc)
    assert sorted(i.id for i in ds.items) == ["3_sks dog/d1.png", "3_sks dog/d2.jpg", "plain/p.webp", "top.png"]
    reasons = dict(ds.skipped)
    assert "unreadable image" in reasons["broken.png"]
    assert "decompression-bomb" in reasons["bomb.png"] and "decompression-bomb" in reasons["big.png"]
    assert reasons["big.png"] == "10000x9000 px is over the 89,478,485 pixel limit (decompression-bomb guard)"
    assert "unreadable image" in reasons["cut.png"]
    assert "too small" in reasons["tiny.png"]
    assert reasons["0_unused/"].startswith("repeat count 0")
    items = {i.id: i for i in ds.items}
    assert items["3_sks dog/d1.png"].caption == "sks sitting, grass"
    assert items["3_sks dog/d2.jpg"].caption == "sks dog" and items["3_sks dog/d2.jpg"].caption_missing
    assert items["top.png"].caption == "sks, a red thing, outdoors"
    assert ds.num_entries == 3 + 3 + 1 + 1
    assert ds.latent(0).shape[0] == 4
    assert ds.tag_frequency() == {"3_sks dog": {"sks sitting": 1, "grass": 1, "sks dog": 1},
                                  "plain": {"sks": 1, "tall": 1, "outdoors": 1},
                                  "data": {"sks": 1, "a red thing": 1, "outdoors": 1}}
    assert ds.dataset_dirs() == {"3_sks dog": {"n_repeats": 3, "img_count": 2}, "data": {"n_repeats": 1, "img_count": 1},
                                 "plain": {"n_repeats": 1, "img_count": 1}}
    text = ds.summary()
    for needle in ("4 images (8 per epoch", "captions missing: 1", "3_sks dog/d2.jpg", "bomb.png:", "skipped 6:"):
        assert needle in text, needle


def test_cache_is_reused_and_keyed_by_content(tmp):
    root = os.path.join(tmp, "data")
    a = write_image(os.path.join(root, "a.png"), 128, 128, 1)
    write_caption(a, "red")
    write_image(os.path.join(root, "b.png"), 64, 128, 2)
    cache = os.path.join(tmp, "cache")
    enc = FakeEncoders()
    first = _build(root, cache, enc, flip=True)
    assert (enc.images, enc.texts) == (4, 2) and first.encoded == 6 and first.reused == 0
    again = _build(root, cache, enc, flip=True)
    assert (enc.images, enc.texts) == (4, 2) and again.reused == 6
    assert again.fingerprint == first.fingerprint
    write_caption(a, "blue")
    changed = _build(root, cache, enc, flip=True)
    assert (enc.images, enc.texts) == (4, 3)
    assert changed.fingerprint != first.fingerprint
    fp_then, fp_now = first.item_fingerprints(), changed.item_fingerprints()
    assert fp_then["b.png"] == fp_now["b.png"] and fp_then["a.png"] != fp_now["a.png"]
    s = DatasetSettings(resolution=128, min_side=64, max_side=256, trigger="sks", flip=True)
    other_vae = build_dataset(root, s, TensorCache(cache), encode_image=enc.encode_image,
                              encode_text=enc.encode_text, encoders={"vae": "vae-2", "clip": "clip-1"})
    assert enc.images == 8 and other_vae.reused == 2
    # flipped latents are the mirror image
    assert (first.latent(0, flipped=True) - first.latent(0).flip(-1)).abs().max() < 1e-6


def test_unreadable_cache_entry_is_rewritten(tmp):
    root = os.path.join(tmp, "data")
    write_image(os.path.join(root, "a.png"), 64, 64)
    enc = FakeEncoders()
    ds = _build(root, os.path.join(tmp, "cache"), enc)
    with open(ds.cache.path(ds.items[0].latents[0]), "wb") as f:
        f.write(b"garbage")
    _build(root, os.path.join(tmp, "cache"), enc)
    assert enc.images == 2
    assert ds.latent(0).shape == (4, 8, 8)


def test_empty_missing_and_all_bad_folders(tmp):
    with pytest.raises(DatasetError, match="does not exist"):
        _build(os.path.join(tmp, "nope"), tmp, FakeEncoders())
    os.makedirs(os.path.join(tmp, "empty"))
    with open(os.path.join(tmp, "empty", "notes.txt"), "w") as f:
        f.write("x")
    with pytest.raises(DatasetError, match="no images found"):
        _build(os.path.join(tmp, "empty"), tmp, FakeEncoders())
    bad = os.path.join(tmp, "bad")
    os.makedirs(bad)
    with open(os.path.join(bad, "x.png"), "wb") as f:
        f.write(b"nope")
    with pytest.raises(DatasetError, match=r"none of the 1 images can be used \(x.png: unreadable"):
        _build(bad, tmp, FakeEncoders())


def test_caption_dropout_encodes_the_empty_caption(tmp):
    root = os.path.join(tmp, "data")
    write_image(os.path.join(root, "a.png"), 64, 64)
    enc = FakeEncoders()
    ds = _build(root, os.path.join(tmp, "cache"), enc, caption_dropout=0.5)
    assert ds.empty_cond == cache_key("cond", "", "clip-1")
    assert ds.empty()["cross_attn"].shape == (1, 4, 768)


def test_a_second_build_decodes_no_image_and_a_changed_caption_misses_only_its_entry(tmp, monkeypatch):
    import loralab.train.dataset as dataset_mod
    root = os.path.join(tmp, "data")
    for i in range(3):
        write_caption(write_image(os.path.join(root, f"{i}.png"), 128, 128, i), f"caption {i}")
    cache = os.path.join(tmp, "cache")
    decoded = []
    real_open = dataset_mod.open_image
    monkeypatch.setattr(dataset_mod, "open_image", lambda data, *a: decoded.append(1) or real_open(data, *a))
    enc = FakeEncoders()
    first = _build(root, cache, enc)
    assert len(decoded) == 3 and (enc.images, enc.texts) == (3, 3)
    again = _build(root, cache, FakeEncoders())
    assert decoded == [1, 1, 1] and again.reused == 6 and again.encoded == 0  # no image decoded or encoded
    write_caption(os.path.join(root, "1.png"), "caption one, changed")
    enc2 = FakeEncoders()
    changed = _build(root, cache, enc2)
    assert len(decoded) == 3 and (enc2.images, enc2.texts) == (0, 1)  # only the changed caption encodes
    assert changed.items[1].conds != first.items[1].conds and changed.items[0].conds == first.items[0].conds
    assert changed.items[1].latents == first.items[1].latents  # the image's latent is still reused
