"""Group a LoRA file's tensor keys into adapter entries, from key names and shapes alone.

Every key ends up in exactly one place: an entry, or the list of keys this module does not
recognise. Nothing is dropped silently.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

#: key suffix -> (role, naming style). Matched longest first.
SUFFIXES: dict[str, tuple[str, str]] = {
    ".lora_up.weight": ("up", "kohya"),
    ".lora_down.weight": ("down", "kohya"),
    ".lora_mid.weight": ("mid", "kohya"),
    ".lora_B.weight": ("up", "peft"),
    ".lora_A.weight": ("down", "peft"),
    ".lora_B.default.weight": ("up", "peft"),
    ".lora_A.default.weight": ("down", "peft"),
    ".lora_B.bias": ("diff_b", "peft"),
    ".lora.up.weight": ("up", "diffusers"),
    ".lora.down.weight": ("down", "diffusers"),
    "_lora.up.weight": ("up", "diffusers_attn_processor"),
    "_lora.down.weight": ("down", "diffusers_attn_processor"),
    ".lora_linear_layer.up.weight": ("up", "diffusers"),
    ".lora_linear_layer.down.weight": ("down", "diffusers"),
    ".up.weight": ("up", "xlabs"),
    ".down.weight": ("down", "xlabs"),
    ".alpha": ("alpha", ""),
    ".dora_scale": ("dora_scale", ""),
    ".hada_w1_a": ("w1a", "loha"),
    ".hada_w1_b": ("w1b", "loha"),
    ".hada_w2_a": ("w2a", "loha"),
    ".hada_w2_b": ("w2b", "loha"),
    ".hada_t1": ("t1", "loha"),
    ".hada_t2": ("t2", "loha"),
    ".lokr_w1": ("w1", "lokr"),
    ".lokr_w2": ("w2", "lokr"),
    ".lokr_w1_a": ("w1a", "lokr"),
    ".lokr_w1_b": ("w1b", "lokr"),
    ".lokr_w2_a": ("w2a", "lokr"),
    ".lokr_w2_b": ("w2b", "lokr"),
    ".lokr_t2": ("t2", "lokr"),
    ".diff": ("diff", "full"),
    ".diff_b": ("diff_b", "full"),
    ".set_weight": ("set", "full"),
    ".w_norm": ("w_norm", "norm"),
    ".b_norm": ("b_norm", "norm"),
    ".oft_blocks": ("oft_blocks", "oft"),
    ".oft_diag": ("oft_diag", ""),
    ".rescale": ("rescale", "oft"),
    ".a1.weight": ("a1", "glora"),
    ".a2.weight": ("a2", "glora"),
    ".b1.weight": ("b1", "glora"),
    ".b2.weight": ("b2", "glora"),
}
#: the old diffusers attention-processor naming (``attn1.processor.to_q_lora.up.weight``) applies to these only
_PROCESSOR_LAYERS = ("to_q", "to_k", "to_v", "to_out", "add_q_proj", "add_k_proj", "add_v_proj", "to_add_out")

LORA_ROLES = ("up", "down", "mid")
LOHA_ROLES = ("w1a", "w1b", "w2a", "w2b", "t1", "t2")
LOKR_ROLES = ("w1", "w2", "w1a", "w1b", "w2a", "w2b", "t2")
OFT_ROLES = ("oft_blocks", "rescale")  # ComfyUI reads no oft_diag: such a tensor belongs to no entry
GLORA_ROLES = ("a1", "a2", "b1", "b2")
#: kinds whose update is a function of the base weight (W·R, W·A + B): applied by the host's own
#: adapters, never turned into a ΔW by the engine
BASE_KINDS = ("oft", "glora")


@dataclass
class Entry:
    """One adapter of a LoRA file: the tensors that together change one model weight or bias."""

    module: str  # the module name as written in the file
    kind: str  # "lora" | "loha" | "lokr" | "diff" | "set" | "oft" | "glora"
    param: str  # "weight" or "bias"
    keys: dict[str, str]  # role -> tensor key in the file
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    style: str = ""  # key naming style of the up/down pair
    alpha: float | None = None  # filled in from the file's alpha scalar, when there is one
    problem: str | None = None  # set when the entry cannot be used (missing partner, bad shapes)

    @property
    def alpha_key(self) -> str | None:
        return self.keys.get("alpha")

    @property
    def has_dora(self) -> bool:
        return "dora_scale" in self.keys

    @property
    def supported(self) -> bool:
        """Whether the engine can compute this entry's ΔW (from its own tensors alone)."""
        return self.problem is None and self.kind in ("lora", "loha", "lokr", "diff", "set")

    @property
    def needs_base(self) -> bool:
        """An OFT, BOFT or GLoRA entry: its update depends on the base weight, so only the loader applies it."""
        return self.kind in BASE_KINDS

    def algorithm(self) -> str:
        """Human name of the algorithm: LoRA, LoCon, LoRA (Tucker), LoHa, LoKr, DoRA variants, Full diff..."""
        if self.kind == "lora":
            if "mid" in self.keys:
                name = "LoRA (Tucker)"
            elif len(self.shapes.get("down", ())) == 4 and math.prod(self.shapes["down"][2:]) > 1:
                name = "LoCon"
            else:
                name = "LoRA"
        elif self.kind == "lokr":
            name = "LoKr (full-dimension)" if self.full_dimension_lokr else "LoKr"
        elif self.kind == "oft":
            name = "BOFT" if len(self.shapes.get("oft_blocks", ())) == 4 else "OFT"
        else:
            name = {"loha": "LoHa", "diff": "Full diff", "set": "Set weight",
                    "glora": "GLoRA"}.get(self.kind, self.kind)
        if self.has_dora:
            name += " + DoRA"
        return name

    def base_problem(self, shape: tuple[int, ...]) -> str | None:
        """Why this OFT, BOFT or GLoRA entry cannot act on a weight of ``shape`` the way ComfyUI
        computes it (None where it can)."""
        if self.problem is not None:
            return self.problem
        if self.kind == "oft":
            return _oft_fit_problem(self.shapes, shape)
        if self.kind == "glora":
            return _glora_fit_problem(self.shapes, shape)
        return None

    @property
    def full_dimension_lokr(self) -> bool:
        return self.kind == "lokr" and "w1" in self.keys and "w2" in self.keys

    def rank(self) -> int | None:
        """The rank alpha is divided by (None where the algorithm has none)."""
        s = self.shapes
        if self.kind == "lora":
            role = "down"
        elif self.kind == "loha":
            role = "w1b"
        elif self.kind == "lokr" and "w2" not in self.keys and s.get("w2b"):
            role = "w2b"
        elif self.kind == "lokr" and "w1" not in self.keys:
            role = "w1b"
        elif self.kind == "glora":
            return _glora_rank(s)
        else:
            return None
        shape = s.get(role)
        return shape[0] if shape else None  # a 0-d tensor has no rank dimension

    def scale(self) -> float:
        """The factor ΔW is multiplied by (alpha / rank; 1 where there is no alpha or no rank)."""
        r = self.rank()
        if self.alpha is None or not r or self.kind in ("diff", "set"):
            return 1.0
        return self.alpha / r

    def delta_shape(self) -> tuple[int, int] | None:
        """(out_features, in_numel) of ΔW from the shapes alone, or None if they do not fit."""
        s = self.shapes
        try:
            if self.kind == "lora":
                up, down = s["up"], s["down"]
                if "mid" in s:
                    return up[0], down[1] * math.prod(s["mid"][2:])
                return up[0], math.prod(down[1:])
            if self.kind == "loha":
                if "t1" in s:
                    return s["w1a"][1], s["w1b"][1] * math.prod(s["t1"][2:])
                return s["w1a"][0], math.prod(s["w1b"][1:])
            if self.kind == "lokr":
                s1 = s["w1"] if "w1" in s else (s["w1a"][0], s["w1b"][1])
                if "w2" in s:
                    s2 = s["w2"]
                elif "t2" in s:
                    s2 = (s["w2a"][1], s["w2b"][1], *s["t2"][2:])
                else:
                    s2 = (s["w2a"][0], *s["w2b"][1:])
                return s1[0] * s2[0], s1[1] * math.prod(s2[1:])
            if self.kind in ("diff", "set"):
                t = next(iter(s.values()))
                return (t[0] if t else 1), math.prod(t[1:])
        except (KeyError, IndexError):
            return None
        return None


