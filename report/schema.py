"""The report document: edgeslim-report/1."""
from __future__ import annotations

import json
from pathlib import Path

from edgeslim.errors import ConfigError

REPORT_FORMAT = "edgeslim-report/1"


def new_report(baseline: str, candidates: list[dict], settings: dict) -> dict:
    from edgeslim.export.bundle import package_versions

    from edgeslim.report.pareto import mark_fronts

    for candidate in candidates:
        candidate.setdefault("gates", {})
        candidate.setdefault("passed", True)
    report = {"format": REPORT_FORMAT, "baseline": baseline, "candidates": candidates,
              "settings": settings, "created_with": package_versions()}
    mark_fronts(report)
    return report


def read_report(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"report {path} does not exist; write one with `edgeslim validate ... --out {path}`")
    try:
        report = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"report {path} is not valid JSON ({exc})") from None
    if not isinstance(report, dict) or report.get("format") != REPORT_FORMAT:
        raise ConfigError(f"{path} is not an edgeslim report (format {report.get('format') if isinstance(report, dict) else None!r}, "
                          f"expected {REPORT_FORMAT!r})")
    return report


def candidate(report: dict, name: str) -> dict | None:
    return next((entry for entry in report["candidates"] if entry["name"] == name), None)
