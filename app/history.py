"""Runs tracked over time: every `run` and `validate` appends a record to a local store.

The store is a folder: `$EDGESLIM_HISTORY` where set (`off` records nothing), else `.edgeslim/history`
under the working directory, as MLflow keeps `mlruns/` there. Per run it holds `<id>.run.json`, the
record (edgeslim-history/1: when, which commit, model, weights and data digests, and per candidate
accuracy, size, p50 per device, integer-kernel coverage), and `<id>.report.json`, a copy of the
report, so that `edgeslim report --against last` still finds the previous run once its output folder
is overwritten. Each file is written through a temporary file and a rename, the copy first: a record
is never half-written, and never names a copy that is not there.

    record_run(report, "out/report.json")     # what the CLI does after a run
    read_records()                            # oldest first
    previous_report(report)                   # (path of the copy, record) of the run before it
"""
from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import ClassVar

from edgeslim.core.documents import Reading, from_dict, json_schema
from edgeslim.core.errors import ConfigError, EdgeslimError

HISTORY_FORMAT = "edgeslim-history/1"
ENV = "EDGESLIM_HISTORY"
DEFAULT_FOLDER = Path(".edgeslim") / "history"
RECORD_SUFFIX, COPY_SUFFIX = ".run.json", ".report.json"
_RECORD_MAX_BYTES = 4 << 20


@dataclass
class CandidateFigures:
    """One candidate of a recorded run: the figures its trend is drawn from."""

    OPEN: ClassVar[bool] = True
    name: str = field(metadata={"minLength": 1})
    accuracy: float | None = None
    size_bytes: float | None = None
    p50_ms: dict[str, float] = field(default_factory=dict, metadata={"description": "Per device."})
    int8_coverage: float | None = field(default=None, metadata={
        "description": "Fraction of the quantizable nodes (conv, matmul, gemm, attention) that run as integer "
                       "kernels; null where the bundle records no coverage."})
    passed: bool | None = None
    bundle: str | None = None
    bundle_sha256: str | None = field(default=None, metadata={
        "description": "sha256 over the bundle's file digests (its manifest's sha256 map): equal for equal bundles."})


@dataclass
class RunRecord:
    """One run or validation, as `edgeslim history` lists it."""

    OPEN: ClassVar[bool] = True
    format: str = field(metadata={"const": HISTORY_FORMAT})
    id: str = field(metadata={"pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"})
    recorded: str = field(metadata={"description": "UTC, ISO 8601 with microseconds: the order of the store."})
    report: str = field(metadata={"description": "The absolute path report.json was written to."})
    report_copy: str = field(metadata={"description": "The copy of the report in the store, by file name.",
                                       "pattern": r"^[A-Za-z0-9][A-Za-z0-9._-]*\.report\.json$"})
    baseline: str
    candidates: list[CandidateFigures]
    created: str | None = None
    command: str | None = None
    commit: str | None = None
    commit_dirty: bool | None = None
    model: str | None = None
    weights: str | None = None
    weights_sha256: str | None = None
    data: str | None = None
    data_sha256: str | None = None
    metric: str | None = None
    best: str | None = field(default=None, metadata={
        "description": "The candidate the report's verdict ships; null where it keeps the baseline."})
    passed: bool | None = None


def history_schema() -> dict:
    return json_schema(RunRecord, title="edgeslim history record")


# -- where --------------------------------------------------------------------------------------

def store_folder(folder: str | Path | None = None) -> Path | None:
    """The store: `folder`, else $EDGESLIM_HISTORY, else .edgeslim/history here; None where it is `off`."""
    if folder is not None:
        return Path(folder)
    chosen = os.environ.get(ENV)
    if chosen is not None and chosen.strip().lower() in ("off", "none", "0", ""):
        return None
    return Path(chosen) if chosen else Path.cwd() / DEFAULT_FOLDER