@dataclass
class ParsedKeys:
    """The result of grouping: entries, unrecognised keys, and problems found on the way."""

    entries: list[Entry] = field(default_factory=list)
    unrecognized: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)  # recognised suffix, but nothing to belong to


_MAX_SUFFIX_DOTS = max(s.count(".") for s in SUFFIXES)


def split_key(key: str) -> tuple[str, str, str] | None:
    """(module, role, style) for a tensor key, or None if no known suffix matches (longest first)."""
    cuts = []
    pos = len(key)
    for _ in range(_MAX_SUFFIX_DOTS):
        pos = key.rfind(".", 0, pos)
        if pos <= 0:
            break
        cuts.append(pos)
        underscore = key.rfind("_lora", 0, pos)
        if underscore > 0 and underscore + len("_lora") == pos:
            cuts.append(underscore)
    for cut in sorted(cuts):
        hit = SUFFIXES.get(key[cut:])
        if hit is None:
            continue
        role, style = hit
        module = key[:cut]
        if style == "diffusers_attn_processor" and not module.endswith(_PROCESSOR_LAYERS):
            continue
        return module, role, style
    return None


#: dtypes an adapter's factors may have (alpha may be any number)
FLOAT_DTYPES = frozenset({"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"})


def _lora_problem(shapes: dict[str, tuple[int, ...]]) -> str | None:
    up, down = shapes["up"], shapes["down"]
    mid = shapes.get("mid")
    if len(up) < 2 or len(down) < 2 or (mid is not None and len(mid) < 2):
        return f"up {list(up)} / down {list(down)}" + (f" / mid {list(mid)}" if mid else "") + " are not matrices"
    rank = down[0]
    if rank == 0:
        return "rank 0 (empty down matrix)"
    if mid is not None:
        if math.prod(up[1:]) != mid[0] or mid[1] != rank or math.prod(down[2:]) != 1:
            return f"up {list(up)}, mid {list(mid)}, down {list(down)} do not chain"
    elif math.prod(up[1:]) != rank:
        return f"up {list(up)} and down {list(down)} disagree on the rank"
    return None


