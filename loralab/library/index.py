"""The library's index: one SQLite file (standard library ``sqlite3``, WAL) that knows the LoRA
files under some folders: their header facts, hashes and what imported exports say about them.

A file is known by its path, size and modification time (ns): :meth:`Library.scan` walks the
folders, stats every ``.safetensors``/``.sft`` file and reads the header of a file only when it is
new or one of the three changed; an unchanged file is never read again, and its hashes, computed
once by :meth:`Library.hash_pending` (usually in the background, see :mod:`.worker`), are kept.
The index then holds exactly the files of the folders scanned last.

Flags: *duplicate* for files whose tensor data is the same (the same addnet hash, so the same
AutoV3), *wrong hash* for files whose ``sshs_model_hash`` or ``modelspec.hash_sha256`` names other
tensor data than the file holds (edited, truncated, re-saved by a tool that kept stale metadata).
``sshs_legacy_hash`` is not compared: kohya computes it over the file as it was before its own
metadata was added, so it rarely matches a real file.

The index is a cache of what the files say (plus imported exports): deleting it loses nothing but
time and the imports.
"""
from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Sequence

from ..errors import LoRALabError
from ..files.hashes import file_hashes, stored_hash
from ..files.safetensors import gc_paused
from ..lora import Lora
from ..ops.inspect import summary_of
from .compat import compatible, fitting_archs, matches
from .imports import HASH_KINDS, ImportedModel, read_export

LORA_EXTENSIONS = (".safetensors", ".sft")
#: the tables' layout; an index of another layout is rebuilt from scratch
SCHEMA = 1
#: what :func:`read_facts` records; rows of an older version are read again (their hashes kept)
FACTS_VERSION = 2
#: metadata keys holding a hash of the tensor data (compared), and the legacy hash (kept, not compared)
EMBEDDED_HASHES = ("sshs_model_hash", "modelspec.hash_sha256", "sshs_legacy_hash")
_COMPARED = ("sshs_model_hash", "modelspec.hash_sha256")

#: called while hashing: (files done, files in all, bytes done, bytes in all, path being hashed or None);
#: it may raise to stop
HashingProgress = Callable[[int, int, int, int, "str | None"], None]

_TABLES = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, root TEXT NOT NULL, name TEXT NOT NULL, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, facts_version INTEGER NOT NULL, facts TEXT NOT NULL,
    sha256 TEXT, addnet TEXT, legacy TEXT, hash_error TEXT);
CREATE INDEX IF NOT EXISTS files_addnet ON files (addnet);
CREATE TABLE IF NOT EXISTS imported (
    kind TEXT NOT NULL, hash TEXT NOT NULL, model TEXT NOT NULL, PRIMARY KEY (kind, hash));
