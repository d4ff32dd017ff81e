"""Progress and warnings through Python's logging, on the logger "edgeslim", and progress bars.

As a library edgeslim only adds a NullHandler and draws no bars: an application decides where its
records go. The CLI calls `configure`, which sends them to stderr as `[edgeslim] ...` lines (stdout
stays parseable), turns the bars on (off with --quiet, which leaves only warnings) and keeps the
libraries' own noise off the console (edgeslim.core.noise; --debug shows it). Modules call `log`
and `warn`, and wrap long loops in `progress`.

This module imports nothing beyond the standard library: the SDK's devices have no rich or tqdm.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

LOGGER = logging.getLogger("edgeslim")
LOGGER.addHandler(logging.NullHandler())

# What `configure` chose; a program that imports edgeslim as a library gets no bars.
_SETTINGS = {"bars": False}
_DRAWN: list[_Bar] = []   # the bar on screen now (one at a time: a loop inside a loop shows no second bar)


class _StderrLines(logging.Handler):
    """`[edgeslim] message` on whatever sys.stderr is at the time (test runners swap it), above any bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            prefix = "warning: " if record.levelno >= logging.WARNING else ""
            for bar in _DRAWN:
                bar.erase()
            sys.stderr.write(f"[edgeslim] {prefix}{record.getMessage()}\n")
            sys.stderr.flush()
            for bar in _DRAWN:
                bar.draw()
        except Exception:
            self.handleError(record)


def configure(quiet: bool = False, debug: bool = False) -> None:
    """What the CLI does at start: progress lines and bars on stderr (only warnings with `quiet`), and the
    libraries' noise silenced (shown on stderr with `debug`). Calling it again replaces the settings.
    Under torchrun only rank 0 speaks: the other ranks train the same steps and show errors alone."""
    import os

    from edgeslim.core.noise import quiet_libraries

    follower = os.environ.get("RANK", "0") != "0"  # torchrun sets RANK; core cannot ask compress.distributed
    quiet = quiet or follower
    for handler in [h for h in LOGGER.handlers if isinstance(h, _StderrLines)]:
        LOGGER.removeHandler(handler)
    LOGGER.addHandler(_StderrLines())
    LOGGER.setLevel(logging.ERROR if follower else logging.WARNING if quiet else logging.INFO)
    LOGGER.propagate = False  # an application's root handler would print each line twice
    _SETTINGS["bars"] = not quiet
    quiet_libraries(debug=debug, quiet=quiet)


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


# -- progress bars --------------------------------------------------------------------------------

REDRAW_SECONDS = 0.1    # a live bar is redrawn at most this often
LINE_SECONDS = 30.0     # off a terminal: a plain line at most this often, and only for a loop this long


def _nothing(steps: int = 1) -> None:
    """The `advance` of a bar that is not shown."""


@contextmanager
def progress(label: str, total: int | None = None, unit: str = "batches") -> Iterator[Callable[[int], None]]:
    """A bar for a long loop, on stderr; yields `advance(steps=1)`, to call after each item::

        with progress("distill epoch 2/3", total=len(batches)) as advance:
            for batch in batches:
                ...
                advance()

    On a terminal: a live line with the count, the rate and the time left, erased when the loop ends
    (the caller's log line then says how it went). Off a terminal (CI, a file): no carriage returns;
    a loop that runs longer than LINE_SECONDS prints a plain `[edgeslim] label: 30/120 batches ...` line
    that often. Nothing as a library, with --quiet, or inside another bar. `total` may be an estimate:
    a count past it stops the bar at 100%.
    """
    if not _SETTINGS["bars"] or _DRAWN:
        yield _nothing
        return
    bar = _Bar(label, total, unit, live=_is_terminal(sys.stderr))
    _DRAWN.append(bar)
    try:
        yield bar.advance
    finally:
        _DRAWN.remove(bar)
        bar.erase()


def _is_terminal(stream) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and os.environ.get("TERM") != "dumb"


class _Bar:
    def __init__(self, label: str, total: int | None, unit: str, live: bool):
        self.label, self.total, self.unit, self.live = label, total, unit, live
        self.done, self.shown = 0, False
        self.started = self.drawn_at = self.line_at = time.perf_counter()

    def advance(self, steps: int = 1) -> None:
        self.done += steps
        now = time.perf_counter()
        if self.live and now - self.drawn_at >= REDRAW_SECONDS:
            self.drawn_at = now
            self.draw()
        elif not self.live and now - self.line_at >= LINE_SECONDS:
            self.line_at = now
            log(f"{self.label}: {self.text(bar=False)}")

    def text(self, bar: bool = True) -> str:
        """'54/120 batches (45%), 31.2/s, 0:02 left', after a drawn bar on a terminal."""
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        rate = self.done / elapsed
        if not self.total:
            return f"{self.done} {self.unit}, {rate:.1f}/s"
        done = min(self.done, self.total)
        left = (self.total - done) / rate if rate > 0 else None
        shown = f"{done}/{self.total} {self.unit} ({done / self.total:.0%}), {rate:.1f}/s, {_clock(left)} left"
        return f"{_drawn(done / self.total)} {shown}" if bar else shown

    def draw(self) -> None:
        if not self.live:
            return
        sys.stderr.write(f"\r{self.label} {self.text()}"[:_columns()] + "\x1b[K")
        sys.stderr.flush()
        self.shown = True

    def erase(self) -> None:
        if self.shown:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _columns() -> int:
    """The width of the terminal stderr is on, less one: a line that fills it would wrap."""
    try:
        return os.get_terminal_size(sys.stderr.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return shutil.get_terminal_size(fallback=(100, 24)).columns


def _drawn(fraction: float, width: int = 24) -> str:
    full = "█" if (getattr(sys.stderr, "encoding", "") or "").lower().startswith("utf") else "#"
    filled = int(round(fraction * width))
    return f"[{full * filled}{' ' * (width - filled)}]"


def _clock(seconds: float | None) -> str:
    """0:07, 12:40, 1:02:03; ? when unknown."""
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