def _loha_problem(s: dict[str, tuple[int, ...]]) -> str | None:
    """Shapes of LoHa factors that cannot form ΔW = (w1a·w1b) ⊙ (w2a·w2b) (or its Tucker form)."""
    if ("t1" in s) != ("t2" in s):
        return "hada_t1 and hada_t2 must come together"
    halves = []
    for a, b, t in (("w1a", "w1b", "t1"), ("w2a", "w2b", "t2")):
        sa, sb, st = s[a], s[b], s.get(t)
        if st is not None:
            if len(sa) != 2 or len(sb) != 2 or len(st) < 2 or (sa[0], sb[0]) != st[:2]:
                return f"{a} {list(sa)}, {b} {list(sb)}, {t} {list(st)} do not chain"
            halves.append((sa[1], sb[1], *st[2:]))
        else:
            if len(sa) < 2 or len(sb) < 2 or math.prod(sa[1:]) != sb[0]:
                return f"{a} {list(sa)} and {b} {list(sb)} do not multiply"
            halves.append((sa[0], math.prod(sb[1:])))
    if halves[0] != halves[1]:
        return f"the two Hadamard factors have different sizes {list(halves[0])} and {list(halves[1])}"
    return None


def _lokr_problem(s: dict[str, tuple[int, ...]]) -> str | None:
    """Shapes of LoKr factors that cannot form ΔW = kron(w1, w2)."""
    if "w1" in s:
        if len(s["w1"]) != 2:
            return f"lokr_w1 {list(s['w1'])} is not a matrix"
    elif len(s["w1a"]) != 2 or len(s["w1b"]) != 2 or s["w1a"][1] != s["w1b"][0]:
        return f"w1a {list(s['w1a'])} and w1b {list(s['w1b'])} do not multiply"
    if "w2" in s:
        if len(s["w2"]) < 2:
            return f"lokr_w2 {list(s['w2'])} is not a matrix"
    elif "t2" in s:
        a, b, t = s["w2a"], s["w2b"], s["t2"]
        if len(a) != 2 or len(b) != 2 or len(t) < 2 or (a[0], b[0]) != t[:2]:
            return f"w2a {list(a)}, w2b {list(b)}, t2 {list(t)} do not chain"
    elif len(s["w2a"]) != 2 or len(s["w2b"]) < 2 or s["w2a"][1] != s["w2b"][0]:
        return f"w2a {list(s['w2a'])} and w2b {list(s['w2b'])} do not multiply"
    return None


