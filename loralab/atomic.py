"""Atomic file writes: a temp file in the destination folder, fsync, then an atomic publish.

Every file LoRA Lab writes goes through :func:`atomic_write`. A failure at any point leaves the
destination as it was (absent, or the old file intact) and removes the temp file. An existing
file is only replaced when the caller asks for it.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from typing import IO, Iterator

from .errors import FileExistsRefusedError

TEMP_SUFFIX = ".loralab-tmp"


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


def _publish(tmp: str, dest: str, overwrite: bool) -> None:
    if overwrite:
        os.replace(tmp, dest)
        return
    try:
        # link() refuses an existing destination atomically: no check-then-rename race.
        os.link(tmp, dest)
    except FileExistsError:
        raise FileExistsRefusedError("file already exists and overwriting was not asked for", path=dest,
                                     hint="choose another name or enable overwrite") from None
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK, errno.ENOSYS):
            raise
        # Filesystems without hard links (FAT, some network mounts): check, then rename.
        if os.path.exists(dest):
            raise FileExistsRefusedError("file already exists and overwriting was not asked for", path=dest,
                                         hint="choose another name or enable overwrite") from None
        os.replace(tmp, dest)
        return
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, *, overwrite: bool = False, mode: str = "wb") -> Iterator[IO]:
    """Open a temp file beside ``path``; on success publish it as ``path`` atomically.

    Raises :class:`FileExistsRefusedError` (before writing anything) when ``path`` exists and
    ``overwrite`` is false. Any exception inside the block removes the temp file and leaves
    ``path`` untouched.
    """
    dest = os.path.abspath(os.fspath(path))
    folder = os.path.dirname(dest)
    if not overwrite and os.path.exists(dest):
        raise FileExistsRefusedError("file already exists and overwriting was not asked for", path=dest,
                                     hint="choose another name or enable overwrite")
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(dest) + ".", suffix=TEMP_SUFFIX, dir=folder)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, dest, overwrite)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(folder)


def write_bytes_atomic(path: str | os.PathLike, data: bytes, *, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_write`)."""
    with atomic_write(path, overwrite=overwrite) as f:
        f.write(data)
