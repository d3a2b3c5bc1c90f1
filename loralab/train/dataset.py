"""Training datasets: a folder of images with captions, bucketed by aspect ratio, encoded once.

Folder layout (kohya's): images at the top level train once per epoch; a subfolder named
``N_name`` trains its images N times per epoch (``name`` is the caption of images that have no
caption file); other subfolders count once; hidden folders are ignored. A caption is the text
file beside the image with the first extension of ``caption_extensions`` that exists.

Captions: ``[trigger]`` is replaced by the trigger word, which is prepended (``trigger, ...``)
where the caption does not contain it. With ``shuffle_captions`` the comma-separated tags after
the first ``keep_tokens`` (and after a prepended trigger, which always stays first) are shuffled;
as captions are encoded once, ``shuffle_variants`` shuffles per caption are encoded and a step
picks one. ``caption_dropout`` is the chance that a step trains a sample with the empty caption.

Buckets (no upscaling): an image larger than ``resolution``² pixels (or with a side over
``max_side``) is scaled down to that size, keeping its aspect ratio; both sides are then cut
down to a multiple of 64 by a centred crop (under 64 pixels per side). Images whose bucket would
have a side under ``min_side`` are skipped, never enlarged. ``flip`` also encodes the mirrored
image; a step picks one of the two at random.

Clips (for video models): an animated GIF, WebP or PNG (APNG) trains as a clip of ``frames``
frames, taken from its start (``frame_extraction`` "head") or spread evenly over it ("uniform",
first and last frame included); a file with fewer frames is skipped. Every frame of a clip has
the placement of the clip (the size of its canvas). The VAE encodes the clip as one video; a VAE
that compresses time by k takes 1 + k·n frames (Wan's and HunyuanVideo's: 1, 5, 9, ...), one that
encodes images only takes frames = 1 (a clip then trains as its first frame). Still images are
1-frame clips; a batch holds items of one bucket and one frame count.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import math
import os
import random
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageOps

from ..errors import DatasetError
from .cache import TensorCache, cache_key

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
#: how a clip's frames are chosen: its first ``frames``, or ``frames`` spread evenly over it
FRAME_EXTRACTIONS = ("head", "uniform")
BUCKET_STEP = 64
#: images with more pixels are refused before decoding (Pillow's own decompression-bomb limit)
MAX_PIXELS = 89_478_485
_REPEATS_DIR = re.compile(r"^(\d+)_(.*)$")
_TRIGGER_TOKEN = re.compile(r"\[trigger\]", re.IGNORECASE)
_EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class DatasetSettings:
    """How a folder becomes training samples."""

    resolution: int = 512
    min_side: int = 256
    max_side: int = 1024
    caption_extensions: tuple[str, ...] = (".txt", ".caption")
    trigger: str = ""
    caption_dropout: float = 0.0
    shuffle_captions: bool = False
    keep_tokens: int = 0
    shuffle_variants: int = 4
    flip: bool = False
    #: frames of each clip (animated file) trained; still images always train as one frame
    frames: int = 1
    frame_extraction: str = "head"

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["caption_extensions"] = list(self.caption_extensions)
        return d


@dataclass(frozen=True)
class Placement:
    """Where an image lands: resized (never larger than the original), then cropped to its bucket."""

    size: tuple[int, int]
    resized: tuple[int, int]
    bucket: tuple[int, int]
    crop: tuple[int, int]


def place_image(width: int, height: int, resolution: int, min_side: int, max_side: int,
                step: int = BUCKET_STEP) -> Placement | str:
    """The placement of a ``width``×``height`` image, or the reason it cannot be used."""
    scale = min(1.0, math.sqrt(resolution * resolution / (width * height)), max_side / max(width, height))
    rw = min(width, max(1, round(width * scale)))
    rh = min(height, max(1, round(height * scale)))
    bw, bh = rw - rw % step, rh - rh % step
    floor = max(step, min_side)
    if min(bw, bh) < floor:
        return (f"too small: {width}x{height} px fits only a {bw}x{bh} bucket, under the minimum side {floor} "
                "(images are never upscaled)")
    return Placement((width, height), (rw, rh), (bw, bh), ((rw - bw) // 2, (rh - bh) // 2))


def caption_tags(caption: str) -> list[str]:
    """The comma-separated tags of a caption (stripped, empty ones dropped)."""
    return [t.strip() for t in caption.split(",") if t.strip()]


def apply_trigger(caption: str, trigger: str) -> tuple[str, bool]:
    """(caption with ``[trigger]`` replaced and the trigger prepended where absent, whether it was prepended)."""
    trigger = trigger.strip()
    if not trigger:
        return _TRIGGER_TOKEN.sub("", caption).strip(), False
    text = _TRIGGER_TOKEN.sub(lambda _: trigger, caption).strip()
    if re.search(r"(?<!\w)" + re.escape(trigger) + r"(?!\w)", text, re.IGNORECASE):
        return text, False
    return (f"{trigger}, {text}" if text else trigger), True


def shuffle_caption(caption: str, keep_tokens: int, rng: random.Random) -> str:
    """The caption's tags with all but the first ``keep_tokens`` shuffled, joined by ``", "``."""
    tags = caption_tags(caption)
    kept, rest = tags[:keep_tokens], tags[keep_tokens:]
    rng.shuffle(rest)
    return ", ".join(kept + rest)