def _oft_problem(s: dict[str, tuple[int, ...]]) -> str | None:
    """oft_blocks that are not [n, b, b] (OFT) or [m, n, b, b] (BOFT) rotation generators."""
    blocks = s.get("oft_blocks")
    if blocks is None:
        return "oft_blocks missing"
    if len(blocks) not in (3, 4) or blocks[-1] != blocks[-2]:
        return f"oft_blocks {list(blocks)} are neither [n, b, b] (OFT) nor [m, n, b, b] (BOFT)"
    if len(blocks) == 4 and "alpha" not in s:
        return "BOFT without alpha: ComfyUI's BOFT fails on it and applies nothing"
    return None


def _oft_fit_problem(s: dict[str, tuple[int, ...]], shape: tuple[int, ...]) -> str | None:
    blocks = s["oft_blocks"]
    rows = shape[0] if shape else 0
    if len(shape) < 2 or blocks[-3] * blocks[-1] != rows:
        return f"oft_blocks {list(blocks)} ({blocks[-3]} blocks of {blocks[-1]}) do not cover the {rows} rows"
    if len(blocks) == 3:
        return None  # ComfyUI's OFT reads no rescale
    half = blocks[-1] // 2  # every butterfly stage i pairs rows 2^i·b/2 apart
    if half == 0 or any(rows % (2 ** (i + 1) * half) for i in range(blocks[0])):
        return f"{blocks[0]} butterfly stages of blocks of {blocks[-1]} do not divide the {rows} rows"
    rescale = s.get("rescale")
    if rescale is not None and rescale != (rows, *(1,) * (len(shape) - 1)):
        return f"rescale {list(rescale)} is not one value per row of {list(shape)}"
    return None


def _glora_form(s: dict[str, tuple[int, ...]], shape: tuple[int, ...] | None = None) -> tuple[str, int] | None:
    """("new" | "old", rank) of GLoRA factors as ComfyUI tells the two LyCORIS layouts apart:
    new a1 [in, r], a2 [r, in], b1 [out, r], b2 [r, in...]; old a1 [r, in], a2 [in, r], b1 [r, in...],
    b2 [out, r]. Factors fitting both are old on a square weight of a2's row count."""
    a1, a2, b1, b2 = (s[r] for r in GLORA_ROLES)
    if min(len(a1), len(a2), len(b1), len(b2)) < 2:
        return None
    old = b2[1] == b1[0] == a1[0] == a2[1]
    new = b2[0] == b1[1] == a1[1] == a2[0]
    if new and not (old and shape is not None and len(shape) >= 2 and a2[0] == shape[0] == shape[1]):
        return "new", a2[0]
    return ("old", a1[0]) if old else None


def _glora_rank(s: dict[str, tuple[int, ...]]) -> int | None:
    form = _glora_form(s) if all(r in s for r in GLORA_ROLES) else None
    return form[1] if form else None


def _glora_problem(s: dict[str, tuple[int, ...]]) -> str | None:
    missing = [r for r in GLORA_ROLES if r not in s]
    if missing:
        return f"missing {', '.join(missing)}"
    if _glora_form(s) is None:
        return "a1 {}, a2 {}, b1 {}, b2 {} do not chain".format(*(list(s[r]) for r in GLORA_ROLES))
    return None


def _glora_fit_problem(s: dict[str, tuple[int, ...]], shape: tuple[int, ...]) -> str | None:
    form = _glora_form(s, shape)
    flat = {r: (s[r][0], math.prod(s[r][1:])) for r in GLORA_ROLES}
    a1, a2, b1, b2 = (flat[r] for r in GLORA_ROLES)
    if len(shape) < 2:
        return f"GLoRA needs a matrix or kernel, not a weight of {list(shape)}"
    rows, cols = shape[0], math.prod(shape[1:])
    if form is not None and form[0] == "new":  # W·a1·a2 (a1 on the input channels) + b1·b2
        fits = shape[1] == a1[0] == a2[1] and a1[1] == a2[0] and b1 == (rows, b2[0]) and b2[1] == cols
    else:  # W·a2·a1 (on the flattened input) + b2·b1
        fits = a2[0] == a1[1] == b1[1] == cols and a2[1] == a1[0] and b2 == (rows, b1[0])
    if not fits:
        return "a1 {}, a2 {}, b1 {}, b2 {} do not fit a weight of {}".format(
            *(list(s[r]) for r in GLORA_ROLES), list(shape))
    return None


