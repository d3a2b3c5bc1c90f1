"""Comparison grids: axes of settings, the cells they span, a key per cell for caching, and the
labelled grid image.

An axis is a kind and its values as text. Values go one per line, or all on one line separated by
commas (``strength``, ``strength_model``, ``strength_clip``, ``seed``, ``lora``) or by ``|``
(``blocks`` and ``prompt``, whose values hold commas)::

    strength        0.5, 0.75, 1             sets strength_model and strength_clip
    strength_model  0, 0.5, 1                sets strength_model only (strength_clip likewise)
    seed            1, 2, 3                  sampling seed
    lora            a.safetensors, None      LoRA files from the loras list (None: no LoRA)
    run             my_lora                  the checkpoints a training run saved, in step order
    blocks          ALL | SDXL-INALL | OUT=0 block-weight specs (empty: every block at 1)
    prompt          a cat | a dog            the positive prompt

Cells are the x values times the y values, row by row; each cell's settings are the defaults with
its two axis values in place. Everything that decides a cell's pixels goes into its key
(:func:`cell_key`), so a cache keyed by it re-renders only cells that changed.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from ..blocks.chart import BACKGROUND, TEXT, _font
from ..errors import SpecError
from ..files.paths import sanitize_output_name

#: the axis that spans nothing (one row or one column)
NONE = "none"
#: the LoRA choice for no LoRA
NO_LORA = "None"
#: axis kind -> the cell settings it sets
SETS: dict[str, tuple[str, ...]] = {
    NONE: (),
    "strength": ("strength_model", "strength_clip"),
    "strength_model": ("strength_model",),
    "strength_clip": ("strength_clip",),
    "lora": ("lora_name",),
    "run": ("lora_name",),
    "blocks": ("block_weights",),
    "prompt": ("prompt",),
    "seed": ("seed",),
}
AXIS_KINDS = tuple(SETS)
#: values one axis may have, and cells one grid may have
MAX_VALUES = 64
MAX_CELLS = 256
MAX_SEED = 2 ** 64 - 1
#: label prefixes of number axes ("strength 0.75")
_NUMBER_TITLES = {"strength": "strength", "strength_model": "model", "strength_clip": "clip", "seed": "seed"}
_CHECKPOINT = re.compile(r"_step(\d+)(_\d{5})?\.safetensors$")


@dataclass(frozen=True)
class Axis:
    """One axis of a grid: its kind, its values (numbers, names or texts) and a label per value."""

    kind: str
    values: tuple
    labels: tuple[str, ...]

    @property
    def sets(self) -> tuple[str, ...]:
        """The cell settings this axis sets."""
        return SETS[self.kind]

    def settings(self, i: int) -> dict[str, Any]:
        """The settings value ``i`` gives a cell."""
        return {name: self.values[i] for name in self.sets}

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "values": list(self.values), "labels": list(self.labels)}


#: the axis of a grid with one row or one column
NO_AXIS = Axis(NONE, (None,), ("",))


def split_values(kind: str, text: str) -> list[str]:
    """The value texts of an axis: one per non-empty line, or on a single line split at commas
    (``|`` for blocks and prompts). Blank values between separators are refused."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    if len(lines) != 1:
        return lines
    separator = "|" if kind in ("blocks", "prompt") else ","
    items = [v.strip() for v in lines[0].split(separator)]
    if any(not v for v in items):
        raise SpecError(f"{kind} axis: an empty value between two '{separator}'", key=lines[0][:200],
                        hint=f"separate the values with single '{separator}' or put one per line")
    return items


