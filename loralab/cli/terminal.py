"""Terminal output of the command line: text made safe to print, and progress lines."""
from __future__ import annotations

import re
import sys
import time

#: what a terminal acts on or shows deceptively: C0/C1 controls (not newline, tab), bidi controls, lone surrogates
_TERMINAL_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def terminal_safe(text: str) -> str:
    """``text`` with every character a terminal would act on written as an escape: key names,
    metadata and file names come from strangers' files."""
    return _TERMINAL_UNSAFE.sub(lambda m: ascii(m.group())[1:-1], text)


class ProgressPrinter:
    """Progress on stderr for long runs: a live line on a terminal, else a line every few seconds."""

    def __init__(self, label: str, quiet: bool = False, every: float = 2.0, unit: str = "modules") -> None:
        self.label = label
        self.unit = unit
        self.quiet = quiet
        self.every = every
        self.start = time.monotonic()
        self.last = self.start
        self.tty = sys.stderr.isatty()

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self.quiet or (done < total and now - self.last < (0.2 if self.tty else self.every)):
            return
        self.last = now
        msg = f"{self.label}: {done}/{total} {self.unit} ({now - self.start:.1f} s)"
        if self.tty:
            print("\r" + msg, end="\n" if done == total else "", file=sys.stderr, flush=True)
        elif done < total or now - self.start >= self.every:
            print(msg, file=sys.stderr, flush=True)
