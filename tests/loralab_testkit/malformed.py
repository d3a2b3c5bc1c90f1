"""A corpus of hostile, broken and odd LoRA files, for every entry point that reads one.

Each :class:`Case` writes one file and says what must happen to it:

* an error class name (``"SafetensorsError"``, ``"PickleRefusedError"``): every reader refuses
  the file with that :class:`~loralab.errors.LoRALabError` subclass, naming the file and
  ``problem``;
* ``"accepted"``: a valid file, however odd (zero-size tensors, hostile key names, ten thousand
  tensors); every entry point handles it;
* ``"warning"``: a well-formed file whose content is wrong (NaN weights, alpha 0, rank 0...);
  readers accept it and an inspection that reads ``level`` (``"header"``: shapes and names,
  ``"alpha"``: alpha values, ``"values"``: tensor data) reports ``problem``.

Importable by engine and host tests; it needs torch and the engine's writer only.
"""
from __future__ import annotations

import json
import os
import pickle
import struct
import zipfile
from dataclasses import dataclass
from typing import Callable

import torch

from loralab.files.safetensors import save_tensors

from . import fixture_tensors

ERROR = "error"
ACCEPTED = "accepted"
WARNING = "warning"

#: three modules of a real SD1.x kohya LoRA (two cross-attention projections, one CLIP-L layer)
BASE_MODULES = ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn2_to_k",
                "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_v",
                "lora_te_text_model_encoder_layers_0_self_attn_q_proj")
#: the module the semantic cases break
BAD = BASE_MODULES[0]
#: a module beside the base LoRA that the OFT and GLoRA cases give broken LyCORIS factors
LYCORIS = "lora_unet_down_blocks_0_attentions_0_proj_in"
#: a file name an unpickled payload would create (beside the corpus); its existence is a failure
MARKER = "UNPICKLED-MARKER"


@dataclass(frozen=True)
class Case:
    """One corpus file and the outcome every entry point must give it."""

    name: str
    build: Callable[[str], None]  # writes the file at the given path
    expect: str  # an error class name, ACCEPTED or WARNING
    problem: str = ""  # lower-case text the error or warning must contain
    level: str = ""  # WARNING cases: "header", "alpha" or "values"
    extension: str = ".safetensors"
    memory_risky: bool = False  # a reader that trusted the file would allocate gigabytes

    @property
    def is_error(self) -> bool:
        return self.expect not in (ACCEPTED, WARNING)

    @property
    def filename(self) -> str:
        return self.name + self.extension


def base_tensors(**changes: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """The valid base LoRA (rank 2, values seeded); ``changes`` replace (or, as None, drop) the
    tensors of :data:`BAD` by role: ``up``, ``down``, ``alpha``."""
    roles = {"up": "lora_up.weight", "down": "lora_down.weight", "alpha": "alpha"}
    tensors = {k: v for k, v in fixture_tensors("kohya_sd15_lora", rank=2).items() if k.startswith(BASE_MODULES)}
    for role, value in changes.items():
        key = f"{BAD}.{roles[role]}"
        if value is None:
            tensors.pop(key)
        else:
            tensors[key] = value
    return tensors


BASE_METADATA = {"ss_network_module": "networks.lora", "ss_network_dim": "2", "ss_network_alpha": "8.0",
                 "ss_base_model_version": "sd_v1", "modelspec.title": "corpus"}


def _valid_bytes(tensors: dict[str, torch.Tensor] | None = None, metadata: dict[str, str] | None = None) -> bytes:
    """A valid safetensors file's bytes, written by the engine's writer."""
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        path = save_tensors(os.path.join(d, "x.safetensors"), base_tensors() if tensors is None else tensors,
                            BASE_METADATA if metadata is None else metadata)
        with open(path, "rb") as f:
            return f.read()


def _split(data: bytes) -> tuple[int, bytes, bytes]:
    (n,) = struct.unpack("<Q", data[:8])
    return n, data[8:8 + n], data[8 + n:]


def _bytes(data: Callable[[], bytes]) -> Callable[[str], None]:
    def build(path: str) -> None:
        with open(path, "wb") as f:
            f.write(data())
    return build


def _raw(header: bytes | dict, data: bytes = b"", length: int | None = None) -> Callable[[str], None]:
    """A file from a header (a dict, dumped without checks, or raw bytes), data, and a length field."""
    def make() -> bytes:
        raw = header if isinstance(header, bytes) else json.dumps(header).encode()
        return struct.pack("<Q", len(raw) if length is None else length) + raw + data
    return _bytes(make)


def _edited(edit: Callable[[dict, bytes], tuple[dict | bytes, bytes]]) -> Callable[[str], None]:
    """The base file with its header dict and data section edited."""
    def make() -> bytes:
        _, header, data = _split(_valid_bytes())
        new_header, new_data = edit(json.loads(header), data)
        raw = new_header if isinstance(new_header, bytes) else json.dumps(new_header).encode()
        return struct.pack("<Q", len(raw)) + raw + new_data
    return _bytes(make)


def _first(h: dict) -> dict:
    return h[next(k for k in h if k != "__metadata__")]


def _set_first(**fields: object) -> Callable[[str], None]:
    def edit(h: dict, data: bytes) -> tuple[dict, bytes]:
        _first(h).update(fields)
        return h, data
    return _edited(edit)


def _truncated(cut: Callable[[int, int], int]) -> Callable[[str], None]:
    """The base file cut at ``cut(header_length, file_size)`` bytes."""
    def make() -> bytes:
        data = _valid_bytes()
        return data[:cut(_split(data)[0], len(data))]
    return _bytes(make)


def _sparse(declared: int, size: int, start: bytes = b'{"a":') -> Callable[[str], None]:
    """A file declaring a ``declared``-byte header, ``size`` bytes long (sparse: no disk used)."""
    def build(path: str) -> None:
        with open(path, "wb") as f:
            f.write(struct.pack("<Q", declared) + start)
            f.truncate(size)
    return build


def _pickle(path: str) -> None:
    marker = os.path.join(os.path.dirname(os.path.abspath(path)), MARKER)

    class Payload:
        def __reduce__(self):
            return (open, (marker, "w"))
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {"w": Payload()}}, f, protocol=4)


