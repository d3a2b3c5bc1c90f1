"""The rows of the LoRA Stack and the Stack Report: one STRING input (``loras``) holding a JSON list
of rows that the frontend shows as a row per LoRA, and the proposal that wires the Report's block
weights into the Stack.

A row is ``{"on": true, "lora": "name.safetensors", "strength_model": 1.0, "strength_clip": 1.0,
"block_weights": ""}``; a missing field takes that default, except ``lora``. Rows that are off are
kept but never read.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from comfy_api.latest import io

from ..loralab.errors import SpecError
from .common import unlisted

#: the input that holds the rows, on both nodes
ROWS = "loras"
#: the Stack's input that takes the Report's proposal
PROPOSAL = "block_weights"
STRENGTH_LIMIT = 100.0
FIELDS = ("on", "lora", "strength_model", "strength_clip", "block_weights")
_FIX = "the rows are kept by LoRA Lab's frontend: reload the page, or set the field to [] to start over"


@dataclass(frozen=True)
class Row:
    """One LoRA of a stack: whether it is applied, the file, its strengths and block-weight spec."""

    on: bool
    lora: str
    strength_model: float = 1.0
    strength_clip: float = 1.0
    block_weights: str = ""

    def as_dict(self) -> dict:
        return {name: getattr(self, name) for name in FIELDS}


def rows_input(tooltip: str, names: list[str]) -> io.String.Input:
    """The ``loras`` input: a STRING without a socket whose spec carries the LoRA names the frontend
    offers in each row's picker (``lora_names``, refreshed with ComfyUI's R like any list)."""
    inp = io.String.Input(ROWS, default="[]", socketless=True, tooltip=tooltip)
    inp.extra_dict["lora_names"] = names  # older hosts' String.Input takes no extra_dict argument
    return inp


def _number(value: Any, where: str, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise SpecError(f"{where}: {name} is {json.dumps(value)[:40]}, not a number", key=ROWS, hint=_FIX)
    if abs(value) > STRENGTH_LIMIT:
        raise SpecError(f"{where}: {name} {value:g} is outside -{STRENGTH_LIMIT:g}..{STRENGTH_LIMIT:g}", key=ROWS,
                        hint="set a strength within that range")
    return float(value)


def _row(item: Any, number: int) -> Row:
    where = f"row {number}"
    if not isinstance(item, dict):
        raise SpecError(f"{where} is {type(item).__name__}, not an object with {', '.join(FIELDS)}", key=ROWS, hint=_FIX)
    unknown = sorted(set(item) - set(FIELDS))
    if unknown:
        raise SpecError(f"{where} has fields LoRA Lab does not know: {', '.join(map(str, unknown))[:200]}", key=ROWS,
                        hint=f"a row has {', '.join(FIELDS)}")
    on, lora, spec = item.get("on", True), item.get("lora", ""), item.get("block_weights", "")
    if not isinstance(on, bool):
        raise SpecError(f"{where}: on is {json.dumps(on)[:40]}, not true or false", key=ROWS, hint=_FIX)
    if not isinstance(lora, str):
        raise SpecError(f"{where}: lora is {json.dumps(lora)[:40]}, not a file name", key=ROWS, hint=_FIX)
    if not isinstance(spec, str):
        raise SpecError(f"{where}: block_weights is {json.dumps(spec)[:40]}, not text", key=ROWS, hint=_FIX)
    return Row(on, lora, _number(item.get("strength_model", 1.0), where, "strength_model"),
               _number(item.get("strength_clip", 1.0), where, "strength_clip"), spec)


def parse_rows(text: Any) -> list[Row]:
    """The rows of a ``loras`` value (a JSON list of row objects; empty text is no row); raises
    :class:`SpecError` naming the input, the row and what to do."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return []
    if not isinstance(text, str):
        raise SpecError(f"is {type(text).__name__}, not the JSON text of a list of rows", key=ROWS, hint=_FIX)
    try:
        data = json.loads(text)
    except ValueError as e:
        raise SpecError(f"not valid JSON ({e})", key=ROWS, hint=_FIX) from None
    if not isinstance(data, list):
        raise SpecError(f"is a JSON {type(data).__name__}, not a list of rows", key=ROWS, hint=_FIX)
    return [_row(item, n) for n, item in enumerate(data, 1)]


def numbered_on(rows: list[Row]) -> list[tuple[int, Row]]:
    """(row number from 1, row) of the rows that are on, in order."""
    return [(n, row) for n, row in enumerate(rows, 1) if row.on]


def check_rows(text: Any, allowed: list[str]) -> bool | str:
    """A node's ``validate_inputs`` answer for its rows: True, or what is wrong (malformed rows, a
    row that is on with no LoRA chosen or with a name the loras list does not hold)."""
    try:
        rows = parse_rows(text)
    except SpecError as e:
        return str(e)
    for n, row in numbered_on(rows):
        if not row.lora:
            return f"{ROWS} row {n}: no LoRA chosen (pick one, turn the row off or remove it)"
    return unlisted({f"{ROWS} row {n}": row.lora for n, row in numbered_on(rows)}, allowed)


def proposal(rows: list[Row], specs: dict[int, str]) -> str:
    """The Report's ``proposed_block_weights``: a JSON list with one ``{"lora", "block_weights"}`` per
    row, in row order; ``specs`` (row number -> spec) replaces the spec of the rows it names."""
    return json.dumps([{"lora": row.lora, "block_weights": specs.get(n, row.block_weights)}
                       for n, row in enumerate(rows, 1)], ensure_ascii=False)


def with_proposal(rows: list[Row], text: Any) -> list[Row]:
    """The rows with their block weights replaced by a proposal wired into ``block_weights``: a JSON
    list with one entry per row, in row order, each a spec or ``{"lora", "block_weights"}`` (the
    Report's); an empty entry keeps the row's own spec. Raises :class:`SpecError` where the
    proposal is malformed, has another number of entries, or names another LoRA for a row."""
    fix = "wire the Stack Report's proposed_block_weights, with the same rows as this Stack, in the same order"
    try:
        entries = json.loads(text) if isinstance(text, str) else None
    except ValueError as e:
        raise SpecError(f"not valid JSON ({e})", key=PROPOSAL, hint=fix) from None
    if not isinstance(entries, list):
        raise SpecError("is not a JSON list of block-weight specs, one per row", key=PROPOSAL, hint=fix)
    if len(entries) != len(rows):
        raise SpecError(f"{len(entries)} entries for {len(rows)} rows", key=PROPOSAL, hint=fix)
    out = []
    for n, (row, entry) in enumerate(zip(rows, entries), 1):
        spec = entry
        if isinstance(entry, dict):
            if "lora" in entry and entry["lora"] != row.lora:
                raise SpecError(f"entry {n} is for {str(entry['lora'])[:200]!r}, row {n} is {row.lora[:200]!r}",
                                key=PROPOSAL, hint=fix)
            spec = entry.get("block_weights")
        if spec is not None and not isinstance(spec, str):
            raise SpecError(f"entry {n} is {json.dumps(spec)[:40]}, not a block-weight spec", key=PROPOSAL, hint=fix)
        out.append(Row(row.on, row.lora, row.strength_model, row.strength_clip, spec) if spec else row)
    return out
