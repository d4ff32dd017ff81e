"""The report document, edgeslim-report/1, as typed dataclasses (see edgeslim.core.documents).

`read_report` refuses a report whose fields are not of these types, so the renderers and gates
that read one may rely on them. The report is open: a newer edgeslim may add keys. `passed` is
null until gates run: a candidate not yet gated has not passed anything.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from edgeslim.core.documents import Reading, from_dict, json_schema
from edgeslim.core.errors import ConfigError
from edgeslim.core.limits import REPORT_MAX_BYTES, read_bounded_json
from edgeslim.sdk.manifest import (
    AccuracyControl,
    EpochRecord,
    Int8Form,
    KeptWhole,
    SensitivityRow,
    SourceModel,
    StepRecord,
)

REPORT_FORMAT = "edgeslim-report/1"
# The figures every renderer formats for each device a candidate was measured on.
LATENCY_KEYS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput")
_TEXT = {"minLength": 1}


@dataclass
class LatencyStats:
    """Latency of one bundle on one device: percentiles after warm-up, load and first run apart."""

    OPEN: ClassVar[bool] = True
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput: float
    min_ms: float | None = None
    max_ms: float | None = None
    load_ms: float | None = None
    first_run_ms: float | None = None
    peak_rss_mb: float | None = None
    threads: int | None = None
    mode: str = "measured"
    batch: int | None = None
    runs: int | None = None
    warmup: int | None = None
    std_ms: float | None = None


def latency_spread(stats) -> float | None:
    """The spread of one latency measurement, p90 - p50 in ms: what a p50 moves by between runs of
    an unchanged bundle on this host (None where either figure is missing or not finite)."""
    import math

    if not isinstance(stats, dict):
        return None
    p50, p90 = stats.get("p50_ms"), stats.get("p90_ms")
    if not (is_number(p50) and is_number(p90)) or not (math.isfinite(p50) and math.isfinite(p90)):
        return None
    return max(p90 - p50, 0.0)


@dataclass
class GateResult:
    """One gate of one candidate: the figure, its limit, what it was compared with, and the verdict."""

    OPEN: ClassVar[bool] = True
    value: float | None
    limit: float | None
    reference: str
    passed: bool
    reason: str | None = None
    change_ms: float | None = field(default=None, metadata={
        "description": "Latency gates: the p50 change in ms against the reference."})
    noise_ms: float | None = field(default=None, metadata={
        "description": "Latency gates: the change below which a difference is noise: the larger of the minimum "
                       "change and either side's p90 - p50 spread."})


@dataclass
class CandidateResult:
    """One validated bundle: size, accuracy and latency per device, and its gates once they ran."""

    OPEN: ClassVar[bool] = True
    name: str = field(metadata=_TEXT)
    size_bytes: float = field(metadata={"description": "Bytes of every file the model needs; positive."})
    bundle: str | None = None
    params: int | None = None
    accuracy: float | None = None
    accuracy_by_device: dict[str, float | None] = field(default_factory=dict)
    latency: dict[str, LatencyStats] = field(default_factory=dict)
    compression: list[StepRecord] = field(default_factory=list)
    gates: dict[str, GateResult] = field(default_factory=dict)
    passed: bool | None = field(default=None, metadata={"description": "null until gates run."})
    pareto: dict[str, bool] = field(default_factory=dict)
    slower_than_baseline: dict[str, bool] = field(default_factory=dict)
    accuracy_control: AccuracyControl | None = None
    sensitivity: list[SensitivityRow] | None = None
    int8_coverage: dict[str, Any] | None = None
    int8_form: Int8Form | None = None
    kept_whole: list[KeptWhole] | None = None
    sha256: dict[str, str] | None = field(default=None, metadata={
        "description": "The sha256 of each file of the bundle, from its manifest: equal maps are the same bundle."})
    source_model: SourceModel | None = field(default=None, metadata={
        "description": "The model the bundle was built from, from its manifest."})
    distill_history: list[EpochRecord] | None = field(default=None, metadata={
        "description": "Distillation's epochs, from the manifest: train loss, val metric, learning rate, seconds."})
    qat_history: list[EpochRecord] | None = field(default=None, metadata={
        "description": "Quantization-aware training's epochs, from the manifest."})
    failed: dict[str, str] | None = field(default=None, metadata={
        "description": "Measurements that failed, by device: why (a device that stopped answering mid-run). "
                       "The figures of the other devices stand."})


@dataclass
class BenchSettings:
    OPEN: ClassVar[bool] = True
    runs: int | None = None
    warmup: int | None = None
    batch: int | None = None


@dataclass
class Settings:
    """How the report was measured."""

    OPEN: ClassVar[bool] = True
    metric: str = "top1"
    devices: list[dict[str, Any]] = field(default_factory=list)
    bench: BenchSettings = field(default_factory=BenchSettings)
    wall_s: float | None = None
    lanes: dict[str, Any] | None = field(default=None, metadata={
        "description": "How validation ran its devices: spans_s, each lane's start and end in seconds (this host's "
                       "targets share one lane; each remote device has its own), and in_parallel, the groups of "
                       "lanes that overlapped."})


@dataclass
class RunInfo:
    """Where and from what a report was made. Absent in reports of edgeslim before 0.1.0's run record."""

    OPEN: ClassVar[bool] = True
    id: str | None = None
    created: str | None = field(default=None, metadata={"description": "UTC, ISO 8601."})
    command: str | None = None
    host: str | None = None
    platform: str | None = None
    python: str | None = None
    commit: str | None = field(default=None, metadata={
        "description": "The git commit of the model's source (else of the working directory), where there is one."})
    commit_dirty: bool | None = None
    model: str | None = field(default=None, metadata={"description": "The model spec, as given."})
    weights: str | None = None
    weights_sha256: str | None = None
    data: str | None = field(default=None, metadata={"description": "The data spec, as given."})
    data_sha256: str | None = field(default=None, metadata={
        "description": "Of the val split's arrays (dtype, shape and bytes of each input and label batch)."})
    source_model: SourceModel | None = field(default=None, metadata={
        "description": "The model every candidate's bundle was built from (their manifests' source_model); "
                       "null where they differ or one records none: then each candidate's own says."})


