"""The report document: edgeslim-report/1."""
from __future__ import annotations

from pathlib import Path

from edgeslim.core.errors import ConfigError
from edgeslim.core.limits import REPORT_MAX_BYTES, read_bounded_json

REPORT_FORMAT = "edgeslim-report/1"
# The figures every renderer formats for each device a candidate was measured on.
LATENCY_KEYS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput")


def new_report(baseline: str, candidates: list[dict], settings: dict) -> dict:
    from edgeslim.core.version import package_versions
    from edgeslim.report.pareto import mark_fronts

    for candidate in candidates:
        candidate.setdefault("gates", {})
        candidate.setdefault("passed", True)
    report = {"format": REPORT_FORMAT, "baseline": baseline, "candidates": candidates,
              "settings": settings, "created_with": package_versions()}
    mark_fronts(report)
    return report


def quote(value, limit: int = 60) -> str:
    """A value read from a report as a message shows it: clipped, a container by its type alone."""
    text = repr(value) if value is None or isinstance(value, (str, int, float)) else f"a JSON {type(value).__name__}"
    return text if len(text) <= limit else text[:limit - 1] + "…"


def is_number(value) -> bool:
    """A JSON number (NaN and infinity included: gates say those are not numbers); not a boolean."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def read_report(path: str | Path) -> dict:
    """The report at `path`, read within bounds and checked: the shape the renderers and gates rely on."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"report {path} does not exist; write one with `edgeslim validate ... --out {path}`")
    try:
        report = read_bounded_json(path, "report", REPORT_MAX_BYTES, ConfigError)
    except ConfigError:
        raise
    except ValueError as exc:  # json's own, e.g. an integer beyond Python's 4300-digit limit
        raise ConfigError(f"report {path} is not valid JSON ({quote(str(exc), 120)})") from None
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        found = quote(report.get("format") if isinstance(report, dict) else None)
        raise ConfigError(f"{path} is not an edgeslim report (format {found}, expected {REPORT_FORMAT!r})")
    check_report(report, f"report {path}")
    return report


def check_report(report: dict, what: str) -> None:
    """Refuse a report whose candidates or baseline are not what gates and renderers need."""
    entries = report.get("candidates")
    if not isinstance(entries, list) or not entries:
        raise ConfigError(f"{what} has no candidates; it needs a list of them under 'candidates'")
    names, seen = [], set()
    for entry in entries:
        name = _check_candidate(entry, what)
        if name in seen:  # gates find a candidate by name; two of one name would be ambiguous
            raise ConfigError(f"{what} has two candidates named {quote(name)}; each needs its own name")
        names.append(name)
        seen.add(name)
    baseline = report.get("baseline")
    if baseline is None:
        raise ConfigError(f"{what} names no baseline; set 'baseline' to one of its candidates")
    # Gates against a baseline that is not there would compare nothing and pass.
    if not isinstance(baseline, str) or baseline not in seen:
        raise ConfigError(f"{what} names baseline {quote(baseline)}, which is none of its candidates "
                          f"({quote(', '.join(names), 120)})")


def _check_candidate(entry, what: str) -> str:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
        raise ConfigError(f"{what} has a candidate without a 'name': {quote(entry)}")
    where = f"{what}: candidate {quote(entry['name'])}"
    if not is_number(entry.get("size_bytes")) or not entry["size_bytes"] > 0:
        raise ConfigError(f"{where} has no size_bytes (a positive number); got {quote(entry.get('size_bytes'))}")
    if entry.get("accuracy") is not None and not is_number(entry["accuracy"]):
        raise ConfigError(f"{where} has an accuracy that is not a number: {quote(entry['accuracy'])}")
    latency = entry.get("latency", {})
    if not isinstance(latency, dict):
        raise ConfigError(f"{where} has a 'latency' that is not a mapping of device to figures")
    for device, stats in latency.items():
        missing = [key for key in LATENCY_KEYS if not isinstance(stats, dict) or not is_number(stats.get(key))]
        if missing:
            raise ConfigError(f"{where} lacks {missing[0]} (a number) on device {quote(device)}")
        if stats["p50_ms"] <= 0:  # renderers divide by it; NaN passes here and fails its gate
            raise ConfigError(f"{where} has p50_ms {quote(stats['p50_ms'])} on device {quote(device)}; "
                              "a latency is positive")
    return entry["name"]


def candidate(report: dict, name: str) -> dict | None:
    return next((entry for entry in report["candidates"] if entry["name"] == name), None)