def _torch_zip(path: str) -> None:
    """What ``torch.save`` writes (a zip holding a pickle), built without torch.save."""
    marker = os.path.join(os.path.dirname(os.path.abspath(path)), MARKER)

    class Payload:
        def __reduce__(self):
            return (open, (marker, "w"))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": Payload()}, protocol=2))
        z.writestr("archive/version", "3\n")


def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _many_tensors(n: int) -> Callable[[str], None]:
    def build(path: str) -> None:
        t = base_tensors()
        t.update({f"lora_unet_extra_{i}.alpha": torch.tensor(float(i)) for i in range(n)})
        save_tensors(path, t, BASE_METADATA)
    return build


def _tensors(changes: dict[str, torch.Tensor | None] | None = None, extra: dict[str, torch.Tensor] | None = None,
             metadata: dict[str, str] | None = None, replace: dict[str, torch.Tensor] | None = None
             ) -> Callable[[str], None]:
    def build(path: str) -> None:
        t = dict(replace) if replace is not None else base_tensors(**(changes or {}))
        t.update(extra or {})
        save_tensors(path, t, BASE_METADATA if metadata is None else metadata)
    return build


def _values(role: str, value: float) -> Callable[[str], None]:
    def build(path: str) -> None:
        t = base_tensors()
        key = f"{BAD}.{'lora_up.weight' if role == 'up' else 'lora_down.weight'}"
        t[key] = t[key].clone()
        t[key].view(-1)[1] = value
        save_tensors(path, t, BASE_METADATA)
    return build


def _alpha(value: float) -> Callable[[str], None]:
    return _tensors({"alpha": torch.tensor(value)})


U8 = {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}
SE, PR = "SafetensorsError", "PickleRefusedError"

