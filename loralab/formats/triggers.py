"""Trigger words of a LoRA, each with where it was found.

Sources, in the order they are listed: ``modelspec.trigger_phrase``; ai-toolkit's trigger (the one
tag of its ``1_<trigger>`` folder in ``ss_tag_frequency``); the class tokens of kohya DreamBooth
folders (``10_ohwx woman`` -> ``ohwx woman``, from ``ss_dataset_dirs``/``ss_tag_frequency`` folder
names and ``class_tokens`` of ``ss_datasets`` subsets); the caption tags of every
``ss_tag_frequency`` folder, most frequent first; ``ss_output_name``.

A trigger is *likely* (and goes into :func:`trigger_words`) when it is a trigger phrase, the
ai-toolkit trigger, a class token, or a tag found in every caption of its folder.
"""
from __future__ import annotations

import heapq
import re
from collections import Counter
from dataclasses import asdict, dataclass, field

from .metadata import Metadata, folder_images

#: tags listed per ss_tag_frequency folder (the full table stays in the metadata)
MAX_TAGS_PER_FOLDER = 30
#: tags a :class:`TagSummary` lists
TOP_TAGS = 8
#: the largest caption count taken as one (a trainer counts captions; 2**53 is past any dataset)
_MAX_COUNT = 2**53

_REPEAT_FOLDER = re.compile(r"^(\d+)_(.+)$")


@dataclass
class Trigger:
    """One candidate trigger word and its source."""

    word: str
    kind: str  # "trigger_phrase" | "aitoolkit_trigger" | "class_tokens" | "tag" | "output_name"
    source: str  # where it was read, e.g. ss_tag_frequency["10_ohwx woman"]
    count: int | None = None  # captions containing the tag (tags only)
    images: int | None = None  # images of its folder, where known (tags only)
    likely: bool = False

    def to_dict(self) -> dict:
        return asdict(self)


def class_tokens(folder: str) -> str | None:
    """The class tokens of a kohya DreamBooth folder name (``10_ohwx woman`` -> ``ohwx woman``)."""
    m = _REPEAT_FOLDER.match(folder.strip())
    return m.group(2).strip() or None if m else None


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= _MAX_COUNT:
        return None
    return int(value)


@dataclass
class TagFolders:
    """``ss_tag_frequency`` read as folder -> {tag: captions}, with what could not be read:
    ``skipped`` entries (a folder that is no ``{tag: count}`` object, a count that is no
    non-negative number) and ``problem``, why nothing could be read at all."""

    folders: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: int = 0
    problem: str | None = None


def tag_folders(md: Metadata) -> TagFolders:
    """The caption tags of ``ss_tag_frequency`` per training folder, whatever shape it has."""
    freq = md.get("ss_tag_frequency")
    out = TagFolders()
    if "ss_tag_frequency" in md.errors:
        out.problem = f"ss_tag_frequency is {md.errors['ss_tag_frequency']}"
    elif freq is not None and not isinstance(freq, dict):
        out.problem = f"ss_tag_frequency is a JSON {type(freq).__name__}, not {{folder: {{tag: count}}}}"
    for folder, tags in freq.items() if isinstance(freq, dict) and out.problem is None else ():
        if not isinstance(tags, dict):
            out.skipped += 1
            continue
        counted = out.folders.setdefault(str(folder), {})
        for tag, value in tags.items():
            n = _count(value)
            if n is None:
                out.skipped += 1
            else:
                counted[str(tag)] = n
    return out


@dataclass
class TagSummary:
    """The most frequent caption tags over every training folder (``top``: (tag, captions), most
    first, counts summed over folders), how many distinct tags and folders there are, and what
    could not be read (:class:`TagFolders`)."""

    top: list[tuple[str, int]]
    distinct: int
    folders: int
    skipped: int = 0
    problem: str | None = None

    def to_dict(self) -> dict:
        return {"top": [{"tag": t, "count": n} for t, n in self.top], "distinct": self.distinct,
                "folders": self.folders, "skipped": self.skipped, "problem": self.problem}


