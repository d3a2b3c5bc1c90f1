"""What the block-weight editor needs to know about an architecture, as JSON-ready data.

The frontend's spec editor parses and writes the same grammar as :mod:`loralab.blocks.spec`
(a conformance corpus checks the two agree); this module hands it the facts the grammar rests
on, all taken from that parser: the standard block ids in display order, the block families
(what ``IN``, ``D`` or ``BASE`` name, and each block's number), the vector forms, and every
preset resolved to a weight per block.
"""
from __future__ import annotations

from ..errors import SpecError
from ..layouts.archs import arch
from .map import OTHER, split_block_id
from .spec import VECTOR_FORMS, block_families, load_presets, parse_block_weights, standard_blocks


def block_catalog(arch_id: str, presets: dict[str, list[str]] | None = None) -> dict:
    """The editor's view of an arch::

        arch, name, family: str
        blocks: [block id]                       # standard blocks, display order (no OTHER)
        families: [{name, blocks: [[block id, number or null]]}]   # display order, OTHER last
        vector_forms: {length: [block id]}
        presets: [{name, weights: {block id: weight}}]             # every block and OTHER
        unavailable_presets: [name]              # presets with no form for this arch

    Raises KeyError for an unknown arch id.
    """
    info = arch(arch_id)
    presets = load_presets() if presets is None else presets
    blocks = standard_blocks(arch_id)
    resolved, unavailable = [], []
    for name in presets:
        try:
            bw = parse_block_weights(name, arch_id, presets=presets)
        except SpecError:
            unavailable.append(name)
            continue
        resolved.append({"name": name, "weights": {b: bw.weight(b) for b in [*blocks, OTHER]}})
    return {
        "arch": info.id, "name": info.name, "family": info.family,
        "blocks": blocks,
        "families": [{"name": fam, "blocks": [[b, split_block_id(b)[1]] for b in members]}
                     for fam, members in block_families(arch_id).items()],
        "vector_forms": {str(n): ids for n, ids in VECTOR_FORMS.get(arch_id, {}).items()},
        "presets": resolved,
        "unavailable_presets": unavailable,
    }
