"""Metadata exports of other tools, read offline: names, trigger words, base models and preview
images of models, by their hashes, to attach to the files of the library that have those hashes.

Understood (one JSON document per file, or a folder of them):

* ComfyUI LoRA Manager's ``<name>.metadata.json``: ``sha256``, ``model_name``, ``base_model``,
  ``preview_url`` and ``civitai`` (the Civitai model version it was fetched from: ``trainedWords``,
  ``images[].url``, ``files[].hashes``); a list of such objects too.
* Civitai's API: a model version (``files[].hashes.{SHA256, AutoV2, AutoV3}``, ``trainedWords``,
  ``baseModel``, ``images[].url``, ``model.name``; also what Civitai Helper saves as
  ``*.civitai.info``), a model (``modelVersions``: each version, named after the model) and a page
  of results (``items``).

Exports are strangers' text: only strings, numbers and lists of the expected shapes are taken,
hashes must be hexadecimal of their kind's length, text is cut to a bounded length, and preview
images are kept as the strings given (a local path or a URL): nothing is fetched or opened.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

from ..errors import LoRALabError

#: hash kinds matched against the library's files -> their length in hex digits
HASH_KINDS = {"sha256": 64, "autov3": 12, "autov2": 10}
#: Civitai's names of the hashes above
_CIVITAI_HASHES = {"SHA256": "sha256", "AutoV3": "autov3", "AutoV2": "autov2"}
#: the largest export file read
MAX_EXPORT_BYTES = 64 << 20
#: extensions of export files in a folder (LoRA Manager ``.metadata.json``, Civitai Helper ``.civitai.info``)
EXPORT_EXTENSIONS = (".json", ".info")
MAX_TEXT = 300
MAX_LIST = 50
_HEX = re.compile(r"^[0-9a-f]+$")


@dataclass
class ImportedModel:
    """What an export says about the model file with these hashes."""

    hashes: dict[str, str]  # kind (HASH_KINDS) -> lower-case hex
    source: str  # "LoRA Manager" | "Civitai"
    name: str | None = None
    version: str | None = None
    base_model: str | None = None
    triggers: list[str] = field(default_factory=list)
    previews: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _text(value: Any) -> str | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        return None
    return value.strip()[:MAX_TEXT]


def _texts(values: Any) -> list[str]:
    out: list[str] = []
    for v in values if isinstance(values, list) else []:
        t = _text(v)
        if t is not None and t not in out:
            out.append(t)
        if len(out) >= MAX_LIST:
            break
    return out


def _hash(kind: str, value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    v = value.strip().lower()
    v = v[2:] if v.startswith("0x") else v
    return v if len(v) == HASH_KINDS[kind] and _HEX.match(v) else None


def _dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _image_urls(images: Any) -> list[str]:
    return _texts([_dict(i).get("url") for i in images] if isinstance(images, list) else [])


def _file_hashes(files: Any) -> Iterator[dict[str, str]]:
    """The hashes of each file of a Civitai model version (its model files first)."""
    items = [_dict(f) for f in files] if isinstance(files, list) else []
    items.sort(key=lambda f: f.get("type") not in (None, "Model"))
    for f in items:
        got = {kind: h for name, kind in _CIVITAI_HASHES.items() if (h := _hash(kind, _dict(f.get("hashes")).get(name)))}
        if got:
            yield got


def _civitai_version(v: dict, model_name: str | None = None) -> list[ImportedModel]:
    name = model_name or _text(_dict(v.get("model")).get("name"))
    return [ImportedModel(hashes, "Civitai", name, _text(v.get("name")), _text(v.get("baseModel")),
                          _texts(v.get("trainedWords")), _image_urls(v.get("images")))
            for hashes in _file_hashes(v.get("files"))]


def _lora_manager(d: dict) -> list[ImportedModel]:
    civitai = _dict(d.get("civitai"))
    files = list(_file_hashes(civitai.get("files")))
    sha = _hash("sha256", d.get("sha256"))
    if sha:  # the file's own hash, with the other hashes Civitai lists for that same file
        hashes = {**next((h for h in files if h.get("sha256") == sha), {}), "sha256": sha}
    elif files:
        hashes = files[0]
    else:
        return []
    previews = _texts([d.get("preview_url")]) + [u for u in _image_urls(civitai.get("images")) if u != d.get("preview_url")]
    name = _text(d.get("model_name")) or _text(_dict(civitai.get("model")).get("name")) or _text(d.get("file_name"))
    return [ImportedModel(hashes, "LoRA Manager", name, _text(civitai.get("name")),
                          _text(d.get("base_model")) or _text(civitai.get("baseModel")),
                          _texts(civitai.get("trainedWords")), previews[:MAX_LIST])]


def parse_export(doc: Any, depth: int = 0) -> list[ImportedModel]:
    """The models an export document (already parsed JSON) describes; anything else in it is ignored."""
    if depth > 4:
        return []
    if isinstance(doc, list):
        return [m for item in doc[:100_000] for m in parse_export(item, depth + 1)]
    if not isinstance(doc, dict):
        return []
    if "sha256" in doc and ("model_name" in doc or "file_name" in doc or "civitai" in doc):
        return _lora_manager(doc)
    if isinstance(doc.get("modelVersions"), list):
        name = _text(doc.get("name"))
        return [m for v in doc["modelVersions"] if isinstance(v, dict) for m in _civitai_version(v, name)]
    if isinstance(doc.get("files"), list):
        return _civitai_version(doc)
    if isinstance(doc.get("items"), list):
        return parse_export(doc["items"], depth + 1)
    return []


def _read_one(path: str) -> Any:
    try:
        size = os.path.getsize(path)
        if size > MAX_EXPORT_BYTES:
            raise LoRALabError(f"export is {size} bytes, more than the {MAX_EXPORT_BYTES} read", path=path,
                               hint="split it into smaller files")
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise LoRALabError(f"cannot be read: {e.strerror or e}", path=path) from None
    except UnicodeDecodeError:
        raise LoRALabError("not UTF-8 text", path=path, hint="give a JSON export") from None
    except RecursionError:
        raise LoRALabError("JSON nested too deeply", path=path) from None
    except ValueError as e:
        raise LoRALabError(f"not valid JSON: {e}", path=path, hint="give a JSON export") from None


def read_export(path: str | os.PathLike) -> list[ImportedModel]:
    """The models described by an export file, or by every ``.json``/``.info`` file under a folder
    (files that are no JSON are skipped there; a single file must be one)."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        return parse_export(_read_one(path))
    out: list[ImportedModel] = []
    for root, dirs, files in os.walk(path):
        dirs.sort()
        for f in sorted(files):
            if f.lower().endswith(EXPORT_EXTENSIONS):
                try:
                    out += parse_export(_read_one(os.path.join(root, f)))
                except LoRALabError:
                    continue
    return out
