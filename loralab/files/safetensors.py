"""The one safetensors reader and writer of LoRA Lab.

Reading validates the header completely before any tensor is touched (size cap, UTF-8, JSON
object, no duplicate keys, known dtypes, shapes that match their byte ranges, ranges inside the
file that neither overlap nor leave holes) and then gives lazy per-tensor access. Pickled
checkpoints are recognised and refused, never unpickled.

Writing streams tensors to spool files in the destination folder and publishes the final file
atomically (see :mod:`loralab.files.atomic`); memory stays bounded by the largest tensor.
"""
from __future__ import annotations

import contextlib
import functools
import gc
import json
import math
import os
import re
import shutil
import stat
import struct
import tempfile
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Iterable, Iterator, Mapping

from ..errors import FileExistsRefusedError, LoRALabError, PickleRefusedError, SafetensorsError
from .atomic import TEMP_SUFFIX, atomic_write, prepare_folder, temp_prefix, write_error

if TYPE_CHECKING:
    import torch

#: Largest header accepted. Real LoRAs have headers under 1 MiB; a full checkpoint a few MiB.
MAX_HEADER_BYTES = 32 * 1024 * 1024

PICKLE_EXTENSIONS = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")

#: safetensors dtype name -> (bytes per element, name of the torch dtype; some torch builds lack some)
DTYPE_SIZES: dict[str, tuple[int, str]] = {
    "F64": (8, "float64"),
    "F32": (4, "float32"),
    "F16": (2, "float16"),
    "BF16": (2, "bfloat16"),
    "I64": (8, "int64"),
    "I32": (4, "int32"),
    "I16": (2, "int16"),
    "I8": (1, "int8"),
    "U8": (1, "uint8"),
    "BOOL": (1, "bool"),
    "F8_E4M3": (1, "float8_e4m3fn"),
    "F8_E5M2": (1, "float8_e5m2"),
    "U16": (2, "uint16"),
    "U32": (4, "uint32"),
    "U64": (8, "uint64"),
}


@functools.cache
def _torch_tables() -> tuple[dict[str, tuple[int, torch.dtype | None]], dict[torch.dtype, str]]:
    import torch
    dtypes = {name: (size, getattr(torch, tname, None)) for name, (size, tname) in DTYPE_SIZES.items()}
    return dtypes, {dt: name for name, (_, dt) in dtypes.items() if dt is not None}


def __getattr__(name: str) -> object:
    """``DTYPES`` (safetensors dtype name -> (bytes per element, torch dtype or None where torch has
    none)) and ``TORCH_TO_NAME`` (its inverse), built on first use: reading a header never imports
    torch."""
    if name == "DTYPES":
        return _torch_tables()[0]
    if name == "TORCH_TO_NAME":
        return _torch_tables()[1]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: a JSON escape of a UTF-16 surrogate; paired ones are fine, an unpaired one is not Unicode text
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")

_CONVERT_HINT = "LoRA Lab reads safetensors only; convert the file to .safetensors with a tool you trust"