CASES: list[Case] = [
    # --- the file's frame: length field, header, data --------------------------------------------------
    Case("empty_file", _bytes(lambda: b""), SE, "too short"),
    Case("truncated_in_length", _truncated(lambda n, size: 5), SE, "too short"),
    Case("truncated_in_header", _truncated(lambda n, size: 8 + n // 2), SE, "larger than the file"),
    Case("truncated_at_data_start", _truncated(lambda n, size: 8 + n), SE, "out of range"),
    Case("truncated_in_data", _truncated(lambda n, size: size - 3), SE, "out of range"),
    Case("header_length_zero", _raw(b"", b"", length=0), SE, "does not start with '{'"),
    Case("header_length_larger_than_file", _raw({"a": U8}, b"\0" * 4, length=4096), SE, "larger than the file"),
    Case("header_length_negative", _raw({"a": U8}, b"\0" * 4, length=2**64 - 8), SE, "exceeds", memory_risky=True),
    Case("header_length_huge", _raw({"a": U8}, b"\0" * 4, length=2**40), SE, "exceeds", memory_risky=True),
    Case("header_100mb", _sparse(100 << 20, (100 << 20) + 8), SE, "exceeds", memory_risky=True),
    Case("trailing_bytes", _edited(lambda h, d: (h, d + b"\0" * 8)), SE, "trailing bytes"),
    # --- the header's text -----------------------------------------------------------------------------
    Case("header_not_utf8", _raw(b'{"\xff\xfe":{}}'), SE, "not valid utf-8"),
    Case("header_not_json", _raw(b"{abc}"), SE, "not valid json"),
    Case("header_json_array", _raw(b'[{"a":1}]'), SE, "does not start with '{'"),
    Case("header_json_string", _raw(b'"{}"'), SE, "does not start with '{'"),
    Case("header_extra_data", _raw(b'{}{}'), SE, "not valid json"),
    Case("header_deep_nesting", _raw(('{"a":' + _deep(100_000) + "}").encode()), SE, "nested too deeply"),
    Case("header_nan_shape", _raw(b'{"a":{"dtype":"U8","shape":[NaN],"data_offsets":[0,4]}}', b"\0" * 4), SE,
         "invalid shape"),
    Case("header_infinity_offset", _raw(b'{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,Infinity]}}', b"\0" * 4),
         SE, "invalid data_offsets"),
    Case("header_huge_integer", _raw(('{"a":{"dtype":"U8","shape":[' + "9" * 5000 + '],"data_offsets":[0,4]}}')
                                     .encode(), b"\0" * 4), SE, "not valid json"),
    Case("header_unpaired_surrogate", _raw(b'{"a\\ud800":{"dtype":"U8","shape":[4],"data_offsets":[0,4]}}',
                                           b"\0" * 4), SE, "unpaired surrogate"),
    Case("duplicate_keys", _raw(b'{"a":' + json.dumps(U8).encode() + b',"a":' + json.dumps(U8).encode() + b"}",
                                b"\0" * 4), SE, "duplicate key"),
    Case("duplicate_metadata_keys", _raw(b'{"__metadata__":{"k":"1","k":"2"},"a":' + json.dumps(U8).encode() + b"}",
                                         b"\0" * 4), SE, "duplicate key"),
    Case("metadata_non_string_values", _edited(lambda h, d: ({**h, "__metadata__": {"ss_network_dim": 16,
                                                                                    "tags": ["a"]}}, d)),
         SE, "not a string"),
    Case("metadata_not_object", _edited(lambda h, d: ({**h, "__metadata__": ["a", "b"]}, d)), SE,
         "__metadata__ is not an object"),
    # --- tensor entries --------------------------------------------------------------------------------
    Case("entry_not_object", _raw({"a": [0, 4]}, b"\0" * 4), SE, "not an object"),
    Case("entry_missing_fields", _raw({"a": {}}), SE, "unknown dtype"),
    Case("unknown_dtype", _set_first(dtype="F128"), SE, "unknown dtype"),
    Case("dtype_not_a_string", _set_first(dtype=4), SE, "unknown dtype"),
    Case("shape_negative", _raw({"a": {"dtype": "U8", "shape": [-1, -4], "data_offsets": [0, 4]}}, b"\0" * 4), SE,
         "invalid shape"),
    Case("shape_not_a_list", _raw({"a": {"dtype": "U8", "shape": "4", "data_offsets": [0, 4]}}, b"\0" * 4), SE,
         "invalid shape"),
    Case("shape_too_many_dims", _raw({"a": {"dtype": "U8", "shape": [1] * 9, "data_offsets": [0, 1]}}, b"\0"), SE,
         "invalid shape"),
    Case("shape_dim_2_48", _raw({"a": {"dtype": "U8", "shape": [2**48], "data_offsets": [0, 4]}}, b"\0" * 4), SE,
         "invalid shape", memory_risky=True),
    Case("shape_numel_overflows_int64", _raw({"a": {"dtype": "F64", "shape": [2**47] * 8, "data_offsets": [0, 8]}},
                                             b"\0" * 8), SE, "needs", memory_risky=True),
    Case("shape_size_mismatch", _raw({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 16]}}, b"\0" * 16), SE,
         "needs 12 bytes"),
    Case("dtype_size_mismatch", _raw({"a": {"dtype": "F16", "shape": [4], "data_offsets": [0, 16]}}, b"\0" * 16), SE,
         "needs 8 bytes"),
    Case("offsets_out_of_range", _raw({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}, b"\0" * 2), SE,
         "out of range"),
    Case("offsets_huge", _raw({"a": {"dtype": "U8", "shape": [2**40], "data_offsets": [0, 2**40]}}, b"\0" * 4), SE,
         "out of range", memory_risky=True),
    Case("offsets_negative", _raw({"a": {"dtype": "U8", "shape": [4], "data_offsets": [-4, 0]}}, b"\0" * 4), SE,
         "out of range"),
    Case("offsets_reversed", _raw({"a": {"dtype": "U8", "shape": [4], "data_offsets": [4, 0]}}, b"\0" * 4), SE,
         "out of range"),
    Case("offsets_not_integers", _raw({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0.0, 4.0]}}, b"\0" * 4),
         SE, "invalid data_offsets"),
    Case("overlapping_regions", _raw({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                                      "b": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}, b"\0" * 6), SE,
         "overlaps"),
    Case("same_region_twice", _raw({"a": U8, "b": U8}, b"\0" * 4), SE, "overlaps"),
    Case("hole_between_regions", _raw({"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                                       "b": {"dtype": "U8", "shape": [4], "data_offsets": [8, 12]}}, b"\0" * 12), SE,
         "belong to no tensor"),
    # --- not safetensors at all ------------------------------------------------------------------------
    Case("pickle_renamed", _pickle, PR, "not unpickled"),
    Case("torch_zip_renamed", _torch_zip, PR, "zip archive"),
    Case("pickle_as_ckpt", _pickle, PR, "not unpickled", extension=".ckpt"),
    Case("garbage_as_pt", _raw(b"\x01\x02\x03\x04"), PR, "convert", extension=".pt"),
    # --- valid, however odd ----------------------------------------------------------------------------
    Case("control_valid_lora", _tensors(), ACCEPTED),
    Case("no_tensors", _raw({"__metadata__": {"a": "b"}}), ACCEPTED),
    Case("empty_header_object", _raw({}), ACCEPTED),
    Case("zero_size_tensors", _tensors(extra={"empty.weight": torch.zeros(0, 768), "empty_scalar": torch.zeros(0),
                                              "lora_unet_x.lora_up.weight": torch.zeros(0, 2),
                                              "lora_unet_x.lora_down.weight": torch.zeros(2, 0)}), ACCEPTED),
    Case("unordered_regions", _edited(lambda h, d: (dict(reversed(list(h.items()))), d)), ACCEPTED),
    Case("header_padded_with_spaces", _edited(lambda h, d: (json.dumps(h).encode() + b" " * 64, d)), ACCEPTED),
    Case("hostile_key_names", _tensors(extra={"../../etc/passwd": torch.ones(1), "a\x00b": torch.ones(1),
                                              "\x1b]0;title\x07\u202eevil": torch.ones(1), "‥/．．／x": torch.ones(1),
                                              "<img src=x onerror=alert(1)>.alpha": torch.ones(1),
                                              "\U0001F600" * 50: torch.ones(1), "": torch.ones(1)}), ACCEPTED),
    Case("hostile_metadata_text", _tensors(metadata={
        **BASE_METADATA, "ss_network_dim": "9" * 5000, "ss_network_alpha": "1e999", "ss_learning_rate": "nan",
        "ss_resolution": "(99999999999999999999, -1)", "ss_training_comment": "<script>alert(1)</script>\x1b[2J",
        "modelspec.title": "\u202e" + "x" * 10000, "ss_tag_frequency": '{"a": {"b": "c"}}' * 3,
        "ss_sd_model_hash": "\x00" * 8}), ACCEPTED),
    Case("metadata_deep_json_text", _tensors(metadata={
        **BASE_METADATA, "software": '{"a":' * 50_000 + "1" + "}" * 50_000, "ss_tag_frequency": _deep(50_000),
        "ss_dataset_dirs": _deep(50_000), "loralab.recipe": _deep(50_000), "loralab.train_state": _deep(50_000),
        "ss_network_args": _deep(50_000)}), ACCEPTED),
    Case("many_tensors", _many_tensors(5000), ACCEPTED),
    Case("alpha_stored_as_int", _tensors({"alpha": torch.tensor(8, dtype=torch.int64)}), ACCEPTED),
    Case("float8_factors", _tensors({"up": base_tensors()[f"{BAD}.lora_up.weight"].to(torch.float8_e4m3fn)}),
         ACCEPTED),
    # --- well-formed, but wrong inside -----------------------------------------------------------------
    Case("nan_weights", _values("up", float("nan")), WARNING, "nan", "values"),
    Case("inf_weights", _values("down", float("inf")), WARNING, "inf", "values"),
    Case("all_zero_update", _tensors({"up": torch.zeros(320, 2)}), WARNING, "zero", "values"),
    Case("alpha_zero", _alpha(0.0), WARNING, "alpha", "alpha"),
    Case("alpha_negative", _alpha(-8.0), WARNING, "alpha", "alpha"),
    Case("alpha_inf", _alpha(float("inf")), WARNING, "alpha", "alpha"),
    Case("alpha_nan", _alpha(float("nan")), WARNING, "alpha", "alpha"),
    Case("alpha_far_above_rank", _alpha(1e6), WARNING, "alpha", "alpha"),
    Case("rank_zero", _tensors({"up": torch.zeros(320, 0), "down": torch.zeros(0, 768)}), WARNING, "rank 0",
         "header"),
    Case("up_down_rank_mismatch", _tensors({"up": torch.ones(320, 3)}), WARNING, "disagree on the rank", "header"),
    Case("up_down_zero_dim", _tensors({"up": torch.ones(()), "down": torch.ones(())}), WARNING, "not matrices",
         "header"),
    Case("alpha_not_a_scalar", _tensors({"alpha": torch.ones(2, 2)}), WARNING, "not a scalar", "header"),
    Case("int8_weights", _tensors({"up": torch.ones(320, 2, dtype=torch.int8),
                                   "down": torch.ones(2, 768, dtype=torch.int8)}), WARNING, "floating-point", "header"),
    Case("size_fits_no_weight", _tensors({"up": torch.ones(7, 2), "down": torch.ones(2, 9)}), WARNING,
         "does not fit", "header"),
    Case("oft_blocks_not_square", _tensors(extra={f"{LYCORIS}.oft_blocks": torch.ones(4, 80, 40) * 0.01}), WARNING,
         "neither [n, b, b]", "header"),
    Case("glora_factor_missing", _tensors(extra={f"{LYCORIS}.{r}.weight": torch.ones(s) * 0.01
                                                 for r, s in (("a1", (320, 2)), ("b1", (320, 2)), ("b2", (2, 320)))}),
         WARNING, "missing a2", "header"),
    Case("keys_for_no_known_model", _tensors(replace={"lora_unet_nowhere_proj.lora_up.weight": torch.ones(5, 2),
                                                      "lora_unet_nowhere_proj.lora_down.weight": torch.ones(2, 7)}),
         WARNING, "fit no known", "header"),
]


#: names a user, a workflow or a request may give for a file, each of which must be refused: escapes,
#: absolute, drive, UNC and device forms, alternate data streams, look-alikes, control characters
HOSTILE_NAMES = [
    "../secret.safetensors", "sub/../../secret.safetensors", "..\\secret.safetensors", "/etc/passwd",
    "\\\\server\\share\\x.safetensors", "//server/share/x", "C:\\Windows\\win.ini", "c:secret", "C:/x.safetensors",
    "\\\\?\\C:\\x.safetensors", "\\\\.\\pipe\\x", "//?/C:/x", "a.safetensors:evil", "a.safetensors::$DATA",
    "a.safetensors.", "a.safetensors ", "sub./a.safetensors", "...", "sub/.../x", ".. /x", ". ./x", "sub/ /x",
    "CON", "con.safetensors", "NUL.txt", "sub/aux", "COM1", "lpt9.safetensors", "COM¹.safetensors", "CONIN$",
    "NUL .safetensors", "a.safetensors\x00.png", "a\x1b[31m.safetensors", "a\u0085b", "\ud800.safetensors",
    "a／..／..／secret.safetensors", "‥/secret.safetensors", "．．/secret.safetensors", "x" * 256 + ".safetensors",
    "sub/" + "é" * 130, "a/" * 600 + "b", "", "   ", "\n",
]


def case(name: str) -> Case:
    return next(c for c in CASES if c.name == name)


def write_corpus(folder: str, cases: list[Case] | None = None) -> dict[str, str]:
    """Write every case's file into ``folder``; returns case name -> path."""
    os.makedirs(folder, exist_ok=True)
    out = {}
    for c in CASES if cases is None else cases:
        path = os.path.join(folder, c.filename)
        c.build(path)
        out[c.name] = path
    return out