"""


def read_facts(path: str) -> dict:
    """What the header says about a LoRA file (the header-only inspection); a file that cannot be
    read gets ``{"error": why}`` instead of raising."""
    try:
        with gc_paused(), Lora.open(path) as lora:
            s = summary_of(lora, path, lora.source.file.header.file_size)  # type: ignore[attr-defined]
            fits = fitting_archs(lora.detection)
            meta = lora.source.metadata
    except LoRALabError as e:
        return {"error": e.problem + (f" ({e.hint})" if e.hint else "")}
    except OSError as e:
        return {"error": f"cannot be read: {e.strerror or e}"}
    return {
        "verdict": s.verdict(0), "arch": s.arch, "arch_name": s.arch_name, "variant": s.arch_variant, "fits": fits,
        "format": s.format, "format_name": s.format_name, "algorithms": s.algorithms, "rank": s.rank.summary,
        "modules": len(s.modules), "mapped": sum(s.components.values()), "title": s.training.title,
        "base_model": s.training.base_model, "triggers": s.trigger_words, "not_lora": s.not_lora,
        "warnings": len(s.warnings),
        "embedded": {k: h for k in EMBEDDED_HASHES if (h := stored_hash(meta.get(k)))},
    }


@dataclass
class ScanResult:
    """What one scan found: files in all, and how many were new, changed, unchanged or gone."""

    files: int = 0
    added: int = 0
    changed: int = 0
    unchanged: int = 0
    removed: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Entry:
    """One file of the library with everything known about it."""

    path: str
    root: str
    name: str  # relative to root
    size: int
    mtime_ns: int
    facts: dict
    sha256: str | None = None
    addnet: str | None = None
    legacy: str | None = None
    hash_error: str | None = None
    duplicates: list[str] = field(default_factory=list)  # other paths with the same tensor data
    imported: dict | None = None

    @property
    def hashes(self) -> dict | None:
        if self.sha256 is None or self.addnet is None:
            return None
        return {"sha256": self.sha256, "autov2": self.sha256[:10], "addnet": self.addnet, "autov3": self.addnet[:12],
                "legacy": self.legacy}

    @property
    def wrong_hashes(self) -> list[str]:
        """The embedded hashes of the tensor data that name other data than the file holds."""
        embedded = self.facts.get("embedded", {})
        if self.addnet is None:
            return []
        return [k for k in _COMPARED if k in embedded and embedded[k] != self.addnet]

    @property
    def flags(self) -> list[dict]:
        out = []
        if self.duplicates:
            out.append({"code": "duplicate", "message": f"same tensor data (AutoV3 {self.addnet[:12]}) as "  # type: ignore[index]
                        f"{len(self.duplicates)} other file(s)"})
        wrong = self.wrong_hashes
        if wrong:
            out.append({"code": "wrong_hash", "message": " and ".join(wrong) + " in the metadata " + (
                "name" if len(wrong) > 1 else "names") + " other tensor data than the file holds (its tensors were "
                "changed after the hash was written, or the hash was copied from another file)"})
        return out

    @property
    def words(self) -> list[str]:
        """What the picker's search looks in: the name, title and trigger words, imported ones too."""
        imp = self.imported or {}
        return [self.name, self.facts.get("title") or "", *self.facts.get("triggers", []),
                imp.get("name") or "", imp.get("version") or "", *imp.get("triggers", [])]

    def wanted(self, model_arch: str | None = None, query: str | None = None) -> bool:
        """Whether the file fits a model of ``model_arch`` (None: any) and its words hold every term
        of ``query``."""
        return compatible(self.facts.get("fits", []), model_arch) and matches(self.words, query)

    def to_dict(self) -> dict:
        return {"path": self.path, "root": self.root, "name": self.name, "size": self.size, "mtime_ns": self.mtime_ns,
                **{k: v for k, v in self.facts.items() if k != "embedded"}, "embedded": self.facts.get("embedded", {}),
                "hashes": self.hashes, "hash_error": self.hash_error, "flags": self.flags,
                "duplicates": self.duplicates, "imported": self.imported}


def _walk(folders: Sequence[str]) -> dict[str, tuple[str, str, int, int]]:
    """path -> (root, name, size, mtime_ns) of every LoRA file under the folders (links followed,
    each real folder once; the first folder holding a path wins)."""
    found: dict[str, tuple[str, str, int, int]] = {}
    seen_dirs: set[str] = set()
    for folder in folders:
        root = os.path.abspath(folder)
        for current, dirs, files in os.walk(root, followlinks=True):
            real = os.path.realpath(current)
            if real in seen_dirs:
                dirs[:] = []
                continue
            seen_dirs.add(real)
            dirs.sort()
            for f in files:
                if not f.lower().endswith(LORA_EXTENSIONS):
                    continue
                path = os.path.join(current, f)
                try:
                    st = os.stat(path)
                except OSError:
                    continue
                if path not in found and stat.S_ISREG(st.st_mode):
                    found[path] = (root, os.path.relpath(path, root), st.st_size, st.st_mtime_ns)
    return found


