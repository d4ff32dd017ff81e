"""Bounds on what edgeslim reads, so that a hostile or broken file fails fast with one sentence.

A manifest, a report or a recipe is a small document: none needs more than a few MiB or more
than a few dozen levels of nesting. Reading one past these bounds is refused before the bytes
are parsed (size) or right after (depth), never by running out of memory or recursion.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

MAX_DEPTH = 64                       # levels of nesting in any document
MANIFEST_MAX_BYTES = 16 << 20        # a manifest is a few KiB; 16 MiB leaves room for large op tables
REPORT_MAX_BYTES = 64 << 20          # a report holds every candidate of a sweep
RECIPE_MAX_BYTES = 1 << 20           # a recipe is written by hand


def read_bounded_text(path: Path, what: str, max_bytes: int, error: type) -> str:
    """The text of `path`, refused with `error` when it is larger than `max_bytes`."""
    path = Path(path)
    size = path.stat().st_size
    if size > max_bytes:
        raise error(f"{what} {path} is {size:,} bytes, over the limit of {max_bytes:,}; "
                    "it is not a file edgeslim wrote")
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)  # the file may have grown since the stat
    if len(data) > max_bytes:
        raise error(f"{what} {path} is over the limit of {max_bytes:,} bytes; it is not a file edgeslim wrote")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{what} {path} is not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def read_bounded_json(path: Path, what: str, max_bytes: int, error: type):
    """Parse the JSON document at `path` within `max_bytes` and MAX_DEPTH levels."""
    text = read_bounded_text(path, what, max_bytes, error)
    try:
        document = json.loads(text)
    except ValueError as exc:  # JSONDecodeError, and integers past Python's digit limit
        raise error(f"{what} {path} is not valid JSON ({str(exc)[:200]})") from None
    except RecursionError:
        raise error(f"{what} {path} is nested deeper than {MAX_DEPTH} levels; "
                    "it is not a file edgeslim wrote") from None
    check_depth(document, f"{what} {path}", error)
    return document


def check_depth(document, what: str, error: type, max_depth: int = MAX_DEPTH) -> None:
    """Refuse a parsed document nested deeper than `max_depth` (walked without recursion)."""
    pending = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > max_depth:
            raise error(f"{what} is nested deeper than {max_depth} levels; it is not a file edgeslim wrote")
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        pending.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))


def host_cores() -> int:
    """The cores this host has: the most threads a session may be given."""
    return os.cpu_count() or 1
