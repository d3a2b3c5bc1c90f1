"""Clips in a dataset (animated GIF / WebP / APNG for video models): which frames a clip trains on,
which frame counts a VAE takes, one placement for every frame of a clip, latents of T' frames,
batches of one frame count, and cache keys that follow the frame settings."""
import hashlib
import os

import numpy as np
import pytest
import torch
from PIL import Image

from loralab.errors import DatasetError
from loralab.train.cache import TensorCache, cache_key
from loralab.train.dataset import (DatasetSettings, build_dataset, check_frames, frame_indices, place_image,
                                   valid_frame_counts)
from loralab.train.run import DataOrder, batches_per_epoch
from loralab_testkit.train_toys import FakeEncoders, write_caption, write_image

#: frame i of a test clip is red 10 + 20·i everywhere; green and blue are the same gradients in every frame
RED = [10 + 20 * i for i in range(12)]


def clip_frames(n: int, width: int, height: int) -> list[Image.Image]:
    yy, xx = np.mgrid[0:height, 0:width]
    out = []
    for i in range(n):
        arr = np.stack([np.full((height, width), RED[i]), xx * 255 // (width - 1), yy * 255 // (height - 1)], -1)
        out.append(Image.fromarray(arr.astype(np.uint8)))
    return out


def write_clip(path: str, n: int, width: int = 160, height: int = 96) -> str:
    """An animated file of ``n`` frames (APNG, GIF or WebP by extension), lossless where the format allows."""
    frames = clip_frames(n, width, height)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    extra = {"lossless": True} if path.endswith(".webp") else {}
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=40, loop=0, **extra)
    return path


class ClipEncoder(FakeEncoders):
    """FakeEncoders' VAE per frame, folding frames 1 + 4·n into 1 + n latent frames as Wan's VAE
    does; keeps every pixel batch it was given."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        self.seen.append(pixels.clone())
        per_frame = [FakeEncoders.encode_image(self, pixels[t:t + 1]) for t in range(pixels.shape[0])]
        self.images -= pixels.shape[0] - 1
        keep = [per_frame[0]] + [per_frame[t] for t in range(4, pixels.shape[0], 4)]
        return torch.stack(keep, 1)


def _build(root, cache_dir, enc, temporal=4, **kw):
    s = DatasetSettings(resolution=128, min_side=64, max_side=128, **kw)
    return build_dataset(root, s, TensorCache(cache_dir), encode_image=enc.encode_image, encode_text=enc.encode_text,
                         encoders={"vae": "vae-1", "clip": "clip-1"}, temporal_compression=temporal)


def test_head_and_uniform_frame_indices():
    assert frame_indices(10, 5, "head") == [0, 1, 2, 3, 4]
    assert frame_indices(9, 5, "uniform") == [0, 2, 4, 6, 8]
    assert frame_indices(10, 4, "uniform") == [0, 3, 6, 9]
    assert frame_indices(10, 5, "uniform") == [0, 2, 5, 7, 9]  # 2.25, 4.5, 6.75: halves round up
    assert frame_indices(5, 5, "uniform") == frame_indices(5, 5, "head") == [0, 1, 2, 3, 4]
    assert frame_indices(7, 1, "uniform") == frame_indices(7, 1, "head") == [0]
    with pytest.raises(DatasetError, match="has 3 frames, fewer than frames = 5"):
        frame_indices(3, 5, "head")
    with pytest.raises(DatasetError, match="unknown frame_extraction 'chunk'"):
        frame_indices(9, 5, "chunk")


def test_frame_counts_a_vae_takes():
    assert valid_frame_counts(4)[:6] == [1, 5, 9, 13, 17, 21] and valid_frame_counts(4)[-1] == 81
    assert valid_frame_counts(8, 33) == [1, 9, 17, 25, 33] and valid_frame_counts(None) == [1]
    for n in (1, 5, 9, 17, 33, 81):
        check_frames(DatasetSettings(frames=n), 4)
    check_frames(DatasetSettings(frames=1), None)
    with pytest.raises(DatasetError) as e:
        check_frames(DatasetSettings(frames=8), 4)
    assert "frames = 8 cannot be encoded" in e.value.problem and "1, 5, 9, 13, 17" in e.value.hint
    with pytest.raises(DatasetError, match="encodes images only") as e:
        check_frames(DatasetSettings(frames=5), None)
    assert "set frames to 1" in e.value.hint
    with pytest.raises(DatasetError, match="unknown frame_extraction 'slide'"):
        check_frames(DatasetSettings(frames=5, frame_extraction="slide"), 4)


def test_a_bad_frame_count_stops_the_build_before_any_file_is_read(tmp):
    root = os.path.join(tmp, "data")
    write_clip(os.path.join(root, "c.png"), 9)
    enc = ClipEncoder()
    with pytest.raises(DatasetError, match="frames = 6 cannot be encoded"):
        _build(root, os.path.join(tmp, "cache"), enc, frames=6)
    with pytest.raises(DatasetError, match="encodes images only"):
        _build(root, os.path.join(tmp, "cache"), enc, temporal=None, frames=5)
    assert enc.seen == []


@pytest.mark.parametrize("ext", [".png", ".gif", ".webp"])
def test_clip_frames_share_one_placement_and_encode_as_one_video(tmp, ext):
    root = os.path.join(tmp, "data")
    clip = write_clip(os.path.join(root, "clip" + ext), 9)
    write_caption(clip, "a sliding gradient")
    write_clip(os.path.join(root, "short.gif"), 3)
    write_image(os.path.join(root, "still.png"), 160, 96, 1)
    enc = ClipEncoder()
    ds = _build(root, os.path.join(tmp, "cache"), enc, frames=5, frame_extraction="uniform")
    assert dict(ds.skipped) == {"short.gif": "has 3 frames, fewer than frames = 5"}
    items = {i.id: i for i in ds.items}
    assert items["clip" + ext].caption == "a sliding gradient"
    placement = place_image(160, 96, 128, 64, 128)
    assert placement.resized == (128, 77) and placement.bucket == (128, 64) and placement.crop == (0, 6)
    assert items["clip" + ext].placement == items["still.png"].placement == placement
    (pixels,) = [p for p in enc.seen if p.shape[0] == 5]
    assert [p.shape[0] for p in enc.seen] == [5, 1]
    # uniform: frames 0, 2, 4, 6, 8, each cropped exactly as the first (green and blue are position gradients)
    tol = 0.5 / 255 if ext != ".gif" else 12 / 255  # GIF quantises to a 256-colour palette
    red = (pixels[..., 0] * 255).mean((1, 2))
    assert torch.allclose(red, torch.tensor([float(RED[i]) for i in (0, 2, 4, 6, 8)]), atol=tol * 255)
    for t in range(1, 5):
        assert (pixels[t, ..., 1:] - pixels[0, ..., 1:]).abs().max() <= tol
    w, h = placement.bucket
    with Image.open(clip) as f:
        first = f.convert("RGB")
    box = (placement.crop[0], placement.crop[1], placement.crop[0] + w, placement.crop[1] + h)
    expected = np.asarray(first.resize(placement.resized, Image.LANCZOS).crop(box), dtype=np.float32) / 255
    assert pixels.shape == (5, h, w, 3)
    assert (pixels[0] - torch.from_numpy(expected)).abs().max() <= 0.5 / 255
    # latents: [C, T', h, w], T' = 1 + (5 - 1) / 4 for the clip and 1 for the image
    idx = {i.id: n for n, i in enumerate(ds.items)}
    assert ds.latent(idx["clip" + ext]).shape == (4, 2, h // 8, w // 8)
    assert ds.latent(idx["still.png"]).shape == (4, 1, h // 8, w // 8)
    assert items["clip" + ext].frames == 5 and items["still.png"].frames == 1
    assert "clips: 1 of 5 frames (uniform)" in ds.summary()


def test_batches_hold_one_frame_count(tmp):
    root = os.path.join(tmp, "data")
    for n in range(3):
        write_clip(os.path.join(root, f"c{n}.png"), 5)
        write_image(os.path.join(root, f"i{n}.png"), 160, 96, n)
    ds = _build(root, os.path.join(tmp, "cache"), ClipEncoder(), frames=5)
    assert len(ds.buckets()) == 1 and batches_per_epoch(ds, 4) == 2
    order = DataOrder(3)
    seen = []
    for _ in range(2):
        batch = order.next_batch(ds, 4)
        assert len({ds.items[i].frames for i in batch}) == 1
        assert len({tuple(ds.latent(i).shape) for i in batch}) == 1
        seen += batch
    assert sorted(seen) == list(range(6))


def test_changing_frames_or_extraction_misses_the_cache_for_clips_only(tmp):
    root = os.path.join(tmp, "data")
    write_clip(os.path.join(root, "clip.gif"), 9)
    write_image(os.path.join(root, "still.png"), 160, 96, 1)
    cache = os.path.join(tmp, "cache")
    enc = ClipEncoder()

    def build(**kw):
        before = len(enc.seen)
        ds = _build(root, cache, enc, **kw)
        return ds, [p.shape[0] for p in enc.seen[before:]]

    head, encoded = build(frames=5, frame_extraction="head")
    assert encoded == [5, 1]
    again, encoded = build(frames=5, frame_extraction="head")
    assert encoded == [] and again.fingerprint == head.fingerprint
    uniform, encoded = build(frames=5, frame_extraction="uniform")
    assert encoded == [5]  # the still image's entry is reused
    nine, encoded = build(frames=9, frame_extraction="head")
    assert encoded == [9]
    one, encoded = build(frames=1, frame_extraction="head")
    assert encoded == [1]
    fps = [d.item_fingerprints() for d in (head, uniform, nine, one)]
    assert len({f["clip.gif"] for f in fps}) == 4 and len({f["still.png"] for f in fps}) == 1
    assert len({d.fingerprint for d in (head, uniform, nine, one)}) == 4
    assert nine.latent(0).shape[1] == 3 and one.latent(0).shape[1] == 1


def test_an_image_only_dataset_keeps_its_cache_keys_and_fingerprint(tmp):
    """Still images are keyed as before clips existed: caches and saved runs stay valid."""
    root = os.path.join(tmp, "data")
    write_image(os.path.join(root, "a.png"), 128, 128, 1)
    enc = FakeEncoders()
    s = DatasetSettings(resolution=128, min_side=64, max_side=256)
    ds = build_dataset(root, s, TensorCache(os.path.join(tmp, "cache")), encode_image=enc.encode_image,
                       encode_text=enc.encode_text, encoders={"vae": "vae-1", "clip": "clip-1"})
    content = hashlib.sha256(open(os.path.join(root, "a.png"), "rb").read()).hexdigest()
    assert ds.items[0].latents == (cache_key("latent", content, "vae-1", (128, 128), (128, 128), (0, 0), False),)
    assert ds.items[0].frames == 1 and ds.items[0].group == (128, 128, 1)
    # the frame settings reach the fingerprint through clips only: a still-image run resumes under any
    clipped = build_dataset(root, DatasetSettings(resolution=128, min_side=64, max_side=256, frames=9,
                                                  frame_extraction="uniform"), TensorCache(os.path.join(tmp, "cache")),
                            encode_image=enc.encode_image, encode_text=enc.encode_text,
                            encoders={"vae": "vae-1", "clip": "clip-1"}, temporal_compression=4)
    assert clipped.fingerprint == ds.fingerprint and enc.images == 1
