"""Progress and warnings through Python's logging, on the logger "edgeslim".

As a library edgeslim only adds a NullHandler: an application decides where its records go. The
CLI calls `configure`, which sends them to stderr as `[edgeslim] ...` lines (stdout stays
parseable); with --quiet only warnings show. Modules call `log` and `warn`.
"""
from __future__ import annotations

import logging
import sys
import time

LOGGER = logging.getLogger("edgeslim")
LOGGER.addHandler(logging.NullHandler())


class _StderrLines(logging.Handler):
    """`[edgeslim] message` on whatever sys.stderr is at the time (test runners swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            prefix = "warning: " if record.levelno >= logging.WARNING else ""
            sys.stderr.write(f"[edgeslim] {prefix}{record.getMessage()}\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def configure(quiet: bool = False) -> None:
    """What the CLI does at start: progress lines on stderr, only warnings with `quiet`."""
    for handler in [h for h in LOGGER.handlers if isinstance(h, _StderrLines)]:
        LOGGER.removeHandler(handler)
    LOGGER.addHandler(_StderrLines())
    LOGGER.setLevel(logging.WARNING if quiet else logging.INFO)
    LOGGER.propagate = False  # an application's root handler would print each line twice
    _progress_bars_to_stderr(quiet)


def _progress_bars_to_stderr(quiet: bool) -> None:
    """NNCF draws progress bars with rich's shared console, on stdout: move them to stderr, so stdout
    stays parseable, and hide them with `quiet`. (No rich on a torch-free device: nothing to do.)"""
    try:
        import rich
    except ImportError:
        return
    rich.reconfigure(stderr=True, quiet=quiet)


def set_quiet(quiet: bool) -> None:
    """Kept for callers of the earlier API: the same as `configure(quiet)`."""
    configure(quiet)


def log(message: str) -> None:
    """A progress line (hidden by --quiet)."""
    LOGGER.info(message)


def warn(message: str) -> None:
    """A finding the user must see, --quiet or not."""
    LOGGER.warning(message)


class Timer:
    """with Timer() as t: ...; t.seconds"""

    def __enter__(self):
        self.started = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.started
        return False