class Library:
    """The index in ``db_path`` (created, with its folder, if missing). Safe to share between
    threads: each call holds the connection for its own short statements only."""

    def __init__(self, db_path: str | os.PathLike) -> None:
        self.db_path = os.path.abspath(os.fspath(db_path))
        self._lock = threading.RLock()
        try:
            os.makedirs(os.path.dirname(self.db_path), exist_ok=True)
            self._db = sqlite3.connect(self.db_path, check_same_thread=False, timeout=30)
            self._setup()
        except (sqlite3.Error, OSError) as e:
            raise LoRALabError(f"cannot be used as LoRA Lab's library index: {e}", path=self.db_path,
                               hint="delete the file: the next scan builds it again") from None

    def _setup(self) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA):
            with db:
                db.execute("DROP TABLE IF EXISTS files")
                db.execute("DROP TABLE IF EXISTS imported")
        db.executescript(_TABLES)
        db.execute(f"PRAGMA user_version={SCHEMA}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> "Library":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- scanning -------------------------------------------------------------------------------

    def scan(self, folders: Sequence[str | os.PathLike],
             progress: Callable[[int, int], None] | None = None) -> ScanResult:
        """Bring the index in step with the files under ``folders``: headers of new and changed files
        are read (``progress(read, to read)`` after each; it may raise to stop), rows of files gone
        are removed, unchanged files are not opened. Hashing is left to :meth:`hash_pending`."""
        t0 = time.perf_counter()
        found = _walk([os.fspath(f) for f in folders])
        with self._lock:
            known = {p: (s, m, v) for p, s, m, v in
                     self._db.execute("SELECT path, size, mtime_ns, facts_version FROM files")}
            with self._db:
                self._db.execute("UPDATE files SET hash_error = NULL WHERE hash_error IS NOT NULL")
                gone = [p for p in known if p not in found]
                self._db.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in gone])
        result = ScanResult(files=len(found), removed=len(gone))
        todo = []
        for path, (root, name, size, mtime) in found.items():
            old = known.get(path)
            if old is None:
                result.added += 1
            elif old[:2] != (size, mtime):
                result.changed += 1
            elif old[2] != FACTS_VERSION:
                todo.append((path, root, name, size, mtime, True))  # same file: its hashes stay
                continue
            else:
                result.unchanged += 1
                continue
            todo.append((path, root, name, size, mtime, False))
        batch: list[tuple] = []
        last = time.monotonic()
        for i, (path, root, name, size, mtime, keep) in enumerate(todo):
            facts = json.dumps(read_facts(path), ensure_ascii=False)
            batch.append((path, root, name, size, mtime, FACTS_VERSION, facts, keep))
            if progress is not None:
                progress(i + 1, len(todo))
            if time.monotonic() - last > 0.5 or i == len(todo) - 1:  # readers see the scan advance
                self._write_facts(batch)
                batch, last = [], time.monotonic()
        result.seconds = time.perf_counter() - t0
        return result

    def _write_facts(self, rows: list[tuple]) -> None:
        with self._lock, self._db:
            for path, root, name, size, mtime, version, facts, keep in rows:
                if keep:
                    self._db.execute("UPDATE files SET root = ?, name = ?, facts_version = ?, facts = ? WHERE path = ?",
                                     (root, name, version, facts, path))
                else:
                    self._db.execute("INSERT OR REPLACE INTO files (path, root, name, size, mtime_ns, facts_version, "
                                     "facts) VALUES (?, ?, ?, ?, ?, ?, ?)", (path, root, name, size, mtime, version, facts))

    # --- hashing --------------------------------------------------------------------------------

    def pending(self) -> list[tuple[str, int, int]]:
        """(path, size, mtime_ns) of the files still to hash, smallest first: readable LoRAs without
        hashes (files that are no LoRA, checkpoints in the loras folder say, are not hashed)."""
        with self._lock:
            rows = self._db.execute("SELECT path, size, mtime_ns, facts FROM files WHERE sha256 IS NULL AND "
                                    "hash_error IS NULL ORDER BY size, path").fetchall()
        out = []
        for path, size, mtime, facts in rows:
            f = json.loads(facts)
            if not f.get("error") and not f.get("not_lora"):
                out.append((path, size, mtime))
        return out

    def hash_pending(self, progress: HashingProgress | None = None) -> int:
        """Hash every pending file once (one streamed read each), in this thread; returns how many
        were hashed. A file that changed since the scan is left for the next scan; a file that
        cannot be read gets its error recorded (tried again after the next scan)."""
        todo = self.pending()
        total = sum(size for _, size, _ in todo)
        done_bytes = hashed = 0
        for i, (path, size, mtime) in enumerate(todo):
            if progress is not None:
                progress(i, len(todo), done_bytes, total, path)
            try:
                if _stamp(path) != (size, mtime):
                    continue
                on_chunk = None if progress is None else (
                    lambda done, _all, i=i, base=done_bytes, path=path: progress(i, len(todo), base + done, total, path))
                h = file_hashes(path, on_chunk)
                if _stamp(path) != (size, mtime):
                    continue
            except (LoRALabError, OSError) as e:
                with self._lock, self._db:
                    self._db.execute("UPDATE files SET hash_error = ? WHERE path = ? AND size = ? AND mtime_ns = ?",
                                     (str(e), path, size, mtime))
                continue
            finally:
                done_bytes += size
            with self._lock, self._db:
                self._db.execute("UPDATE files SET sha256 = ?, addnet = ?, legacy = ?, hash_error = NULL WHERE path = ? "
                                 "AND size = ? AND mtime_ns = ?", (h.sha256, h.addnet, h.legacy, path, size, mtime))
            hashed += 1
        if progress is not None:
            progress(len(todo), len(todo), total, total, None)
        return hashed

    # --- reading --------------------------------------------------------------------------------

    def entries(self, model_arch: str | None = None, query: str | None = None) -> list[Entry]:
        """The files (by name), with flags and imported data; ``model_arch`` keeps those that fit a
        model of that arch, ``query`` those whose name, title or trigger words hold every term."""
        with self._lock:
            rows = self._db.execute("SELECT path, root, name, size, mtime_ns, facts, sha256, addnet, legacy, "
                                    "hash_error FROM files").fetchall()
            imported = {(k, h): json.loads(m) for k, h, m in self._db.execute("SELECT kind, hash, model FROM imported")}
        by_data: dict[str, list[str]] = {}
        for row in rows:
            if row[7] is not None:
                by_data.setdefault(row[7], []).append(row[0])
        out = []
        for path, root, name, size, mtime, facts, sha, addnet, legacy, err in rows:
            e = Entry(path, root, name, size, mtime, json.loads(facts), sha, addnet, legacy, err)
            if addnet is not None:
                e.duplicates = [p for p in by_data[addnet] if p != path]
            e.imported = _imported_for(e, imported)
            if e.wanted(model_arch, query):
                out.append(e)
        out.sort(key=lambda e: (e.name.casefold(), e.path))
        return out

    def duplicates(self) -> list[list[Entry]]:
        """Groups of files holding the same tensor data, largest groups first."""
        groups: dict[str, list[Entry]] = {}
        for e in self.entries():
            if e.duplicates:
                groups.setdefault(e.addnet, []).append(e)  # type: ignore[arg-type]
        return sorted(groups.values(), key=lambda g: (-len(g), g[0].name.casefold()))

    # --- imports --------------------------------------------------------------------------------

    def import_models(self, models: Iterable[ImportedModel]) -> int:
        """Remember what exports say about models, by each of their hashes (a later import of the
        same hash replaces the earlier); returns how many models were stored."""
        rows = []
        count = 0
        for m in models:
            doc = json.dumps(m.to_dict(), ensure_ascii=False)
            rows += [(kind, h, doc) for kind, h in m.hashes.items() if kind in HASH_KINDS]
            count += 1
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO imported (kind, hash, model) VALUES (?, ?, ?)", rows)
        return count

    def import_export(self, path: str | os.PathLike) -> tuple[int, int]:
        """Import an export file or folder (:func:`.imports.read_export`); returns (models read,
        files of the library they name now)."""
        models = read_export(path)
        self.import_models(models)
        keys = {(k, h) for m in models for k, h in m.hashes.items()}
        named = sum(1 for e in self.entries() if _keys(e) & keys)
        return len(models), named


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


def _keys(e: Entry) -> set[tuple[str, str]]:
    """The (hash kind, hash) pairs an export may name this file by."""
    out = set()
    if e.sha256:
        out |= {("sha256", e.sha256), ("autov2", e.sha256[:HASH_KINDS["autov2"]])}
    if e.addnet:
        out.add(("autov3", e.addnet[:HASH_KINDS["autov3"]]))
    return out


def _imported_for(e: Entry, imported: dict[tuple[str, str], dict]) -> dict | None:
    """What the imports say about a file: the first match by sha256, AutoV3, AutoV2 for the name
    and base model; the trigger words and previews of every match."""
    found = [imported[k] for k in sorted(_keys(e), key=lambda k: list(HASH_KINDS).index(k[0])) if k in imported]
    if not found:
        return None
    first = found[0]
    out = {"source": first.get("source"), "name": first.get("name"), "version": first.get("version"),
           "base_model": first.get("base_model"), "triggers": [], "previews": []}
    for m in found:
        for key in ("triggers", "previews"):
            out[key] += [w for w in m.get(key, []) if w not in out[key]]
    return out
