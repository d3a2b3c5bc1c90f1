"""Wan 2.2 A14B high-noise / low-noise LoRA pairs.

Wan 2.2 A14B runs two diffusion models of one layout: the high-noise expert for the first
(noisiest) steps and the low-noise expert for the rest. Trainers write one LoRA per expert, so a
LoRA for it comes as two files. Which expert a file is for is not in its keys (both have the same
layout); it is in its training timestep range (``ss_min_timestep`` / ``ss_max_timestep``, as
musubi-tuner and sd-scripts record them) and, by convention, in its file name
(``..._high_noise...``, ``..._HIGH...``, ``..._HN...``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterable, Mapping

#: Wan 2.2 A14B's expert boundary in training timesteps (0-1000): 875 for T2V, 900 for I2V
#: (ComfyUI's and Wan's own sampling use the same switch); ranges are judged against the midpoint
BOUNDARY = 500
ROLES = ("high", "low")
#: name tokens by role, matched between separators (case-insensitive)
_TOKENS = {"high": ("high_noise", "high-noise", "highnoise", "high", "hn"),
           "low": ("low_noise", "low-noise", "lownoise", "low", "ln")}
_SEP = r"(?:^|(?<=[\s_.\-]))"
_END = r"(?=$|[\s_.\-])"


@dataclass(frozen=True)
class Role:
    """Which expert a LoRA file is for, and what says so."""

    role: str  # "high" | "low"
    evidence: str  # e.g. "ss_min_timestep 875" or "file name (…_HIGH…)"


def _token(role: str) -> re.Pattern[str]:
    return re.compile(_SEP + "(" + "|".join(re.escape(t) for t in _TOKENS[role]) + ")" + _END, re.IGNORECASE)


_PATTERNS = {role: _token(role) for role in ROLES}


def _int(value: str | None) -> int | None:
    try:
        return int(float(value)) if value not in (None, "", "None") else None
    except ValueError:
        return None


def role_from_metadata(metadata: Mapping[str, str]) -> Role | None:
    """The expert a training timestep range fits: entirely above :data:`BOUNDARY` is high-noise,
    entirely below is low-noise; None for the full range or no range."""
    lo, hi = _int(metadata.get("ss_min_timestep")), _int(metadata.get("ss_max_timestep"))
    if lo is not None and lo >= BOUNDARY and (hi is None or hi > lo):
        return Role("high", f"trained on timesteps {lo}-{hi if hi is not None else 1000} (ss_min_timestep)")
    if hi is not None and hi <= BOUNDARY and (lo is None or lo < hi):
        return Role("low", f"trained on timesteps {lo or 0}-{hi} (ss_max_timestep)")
    return None


def role_from_name(name: str) -> Role | None:
    """The expert a file name says (its stem holds exactly one role's token); None otherwise."""
    stem = os.path.splitext(os.path.basename(name))[0]
    found = [role for role in ROLES if _PATTERNS[role].search(stem)]
    if len(found) != 1:
        return None
    return Role(found[0], f"file name ({os.path.basename(name)})")


def noise_role(name: str, metadata: Mapping[str, str]) -> Role | None:
    """The expert a LoRA file is for: its timestep range first, then its name."""
    return role_from_metadata(metadata) or role_from_name(name)


def partner(name: str, names: Iterable[str]) -> str | None:
    """The other file of ``name``'s pair among ``names``: the same path with the role token
    swapped (``_high_noise`` ↔ ``_low_noise``, ``HIGH`` ↔ ``LOW``, ``HN`` ↔ ``LN``, same folder,
    any case); None when ``name`` has no role token or no such file is listed."""
    role = role_from_name(name)
    if role is None:
        return None
    other = "low" if role.role == "high" else "high"
    folder, base = os.path.split(name)
    listed = {n.lower(): n for n in names if n != name}
    for candidate in (_PATTERNS[role.role].sub(lambda m: t, base, count=1) for t in _TOKENS[other]):
        found = listed.get(os.path.join(folder, candidate).lower())
        if found is not None:
            return found
    return None