def _checked_folder(folder: Path, given: bool) -> bool:
    """Whether the store exists; a path that is no folder (or a given one that is absent) is refused."""
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"history store {folder} is a file, not a folder; give the folder runs are recorded in "
                          f"(${ENV}, default {DEFAULT_FOLDER})")
    if not folder.exists() and given:
        raise ConfigError(f"history store {folder} does not exist; `edgeslim run` and `validate` record runs in "
                          f"${ENV} or {DEFAULT_FOLDER} under the working directory")
    return folder.exists()


# -- writing ------------------------------------------------------------------------------------

def bundle_digest(files: dict | None) -> str | None:
    """sha256 over a bundle's `sha256` map (file name and digest of each file): the bundle's identity."""
    if not isinstance(files, dict) or not files:
        return None
    text = "".join(f"{name}\0{files[name]}\n" for name in sorted(files))
    return hashlib.sha256(text.encode()).hexdigest()


def coverage_fraction(coverage) -> float | None:
    """Integer kernels out of all quantizable nodes, over the families an int8_coverage dict counts."""
    from edgeslim.core.coverage import FAMILIES, LOW_BITS

    families = coverage.get("families") if isinstance(coverage, dict) else None
    if not isinstance(families, dict):
        return None
    integer = total = 0
    for family in FAMILIES:
        entry = families.get(family)
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), int) for k in ("int8", "float")):
            continue
        low = sum(entry[k] for k in LOW_BITS if isinstance(entry.get(k), int) and entry[k] > 0)
        integer += entry["int8"] + low
        total += entry["int8"] + low + entry["float"]
    return integer / total if total else None


def _figures(entry: dict) -> dict:
    p50s = {device: stats["p50_ms"] for device, stats in (entry.get("latency") or {}).items()
            if isinstance(stats, dict) and isinstance(stats.get("p50_ms"), (int, float))}
    bundle = str(Path(entry["bundle"]).absolute()) if entry.get("bundle") else None
    return {"name": entry["name"], "accuracy": entry.get("accuracy"), "size_bytes": entry.get("size_bytes"),
            "p50_ms": p50s, "int8_coverage": coverage_fraction(entry.get("int8_coverage")),
            "passed": entry.get("passed"), "bundle": bundle,
            "bundle_sha256": bundle_digest(entry.get("sha256"))}


def new_record(report: dict, report_path: str | Path) -> dict:
    """The record of a report written to `report_path`."""
    from edgeslim.report.provenance import model_name
    from edgeslim.report.summary import verdict

    run = report.get("run") or {}
    # The weights: `run` records its own (weights_sha256: the trained state's digest); `validate` has none of its
    # own but its bundles' source model's, which the report's run section holds.
    source = run.get("source_model") if isinstance(run.get("source_model"), dict) else {}
    weights = {key: run[key] if run.get(key) is not None else source.get(key) for key in ("weights", "weights_sha256")}
    now = datetime.now(timezone.utc)
    run_id = run.get("id") if isinstance(run.get("id"), str) and _safe_id(run["id"]) else f"{now:%Y%m%dT%H%M%S%fZ}"
    return {"format": HISTORY_FORMAT, "id": run_id, "recorded": now.isoformat(),
            "report": str(Path(report_path).absolute()), "report_copy": f"{run_id}{COPY_SUFFIX}",
            "baseline": report["baseline"], "candidates": [_figures(entry) for entry in report["candidates"]],
            "created": run.get("created"), "command": run.get("command"), "commit": run.get("commit"),
            "commit_dirty": run.get("commit_dirty"), "model": model_name(report), **weights, "data": run.get("data"),
            "data_sha256": run.get("data_sha256"), "metric": (report.get("settings") or {}).get("metric"),
            "best": verdict(report)["best"], "passed": report.get("passed")}


def _safe_id(text: str) -> bool:
    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,120}", text))