def _number(kind: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise SpecError(f"{kind} axis: {text[:100]!r} is not a number", key=text[:200],
                        hint="write numbers such as 0.5, 0.75, 1 (one per line, or separated by commas)") from None
    if not math.isfinite(value):
        raise SpecError(f"{kind} axis: {text!r} is not a finite number", key=text)
    return value


def _seed(text: str) -> int:
    if not re.fullmatch(r"\d+", text):
        raise SpecError(f"seed axis: {text[:100]!r} is not a whole number from 0 to {MAX_SEED}", key=text[:200])
    value = int(text)
    if value > MAX_SEED:
        raise SpecError(f"seed axis: {text[:100]} is larger than {MAX_SEED}", key=text[:200])
    return value


def _label_number(value: float) -> str:
    return f"{value:g}"


def lora_labels(names: Sequence[str]) -> tuple[str, ...]:
    """Short labels of LoRA names: the file name without folder and extension, the full name where
    two would read alike; "no LoRA" for None."""
    def stem(name: str) -> str:
        return os.path.splitext(name.replace("\\", "/").rsplit("/", 1)[-1])[0]
    stems = [stem(n) for n in names]
    return tuple("no LoRA" if n == NO_LORA else (s if stems.count(s) == 1 else os.path.splitext(n)[0])
                 for n, s in zip(names, stems))


def checkpoint_step(name: str) -> int | None:
    """The step of a checkpoint file name (``<run>_step<N>.safetensors``), None for other names."""
    m = _CHECKPOINT.search(name.replace("\\", "/"))
    return int(m.group(1)) if m else None


def run_checkpoints(run: str, lora_names: Iterable[str]) -> list[tuple[int, str]]:
    """(step, name) of the checkpoints a training run named ``run`` saved
    (``<run>_step<N>.safetensors``, as Training Steps and Save Training Run write them), one per
    step (the file written first), in step order."""
    base = sanitize_output_name(run.strip(), extension="", default="lora")
    found: dict[int, str] = {}
    for name in sorted(lora_names, key=lambda n: (len(n), n)):
        normalised = name.replace("\\", "/")
        m = _CHECKPOINT.search(normalised)
        if m and normalised[:m.start()] == base:
            found.setdefault(int(m.group(1)), name)
    return sorted(found.items())


def checkpoint_axis(checkpoints: Sequence[tuple[int, str]]) -> Axis:
    """The axis of a run's checkpoints, labelled by step."""
    return Axis("run", tuple(name for _, name in checkpoints), tuple(f"step {step}" for step, _ in checkpoints))


def _check_count(kind: str, n: int) -> None:
    if n > MAX_VALUES:
        raise SpecError(f"{kind} axis: {n} values; an axis takes at most {MAX_VALUES}",
                        hint="split the comparison into several grids")


def parse_axis(kind: str, text: str, *, lora_names: Sequence[str] = ()) -> Axis:
    """The axis of ``kind`` with the values ``text`` lists (see the module's grammar). LoRA names
    must be in ``lora_names`` (the loras list the caller offers); a run names the run whose
    checkpoints (in ``lora_names``) the axis shows. Refuses with a :class:`SpecError` naming the
    value and the fix."""
    if kind not in SETS:
        raise SpecError(f"unknown axis kind {str(kind)[:50]!r}", hint="one of " + ", ".join(AXIS_KINDS))
    if kind == NONE:
        return NO_AXIS
    items = split_values(kind, text)
    if not items and kind != "blocks":
        raise SpecError(f"{kind} axis: no values", hint="list its values, or choose the axis kind 'none'")
    _check_count(kind, len(items))
    if kind in ("strength", "strength_model", "strength_clip"):
        values = tuple(_number(kind, v) for v in items)
        return Axis(kind, values, tuple(f"{_NUMBER_TITLES[kind]} {_label_number(v)}" for v in values))
    if kind == "seed":
        seeds = tuple(_seed(v) for v in items)
        return Axis(kind, seeds, tuple(f"seed {s}" for s in seeds))
    if kind == "lora":
        offered = set(lora_names)
        for name in items:
            if name != NO_LORA and name not in offered:
                raise SpecError(f"lora axis: {name[:200]!r} is not a LoRA in the loras folder list", key=name[:200],
                                hint="copy the name from a LoRA list (sub-folders included, e.g. styles/a.safetensors); "
                                     "press R in ComfyUI after adding files")
        return Axis(kind, tuple(items), lora_labels(items))
    if kind == "run":
        if len(items) != 1:
            raise SpecError(f"run axis: {len(items)} runs named; the axis shows one run's checkpoints",
                            key=", ".join(items)[:200], hint="name one run (Start Training Run's name)")
        checkpoints = run_checkpoints(items[0], lora_names)
        if not checkpoints:
            raise SpecError(f"run axis: no checkpoints of the run {items[0][:200]!r} in the loras folder list",
                            key=items[0][:200], hint="files are named <run>_step<N>.safetensors: train with "
                                                     "save_every or Save Training Run, then press R in ComfyUI")
        _check_count(kind, len(checkpoints))
        return checkpoint_axis(checkpoints)
    if kind == "blocks":
        specs = tuple(items) or ("",)
        return Axis(kind, specs, tuple(s or "all blocks" for s in specs))
    return Axis(kind, tuple(items), tuple(items))


@dataclass(frozen=True)
class Cell:
    """One cell of a grid: its place and the settings it is rendered with."""

    index: int
    row: int
    col: int
    settings: dict[str, Any]


def grid_cells(defaults: Mapping[str, Any], x: Axis, y: Axis) -> list[Cell]:
    """The cells of ``x`` × ``y``, row by row: ``defaults`` with each cell's axis values in place.
    Refuses two axes that set the same setting and grids of more than :data:`MAX_CELLS` cells."""
    both = set(x.sets) & set(y.sets)
    if both:
        raise SpecError(f"the x axis ({x.kind}) and the y axis ({y.kind}) both set {', '.join(sorted(both))}",
                        hint="give the two axes different kinds")
    n = len(x.values) * len(y.values)
    if n > MAX_CELLS:
        raise SpecError(f"{len(x.values)} × {len(y.values)} = {n} cells; a grid takes at most {MAX_CELLS}",
                        hint="use fewer values per axis")
    return [Cell(r * len(x.values) + c, r, c, {**defaults, **y.settings(r), **x.settings(c)})
            for r in range(len(y.values)) for c in range(len(x.values))]


def cell_key(parts: Mapping[str, Any]) -> str:
    """A stable key of everything that decides a cell's pixels (JSON-able values: identities of
    models, file stamps, sampler settings, the cell's settings)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class CellCache:
    """Least-recently-used rendered cells by key, at most ``max_bytes`` of tensors in all."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._cells: "OrderedDict[str, torch.Tensor]" = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._cells)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: str) -> torch.Tensor | None:
        """The cell under ``key`` (now the most recently used), or None."""
        cell = self._cells.get(key)
        if cell is not None:
            self._cells.move_to_end(key)
        return cell

    def put(self, key: str, cell: torch.Tensor) -> None:
        """Keep ``cell`` under ``key``, dropping the least recently used cells beyond the budget
        (a cell larger than the whole budget is not kept)."""
        old = self._cells.pop(key, None)
        if old is not None:
            self._bytes -= _nbytes(old)
        size = _nbytes(cell)
        if size > self.max_bytes:
            return
        self._cells[key] = cell
        self._bytes += size
        while self._bytes > self.max_bytes:
            _, dropped = self._cells.popitem(last=False)
            self._bytes -= _nbytes(dropped)

    def clear(self) -> None:
        self._cells.clear()
        self._bytes = 0


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


# --- the grid image -------------------------------------------------------------------------------

#: label height relative to the smaller side of a cell, and its bounds in pixels
LABEL_SCALE = 0.1
MIN_LABEL_PX = 12
MAX_LABEL_PX = 96
#: lines a column label may wrap to
MAX_LABEL_LINES = 3


class _Pen:
    """Text of one pixel size in Pillow's default font: measured and drawn. Where Pillow has no
    scalable default font (no FreeType, Pillow < 10.1) its bitmap font is drawn scaled up."""

    def __init__(self, px: int, font: ImageFont.ImageFont | ImageFont.FreeTypeFont | None = None) -> None:
        self.px = px
        self.font = font if font is not None else _font(px)
        self.scalable = isinstance(self.font, ImageFont.FreeTypeFont)
        probe = ImageDraw.Draw(Image.new("L", (1, 1)))
        _, top, _, bottom = probe.textbbox((0, 0), "Hg", font=self.font)
        self.scale = 1.0 if self.scalable else px / max(1, bottom - top)
        self.line = round((bottom - top) * self.scale * 1.3) + 1

    def width(self, text: str) -> int:
        return math.ceil(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(text, font=self.font) * self.scale)

    def draw(self, img: Image.Image, xy: tuple[int, int], text: str, fill: tuple[int, int, int]) -> None:
        if self.scalable:
            ImageDraw.Draw(img).text(xy, text, fill=fill, font=self.font)
            return
        w = max(1, math.ceil(ImageDraw.Draw(img).textlength(text, font=self.font)))
        h = max(1, round(self.line / self.scale))
        mask = Image.new("L", (w, h), 0)
        ImageDraw.Draw(mask).text((0, 0), text, fill=255, font=self.font)
        mask = mask.resize((max(1, round(w * self.scale)), max(1, round(h * self.scale))), Image.NEAREST)
        img.paste(Image.new("RGB", mask.size, fill), xy, mask)


def wrap(text: str, pen: _Pen, width: int, max_lines: int) -> list[str]:
    """``text`` in lines of at most ``width`` pixels (broken at spaces, long words at letters), at
    most ``max_lines`` of them; a cut ends in '...'."""
    lines: list[str] = []
    words = text.replace("\n", " ").split(" ")
    current = ""
    for word in words:
        candidate = f"{current} {word}" if current else word
        if pen.width(candidate) <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        current = word
        while pen.width(current) > width and len(current) > 1:
            cut = 1
            while cut < len(current) and pen.width(current[:cut + 1]) <= width:
                cut += 1
            lines.append(current[:cut])
            current = current[cut:]
    if current or not lines:
        lines.append(current)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and pen.width(last + "...") > width:
            last = last[:-1]
        lines = lines[:max_lines - 1] + [last.rstrip() + "..."]
    return lines


@dataclass(frozen=True)
class GridLayout:
    """Where cells and labels go: a band of column labels on top (when there is an x axis), one of
    row labels on the left (when there is a y axis), cells of one size with a gap between them."""

    cell_w: int
    cell_h: int
    cols: int
    rows: int
    left: int
    top: int
    gap: int
    label_px: int

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the grid image."""
        return (self.left + self.cols * self.cell_w + (self.cols - 1) * self.gap,
                self.top + self.rows * self.cell_h + (self.rows - 1) * self.gap)

    def box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(x, y, width, height) of a cell."""
        return (self.left + col * (self.cell_w + self.gap), self.top + row * (self.cell_h + self.gap),
                self.cell_w, self.cell_h)


def label_px(cell_w: int, cell_h: int) -> int:
    """Label text height for cells of this size: a tenth of the smaller side, 12 to 96 px (readable
    when the whole grid is shown as a thumbnail)."""
    return max(MIN_LABEL_PX, min(MAX_LABEL_PX, round(LABEL_SCALE * min(cell_w, cell_h))))


def plan_layout(cell_w: int, cell_h: int, x: Axis, y: Axis, pen: _Pen | None = None) -> GridLayout:
    """The layout of a grid of ``x`` × ``y`` cells of ``cell_w`` × ``cell_h`` pixels."""
    px = label_px(cell_w, cell_h)
    pen = pen or _Pen(px)
    pad = max(4, px // 3)
    gap = max(2, px // 6)
    top = 0
    if x.kind != NONE:
        lines = max(len(wrap(t, pen, cell_w - 2 * pad, MAX_LABEL_LINES)) for t in x.labels)
        top = lines * pen.line + 2 * pad
    left = 0
    if y.kind != NONE:
        widest = max(pen.width(t) for t in y.labels)
        left = max(4 * px, min(widest, cell_w * 6 // 10)) + 2 * pad
    return GridLayout(cell_w, cell_h, len(x.values), len(y.values), left, top, gap, px)


def _label_band(size: tuple[int, int], labels: Sequence[tuple[tuple[int, int, int, int], str]], pen: _Pen,
                pad: int) -> np.ndarray:
    """An RGB uint8 image of ``size`` with each text wrapped into its box, centred."""
    img = Image.new("RGB", size, BACKGROUND)
    for (bx, by, bw, bh), text in labels:
        max_lines = max(1, (bh - 2 * pad) // pen.line)
        lines = wrap(text, pen, bw - 2 * pad, max_lines)
        y0 = by + (bh - len(lines) * pen.line) // 2
        for i, line in enumerate(lines):
            pen.draw(img, (bx + (bw - pen.width(line)) // 2, y0 + i * pen.line), line, TEXT)
    return np.asarray(img)


def grid_image(cells: Sequence[torch.Tensor], x: Axis, y: Axis, *,
               pen: _Pen | None = None) -> tuple[torch.Tensor, GridLayout]:
    """The labelled grid of ``cells`` (``[H, W, 3]`` images in [0, 1], row by row) as an IMAGE
    ``[1, height, width, 3]``, and its layout. Cells are copied unchanged (bit for bit); labels
    are drawn with Pillow in the top and left bands."""
    if len(cells) != len(x.values) * len(y.values):
        raise ValueError(f"{len(cells)} cells for a {len(x.values)} × {len(y.values)} grid")
    shapes = {tuple(c.shape) for c in cells}
    if len(shapes) != 1 or len(next(iter(shapes))) != 3 or next(iter(shapes))[2] != 3:
        raise SpecError(f"the cells differ in size or are not RGB images ({sorted(shapes)[:3]})",
                        hint="every cell samples the same latent; use one latent size")
    cell_h, cell_w, _ = next(iter(shapes))
    layout = plan_layout(cell_w, cell_h, x, y, pen)
    pen = pen or _Pen(layout.label_px)
    pad = max(4, layout.label_px // 3)
    width, height = layout.size
    dtype = cells[0].dtype if cells[0].is_floating_point() else torch.float32
    bands = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    if layout.top:
        boxes = [((layout.box(0, c)[0], 0, cell_w, layout.top), t) for c, t in enumerate(x.labels)]
        bands[:layout.top] = _label_band((width, layout.top), boxes, pen, pad)
    if layout.left:
        boxes = [((0, layout.box(r, 0)[1] - layout.top, layout.left, cell_h), t) for r, t in enumerate(y.labels)]
        bands[layout.top:, :layout.left] = _label_band((layout.left, height - layout.top), boxes, pen, pad)
    grid = torch.from_numpy(bands).to(dtype).div_(255.0)
    for i, cell in enumerate(cells):
        bx, by, bw, bh = layout.box(i // len(x.values), i % len(x.values))
        grid[by:by + bh, bx:bx + bw] = cell.to("cpu")
    return grid[None], layout


def grid_json(x: Axis, y: Axis, cells: Sequence[Cell], layout: GridLayout, keys: Sequence[str],
              extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The grid as JSON: its axes, size, and per cell its place, box, settings and key
    (``extra``: further top-level fields, e.g. the sampler settings)."""
    out: dict[str, Any] = {"x": x.to_json(), "y": y.to_json(), "size": list(layout.size), **(extra or {})}
    out["cells"] = [{"index": c.index, "row": c.row, "col": c.col, "x": x.labels[c.col], "y": y.labels[c.row],
                     "box": list(layout.box(c.row, c.col)), "settings": dict(c.settings), "key": k}
                    for c, k in zip(cells, keys)]
    return out