def _value_problem(shapes: dict[str, tuple[int, ...]], dtypes: dict[str, str]) -> str | None:
    """Factors stored as integers or booleans, and empty factors: nothing to apply."""
    for role, dtype in dtypes.items():
        if role != "alpha" and dtype not in FLOAT_DTYPES:
            return f"{role} is stored as {dtype}, not a floating-point type"
    empty = [role for role, shape in shapes.items() if role != "alpha" and math.prod(shape) == 0]
    if empty:
        return f"empty tensor ({', '.join(f'{r} {list(shapes[r])}' for r in empty)})"
    return None


def group_keys(shapes: dict[str, tuple[int, ...]], dtypes: dict[str, str]) -> ParsedKeys:
    """Group tensor keys (with their shapes and dtypes) into adapter entries."""
    by_module: dict[str, dict[str, tuple[str, str]]] = {}
    out = ParsedKeys()
    for key in shapes:
        parsed = split_key(key)
        if parsed is None:
            out.unrecognized.append(key)
            continue
        module, role, style = parsed
        roles = by_module.setdefault(module, {})
        if role in roles:  # two naming styles for the same role: keep the first, report the other
            out.unrecognized.append(key)
            continue
        roles[role] = (key, style)

    for module, roles in by_module.items():
        keys = {r: k for r, (k, _) in roles.items()}
        ent_shapes = {r: tuple(shapes[k]) for r, k in keys.items()}
        ent_dtypes = {r: dtypes[k] for r, k in keys.items()}
        styles = {s for r, (_, s) in roles.items() if s}
        shared = {r: keys[r] for r in ("alpha", "dora_scale") if r in keys}
        used: set[str] = set()

        def add(kind: str, param: str, roles_: tuple[str, ...], style: str = "", problem: str | None = None) -> None:
            ks = {r: keys[r] for r in roles_ if r in keys}
            if kind in ("lora", "loha", "lokr", *BASE_KINDS):
                ks.update(shared)
            used.update(ks.values())
            e_shapes = {r: ent_shapes[r] for r in ks}
            e_dtypes = {r: ent_dtypes[r] for r in ks}
            if problem is None and kind == "loha":
                problem = _loha_problem(e_shapes)
            elif problem is None and kind == "lokr":
                problem = _lokr_problem(e_shapes)
            elif problem is None and kind == "oft":
                problem = _oft_problem(e_shapes)
            elif problem is None and kind == "glora":
                problem = _glora_problem(e_shapes)
            problem = problem or _value_problem(e_shapes, e_dtypes)
            out.entries.append(Entry(module, kind, param, ks, e_shapes, e_dtypes, style, problem=problem))

        lora_style = next((roles[r][1] for r in ("up", "down") if r in roles), "")
        if "up" in keys or "down" in keys:
            if "up" in keys and "down" in keys:
                add("lora", "weight", LORA_ROLES, lora_style, _lora_problem(ent_shapes))
            else:
                missing = "down" if "up" in keys else "up"
                add("lora", "weight", LORA_ROLES, lora_style, f"{missing} matrix missing")
        if "loha" in styles:
            need = ("w1a", "w1b", "w2a", "w2b")
            missing = [r for r in need if r not in keys]
            add("loha", "weight", LOHA_ROLES, "loha", f"missing {', '.join(missing)}" if missing else None)
        if "lokr" in styles:
            ok1 = "w1" in keys or ("w1a" in keys and "w1b" in keys)
            ok2 = "w2" in keys or ("w2a" in keys and "w2b" in keys)
            add("lokr", "weight", LOKR_ROLES, "lokr", None if ok1 and ok2 else "incomplete Kronecker factors")
        for role, kind, param in (("diff", "diff", "weight"), ("set", "set", "weight"), ("w_norm", "diff", "weight"),
                                  ("diff_b", "diff", "bias"), ("b_norm", "diff", "bias")):
            if role in keys:
                add(kind, param, (role,), "full")
        for kind, kind_roles in (("oft", OFT_ROLES), ("glora", GLORA_ROLES)):
            if kind in styles:
                add(kind, "weight", kind_roles, kind)
        out.orphans.extend(k for k in keys.values() if k not in used)
    return out
