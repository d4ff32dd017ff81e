"""Progress lines on stderr, so that long work shows it is alive and stdout stays parseable."""
from __future__ import annotations

import sys
import time

_QUIET = False


def set_quiet(quiet: bool) -> None:
    global _QUIET
    _QUIET = quiet


def log(message: str) -> None:
    if not _QUIET:
        print(f"[edgeslim] {message}", file=sys.stderr, flush=True)


def warn(message: str) -> None:
    """A finding the user must see, --quiet or not."""
    print(f"[edgeslim] warning: {message}", file=sys.stderr, flush=True)


class Timer:
    """with Timer() as t: ...; t.seconds"""

    def __enter__(self):
        self.started = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.started
        return False
