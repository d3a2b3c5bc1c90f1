"""Atomic file writes: a temp file in the destination folder, fsync, then an atomic publish.

Every file LoRA Lab writes goes through :func:`atomic_write`. A failure at any point leaves the
destination as it was (absent, or the old file intact) and removes the temp file. An existing
file is only replaced when the caller asks for it. A process killed while writing can leave its
temp file behind (nothing else is touched); writers remove such temps from their folder once they
are older than :data:`STALE_TEMP_SECONDS` (:func:`remove_stale_temps`).
"""
from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
import time
from typing import IO, Iterator

from ..errors import FileExistsRefusedError, WriteError

TEMP_SUFFIX = ".loralab-tmp"
#: a temp file untouched for this long belongs to a writer that died (no write takes a day)
STALE_TEMP_SECONDS = 24 * 3600
#: bytes of the destination's name kept in a temp file's name (names stay under the 255-byte limit)
_TEMP_NAME_BYTES = 100
#: errors that mean "the disk refused the data", whichever step hit them
_DISK_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EROFS, getattr(errno, "EDQUOT", errno.ENOSPC)}


def temp_prefix(dest: str, tag: str = "") -> str:
    """The name prefix of a temp file for ``dest`` (hidden, bounded length, ``tag`` appended)."""
    name = os.path.basename(dest).encode("utf-8", "surrogateescape")[:_TEMP_NAME_BYTES]
    return "." + name.decode("utf-8", "ignore") + "." + (tag + "." if tag else "")


def _umask() -> int:
    """The process umask, read without changing it (Linux /proc), else the usual 0o022."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


#: published files get the permissions a plain open() would give them (mkstemp makes them 0600)
FILE_MODE = 0o666 & ~_umask()


def write_error(e: OSError, dest: str) -> WriteError:
    """A :class:`WriteError` naming ``dest`` and the system's reason."""
    full = e.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    hint = ("free some disk space and try again; " if full else "") + "the destination was not changed"
    return WriteError(f"could not be written: {e.strerror or e}", path=dest, hint=hint)


def remove_stale_temps(folder: str | os.PathLike, older_than: float = STALE_TEMP_SECONDS) -> list[str]:
    """Remove LoRA Lab temp files in ``folder`` (not its sub-folders) not modified for ``older_than``
    seconds: what a killed writer left. Only regular files named ``.*.loralab-tmp`` are touched.
    Returns the removed paths; errors are ignored (another writer may remove them first)."""
    removed = []
    cutoff = time.time() - older_than
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX)):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
                os.unlink(entry.path)
                removed.append(entry.path)
        except OSError:
            continue
    return removed


def _fsync_dir(folder: str) -> None:
    if os.name != "posix":
        return
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _refuse_existing(dest: str) -> FileExistsRefusedError:
    return FileExistsRefusedError("file already exists and overwriting was not asked for", path=dest,
                                  hint="choose another name or enable overwrite")


def _publish(tmp: str, dest: str, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, dest)
        return
    try:
        # link() refuses an existing destination atomically: no check-then-rename race.
        os.link(tmp, dest)
    except FileExistsError:
        raise _refuse_existing(dest) from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
        # Filesystems without hard links (FAT, some network mounts): check, then rename.
        if os.path.exists(dest):
            raise _refuse_existing(dest) from None
        os.replace(tmp, dest)
        return
    with contextlib.suppress(OSError):  # published already; a leftover link is only a stale temp
        os.unlink(tmp)


def prepare_folder(folder: str, dest: str) -> None:
    """Create ``folder`` if needed and remove stale temps a killed writer left there."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise write_error(e, dest) from None
    remove_stale_temps(folder)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, overwrite: bool = False, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside ``path``; on success publish it as ``path`` atomically.

    Raises :class:`FileExistsRefusedError` (before writing anything) when ``path`` exists and
    ``overwrite`` is false, and :class:`WriteError` when the system refuses the write (disk full,
    no permission). Any exception inside the block removes the temp file and leaves ``path``
    untouched.
    """
    dest = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(dest)
    if not overwrite and os.path.exists(dest):
        raise _refuse_existing(dest)
    prepare_folder(folder, dest)
    try:
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(dest), suffix=TEMP_SUFFIX, dir=folder)
    except OSError as e:
        raise write_error(e, dest) from None
    body_done = False
    try:
        try:
            if hasattr(os, "fchmod"):
                os.fchmod(fd, FILE_MODE)
            with os.fdopen(fd, mode) as f:
                yield f
                body_done = True
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            # our flush, fsync and close are writes; of the block's own errors only the disk's are
            if body_done or e.errno in _DISK_ERRNOS:
                raise write_error(e, dest) from e
            raise
        try:
            _publish(tmp, dest, overwrite)
        except OSError as e:
            raise write_error(e, dest) from e
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, overwrite=overwrite) as f:
        f.write(data)