def caption_variants(caption: str, settings: DatasetSettings, prepended: bool) -> list[str]:
    """The texts encoded for one caption: itself, or its distinct shuffles."""
    if not settings.shuffle_captions:
        return [caption]
    keep = max(settings.keep_tokens, 1 if prepended else 0)
    out: list[str] = []
    for i in range(max(1, settings.shuffle_variants)):
        v = shuffle_caption(caption, keep, random.Random(f"{caption}|{i}"))
        if v not in out:
            out.append(v)
    return out


def read_caption(image_path: str, extensions: tuple[str, ...]) -> str | None:
    """The caption file's text for an image, or None when there is none."""
    stem = os.path.splitext(image_path)[0]
    for ext in extensions:
        path = stem + (ext if ext.startswith(".") else "." + ext)
        if os.path.isfile(path):
            with open(path, encoding="utf-8", errors="replace") as f:
                return " ".join(f.read().split())
    return None


@dataclass(frozen=True)
class Entry:
    """An image file found in a dataset folder."""

    path: str
    id: str  # path relative to the dataset folder, "/"-separated
    dir: str  # the folder it counts in (ss_dataset_dirs, ss_tag_frequency)
    repeats: int
    class_tokens: str


def _images_in(path: str) -> list[str]:
    return sorted(n for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS)
                  and not n.startswith(".") and os.path.isfile(os.path.join(path, n)))


def scan_folder(folder: str) -> tuple[list[Entry], list[tuple[str, str]]]:
    """The images of a dataset folder and the sub-folders skipped (with why)."""
    if not os.path.isdir(folder):
        raise DatasetError("dataset folder does not exist or is not a folder", path=folder,
                           hint="give a folder under ComfyUI's input directory or an absolute path")
    entries: list[Entry] = []
    skipped: list[tuple[str, str]] = []
    top = os.path.basename(os.path.normpath(folder))

    for name in _images_in(folder):
        entries.append(Entry(os.path.join(folder, name), name, top, 1, ""))
    for sub in sorted(os.listdir(folder)):
        path = os.path.join(folder, sub)
        if sub.startswith(".") or not os.path.isdir(path):
            continue
        m = _REPEATS_DIR.match(sub)
        repeats, tokens = (int(m.group(1)), m.group(2).strip()) if m else (1, "")
        if repeats < 1:
            skipped.append((sub + "/", "repeat count 0: the folder is not used"))
            continue
        for name in _images_in(path):
            entries.append(Entry(os.path.join(path, name), f"{sub}/{name}", sub, repeats, tokens))
    return entries, skipped


@dataclass(frozen=True)
class Subset:
    """A folder whose images (its top level) train ``repeats`` times per epoch, captioned
    ``class_tokens`` where they have no caption file: a subset of kohya's dataset config."""

    folder: str
    repeats: int = 1
    class_tokens: str = ""


def subsets_root(subsets: Sequence[Subset]) -> str:
    """The folder holding every subset (image ids are relative to it)."""
    return os.path.commonpath([os.path.abspath(s.folder) for s in subsets])


