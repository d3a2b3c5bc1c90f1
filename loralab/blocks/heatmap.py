"""A labelled heat map of values in [-1, 1] (pairwise cosines per block), drawn with Pillow."""
from __future__ import annotations

import math

from PIL import Image, ImageDraw

from .chart import BACKGROUND, MUTED, TEXT, _font, _text_size

#: colour of -1 (opposed), 0 and +1 (aligned); values between are interpolated
NEGATIVE = (215, 60, 50)
ZERO = (70, 70, 70)
POSITIVE = (60, 120, 225)
EMPTY = (40, 40, 40)  # no value (the pair does not both write the block)


def colour(value: float | None) -> tuple[int, int, int]:
    """The cell colour of a value (clamped to [-1, 1]); EMPTY for None or a non-finite value."""
    if value is None or not math.isfinite(value):
        return EMPTY
    v = max(-1.0, min(1.0, value))
    end = NEGATIVE if v < 0 else POSITIVE
    f = abs(v)
    return tuple(round(z + (e - z) * f) for z, e in zip(ZERO, end))  # type: ignore[return-value]


def heat_map(columns: list[str], rows: list[str], values: list[list[float | None]], title: str,
             subtitle: str = "") -> Image.Image:
    """Cells ``values[row][column]`` coloured by :func:`colour`, each with its value to two decimals,
    column labels underneath (rotated), row labels on the left, a title and subtitle."""
    n = max(1, len(columns))
    cell = max(16, min(48, 1100 // n))
    font, small = _font(13), _font(11)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max((_text_size(probe, s, font)[0] for s in columns), default=0)
    row_w = max((_text_size(probe, s, font)[0] for s in rows), default=0)
    left, top, right = max(48, row_w + 16), 56, 16
    rows_h = max(1, len(rows)) * 28
    width = max(480, left + right + cell * n)
    height = top + rows_h + label_w + 20
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    draw.text((left, 8), title, fill=TEXT, font=_font(18))
    if subtitle:
        draw.text((left, 32), subtitle, fill=MUTED, font=small)
    for r, (label, row) in enumerate(zip(rows, values)):
        y0 = top + r * 28
        tw, th = _text_size(draw, label, font)
        draw.text((left - 8 - tw, y0 + (26 - th) / 2 - 2), label, fill=TEXT, font=font)
        for c, v in enumerate(row):
            x0 = left + c * cell
            draw.rectangle([x0 + 1, y0 + 1, x0 + cell - 1, y0 + 27], fill=colour(v))
            if v is not None and math.isfinite(v) and cell >= 34:
                text = f"{v:+.2f}"
                vw, vh = _text_size(draw, text, small)
                draw.text((x0 + (cell - vw) / 2, y0 + (28 - vh) / 2 - 2), text, fill=TEXT, font=small)
    bottom = top + rows_h + 4
    for c, label in enumerate(columns):
        tw, th = _text_size(draw, label, font)
        tile = Image.new("RGB", (tw + 2, th + 6), BACKGROUND)
        ImageDraw.Draw(tile).text((0, 0), label, fill=TEXT, font=font)
        tile = tile.rotate(90, expand=True)
        img.paste(tile, (int(left + c * cell + cell / 2 - tile.width / 2), bottom))
    return img