@dataclass
class AgainstCandidate:
    """One candidate of the older report, as far as a comparison needs it."""

    OPEN: ClassVar[bool] = True
    name: str
    accuracy: float | None = None
    size_bytes: float | None = None
    latency: dict[str, LatencyStats] = field(default_factory=dict)
    sha256: dict[str, str] | None = None


@dataclass
class Against:
    """The older report a report was compared with (`edgeslim report --against OLD.json`)."""

    OPEN: ClassVar[bool] = True
    report: str = field(metadata={"description": "The older report's path, as given."})
    model: str | None = None
    run: RunInfo | None = None
    candidates: list[AgainstCandidate] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list, metadata={
        "description": "Candidates of this report with no namesake in the older one: gated against the baseline."})
    notes: list[str] = field(default_factory=list)


@dataclass
class Report:
    """report.json: each candidate's size, accuracy and latency against the baseline, and its gates."""

    OPEN: ClassVar[bool] = True
    format: str = field(metadata={"const": REPORT_FORMAT})
    baseline: str = field(metadata={"description": "The name of the candidate the others are compared with."})
    candidates: list[CandidateResult] = field(metadata={"minItems": 1})
    settings: Settings = field(default_factory=Settings)
    created_with: dict[str, str | None] = field(default_factory=dict)
    recipe: dict[str, Any] | None = None
    gate_config: dict[str, float | None] | None = None
    passed: bool | None = field(default=None, metadata={"description": "null until gates run."})
    run: RunInfo | None = None
    against: Against | None = None


def report_schema() -> dict:
    return json_schema(Report, title="edgeslim report")


def new_report(baseline: str, candidates: list[dict], settings: dict, run: dict | None = None) -> dict:
    from edgeslim.core.version import package_versions
    from edgeslim.report.pareto import mark_fronts

    for candidate in candidates:
        candidate.setdefault("gates", {})
        candidate.setdefault("passed", None)  # not gated yet: apply_gates sets it
    report = {"format": REPORT_FORMAT, "baseline": baseline, "candidates": candidates,
              "settings": settings, "created_with": package_versions(), **({"run": run} if run else {})}
    mark_fronts(report)
    check_written(report)
    return report


def check_written(report: dict) -> None:
    """The report as readers will see it (JSON) is of the types `read_report` checks: a writer that
    drifts from the document fails here, where it is written, not in every reader after."""
    import json

    from edgeslim.core.outputs import jsonable

    as_read = json.loads(json.dumps(report, default=jsonable))
    from_dict(Report, as_read, Reading("the report edgeslim writes", RuntimeError,
                                       hint="this is a bug in edgeslim, please report it"))


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
        found = report.get("format") if isinstance(report, dict) else None
        newer = isinstance(found, str) and found.startswith("edgeslim-report/")
        raise ConfigError(f"{path} is not an edgeslim report (format {quote(found)}, expected {REPORT_FORMAT!r})"
                          + ("; it was written by another edgeslim version, so upgrade edgeslim" if newer else ""))
    check_report(report, f"report {path}")
    return report


def check_report(report: dict, what: str) -> None:
    """Refuse a report whose fields are not of their types (see Report), or whose candidates or
    baseline are not what gates and renderers need."""
    from_dict(Report, report, Reading(what))
    names, seen = [], set()
    for entry in report["candidates"]:
        _check_figures(entry, what)
        if entry["name"] in seen:  # gates find a candidate by name; two of one name would be ambiguous
            raise ConfigError(f"{what} has two candidates named {quote(entry['name'])}; each needs its own name")
        names.append(entry["name"])
        seen.add(entry["name"])
    # Gates against a baseline that is not there would compare nothing and pass.
    if report["baseline"] not in seen:
        raise ConfigError(f"{what} names baseline {quote(report['baseline'])}, which is none of its candidates "
                          f"({quote(', '.join(names), 120)})")


def _check_figures(entry: dict, what: str) -> None:
    """What renderers divide by is positive (NaN passes: its gate fails with the reason)."""
    where = f"{what}: candidate {quote(entry['name'])}"
    if not entry["size_bytes"] > 0:
        raise ConfigError(f"{where} has size_bytes {quote(entry['size_bytes'])}; a size is a positive number")
    for device, stats in entry.get("latency", {}).items():
        if stats["p50_ms"] <= 0:
            raise ConfigError(f"{where} has p50_ms {quote(stats['p50_ms'])} on device {quote(device)}; "
                              "a latency is positive")


def candidate(report: dict, name: str) -> dict | None:
    return next((entry for entry in report["candidates"] if entry["name"] == name), None)