def scan_subsets(subsets: Sequence[Subset]) -> tuple[list[Entry], list[tuple[str, str]]]:
    """The images of kohya-style subsets and the subsets skipped (with why)."""
    root = subsets_root(subsets)
    entries: list[Entry] = []
    skipped: list[tuple[str, str]] = []
    for sub in subsets:
        path = os.path.abspath(sub.folder)
        if not os.path.isdir(path):
            raise DatasetError("dataset folder does not exist or is not a folder", path=path,
                               hint="fix image_dir in the dataset config")
        name = os.path.basename(path)
        if sub.repeats < 1:
            skipped.append((name + "/", "num_repeats 0: the folder is not used"))
            continue
        for image in _images_in(path):
            rel = os.path.relpath(os.path.join(path, image), root).replace(os.sep, "/")
            entries.append(Entry(os.path.join(path, image), rel, name, sub.repeats, sub.class_tokens))
    return entries, skipped


def _open_checked(data: bytes, max_pixels: int) -> Image.Image:
    """Open (header only) and refuse images over the pixel limit before anything is decoded."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own limit applies below
            img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise DatasetError(f"over twice Pillow's {Image.MAX_IMAGE_PIXELS:,} pixel limit "
                           "(decompression-bomb guard)") from None
    except Exception as e:  # Pillow raises many types for broken files; all mean "unreadable"
        raise DatasetError(f"unreadable image ({type(e).__name__}: {e})") from None
    w, h = img.size
    if w * h > max_pixels:
        raise DatasetError(f"{w}x{h} px is over the {max_pixels:,} pixel limit (decompression-bomb guard)")
    return img


def image_size(data: bytes, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """Upright width and height from the image header, without decoding; DatasetError when the
    file is unreadable or over the pixel limit."""
    img = _open_checked(data, max_pixels)
    w, h = img.size
    try:
        rotated = img.getexif().get(_EXIF_ORIENTATION, 1) in (5, 6, 7, 8)
    except Exception as e:
        raise DatasetError(f"unreadable image metadata ({type(e).__name__}: {e})") from None
    return (h, w) if rotated else (w, h)


def open_image(data: bytes, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """A decoded RGB image (EXIF orientation applied); DatasetError with the reason when it cannot be."""
    img = _open_checked(data, max_pixels)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img.load()
            return ImageOps.exif_transpose(img).convert("RGB")
    except Exception as e:
        raise DatasetError(f"unreadable image ({type(e).__name__}: {e})") from None


def prepare_pixels(img: Image.Image, placement: Placement, flip: bool) -> torch.Tensor:
    """The bucket-sized image as ComfyUI's IMAGE ([1, H, W, 3], 0..1 floats)."""
    if img.size != placement.resized:
        img = img.resize(placement.resized, Image.Resampling.LANCZOS)
    left, top = placement.crop
    img = img.crop((left, top, left + placement.bucket[0], top + placement.bucket[1]))
    if flip:
        img = ImageOps.mirror(img)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return torch.from_numpy(arr.copy())[None]


