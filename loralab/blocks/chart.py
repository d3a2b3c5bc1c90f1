"""A labelled bar chart of per-block strengths, drawn with Pillow (readable at node size)."""
from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

from .map import split_block_id

BACKGROUND = (32, 32, 32)
GRID = (64, 64, 64)
TEXT = (220, 220, 220)
MUTED = (120, 120, 120)
#: bar colour per block family (text encoders, input side, middle, output side)
COLOURS = {"BASE": (230, 160, 60), "CLIP": (230, 160, 60), "T5": (230, 120, 60), "IN": (80, 190, 170),
           "M": (170, 120, 220), "OUT": (90, 150, 230), "D": (80, 190, 170), "S": (90, 150, 230),
           "J": (80, 190, 170)}
DEFAULT_COLOUR = (180, 180, 180)


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has only the fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw: ImageDraw.ImageDraw, text: str, font: ImageFont.ImageFont) -> tuple[int, int]:
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    return right - left, bottom - top


def _tick_step(top: float) -> float:
    raw = top / 4
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def bar_chart(labels: list[str], values: list[float], title: str, subtitle: str = "",
              height: int = 420) -> Image.Image:
    """Bars for ``values`` with ``labels`` underneath (rotated when there are many), a y axis with
    gridlines, the title and an optional subtitle. Blocks with value 0 get a grey label."""
    n = max(1, len(labels))
    slot = max(14, min(44, 960 // n))
    font = _font(14 if slot >= 18 else 12)
    small = _font(12)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max((_text_size(probe, s, font)[0] for s in labels), default=0)
    rotate = label_w + 4 > slot
    label_h = (label_w if rotate else _text_size(probe, "Ag", font)[1]) + 10
    left, right, top = 64, 16, 56
    width = max(480, left + right + slot * n)
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    draw.text((left, 8), title, fill=TEXT, font=_font(18))
    if subtitle:
        draw.text((left, 32), subtitle, fill=MUTED, font=small)
    bottom = height - label_h - 8
    finite = [v for v in values if math.isfinite(v)]
    vmax = max(finite, default=0.0)
    step = _tick_step(vmax) if vmax > 0 else 1.0
    y_top = step * math.ceil(vmax / step) if vmax > 0 else 1.0
    plot_h = bottom - top

    def y_of(v: float) -> float:
        return bottom - plot_h * (v / y_top)

    tick = 0.0
    while tick <= y_top + step / 2:
        y = y_of(tick)
        draw.line([(left, y), (width - right, y)], fill=GRID)
        tw, th = _text_size(draw, _fmt(tick), small)
        draw.text((left - 6 - tw, y - th / 2 - 2), _fmt(tick), fill=MUTED, font=small)
        tick += step
    for i, (label, v) in enumerate(zip(labels, values)):
        x0 = left + i * slot + max(2, slot // 8)
        x1 = left + (i + 1) * slot - max(2, slot // 8)
        colour = COLOURS.get(split_block_id(label)[0], DEFAULT_COLOUR)
        if math.isfinite(v) and v > 0:
            draw.rectangle([x0, y_of(v), x1, bottom], fill=colour)
        touched = math.isfinite(v) and v > 0
        cx = left + i * slot + slot / 2
        if rotate:
            tw, th = _text_size(draw, label, font)
            tile = Image.new("RGB", (tw + 2, th + 6), BACKGROUND)
            ImageDraw.Draw(tile).text((0, 0), label, fill=TEXT if touched else MUTED, font=font)
            tile = tile.rotate(90, expand=True)
            img.paste(tile, (int(cx - tile.width / 2), bottom + 6))
        else:
            tw, _ = _text_size(draw, label, font)
            draw.text((cx - tw / 2, bottom + 4), label, fill=TEXT if touched else MUTED, font=font)
    draw.line([(left, bottom), (width - right, bottom)], fill=MUTED)
    return img