@dataclass(frozen=True)
class TensorInfo:
    """Where one tensor lives in a safetensors file (absolute byte offsets)."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class SafetensorsHeader:
    """The parsed, validated header of a safetensors file."""

    path: str
    file_size: int
    header_size: int
    metadata: dict[str, str]
    tensors: dict[str, TensorInfo]

    @property
    def data_start(self) -> int:
        return 8 + self.header_size


def _sniff_pickle(path: str, head: bytes, first: bytes, size: int) -> None:
    """Refuse a zip or a pickle (protocol 2-5); ``first`` is the byte after ``head``. A safetensors file whose
    header length starts with the same two bytes (640, 896, 1152 or 1408 bytes, ...) is none: its length
    fits the file and its header opens with ``{``."""
    is_zip = head[:4] == b"PK\x03\x04"
    is_pickle = len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5
    if is_pickle and len(head) == 8 and first == b"{":
        (n,) = struct.unpack("<Q", head)
        is_pickle = n > min(MAX_HEADER_BYTES, size - 8)
    if is_zip or is_pickle:
        kind = "a zip archive (torch.save format)" if is_zip else "a Python pickle"
        raise PickleRefusedError(f"file is {kind}, not safetensors; it was not unpickled", path=path,
                                 hint=_CONVERT_HINT)


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise ValueError(f"duplicate key {dup!r} in header")
    return out


def _parse_header_json(path: str, raw: bytes) -> dict:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise SafetensorsError(f"header is not valid UTF-8 (byte {e.start})", path=path) from None
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates)
    except RecursionError:
        raise SafetensorsError("header JSON is nested too deeply", path=path) from None
    except ValueError as e:
        raise SafetensorsError(f"header is not valid JSON: {e}", path=path) from None
    if not isinstance(obj, dict):
        raise SafetensorsError(f"header JSON is a {type(obj).__name__}, not an object", path=path)
    if _SURROGATE_ESCAPE.search(raw):
        try:
            json.dumps(obj, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise SafetensorsError("header has an unpaired surrogate escape (\\ud800-\\udfff): not valid Unicode",
                                   path=path) from None
    return obj


def _parse_metadata(path: str, meta: object) -> dict[str, str]:
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise SafetensorsError("__metadata__ is not an object", path=path)
    for k, v in meta.items():
        if not isinstance(v, str):
            raise SafetensorsError(f"__metadata__ value is a {type(v).__name__}, not a string", path=path, key=k,
                                   hint="safetensors metadata holds strings only")
    return dict(meta)


def _parse_entry(path: str, name: str, entry: object, data_start: int, data_len: int) -> TensorInfo:
    if type(entry) is dict:  # the common, valid case in few operations; anything odd is diagnosed below
        dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
        size = DTYPE_SIZES[dtype][0] if type(dtype) is str and dtype in DTYPE_SIZES else None
        if (size is not None and type(shape) is list and len(shape) <= 8 and type(offsets) is list
                and len(offsets) == 2 and all(type(d) is int and 0 <= d < 2**48 for d in shape)):
            begin, end = offsets
            if (type(begin) is int and type(end) is int and 0 <= begin <= end <= data_len
                    and end - begin == math.prod(shape) * size):
                return TensorInfo(name, dtype, tuple(shape), data_start + begin, data_start + end)
    if not isinstance(entry, dict):
        raise SafetensorsError("tensor entry is not an object", path=path, key=name)
    dtype = entry.get("dtype")
    shape = entry.get("shape")
    offsets = entry.get("data_offsets")
    if not isinstance(dtype, str) or dtype not in DTYPE_SIZES:
        raise SafetensorsError(f"unknown dtype {dtype!r}", path=path, key=name)
    if (not isinstance(shape, list) or len(shape) > 8
            or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**48 for d in shape)):
        raise SafetensorsError(f"invalid shape {shape!r}", path=path, key=name)
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)):
        raise SafetensorsError(f"invalid data_offsets {offsets!r}", path=path, key=name)
    begin, end = offsets
    if not 0 <= begin <= end <= data_len:
        raise SafetensorsError(f"data_offsets {offsets} out of range (data section is {data_len} bytes)",
                               path=path, key=name, hint="the file is truncated or corrupt")
    expected = math.prod(shape) * DTYPE_SIZES[dtype][0]
    if end - begin != expected:
        raise SafetensorsError(f"shape {shape} of {dtype} needs {expected} bytes but data_offsets give {end - begin}",
                               path=path, key=name)
    return TensorInfo(name, dtype, tuple(shape), data_start + begin, data_start + end)


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a header's objects are made: with it running, a
    header of many entries is rescanned again and again (several times the parse itself) for
    cycles it cannot hold."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _open_regular(path: str) -> IO[bytes]:
    """Open a regular file for reading; folders, FIFOs and devices are refused (a FIFO would block)."""
    if "\x00" in path:
        raise LoRALabError("file name contains a NUL byte", path=repr(path))
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise LoRALabError("is a folder, not a file" if stat.S_ISDIR(mode) else "is not a regular file",
                               path=path)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_header(path: str | os.PathLike) -> SafetensorsHeader:
    """Read and validate the header of a safetensors file without reading any tensor data.

    Raises :class:`PickleRefusedError` for pickles and zip checkpoints and
    :class:`SafetensorsError` for anything malformed; both name the file and the problem.
    """
    path = os.fspath(path)
    try:
        with _open_regular(path) as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(8)
            _sniff_pickle(path, head, f.read(1), size)
            f.seek(len(head))
            if len(head) < 8:
                raise SafetensorsError(f"file is {size} bytes, too short for a safetensors header",
                                       path=path, hint="the file is empty or truncated")
            (n,) = struct.unpack("<Q", head)
            if n > MAX_HEADER_BYTES:
                raise SafetensorsError(f"header length {n} exceeds the {MAX_HEADER_BYTES}-byte limit",
                                       path=path, hint="the file is corrupt or hostile")
            if 8 + n > size:
                raise SafetensorsError(f"header length {n} is larger than the file ({size} bytes)",
                                       path=path, hint="the file is truncated or not safetensors")
            raw = f.read(n)
    except FileNotFoundError:
        raise LoRALabError("file not found", path=path) from None
    except OSError as e:
        raise LoRALabError(f"cannot read the file: {e.strerror or e}", path=path) from None
    if len(raw) != n:
        raise SafetensorsError("file shrank while reading its header", path=path)
    if not raw.lstrip(b" ").startswith(b"{"):
        if path.lower().endswith(PICKLE_EXTENSIONS):
            raise PickleRefusedError("not a safetensors file", path=path, hint=_CONVERT_HINT)
        raise SafetensorsError("header does not start with '{'", path=path, hint="the file is not safetensors")
    with gc_paused():
        obj = _parse_header_json(path, raw)
        metadata = _parse_metadata(path, obj.pop("__metadata__", None))
        data_start = 8 + n
        data_len = size - data_start
        tensors = {name: _parse_entry(path, name, entry, data_start, data_len) for name, entry in obj.items()}
        ordered = sorted(tensors.values(), key=lambda t: (t.start, t.end))
    cursor = data_start
    for info in ordered:
        if info.start < cursor:
            raise SafetensorsError("data region overlaps another tensor's", path=path, key=info.name,
                                   hint="the file is corrupt or hostile")
        if info.start > cursor:
            raise SafetensorsError(f"{info.start - cursor} bytes of the data section belong to no tensor",
                                   path=path, key=info.name)
        cursor = info.end
    if cursor != size:
        raise SafetensorsError(f"{size - cursor} trailing bytes after the last tensor", path=path,
                               hint="the file is corrupt")
    return SafetensorsHeader(path, size, n, metadata, tensors)


def bytes_to_tensor(raw: bytes | bytearray, dtype: str, shape: tuple[int, ...], *, where: str = "") -> torch.Tensor:
    """Build a tensor from little-endian safetensors bytes."""
    import torch
    tdt = _torch_tables()[0][dtype][1]
    if tdt is None:
        raise SafetensorsError(f"dtype {dtype} is not supported by this torch build", path=where or None)
    if len(raw) == 0:
        return torch.empty(shape, dtype=tdt)
    return torch.frombuffer(bytearray(raw), dtype=tdt).reshape(shape)


class SafetensorsFile:
    """Lazy read access to a validated safetensors file: the header at open, tensors on demand."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.header = read_header(path)
        self.path = self.header.path
        self._fd: int | None = None
        try:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except OSError as e:
            raise LoRALabError(f"cannot read the file: {e.strerror or e}", path=self.path) from None

    def __enter__(self) -> "SafetensorsFile":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    @property
    def metadata(self) -> dict[str, str]:
        return self.header.metadata

    def keys(self) -> list[str]:
        return list(self.header.tensors)

    def __contains__(self, key: object) -> bool:
        return key in self.header.tensors

    def info(self, key: str) -> TensorInfo:
        try:
            return self.header.tensors[key]
        except KeyError:
            raise LoRALabError("no such tensor", path=self.path, key=key) from None

    def read_bytes(self, key: str) -> bytes:
        """The raw bytes of one tensor."""
        info = self.info(key)
        if self._fd is None:
            raise LoRALabError("file is closed", path=self.path)
        try:
            raw = _pread_all(self._fd, info.nbytes, info.start)
        except OSError as e:
            raise SafetensorsError(f"cannot read this tensor's data: {e.strerror or e}", path=self.path,
                                   key=key) from None
        if len(raw) != info.nbytes:
            raise SafetensorsError("file ended inside this tensor's data", path=self.path, key=key,
                                   hint="the file was truncated after it was opened")
        return raw

    def get(self, key: str) -> torch.Tensor:
        """Read one tensor (a fresh CPU tensor in the stored dtype)."""
        info = self.info(key)
        return bytes_to_tensor(self.read_bytes(key), info.dtype, info.shape, where=self.path)

    def scalar(self, key: str) -> float:
        """The value of a one-element tensor (such as a LoRA ``alpha``)."""
        info = self.info(key)
        if info.numel != 1:
            raise LoRALabError(f"expected a scalar, found shape {list(info.shape)}", path=self.path, key=key)
        fmt = _SCALAR_FORMATS.get(info.dtype)
        if fmt is None:
            import torch
            return float(self.get(key).reshape(()).to(torch.float64))
        raw = self.read_bytes(key)
        if info.dtype == "BF16":  # the upper half of a float32
            raw = b"\x00\x00" + raw
        return float(struct.unpack(fmt, raw)[0])


#: struct formats of one little-endian scalar, per safetensors dtype (others go through torch)
_SCALAR_FORMATS = {"F64": "<d", "F32": "<f", "F16": "<e", "BF16": "<f", "I64": "<q", "I32": "<i", "I16": "<h",
                   "I8": "<b", "U8": "<B", "BOOL": "<?"}


def _to_float32(value: float) -> float:
    try:
        return struct.unpack("<f", struct.pack("<f", value))[0]
    except OverflowError:  # beyond float32's range: torch gives an infinity
        return math.copysign(math.inf, value)


def round_to_dtype(value: float, dtype: str) -> float:
    """``value`` as a one-element tensor of safetensors ``dtype`` holds it: float dtypes round as
    torch rounds a float64 (through float32, to nearest even); integer and unknown dtypes keep it."""
    if dtype == "F64" or dtype not in DTYPE_SIZES or dtype.startswith(("I", "U", "BOOL")):
        return value
    x = _to_float32(value)
    if dtype == "F16":
        try:
            return struct.unpack("<e", struct.pack("<e", x))[0]
        except OverflowError:
            return math.copysign(math.inf, x)
    if dtype == "BF16":
        if math.isnan(x):
            return x
        (bits,) = struct.unpack("<I", struct.pack("<f", x))
        bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16  # round to nearest even on the upper half
        return struct.unpack("<f", struct.pack("<I", (bits << 16) & 0xFFFFFFFF))[0]
    if dtype == "F32":
        return x
    import torch  # float8: no struct format
    tdt = _torch_tables()[0][dtype][1]
    return value if tdt is None else float(torch.tensor(value, dtype=torch.float64).to(tdt).to(torch.float64))


def _pread_all(fd: int, size: int, offset: int) -> bytes:
    if hasattr(os, "pread"):
        chunks = []
        got = 0
        while got < size:
            chunk = os.pread(fd, min(size - got, 1 << 30), offset + got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)
    with open(fd, "rb", closefd=False) as f:
        f.seek(offset)
        return f.read(size)


def open_safetensors(path: str | os.PathLike) -> SafetensorsFile:
    """Open a safetensors file for lazy reading (see :class:`SafetensorsFile`)."""
    return SafetensorsFile(path)


def load_tensors(path: str | os.PathLike, keys: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Read all (or the given) tensors of a safetensors file into memory."""
    with SafetensorsFile(path) as f:
        return {k: f.get(k) for k in (f.keys() if keys is None else keys)}


def _validate_metadata(metadata: Mapping[str, str] | None, path: str) -> dict[str, str]:
    meta = dict(metadata or {})
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise LoRALabError(f"metadata entries must be strings, got {type(k).__name__}: {type(v).__name__}",
                               path=path, key=str(k))
        if not (_is_unicode(k) and _is_unicode(v)):
            raise LoRALabError("metadata entry is not valid Unicode text (an unpaired surrogate)", path=path,
                               key=repr(k))
    return meta


def _is_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class SafetensorsWriter:
    """Stream tensors into a new safetensors file, published atomically by :meth:`finish`.

    Tensor bytes go to spool files in the destination folder (one per element size, so every
    tensor stays aligned without gaps); nothing but the header is held in memory.
    """

    def __init__(self, path: str | os.PathLike, *, overwrite: bool = False) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self.overwrite = overwrite
        self._entries: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
        self._spools: dict[int, tuple[object, int]] = {}
        self._finished = False
        if not overwrite and os.path.exists(self.path):
            raise FileExistsRefusedError("file already exists and overwriting was not asked for", path=self.path,
                                         hint="choose another name or enable overwrite")
        prepare_folder(os.path.dirname(self.path), self.path)

    def _spool(self, itemsize: int):
        if itemsize not in self._spools:
            f = tempfile.NamedTemporaryFile(prefix=temp_prefix(self.path, f"spool{itemsize}"), suffix=TEMP_SUFFIX,
                                            dir=os.path.dirname(self.path), delete=True)
            self._spools[itemsize] = (f, 0)
        return self._spools[itemsize]

    def add(self, name: str, tensor: torch.Tensor) -> None:
        """Append one tensor (any device; it is copied to CPU contiguous memory)."""
        if self._finished:
            raise LoRALabError("writer already finished", path=self.path)
        if not isinstance(name, str) or name == "__metadata__" or name in self._entries or not _is_unicode(name):
            raise LoRALabError("duplicate or invalid tensor name", path=self.path, key=str(name))
        import torch
        t = tensor.detach().to("cpu").contiguous()
        dtype = _torch_tables()[1].get(t.dtype)
        if dtype is None:
            raise LoRALabError(f"dtype {t.dtype} cannot be stored in safetensors", path=self.path, key=name)
        itemsize = DTYPE_SIZES[dtype][0]
        data = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        try:
            f, used = self._spool(itemsize)
            f.write(data)
        except OSError as e:
            self.abort()
            raise write_error(e, self.path) from e
        self._spools[itemsize] = (f, used + len(data))
        self._entries[name] = (dtype, tuple(t.shape), itemsize, used)

    def _order(self) -> list[int]:
        """Element sizes of the spools, in the order their data is written (largest first)."""
        return sorted(self._spools, reverse=True)

    def _header(self, metadata: Mapping[str, str] | None) -> bytes:
        """The JSON header (padded to 8 bytes) the file gets with this metadata."""
        meta = _validate_metadata(metadata, self.path)
        base: dict[int, int] = {}
        total = 0
        for itemsize in self._order():
            base[itemsize] = total
            total += self._spools[itemsize][1]
        header: dict[str, object] = {}
        if meta:
            header["__metadata__"] = meta
        for name in sorted(self._entries, key=lambda n: (-self._entries[n][2], self._entries[n][3])):
            dtype, shape, itemsize, off = self._entries[name]
            nbytes = math.prod(shape) * itemsize
            start = base[itemsize] + off
            header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [start, start + nbytes]}
        raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        return raw + b" " * (-len(raw) % 8)

    def data_start(self, metadata: Mapping[str, str] | None = None) -> int:
        """Where the tensor data will begin in the file written with this metadata."""
        return 8 + len(self._header(metadata))

    def data_chunks(self, chunk: int = 16 << 20) -> Iterator[bytes]:
        """The tensor data added so far, in the order the file will hold it (read from the spools)."""
        for itemsize in self._order():
            f, _ = self._spools[itemsize]
            f.flush()
            f.seek(0)
            while block := f.read(chunk):
                yield block

    def finish(self, metadata: Mapping[str, str] | None = None) -> str:
        """Write header and data to the destination atomically; returns the path."""
        raw = self._header(metadata)
        try:
            with atomic_write(self.path, overwrite=self.overwrite) as out:
                out.write(struct.pack("<Q", len(raw)))
                out.write(raw)
                for itemsize in self._order():
                    f, _ = self._spools[itemsize]
                    f.flush()
                    f.seek(0)
                    shutil.copyfileobj(f, out, 16 << 20)
        finally:
            self.abort()
        self._finished = True
        return self.path

    def abort(self) -> None:
        """Drop the spooled data; the destination is not touched."""
        for f, _ in self._spools.values():
            with contextlib.suppress(OSError):
                f.close()
        self._spools.clear()

    def __enter__(self) -> "SafetensorsWriter":
        return self

    def __exit__(self, exc_type, *exc: object) -> None:
        if exc_type is not None or not self._finished:
            self.abort()


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor] | Iterable[tuple[str, torch.Tensor]],
                 metadata: Mapping[str, str] | None = None, *, overwrite: bool = False) -> str:
    """Write tensors and ``__metadata__`` to a new safetensors file atomically."""
    items: Iterator[tuple[str, torch.Tensor]] = iter(tensors.items() if isinstance(tensors, Mapping) else tensors)
    with SafetensorsWriter(path, overwrite=overwrite) as w:
        for name, t in items:
            w.add(name, t)
        return w.finish(metadata)
