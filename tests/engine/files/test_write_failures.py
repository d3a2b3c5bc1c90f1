"""Failure injection at every step of a write: the old file stays intact, no partial file appears
at the destination, no temp file is left where that can be avoided, and what a killed process
leaves behind is removed by the next writer once it is stale."""
import errno
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest
import torch

import loralab.files.atomic as atomic
import loralab.files.safetensors as sio
from loralab.files.atomic import TEMP_SUFFIX, atomic_write, remove_stale_temps
from loralab.errors import FileExistsRefusedError, WriteError
from loralab.files.safetensors import SafetensorsWriter, load_tensors, save_tensors
from loralab_testkit import REPO

OLD = {"a": torch.arange(6.0)}
NEW = {"a": torch.zeros(6), "b": torch.ones(1000).half()}


def enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.fixture
def old_file(tmp):
    """A folder holding one existing file; returns (path, its bytes)."""
    path = save_tensors(os.path.join(tmp, "lora.safetensors"), OLD)
    with open(path, "rb") as f:
        return path, f.read()


def assert_untouched(path, content):
    with open(path, "rb") as f:
        assert f.read() == content
    assert os.listdir(os.path.dirname(path)) == [os.path.basename(path)], "a temp or partial file was left"


def test_enospc_while_spooling_a_tensor(old_file, monkeypatch):
    path, content = old_file
    real = tempfile.NamedTemporaryFile

    class Full:
        def __init__(self, *a, **k):
            self.f = real(*a, **k)

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            enospc()

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(sio.tempfile, "NamedTemporaryFile", Full)
    w = SafetensorsWriter(path, overwrite=True)
    with pytest.raises(WriteError) as e:
        w.add("a", torch.ones(100))
    assert path in str(e.value) and "No space left" in str(e.value) and "free some disk space" in str(e.value)
    assert_untouched(path, content)


def test_enospc_while_writing_the_file(old_file, monkeypatch):
    path, content = old_file
    real_copy = shutil.copyfileobj

    def half_then_full(src, dst, length=0):
        dst.write(src.read(100))
        enospc()
    with SafetensorsWriter(path, overwrite=True) as w:
        for k, t in NEW.items():
            w.add(k, t)
        monkeypatch.setattr(sio.shutil, "copyfileobj", half_then_full)
        with pytest.raises(WriteError):
            w.finish()
    monkeypatch.setattr(sio.shutil, "copyfileobj", real_copy)
    assert_untouched(path, content)


@pytest.mark.parametrize("step", ["mkstemp", "fsync", "replace", "link"])
def test_failure_at_each_step_of_atomic_write(old_file, monkeypatch, step):
    path, content = old_file
    target = {"mkstemp": (atomic.tempfile, "mkstemp"), "fsync": (atomic.os, "fsync"),
              "replace": (atomic.os, "replace"), "link": (atomic.os, "link")}[step]
    monkeypatch.setattr(*target, enospc)
    dest = path if step != "link" else path.replace("lora", "new")  # link publishes new files only
    with pytest.raises(WriteError) as e:
        with atomic_write(dest, overwrite=step != "link") as f:
            f.write(b"new content")
    monkeypatch.undo()
    assert dest in str(e.value)
    assert_untouched(path, content)


def test_exception_inside_the_block_leaves_nothing(old_file):
    path, content = old_file
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(path, overwrite=True) as f:
            f.write(b"partial")
            raise KeyboardInterrupt
    assert_untouched(path, content)


def test_file_appearing_during_the_write_is_not_overwritten(tmp):
    dest = os.path.join(tmp, "x.safetensors")
    with pytest.raises(FileExistsRefusedError):
        with atomic_write(dest) as f:
            f.write(b"ours")
            with open(dest, "wb") as other:  # another process publishes first
                other.write(b"theirs")
    assert open(dest, "rb").read() == b"theirs"
    assert os.listdir(tmp) == ["x.safetensors"]


def test_filesystem_without_hard_links_still_refuses_to_overwrite(tmp, monkeypatch):
    def no_links(*_):
        raise OSError(errno.EPERM, "Operation not permitted")
    monkeypatch.setattr(atomic.os, "link", no_links)
    dest = os.path.join(tmp, "x.bin")
    atomic.write_bytes_atomic(dest, b"one")
    with pytest.raises(FileExistsRefusedError):
        atomic.write_bytes_atomic(dest, b"two")
    assert open(dest, "rb").read() == b"one" and os.listdir(tmp) == ["x.bin"]


def test_overlong_destination_name_keeps_temp_names_short(tmp):
    name = "é" * 120 + ".safetensors"  # 252 bytes: a legal name, too long to prefix and suffix for a temp
    path = save_tensors(os.path.join(tmp, name), NEW)
    assert torch.equal(load_tensors(path)["b"], NEW["b"])


@pytest.mark.skipif(not hasattr(os, "getuid") or os.getuid() == 0, reason="root writes into read-only folders")
def test_read_only_folder_is_a_write_error(tmp):
    os.chmod(tmp, 0o500)
    try:
        with pytest.raises(WriteError) as e:
            save_tensors(os.path.join(tmp, "x.safetensors"), OLD)
        assert "Permission denied" in str(e.value)
    finally:
        os.chmod(tmp, 0o700)