def record_run(report: dict, report_path: str | Path, folder: str | Path | None = None) -> Path | None:
    """Append the run of `report` to the store; the record's path, or None where none was written.

    A store that cannot be written is warned about, not fatal: the run's report is its result.
    """
    from edgeslim.core.outputs import jsonable, write_json
    from edgeslim.core.progress import log, warn

    store = store_folder(folder)
    if store is None:
        return None
    record = new_record(report, report_path)
    from_dict(RunRecord, json.loads(json.dumps(record, default=jsonable)),
              Reading("the history record edgeslim writes", RuntimeError, hint="this is a bug in edgeslim"))
    path = store / f"{record['id']}{RECORD_SUFFIX}"
    try:
        _checked_folder(store, given=False)
        write_json(store / record["report_copy"], report)
        write_json(path, record)
    except EdgeslimError as exc:
        warn(f"the run is not recorded in the history: {exc}")
        return None
    log(f"recorded run {record['id']} in {store}")
    return path


# -- reading ------------------------------------------------------------------------------------

def read_records(folder: str | Path | None = None, model: str | None = None) -> list[dict]:
    """The records of the store, oldest first (of `model` only, where given); unreadable ones are
    warned about and left out."""
    from edgeslim.core.limits import read_bounded_json
    from edgeslim.core.progress import warn
    from edgeslim.report.provenance import same_model

    store = store_folder(folder)
    if store is None or not _checked_folder(store, given=folder is not None):
        return []
    records = []
    for path in sorted(store.glob(f"*{RECORD_SUFFIX}")):
        try:
            data = read_bounded_json(path, "history record", _RECORD_MAX_BYTES, ConfigError)
            from_dict(RunRecord, data, Reading(f"history record {path}"))
        except (ConfigError, ValueError, OSError) as exc:
            warn(f"left out of the history: {exc}")
            continue
        if model is None or (data.get("model") and same_model(data["model"], model)):
            records.append(data)
    return sorted(records, key=lambda record: (record["recorded"], record["id"]))


def nothing_recorded(folder: str | Path | None = None, model: str | None = None) -> str:
    """Why `edgeslim history` lists no run: recording is off, the store is empty, or it holds other models' runs
    only (then it names them, as --model takes them)."""
    store = store_folder(folder)
    if store is None:
        return f"recording is off ({ENV}=off)"
    everything = read_records(folder) if model is not None else []
    if not everything:
        return f"no run is recorded in {store}"
    models = list(dict.fromkeys(_short_model(record["model"]) for record in everything if record.get("model")))
    unnamed = sum(1 for record in everything if not record.get("model"))
    held = [*([f"runs of {', '.join(models)}"] if models else []),
            *([f"{_runs(unnamed)} of bundles that record no model"] if unnamed else [])]
    return (f"none of the {_runs(len(everything))} recorded in {store} is of the model {model}; it holds "
            f"{' and '.join(held)}" + ("; give one of those to --model" if models else ""))


def _runs(count: int) -> str:
    return f"{count} run" + ("s" if count != 1 else "")


def previous_report(report: dict, folder: str | Path | None = None) -> tuple[Path, dict]:
    """(path of the report copy, record) of the last run recorded before `report`'s, of the same model.

    Without a model (reports of `validate`), the runs without one whose baseline has the same name.
    """
    from edgeslim.report.provenance import model_name, same_model

    model, own = model_name(report), (report.get("run") or {}).get("id")
    store = store_folder(folder)
    records = read_records(folder)
    ids = [record["id"] for record in records]
    if own in ids:
        records = records[:ids.index(own)]
    records = [record for record in records if record["id"] != own and (
        same_model(record["model"], model) if model and record.get("model") else
        not model and not record.get("model") and record["baseline"] == report["baseline"])]
    which = f"model {model}" if model else f"bundles with the baseline {report['baseline']} (and no model)"
    if not records:
        raise ConfigError(f"--against last: no earlier run of {which} is recorded in "
                          f"{store if store else f'the history (${ENV} is off)'}; give --against OLD.json")
    chosen = records[-1]
    copy = store / chosen["report_copy"]
    if not copy.is_file():
        raise ConfigError(f"--against last: the report of run {chosen['id']} is missing from {store} "
                          f"({chosen['report_copy']}); give --against OLD.json")
    return copy, chosen