def tag_summary(md: Metadata, limit: int = TOP_TAGS, read: TagFolders | None = None) -> TagSummary:
    """The ``limit`` most frequent tags of ``ss_tag_frequency`` (ties by name); ``read``: its
    :func:`tag_folders`, where already at hand."""
    read = read if read is not None else tag_folders(md)
    totals: Counter[str] = Counter()
    for tags in read.folders.values():
        totals.update(tags)
    top = heapq.nsmallest(limit, totals.items(), key=lambda kv: (-kv[1], kv[0]))
    return TagSummary(top, len(totals), len(read.folders), read.skipped, read.problem)


def tag_frequency(read: TagFolders, images: dict[str, int]) -> list[dict]:
    """Every folder's tags, most frequent first, as JSON: [{folder, images (its image count, or
    None), tags: [{tag, count}]}]; ``images``: :func:`~.metadata.folder_images`."""
    def ranked(tags: dict[str, int]) -> list[dict]:
        return [{"tag": t, "count": n} for t, n in sorted(tags.items(), key=lambda kv: (-kv[1], kv[0]))]
    return [{"folder": folder, "images": images.get(folder), "tags": ranked(tags)} for folder, tags in read.folders.items()]


def find_triggers(md: Metadata, read: TagFolders | None = None) -> list[Trigger]:
    """Every trigger-word candidate in the metadata, with its source; ``read``: the metadata's
    :func:`tag_folders`, where already at hand."""
    out: list[Trigger] = []
    phrase = md.modelspec.get("trigger_phrase", "").strip()
    if phrase:
        out.append(Trigger(phrase, "trigger_phrase", "modelspec.trigger_phrase", likely=True))
    folders = (read if read is not None else tag_folders(md)).folders
    if "ai-toolkit" in md.software_name.lower():
        for folder, tags in folders.items():
            if class_tokens(folder) and len(tags) == 1:
                out.append(Trigger(next(iter(tags)), "aitoolkit_trigger", f'ss_tag_frequency["{folder}"] (ai-toolkit)',
                                   likely=True))
    names: list[tuple[str, str]] = []
    dirs = md.get("ss_dataset_dirs")
    if isinstance(dirs, dict):
        names += [(str(f), "ss_dataset_dirs") for f in dirs]
    names += [(f, "ss_tag_frequency") for f in folders]
    seen_folders: set[str] = set()
    for folder, where in names:
        tokens = class_tokens(folder)
        if tokens and folder not in seen_folders:
            seen_folders.add(folder)
            out.append(Trigger(tokens, "class_tokens", f'{where} folder "{folder}"', likely=True))
    datasets = md.get("ss_datasets")
    if isinstance(datasets, list):
        for i, ds in enumerate(datasets):
            subsets = ds.get("subsets") if isinstance(ds, dict) else None
            for j, sub in enumerate(subsets if isinstance(subsets, list) else []):
                tokens = sub.get("class_tokens") if isinstance(sub, dict) and not sub.get("is_reg") else None
                if isinstance(tokens, str) and tokens.strip():
                    out.append(Trigger(tokens.strip(), "class_tokens", f"ss_datasets[{i}].subsets[{j}].class_tokens",
                                       likely=True))
    images = folder_images(md)
    for folder, tags in folders.items():
        total = images.get(folder)
        ranked = sorted(tags.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_TAGS_PER_FOLDER]
        for tag, count in ranked:
            out.append(Trigger(tag, "tag", f'ss_tag_frequency["{folder}"]', count, total,
                               likely=bool(total) and count >= total))
    name = md.get("ss_output_name")
    if isinstance(name, str) and name.strip():
        out.append(Trigger(name.strip(), "output_name", "ss_output_name"))
    return out


def _norm(word: str) -> str:
    return " ".join(word.lower().split())


def trigger_words(triggers: list[Trigger]) -> list[str]:
    """The likely trigger words, deduplicated (case and spacing ignored), in source order."""
    seen: set[str] = set()
    out = []
    for t in triggers:
        if t.likely and _norm(t.word) not in seen:
            seen.add(_norm(t.word))
            out.append(t.word)
    return out