# --- real failures in a child process ------------------------------------------------------------

def child(script: str, **kw) -> subprocess.Popen:
    code = f"import sys; sys.path.insert(0, {REPO!r})\n" + textwrap.dedent(script)
    return subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="needs RLIMIT_FSIZE (POSIX)")
def test_file_size_limit_hits_mid_write(old_file):
    """The kernel refuses the write past a file-size limit (as a full disk does): EFBIG, not a
    monkeypatch. The old file stays; nothing partial is left."""
    path, content = old_file
    p = child(f"""
        import resource, signal, torch
        from loralab.files.atomic import atomic_write
        from loralab.errors import WriteError
        from loralab.files.safetensors import save_tensors
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
        for overwrite, dest in ((True, {path!r}), (False, {path!r} + ".new.safetensors")):
            try:
                save_tensors(dest, {{"big": torch.ones(100_000)}}, overwrite=overwrite)
            except WriteError as e:
                print("WriteError", e)
        for step, first in (("write", 100_000), ("flush", 63_000)):  # past the limit in the block, or at its end
            try:
                with atomic_write({path!r}, overwrite=True) as f:
                    f.write(b"x" * first)
                    f.write(b"y" * 4000)  # buffered
            except WriteError as e:
                print("WriteError", step, e)
    """)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, err
    assert out.count("WriteError") == 4 and "File too large" in out, out
    assert_untouched(path, content)


@pytest.mark.skipif(os.name != "posix", reason="SIGKILL is POSIX")
@pytest.mark.parametrize("moment", ["spooling", "publishing"])
def test_killed_mid_write_leaves_old_file_and_only_stale_temps(old_file, moment):
    path, content = old_file
    folder = os.path.dirname(path)
    p = child(f"""
        import shutil, sys, time, torch
        import loralab.files.safetensors as sio
        real_copy = shutil.copyfileobj

        def slow_copy(src, dst, length=0):
            dst.write(src.read(1 << 20))
            dst.flush()
            print("publishing", flush=True)
            time.sleep(60)
        sio.shutil.copyfileobj = slow_copy
        w = sio.SafetensorsWriter({path!r}, overwrite=True)
        w.add("big", torch.ones(4 << 20))
        print("spooling", flush=True)
        if {moment!r} == "spooling":
            time.sleep(60)
        w.finish()
    """)
    try:
        line = ""
        while line.strip() != moment:
            line = p.stdout.readline()
            assert line, p.stderr.read()
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    with open(path, "rb") as f:
        assert f.read() == content
    temps = sorted(n for n in os.listdir(folder) if n.endswith(TEMP_SUFFIX))
    assert temps and all(n.startswith(".lora.safetensors.") for n in temps)
    assert len(os.listdir(folder)) == 1 + len(temps)
    assert remove_stale_temps(folder) == []  # fresh: may belong to a writer still running
    for n in temps:
        os.utime(os.path.join(folder, n), (time.time() - 2 * atomic.STALE_TEMP_SECONDS,) * 2)
    save_tensors(os.path.join(folder, "next.safetensors"), OLD)  # the next writer cleans up
    assert sorted(os.listdir(folder)) == ["lora.safetensors", "next.safetensors"]


def test_stale_temp_cleanup_touches_only_its_own_old_files(tmp):
    old = time.time() - 2 * atomic.STALE_TEMP_SECONDS
    names = {
        ".a.safetensors.x1.loralab-tmp": True,  # ours, stale
        ".b.safetensors.x2.loralab-tmp.keep": False,  # other suffix
        "c.loralab-tmp": False,  # not hidden: not a name we make
        "d.safetensors": False,
    }
    for n in names:
        with open(os.path.join(tmp, n), "wb") as f:
            f.write(b"x")
        os.utime(os.path.join(tmp, n), (old, old))
    os.mkdir(os.path.join(tmp, ".dir.loralab-tmp"))
    os.symlink(os.path.join(tmp, "d.safetensors"), os.path.join(tmp, ".link.loralab-tmp"))
    fresh = os.path.join(tmp, ".e.safetensors.x3.loralab-tmp")
    open(fresh, "wb").close()
    removed = remove_stale_temps(tmp)
    assert [os.path.basename(r) for r in removed] == [".a.safetensors.x1.loralab-tmp"]
    left = set(os.listdir(tmp))
    assert left == {n for n, gone in names.items() if not gone} | {".dir.loralab-tmp", ".link.loralab-tmp",
                                                                   os.path.basename(fresh)}
    assert remove_stale_temps(os.path.join(tmp, "missing")) == []


def test_published_files_get_ordinary_permissions(tmp_path):
    """mkstemp makes 0600 files; a saved LoRA must be readable like any file the user writes."""
    import stat as _stat
    from loralab.files.atomic import FILE_MODE, write_bytes_atomic
    dest = tmp_path / "x.bin"
    write_bytes_atomic(dest, b"abc")
    assert _stat.S_IMODE(os.stat(dest).st_mode) == FILE_MODE
    if atomic._umask() == 0o022:
        assert FILE_MODE == 0o644