# -- showing ------------------------------------------------------------------------------------

def best_figures(record: dict) -> dict | None:
    """The figures of the candidate the run ships (its verdict's, else the baseline)."""
    name = record.get("best") or record["baseline"]
    return next((entry for entry in record["candidates"] if entry["name"] == name), None)


def record_line(record: dict) -> str:
    """id, time, commit, model, the shipped candidate's figures: one line."""
    created = (record.get("created") or record["recorded"])[:19].replace("T", " ")
    commit = (record.get("commit") or "-")[:12] + ("+" if record.get("commit_dirty") else "")
    model = _short_model(record["model"]) if record.get("model") else "-"
    best = best_figures(record)
    if best is None:
        shown = "no candidate"
    else:
        parts = []
        if isinstance(best.get("accuracy"), (int, float)):
            parts.append(f"accuracy {best['accuracy']:.2f}")
        if isinstance(best.get("size_bytes"), (int, float)):
            parts.append(f"{best['size_bytes'] / 1e6:.3g} MB")
        parts += [f"p50 {ms:.3g} ms {device}" for device, ms in best.get("p50_ms", {}).items()]
        label = "ship" if record.get("best") else "keep baseline"
        shown = f"{label} {best['name']}" + (f": {', '.join(parts)}" if parts else "")
    gate = {True: "passed", False: "FAILED"}.get(record.get("passed"), "")
    return "  ".join(part for part in (record["id"], created, commit, model, shown, gate) if part)


def _short_model(spec: str) -> str:
    """A file spec by its file name and factory (the folder is the checkout's, not the model's)."""
    target, _, factory = spec.rpartition(":")
    return f"{Path(target).name}:{factory}" if target.endswith(".py") else spec


def history_text(records: list[dict]) -> str:
    return "\n".join(record_line(record) for record in records)


def write_plot(records: list[dict], path: Path, force: bool = False) -> None:
    """Accuracy, size and p50 per device over the runs, one series per candidate: an SVG or an HTML page."""
    from edgeslim.core.outputs import MARK, owned_file, write_document, write_text
    from edgeslim.report.plots import INSTALL_HINT, available

    path = Path(path)
    kind = {".svg": "svg", ".html": "html", ".htm": "html"}.get(path.suffix.lower())
    if kind is None:
        raise ConfigError(f"--plot {path} must end in .svg or .html; edgeslim draws the history as one of them")
    if path.is_dir():
        raise ConfigError(f"--plot {path} is a folder; give a file path ending in .svg or .html")
    if (path.exists() or path.is_symlink()) and not force and not owned_file(path, "html"):
        raise ConfigError(f"--plot {path} is a file edgeslim did not write; choose another path, or pass --force")
    if not records:
        raise ConfigError("--plot: the history holds no run to draw; `edgeslim run` records one")
    if not available():
        raise ConfigError(f"--plot needs matplotlib, which is not installed: {INSTALL_HINT}")
    from edgeslim.report.trends import trend_plot

    svg = trend_plot(records)
    if kind == "svg":
        write_text(path, f"{MARK}\n{svg}")
    else:
        page = ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>edgeslim history</title>"
                "</head>\n<body style=\"font-family: sans-serif; max-width: 60em\">\n<h1>edgeslim history</h1>\n"
                f"<p>{len(records)} runs, oldest first.</p>\n{svg}\n</body></html>\n")
        write_document(path, page, "html", force)


def records_json(records: list[dict]) -> str:
    return json.dumps(records, indent=2)
