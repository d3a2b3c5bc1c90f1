"""The block-strength chart: one bar per block, heights proportional to the values."""
import numpy as np

from loralab.blocks.chart import COLOURS, bar_chart


def column_height(img, x, colour):
    col = np.asarray(img)[:, x, :]
    return int((np.abs(col.astype(int) - np.array(colour)).sum(axis=1) == 0).sum())


def test_bars_are_proportional_and_untouched_blocks_have_none():
    labels = ["BASE", "IN01", "IN02", "M00", "OUT03"]
    values = [1.0, 2.0, 0.0, 4.0, float("nan")]
    img = bar_chart(labels, values, "Block strength")
    assert img.mode == "RGB" and img.height == 420 and img.width >= 480
    left, slot = 64, max(14, min(44, 960 // len(labels)))
    centre = [left + i * slot + slot // 2 for i in range(len(labels))]
    h = [column_height(img, x, COLOURS[label.rstrip("0123456789")]) for x, label in zip(centre, labels)]
    assert h[2] == 0 and h[4] == 0
    assert h[0] > 0 and abs(h[1] / h[0] - 2) < 0.05 and abs(h[3] / h[0] - 4) < 0.1


def test_many_blocks_get_rotated_labels_and_a_wider_image():
    labels = ["CLIP", "T5", "IN"] + [f"D{i:02d}" for i in range(19)] + [f"S{i:02d}" for i in range(38)] + ["OUT"]
    img = bar_chart(labels, [float(i % 7) for i in range(len(labels))], "Flux")
    assert img.width >= 64 + 16 + 14 * len(labels)
    assert img.height == 420


def test_all_zero_values_still_draw_an_axis():
    img = bar_chart(["BASE"], [0.0], "empty")
    assert np.asarray(img).std() > 0
