"""``loralab library``: the command-line side of :mod:`loralab.library` (scan folders into an
index, list and search it, show duplicates, import LoRA Manager / Civitai exports)."""
from __future__ import annotations

import argparse
import json
import os
import sys

from ..errors import LoRALabError
from .terminal import ProgressPrinter, terminal_safe


def default_db() -> str:
    """The index the commands use without ``--db``: ``$XDG_CACHE_HOME/loralab/library.sqlite``
    (``~/.cache/loralab/library.sqlite``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "loralab", "library.sqlite")


def _open(args: argparse.Namespace):
    from ..library import Library
    return Library(args.db or default_db())


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=1, ensure_ascii=False, allow_nan=False))


def _cmd_scan(args: argparse.Namespace) -> int:
    missing = [d for d in args.folders if not os.path.isdir(d)]
    if missing:
        print(terminal_safe(f"error: not a folder: {', '.join(missing)}"), file=sys.stderr)
        return 2
    with _open(args) as lib:
        result = lib.scan(args.folders, ProgressPrinter("reading headers", args.quiet, unit="files"))
        print(f"{result.files} files: {result.added} new, {result.changed} changed, {result.unchanged} unchanged, "
              f"{result.removed} gone ({result.seconds:.2f} s)")
        if not args.no_hash:
            mib = ProgressPrinter("hashing", args.quiet, unit="MiB")
            hashed = lib.hash_pending(lambda _f, _n, done, total, _p: mib(done >> 20, total >> 20))
            print(f"{hashed} files hashed")
        for e in lib.entries():
            for flag in e.flags:
                also = ": " + ", ".join(e.duplicates) if flag["code"] == "duplicate" else ""
                print(terminal_safe(f"{e.name}: {flag['message']}{also}"))
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    with _open(args) as lib:
        entries = lib.entries(args.arch, args.search)
    if args.json:
        _print_json([e.to_dict() for e in entries])
        return 0
    for e in entries:
        f = e.facts
        what = f.get("error") or f.get("verdict") or ""
        hashes = e.hashes
        line = f"{e.name}  [{f.get('arch_name') or 'unknown'}]  AutoV3 {hashes['autov3'] if hashes else '(not hashed)'}"
        words = f.get("triggers", []) + (e.imported or {}).get("triggers", [])
        print(terminal_safe(line))
        print(terminal_safe(f"    {what}"))
        if words:
            print(terminal_safe("    trigger words: " + ", ".join(dict.fromkeys(words))))
        if e.imported and e.imported.get("name"):
            print(terminal_safe(f"    {e.imported['source']}: {e.imported['name']}"))
        for flag in e.flags:
            print(terminal_safe(f"    ! {flag['message']}"))
    print(f"{len(entries)} files")
    return 0


def _cmd_dupes(args: argparse.Namespace) -> int:
    with _open(args) as lib:
        groups = lib.duplicates()
    if args.json:
        _print_json([[e.path for e in g] for g in groups])
        return 0
    for g in groups:
        print(terminal_safe(f"AutoV3 {g[0].addnet[:12]}  ({len(g)} files, {g[0].size} bytes each)"))  # type: ignore[index]
        for e in g:
            print(terminal_safe(f"    {e.path}"))
    print(f"{len(groups)} groups of duplicates")
    return 0


def _cmd_import(args: argparse.Namespace) -> int:
    status = 0
    with _open(args) as lib:
        for path in args.exports:
            try:
                models, named = lib.import_export(path)
            except LoRALabError as e:
                print(terminal_safe(f"error: {e}"), file=sys.stderr)
                status = 1
                continue
            print(terminal_safe(f"{path}: {models} models read; {named} files of the library named by their hashes"))
    return status


def add_library(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("library", help="an index of your LoRA folders: facts, hashes, duplicates, wrong hashes, "
                                       "search, LoRA Manager / Civitai imports")
    commands = p.add_subparsers(dest="library_command", metavar="ACTION", required=True)

    def action(name: str, help_text: str, func) -> argparse.ArgumentParser:
        a = commands.add_parser(name, help=help_text)
        a.add_argument("--db", help=f"the index file (default {default_db()})")
        a.set_defaults(func=func)
        return a

    a = action("scan", "index the LoRA files under these folders (headers of new or changed files only) and hash "
                       "the new ones; the index then holds exactly these folders' files", _cmd_scan)
    a.add_argument("folders", nargs="+", metavar="DIR", help="folders to index (with their sub-folders)")
    a.add_argument("--no-hash", action="store_true", help="read headers only; hash on a later scan")
    a.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    a = action("list", "the indexed files with base model, AutoV3, trigger words and flags", _cmd_list)
    a.add_argument("--arch", help="only files that fit a model of this architecture (sd1, sdxl, flux, ...)")
    a.add_argument("--search", metavar="WORDS", help="only files whose name, title or trigger words hold every word")
    a.add_argument("--json", action="store_true", help="print a JSON list of the entries")
    a = action("dupes", "groups of files with the same tensor data (the same AutoV3)", _cmd_dupes)
    a.add_argument("--json", action="store_true", help="print a JSON list of groups of paths")
    a = action("import", "attach names, trigger words and preview images from LoRA Manager .metadata.json or Civitai "
                         "JSON exports, by hash (offline)", _cmd_import)
    a.add_argument("exports", nargs="+", metavar="FILE", help="export files, or folders of them")