def frame_indices(total: int, frames: int, extraction: str) -> list[int]:
    """The frames (0-based) a clip of ``total`` frames trains on: its first ``frames`` ("head"), or
    ``frames`` spread evenly from the first to the last ("uniform", rounded to the nearest, halves up)."""
    if extraction not in FRAME_EXTRACTIONS:
        raise DatasetError(f"unknown frame_extraction {extraction!r}", hint="use " + " or ".join(FRAME_EXTRACTIONS))
    if not 1 <= frames <= total:
        raise DatasetError(f"has {total} frame{'s' if total != 1 else ''}, fewer than frames = {frames}")
    if extraction == "head" or frames == 1:
        return list(range(frames))
    return [(2 * i * (total - 1) + frames - 1) // (2 * (frames - 1)) for i in range(frames)]  # halves round up


def valid_frame_counts(temporal_compression: int | None, up_to: int = 81) -> list[int]:
    """The clip lengths a VAE encodes (up to ``up_to``): 1 + k·n for one that compresses time by k;
    1 only for one that encodes images (None)."""
    if not temporal_compression:
        return [1]
    return list(range(1, up_to + 1, temporal_compression))


def check_frames(settings: DatasetSettings, temporal_compression: int | None) -> None:
    """DatasetError naming the valid counts when the VAE cannot encode clips of ``settings.frames``."""
    if settings.frame_extraction not in FRAME_EXTRACTIONS:
        raise DatasetError(f"unknown frame_extraction {settings.frame_extraction!r}",
                           hint="use " + " or ".join(FRAME_EXTRACTIONS))
    n = settings.frames
    if not temporal_compression:
        if n != 1:
            raise DatasetError(f"frames = {n}, but this VAE encodes images only",
                               hint="set frames to 1 (each clip then trains as one frame), or use a video model's VAE")
        return
    if n < 1 or (n - 1) % temporal_compression:
        counts = ", ".join(map(str, valid_frame_counts(temporal_compression)))
        raise DatasetError(f"frames = {n} cannot be encoded: this VAE compresses time by {temporal_compression}, "
                           f"so a clip has 1 + {temporal_compression}·n frames",
                           hint=f"set frames to one of {counts}, ...")


def frame_count(data: bytes, max_pixels: int = MAX_PIXELS) -> int:
    """The number of frames in an image file (1 for a still image), from its headers."""
    img = _open_checked(data, max_pixels)
    try:
        return max(1, int(getattr(img, "n_frames", 1)))
    except Exception as e:
        raise DatasetError(f"unreadable animation ({type(e).__name__}: {e})") from None


def open_frames(data: bytes, indices: Sequence[int], max_pixels: int = MAX_PIXELS) -> list[Image.Image]:
    """The decoded RGB frames ``indices`` (ascending) of an animated file, each the full canvas;
    DatasetError with the reason when they cannot be."""
    img = _open_checked(data, max_pixels)
    out: list[Image.Image] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            for i in indices:
                img.seek(i)
                out.append(img.convert("RGB"))
    except Exception as e:
        raise DatasetError(f"unreadable frame ({type(e).__name__}: {e})") from None
    return out


@dataclass(frozen=True)
class DatasetItem:
    """One usable image: where it sits, its caption, and its cache entries."""

    id: str
    dir: str
    repeats: int
    caption: str
    caption_missing: bool
    placement: Placement
    content_hash: str
    latents: tuple[str, ...]  # cache keys: the image, then its mirror when flipping
    conds: tuple[str, ...]  # cache keys of the caption variants
    #: the caption variants' texts, in the order of ``conds`` (what a run that trains the text
    #: encoders encodes each step)
    texts: tuple[str, ...] = ()
    #: frames encoded (1: a still image, or a clip trained as one frame)
    frames: int = 1

    @property
    def group(self) -> tuple[int, int, int]:
        """What a batch shares: bucket width, height and frame count."""
        return (*self.placement.bucket, self.frames)

    def fingerprint(self) -> str:
        """What must stay the same for a saved run to continue on this item."""
        return cache_key(self.id, self.repeats, self.caption, self.content_hash, self.placement.bucket,
                         self.placement.resized, self.placement.crop, *self.latents, *self.conds)


@dataclass
class Dataset:
    """Encoded training samples, read from the cache on demand."""

    folder: str
    settings: DatasetSettings
    items: list[DatasetItem]
    skipped: list[tuple[str, str]]
    encoders: dict[str, str]  # "vae"/"clip" -> identity
    cache: TensorCache
    empty_cond: str | None = None  # cache key of the empty caption (caption dropout)
    encoded: int = 0  # entries encoded by this build (the rest came from the cache)
    reused: int = 0
    #: the kohya-style subsets it was scanned from (empty: ``folder`` in the repeat-folder layout)
    subsets: tuple[Subset, ...] = ()
    #: host objects travelling with the dataset (the VAE and CLIP the previews use)
    attachments: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_entries(self) -> int:
        """Images and clips × repeats: the samples of one epoch."""
        return sum(i.repeats for i in self.items)

    def item_fingerprints(self) -> dict[str, str]:
        return {i.id: i.fingerprint() for i in self.items}

    @property
    def fingerprint(self) -> str:
        """Identity of everything training reads from this dataset."""
        # the frame settings reach training through the clips' latent keys (item fingerprints)
        settings = {k: v for k, v in self.settings.to_json().items() if k not in ("frames", "frame_extraction")}
        return cache_key(json.dumps(settings, sort_keys=True), json.dumps(self.encoders, sort_keys=True),
                         self.empty_cond or "", *(f"{k}={v}" for k, v in sorted(self.item_fingerprints().items())))

    def latent(self, index: int, flipped: bool = False) -> torch.Tensor:
        keys = self.items[index].latents
        return self._load(keys[1] if flipped and len(keys) > 1 else keys[0])["latent"]

    def cond(self, index: int, variant: int = 0) -> dict[str, torch.Tensor]:
        keys = self.items[index].conds
        return self._load(keys[variant % len(keys)])

    def text(self, index: int, variant: int = 0) -> str:
        """The caption variant's text (``cond(index, variant)`` is its cached encoding)."""
        texts = self.items[index].texts
        return texts[variant % len(texts)]

    def empty(self) -> dict[str, torch.Tensor]:
        if self.empty_cond is None:
            raise DatasetError("this dataset has no empty-caption encoding (caption dropout is 0)")
        return self._load(self.empty_cond)

    def _load(self, key: str) -> dict[str, torch.Tensor]:
        tensors = self.cache.get(key)
        if tensors is None:
            raise DatasetError("a cached encoding disappeared or is unreadable", path=self.cache.path(key),
                               hint="run the dataset node again to re-encode")
        return tensors

    def buckets(self) -> dict[tuple[int, int], int]:
        """Bucket size -> number of images in it."""
        out: dict[tuple[int, int], int] = {}
        for i in self.items:
            out[i.placement.bucket] = out.get(i.placement.bucket, 0) + 1
        return dict(sorted(out.items()))

    def tag_frequency(self) -> dict[str, dict[str, int]]:
        """kohya's ``ss_tag_frequency``: folder -> tag -> number of images whose caption has it."""
        out: dict[str, dict[str, int]] = {}
        for i in self.items:
            freq = out.setdefault(i.dir, {})
            for tag in dict.fromkeys(caption_tags(i.caption)):
                freq[tag] = freq.get(tag, 0) + 1
        return out

    def dataset_dirs(self) -> dict[str, dict[str, int]]:
        """kohya's ``ss_dataset_dirs``: folder -> repeats and image count."""
        out: dict[str, dict[str, int]] = {}
        for i in self.items:
            d = out.setdefault(i.dir, {"n_repeats": i.repeats, "img_count": 0})
            d["img_count"] += 1
        return out

    def bucket_info(self) -> dict[str, Any]:
        """kohya's ``ss_bucket_info``: the buckets and the mean aspect-ratio error of their images."""
        buckets = self.buckets()
        errors = [abs(i.placement.bucket[0] / i.placement.bucket[1] - i.placement.size[0] / i.placement.size[1])
                  for i in self.items]
        return {"buckets": {str(n): {"resolution": list(b), "count": c} for n, (b, c) in enumerate(buckets.items())},
                "mean_img_ar_error": sum(errors) / len(errors) if errors else 0.0}

    def summary(self) -> str:
        """What the dataset holds, what was skipped and why, and what came from the cache."""
        s = self.settings
        lines = [f"LoRA dataset: {self.folder}",
                 f"{len(self.items)} images ({self.num_entries} per epoch with repeats) in {len(self.buckets())} "
                 f"buckets; resolution {s.resolution}, sides {s.min_side}..{s.max_side}, step {BUCKET_STEP}"]
        lines += [f"  {w}x{h}: {c} image{'s' if c != 1 else ''}" for (w, h), c in self.buckets().items()]
        clips = [i for i in self.items if i.frames > 1]
        if clips:
            lines.append(f"clips: {len(clips)} of {s.frames} frames ({s.frame_extraction})")
        lines.append("folders: " + ", ".join(f"{d} (repeats {v['n_repeats']}, {v['img_count']} images)"
                                             for d, v in self.dataset_dirs().items()))
        missing = [i.id for i in self.items if i.caption_missing]
        if missing:
            lines.append(f"captions missing: {len(missing)} (folder name / trigger word used): " + ", ".join(missing))
        if self.skipped:
            lines.append(f"skipped {len(self.skipped)}:")
            lines += [f"  {name}: {why}" for name, why in self.skipped]
        lines.append(f"encoded {self.encoded}, from cache {self.reused} ({self.cache.folder})")
        return "\n".join(lines)


def build_dataset(folder: str | Sequence[Subset], settings: DatasetSettings, cache: TensorCache, *,
                  encode_image: Callable[[torch.Tensor], torch.Tensor],
                  encode_text: Callable[[str], Mapping[str, torch.Tensor]],
                  encoders: Mapping[str, str],
                  progress: Callable[[int, int], None] | None = None,
                  temporal_compression: int | None = None) -> Dataset:
    """Scan, caption, bucket and encode a folder (or kohya-style subsets); entries already in the
    cache are reused.

    ``encode_image`` takes ComfyUI's IMAGE ([T, H, W, 3]: an image, T = 1, or a clip's frames) and
    gives the latent [C, h, w] (a video VAE's: [C, T', h, w]), with or without a leading batch of 1;
    ``temporal_compression``: the VAE's time compression (None: it encodes images only, see
    :func:`check_frames`);
    ``encode_text`` gives the text conditioning tensors (``cross_attn``, ``pooled_output``, ...).
    A file that cannot be used is listed in ``skipped`` with the reason; it never stops the others.
    """
    check_frames(settings, temporal_compression)
    subsets: tuple[Subset, ...] = ()
    if isinstance(folder, str):
        folder = os.path.abspath(folder)
        entries, skipped = scan_folder(folder)
    else:
        if not folder:
            raise DatasetError("the dataset has no subsets", hint="give at least one [[datasets.subsets]] image_dir")
        subsets = tuple(folder)
        entries, skipped = scan_subsets(subsets)
        folder = subsets_root(subsets)
    if not entries:
        raise DatasetError("no images found (looked for " + ", ".join(IMAGE_EXTENSIONS) +
                           " at the top level and in sub-folders)", path=folder)
    ds = Dataset(folder, settings, [], skipped, dict(encoders), cache, subsets=subsets)
    flips = (False, True) if settings.flip else (False,)
    for n, entry in enumerate(entries):
        if progress:
            progress(n, len(entries))
        try:
            with open(entry.path, "rb") as f:
                data = f.read()
            placement = place_image(*image_size(data), settings.resolution, settings.min_side, settings.max_side)
            if isinstance(placement, str):
                raise DatasetError(placement)
            content = hashlib.sha256(data).hexdigest()
            total = frame_count(data)
            indices = frame_indices(total, settings.frames, settings.frame_extraction) if total > 1 else [0]
            # a still image's key as before clips existed; a clip's names the frames it encodes
            chosen = ("frames", *indices) if total > 1 else ()
            latents = tuple(cache_key("latent", content, ds.encoders.get("vae", ""), placement.bucket,
                                      placement.resized, placement.crop, flip, *chosen) for flip in flips)
            missing = [(k, flip) for k, flip in zip(latents, flips) if not cache.has(k)]
            if missing:
                frames = open_frames(data, indices) if total > 1 else [open_image(data)]
                if frames[0].size != placement.size:
                    raise DatasetError(f"decoded size {frames[0].size} differs from the header's {placement.size}")
                for key, flip in missing:
                    latent = encode_image(torch.cat([prepare_pixels(f, placement, flip) for f in frames]))
                    cache.put(key, {"latent": latent[0] if latent.dim() > 3 and latent.shape[0] == 1 else latent},
                              {"image": entry.id})
                    ds.encoded += 1
            ds.reused += len(latents) - len(missing)
        except DatasetError as e:
            ds.skipped.append((entry.id, e.problem))
            continue
        except OSError as e:
            ds.skipped.append((entry.id, f"cannot read the file ({e.strerror or e})"))
            continue
        raw = read_caption(entry.path, settings.caption_extensions)
        caption, prepended = apply_trigger(raw if raw is not None else entry.class_tokens, settings.trigger)
        texts = tuple(caption_variants(caption, settings, prepended))
        conds = tuple(_encode_text(ds, text, encode_text) for text in texts)
        ds.items.append(DatasetItem(entry.id, entry.dir, entry.repeats, caption, raw is None, placement, content,
                                    latents, conds, texts, len(indices)))
    if settings.caption_dropout > 0:
        ds.empty_cond = _encode_text(ds, "", encode_text)
    if progress:
        progress(len(entries), len(entries))
    if not ds.items:
        reasons = "; ".join(f"{name}: {why}" for name, why in ds.skipped)
        raise DatasetError(f"none of the {len(entries)} images can be used ({reasons})", path=folder)
    return ds


def _encode_text(ds: Dataset, text: str, encode_text: Callable[[str], Mapping[str, torch.Tensor]]) -> str:
    key = cache_key("cond", text, ds.encoders.get("clip", ""))
    if ds.cache.has(key):
        ds.reused += 1
    else:
        ds.cache.put(key, dict(encode_text(text)), {"text": text})
        ds.encoded += 1
    return key
