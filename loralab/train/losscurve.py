"""A loss-curve picture: raw step losses (finite: training stops on a non-finite loss), their
smoothed curve, and labelled axes."""
from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw, ImageFont

SMOOTHING = 0.9


def smooth(values: list[float], beta: float = SMOOTHING) -> list[float]:
    """Bias-corrected exponential moving average (TensorBoard's smoothing)."""
    out, avg = [], 0.0
    for i, v in enumerate(values, start=1):
        avg = beta * avg + (1 - beta) * v
        out.append(avg / (1 - beta ** i))
    return out


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def render_loss_curve(losses: list[float], *, width: int = 640, height: int = 360, title: str = "loss") -> np.ndarray:
    """The curve as an RGB uint8 array [height, width, 3]; an empty history draws empty axes."""
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    left, right, top, bottom = 64, 16, 28, 40
    pw, ph = width - left - right, height - top - bottom
    draw.text((left, 8), title, fill="black", font=font)
    draw.line([(left, top), (left, top + ph), (left + pw, top + ph)], fill="black", width=1)
    n = len(losses)
    lo, hi = (min(losses), max(losses)) if losses else (0.0, 1.0)
    if hi - lo < 1e-12:
        lo, hi = lo - 0.5 * max(abs(lo), 1e-3), hi + 0.5 * max(abs(hi), 1e-3)

    def xy(i: int, v: float) -> tuple[float, float]:
        x = left + (pw * i / (n - 1) if n > 1 else pw / 2)
        return x, top + ph * (1 - (v - lo) / (hi - lo))

    for v in _ticks(lo, hi):
        _, y = xy(0, v)
        draw.line([(left - 4, y), (left, y)], fill="black")
        draw.text((4, y - 6), f"{v:.4g}", fill="black", font=font)
    last = max(n, 1)
    for s in sorted({int(round(t)) for t in _ticks(1, last)}):
        x = left + (pw * (s - 1) / (last - 1) if last > 1 else pw / 2)
        draw.line([(x, top + ph), (x, top + ph + 4)], fill="black")
        draw.text((x - 8, top + ph + 8), str(s), fill="black", font=font)
    draw.text((left + pw // 2 - 12, height - 16), "step", fill="black", font=font)
    if n:
        if n > 1:
            draw.line([xy(i, v) for i, v in enumerate(losses)], fill=(170, 190, 230), width=1)
        sm = [xy(i, v) for i, v in enumerate(smooth(losses))]
        if len(sm) > 1:
            draw.line(sm, fill=(20, 60, 160), width=2)
        else:
            x, y = sm[0]
            draw.ellipse([x - 2, y - 2, x + 2, y + 2], fill=(20, 60, 160))
    return np.array(img, dtype=np.uint8)
