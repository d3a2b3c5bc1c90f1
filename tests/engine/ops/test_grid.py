"""Comparison grids (loralab/ops/grid.py): the axis grammar and its errors, a run's checkpoints in
step order, the cells and their settings, cell keys, the LRU cell cache, and the grid image (cells
copied bit for bit, labels drawn at a size readable in a thumbnail)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import ImageFont

from loralab.errors import SpecError
from loralab.ops.grid import (MAX_CELLS, MAX_VALUES, NO_AXIS, CellCache, _Pen, checkpoint_step, cell_key, grid_cells,
                              grid_image, grid_json, label_px, lora_labels, parse_axis, plan_layout, run_checkpoints,
                              split_values, wrap)

NAMES = ["a.safetensors", "styles/b.safetensors", "styles/a.safetensors", "run_step000100.safetensors",
         "run_step000020.safetensors", "run_step000020_00001.safetensors", "run_other_step000005.safetensors",
         "sub/run_step000300.safetensors", "my lora__step000001.safetensors"]


@pytest.mark.parametrize("kind, text, values", [
    ("strength", "0.5, 0.75, 1", ["0.5", "0.75", "1"]),
    ("strength", "0.5\n0.75\n\n1\n", ["0.5", "0.75", "1"]),
    ("lora", "a.safetensors,styles/b.safetensors", ["a.safetensors", "styles/b.safetensors"]),
    ("lora", "x, y.safetensors\nz.safetensors", ["x, y.safetensors", "z.safetensors"]),  # one per line: commas kept
    ("blocks", "ALL | IN04-IN08=0.5, M00=1", ["ALL", "IN04-IN08=0.5, M00=1"]),
    ("blocks", "OUT=0; IN=1\nALL", ["OUT=0; IN=1", "ALL"]),
    ("prompt", "a cat, sitting | a dog", ["a cat, sitting", "a dog"]),
    ("seed", "", []),
])
def test_values_split_one_per_line_or_at_the_kinds_separator(kind, text, values):
    assert split_values(kind, text) == values


@pytest.mark.parametrize("kind, text", [("strength", "0.5,,1"), ("strength", "0.5, 1,"), ("prompt", "a || b")])
def test_an_empty_value_between_separators_is_refused(kind, text):
    with pytest.raises(SpecError, match="an empty value between two"):
        split_values(kind, text)


def test_number_and_seed_axes_are_labelled_with_their_setting():
    axis = parse_axis("strength", "0.5, 0.75, 1, -1.5")
    assert axis.values == (0.5, 0.75, 1.0, -1.5)
    assert axis.labels == ("strength 0.5", "strength 0.75", "strength 1", "strength -1.5")
    assert axis.settings(1) == {"strength_model": 0.75, "strength_clip": 0.75}
    assert parse_axis("strength_model", "2").settings(0) == {"strength_model": 2.0}
    assert parse_axis("strength_clip", "0").labels == ("clip 0",)
    seeds = parse_axis("seed", f"0, 1, {2 ** 64 - 1}")
    assert seeds.values == (0, 1, 2 ** 64 - 1) and seeds.labels[2] == f"seed {2 ** 64 - 1}"


@pytest.mark.parametrize("kind, text, message", [
    ("strength", "0.5, strong", "'strong' is not a number"),
    ("strength", "nan", "not a finite number"),
    ("strength_clip", "inf", "not a finite number"),
    ("seed", "1.5", "not a whole number"),
    ("seed", "-1", "not a whole number"),
    ("seed", str(2 ** 64), "is larger than"),
    ("strength", "", "no values"),
    ("prompt", "  \n ", "no values"),
    ("sideways", "1", "unknown axis kind"),
    ("strength", ", ".join(["1"] * (MAX_VALUES + 1)), f"at most {MAX_VALUES}"),
])
def test_bad_values_are_refused_naming_the_value(kind, text, message):
    with pytest.raises(SpecError, match=message):
        parse_axis(kind, text, lora_names=NAMES)


def test_lora_axis_takes_listed_names_and_none_only():
    axis = parse_axis("lora", "a.safetensors, styles/b.safetensors, None", lora_names=NAMES)
    assert axis.values == ("a.safetensors", "styles/b.safetensors", "None")
    assert axis.labels == ("a", "b", "no LoRA") and axis.settings(2) == {"lora_name": "None"}
    for name in ("../a.safetensors", "/abs/a.safetensors", "C:\\a.safetensors", "missing.safetensors", "a.ckpt",
                 "styles/../a.safetensors"):
        with pytest.raises(SpecError, match="not a LoRA in the loras folder list"):
            parse_axis("lora", f"a.safetensors, {name}", lora_names=NAMES)


def test_lora_labels_show_folders_only_where_two_names_would_read_alike():
    assert lora_labels(["a.safetensors", "styles/a.safetensors", "styles/b.sft", "None"]) == (
        "a", "styles/a", "b", "no LoRA")


def test_a_runs_checkpoints_in_step_order_one_per_step():
    assert run_checkpoints("run", NAMES) == [(20, "run_step000020.safetensors"), (100, "run_step000100.safetensors")]
    assert run_checkpoints("sub/run", NAMES) == [(300, "sub/run_step000300.safetensors")]
    assert run_checkpoints("run_other", NAMES) == [(5, "run_other_step000005.safetensors")]
    assert run_checkpoints("my lora!", NAMES) == [(1, "my lora__step000001.safetensors")]  # as training names it
    assert run_checkpoints("nothing", NAMES) == []
    axis = parse_axis("run", "run", lora_names=NAMES)
    assert axis.kind == "run" and axis.labels == ("step 20", "step 100") and axis.sets == ("lora_name",)
    assert checkpoint_step("x/run_step000020_00001.safetensors") == 20 and checkpoint_step("a.safetensors") is None


@pytest.mark.parametrize("text, message", [("nothing", "no checkpoints of the run 'nothing'"),
                                           ("run, sub/run", "2 runs named")])
def test_run_axis_errors(text, message):
    with pytest.raises(SpecError, match=message):
        parse_axis("run", text, lora_names=NAMES)


def test_blocks_and_prompt_axes_keep_their_text():
    blocks = parse_axis("blocks", "ALL | OUT=0, default=0.5")
    assert blocks.values == ("ALL", "OUT=0, default=0.5") and blocks.settings(1) == {"block_weights": "OUT=0, default=0.5"}
    assert parse_axis("blocks", "").labels == ("all blocks",)
    prompt = parse_axis("prompt", "a cat | a dog")
    assert prompt.values == prompt.labels == ("a cat", "a dog") and prompt.sets == ("prompt",)
    assert parse_axis("none", "ignored") is NO_AXIS


def test_cells_run_row_by_row_with_the_axis_values_in_place():
    x, y = parse_axis("strength", "0.5, 1"), parse_axis("seed", "1, 2, 3")
    cells = grid_cells({"lora_name": "a", "strength_model": 9.0, "strength_clip": 9.0, "seed": 0}, x, y)
    assert [(c.index, c.row, c.col) for c in cells] == [(i, i // 2, i % 2) for i in range(6)]
    assert cells[3].settings == {"lora_name": "a", "strength_model": 1.0, "strength_clip": 1.0, "seed": 2}
    single = grid_cells({"seed": 4}, NO_AXIS, NO_AXIS)
    assert len(single) == 1 and single[0].settings == {"seed": 4}


def test_axes_that_set_the_same_setting_and_huge_grids_are_refused():
    with pytest.raises(SpecError, match=r"both set strength_clip"):
        grid_cells({}, parse_axis("strength", "1"), parse_axis("strength_clip", "1"))
    with pytest.raises(SpecError, match="both set lora_name"):
        grid_cells({}, parse_axis("lora", "a.safetensors", lora_names=NAMES), parse_axis("run", "run", lora_names=NAMES))
    side = ", ".join(str(i) for i in range(17))
    with pytest.raises(SpecError, match=f"289 cells; a grid takes at most {MAX_CELLS}"):
        grid_cells({}, parse_axis("seed", side), parse_axis("strength", side))


def test_cell_key_is_stable_and_changes_with_every_part():
    parts = {"model": "ModelPatcher#1", "file": [100, 5], "cell": {"seed": 1, "strength_model": 0.5}, "steps": 20}
    key = cell_key(parts)
    assert key == cell_key(json.loads(json.dumps(parts))) and len(key) == 64
    assert key == cell_key({"steps": 20, "cell": {"strength_model": 0.5, "seed": 1}, "file": [100, 5],
                            "model": "ModelPatcher#1"})
    for changed in ({"model": "ModelPatcher#2"}, {"file": [100, 6]}, {"cell": {"seed": 1, "strength_model": 0.75}},
                    {"steps": 21}):
        assert cell_key({**parts, **changed}) != key
    assert cell_key({"v": 0.1 + 0.2}) != cell_key({"v": 0.3})  # numbers as they are, not rounded


def test_cell_cache_keeps_the_most_recently_used_within_its_budget():
    cell = lambda v: torch.full((4, 4, 3), float(v))  # noqa: E731  (192 bytes)
    cache = CellCache(3 * 192)
    for k in "abc":
        cache.put(k, cell(ord(k)))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", cell(1))
    assert cache.get("b") is None and {k for k in "acd" if cache.get(k) is not None} == set("acd")
    assert cache.nbytes == 3 * 192 and len(cache) == 3
    cache.put("d", cell(2))  # replaced, not counted twice
    assert cache.nbytes == 3 * 192 and float(cache.get("d")[0, 0, 0]) == 2.0
    cache.put("big", torch.zeros(100, 100, 3))  # larger than the whole budget: not kept, nothing dropped
    assert cache.get("big") is None and len(cache) == 3
    cache.clear()
    assert len(cache) == 0 and cache.nbytes == 0


def _cells(n, h=64, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(h, w, 3, generator=g) for _ in range(n)]


def _text_pixels(band: np.ndarray) -> np.ndarray:
    return np.abs(band.astype(int) - band[0, 0].astype(int)).max(-1) > 128


def test_grid_image_copies_cells_bit_for_bit_and_labels_both_bands():
    x, y = parse_axis("strength", "0.5, 0.75, 1"), parse_axis("lora", "a.safetensors, None", lora_names=NAMES)
    cells = _cells(6, 96, 80)
    grid, layout = grid_image(cells, x, y)
    assert grid.shape == (1, layout.size[1], layout.size[0], 3) and grid.dtype == torch.float32
    assert layout.left > 0 and layout.top > 0 and (layout.cols, layout.rows) == (3, 2)
    for i, cell in enumerate(cells):
        bx, by, bw, bh = layout.box(i // 3, i % 3)
        assert torch.equal(grid[0, by:by + bh, bx:bx + bw], cell)
    pixels = (grid[0] * 255).round().to(torch.uint8).numpy()
    for c in range(3):  # every column label over its column, every row label beside its row
        bx, _, bw, _ = layout.box(0, c)
        assert _text_pixels(pixels[:layout.top, bx:bx + bw]).sum() > 20
    for r in range(2):
        _, by, _, bh = layout.box(r, 0)
        assert _text_pixels(pixels[by:by + bh, :layout.left]).sum() > 5
    half = torch.rand(96, 80, 3, dtype=torch.float64)
    assert grid_image([half], NO_AXIS, NO_AXIS)[0].dtype == torch.float64


def test_a_grid_without_axes_is_its_cell():
    cell = _cells(1)[0]
    grid, layout = grid_image([cell], NO_AXIS, NO_AXIS)
    assert (layout.left, layout.top) == (0, 0) and torch.equal(grid[0], cell)
    only_x, layout = grid_image(_cells(2), parse_axis("seed", "1, 2"), NO_AXIS)
    assert layout.left == 0 and layout.top > 0


def test_cells_of_different_sizes_or_counts_are_refused():
    x = parse_axis("seed", "1, 2")
    with pytest.raises(SpecError, match="differ in size"):
        grid_image([torch.zeros(64, 64, 3), torch.zeros(32, 64, 3)], x, NO_AXIS)
    with pytest.raises(ValueError, match="1 cells for a 2 × 1 grid"):
        grid_image([torch.zeros(64, 64, 3)], x, NO_AXIS)


@pytest.mark.parametrize("side, px", [(32, 12), (64, 12), (512, 51), (1024, 96), (4096, 96)])
def test_label_size_follows_the_cell_size(side, px):
    assert label_px(side, side) == px and label_px(side, 4 * side) == px


def _glyph_height(pen: _Pen, text: str = "strength 0.75") -> int:
    from PIL import Image
    img = Image.new("RGB", (pen.width(text) + 10, pen.line * 2), (0, 0, 0))
    pen.draw(img, (5, 5), text, (255, 255, 255))
    rows = np.nonzero(np.asarray(img).max(axis=(1, 2)) > 128)[0]
    return int(rows[-1] - rows[0] + 1)


@pytest.mark.parametrize("bitmap", [False, True])
def test_labels_of_big_cells_stay_readable_in_a_quarter_size_thumbnail(bitmap):
    """A 3 × 3 grid of 512 px cells shown 4× smaller still has labels about 10 px high; Pillow
    without a scalable font draws its bitmap font scaled up to the same size."""
    px = label_px(512, 512)
    pen = _Pen(px, ImageFont.load_default_imagefont() if bitmap else None)
    assert pen.scalable is not bitmap
    assert _glyph_height(pen) / 4 >= 9
    x = parse_axis("strength", "0.5, 0.75, 1")
    layout = plan_layout(512, 512, x, parse_axis("seed", "1, 2, 3"), pen)
    assert layout.top >= pen.line and layout.left >= pen.width("seed 1")


def test_long_labels_wrap_within_their_width_and_are_cut_with_an_ellipsis():
    pen = _Pen(12)
    text = "a photo of a cat sitting on a red chair in the garden, highly detailed"
    lines = wrap(text, pen, 80, 3)
    assert len(lines) == 3 and lines[-1].endswith("...") and all(pen.width(ln) <= 80 for ln in lines)
    assert wrap("short", pen, 80, 3) == ["short"]
    long_word = wrap("x" * 60, pen, 50, 10)
    assert "".join(long_word) == "x" * 60 and all(pen.width(ln) <= 50 for ln in long_word)
    assert wrap("", pen, 50, 2) == [""]


def test_grid_json_names_every_cell():
    x, y = parse_axis("seed", "1, 2"), parse_axis("blocks", "ALL | OUT=0")
    cells = grid_cells({"seed": 0, "block_weights": ""}, x, y)
    _, layout = grid_image(_cells(4), x, y)
    data = grid_json(x, y, cells, layout, ["k0", "k1", "k2", "k3"], {"sampler": {"steps": 2}})
    assert data["x"] == {"kind": "seed", "values": [1, 2], "labels": ["seed 1", "seed 2"]}
    assert data["size"] == list(layout.size) and data["sampler"] == {"steps": 2}
    assert data["cells"][3] == {"index": 3, "row": 1, "col": 1, "x": "seed 2", "y": "OUT=0",
                                "box": list(layout.box(1, 1)), "settings": {"seed": 2, "block_weights": "OUT=0"},
                                "key": "k3"}
    json.dumps(data, allow_nan=False)
