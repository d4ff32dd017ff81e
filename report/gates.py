"""Gates a CI can act on: accuracy drop and latency increase, against the baseline or an old report.

Gates fail closed: a configured gate that cannot be evaluated (its figure is missing or not a
number on either side) fails and says why in `reason`, rather than passing because nothing was
compared. A candidate the old report has no namesake of is gated against the baseline instead
(and `report --against` warns about it).

A latency gate fails only on a change that is real: over its limit, and larger than the noise,
which is the larger of a minimum change (`min_latency_change_ms`) and either side's measured spread
(p90 - p50). A bundle compared with itself (equal sha256) never fails it: a change in its time is
the host's, not the model's.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from edgeslim.core.errors import ConfigError, require
from edgeslim.report.schema import candidate, is_number, latency_spread, quote

MIN_LATENCY_CHANGE_MS = 0.05


@dataclass
class GateConfig:
    max_accuracy_drop: float | None = None      # points of the metric (top1: percentage points)
    max_latency_increase: float | None = None   # fraction of p50, e.g. 0.10 for +10 %
    min_latency_change_ms: float = MIN_LATENCY_CHANGE_MS  # a smaller change of p50 is noise, whatever its fraction

    def __post_init__(self):
        # is_number first: a string from a recipe would make the comparison a TypeError.
        if self.max_accuracy_drop is not None:
            require(is_number(self.max_accuracy_drop) and self.max_accuracy_drop >= 0, "--max-accuracy-drop",
                    self.max_accuracy_drop, "0 or more")
        if self.max_latency_increase is not None:
            require(is_number(self.max_latency_increase) and self.max_latency_increase >= 0,
                    "--max-latency-increase", self.max_latency_increase, "0 or more (a fraction: 0.1 allows +10 %)")
        require(is_number(self.min_latency_change_ms) and math.isfinite(self.min_latency_change_ms)
                and self.min_latency_change_ms >= 0, "--min-latency-change", self.min_latency_change_ms,
                "0 or more milliseconds")

    def any(self) -> bool:
        return self.max_accuracy_drop is not None or self.max_latency_increase is not None

    def to_dict(self) -> dict:
        return asdict(self)


def _gate(value: float, limit: float, reference: str) -> dict:
    return {"value": round(value, 6), "limit": limit, "reference": reference, "passed": value <= limit + 1e-12}


def _failed(limit: float | None, reference: str, reason: str) -> dict:
    """A gate that could not be evaluated: it fails (a CI must not pass what it did not check)."""
    return {"value": None, "limit": limit, "reference": reference, "passed": False, "reason": reason}


def _problem(value, what: str, positive: bool = False) -> str | None:
    """Why `value` cannot be gated (missing, NaN, infinite, or not positive when it must be), else None."""
    if value is None:
        return f"{what} is missing"
    if not is_number(value) or not math.isfinite(value) or (positive and value <= 0):
        return f"{what} is not a {'positive ' if positive else ''}number ({quote(value)})"
    return None


def _accuracy_gate(entry: dict, reference: dict, label: str, limit: float) -> dict:
    new, old = entry.get("accuracy"), reference.get("accuracy")
    problem = _problem(new, f"the accuracy of {entry['name']}") or _problem(old, f"the accuracy of {label}")
    return _failed(limit, label, problem) if problem else _gate(old - new, limit, label)


def _stats(entry: dict, device: str) -> dict:
    stats = (entry.get("latency") or {}).get(device)
    return stats if isinstance(stats, dict) else {}


def same_bundle(entry: dict, reference: dict) -> bool:
    """Whether two candidates are the same files (equal, non-empty sha256 maps)."""
    mine, theirs = entry.get("sha256"), reference.get("sha256")
    return isinstance(mine, dict) and bool(mine) and mine == theirs


def _latency_gate(new_stats: dict, old_stats: dict, label: str, config: GateConfig, same: bool) -> dict:
    new, old = new_stats["p50_ms"], old_stats["p50_ms"]
    gate = _gate(new / old - 1.0, config.max_latency_increase, label)
    spreads = [s for s in (latency_spread(new_stats), latency_spread(old_stats)) if s is not None]
    noise = max([config.min_latency_change_ms, *spreads])
    gate.update(change_ms=round(new - old, 6), noise_ms=round(noise, 6))
    if gate["passed"]:
        return gate
    if same:
        gate.update(passed=True, reason="the same bundle (equal sha256): a change in its time is the host's, "
                                        "not the model's")
    elif new - old <= noise:
        gate.update(passed=True, reason=f"+{new - old:.3g} ms is within the noise ({noise:.3g} ms: the larger of "
                                        f"the minimum change and the p90 - p50 spread)")
    return gate


def _latency_gates(entry: dict, reference: dict, label: str, config: GateConfig) -> dict:
    """One gate per device either side was measured on: a device one side lacks fails its gate."""
    limit = config.max_latency_increase
    mine, theirs = entry.get("latency") or {}, reference.get("latency") or {}
    devices = list(mine) + [device for device in theirs if device not in mine]
    if not devices:
        return {"latency_increase": _failed(limit, label, f"neither {entry['name']} nor {label} has a latency")}
    gates, same = {}, same_bundle(entry, reference)
    for device in devices:
        new_stats, old_stats = _stats(entry, device), _stats(reference, device)
        problem = (_problem(new_stats.get("p50_ms"), f"the p50 of {entry['name']} on {device}", positive=True)
                   or _problem(old_stats.get("p50_ms"), f"the p50 of {label} on {device}", positive=True))
        gates[f"latency_increase[{device}]"] = (_failed(limit, label, problem) if problem
                                                else _latency_gate(new_stats, old_stats, label, config, same))
    return gates


def gate_candidate(entry: dict, reference: dict, label: str, config: GateConfig) -> dict:
    gates = {}
    if config.max_accuracy_drop is not None:
        gates["accuracy_drop"] = _accuracy_gate(entry, reference, label, config.max_accuracy_drop)
    if config.max_latency_increase is not None:
        gates.update(_latency_gates(entry, reference, label, config))
    return gates


def apply_gates(report: dict, config: GateConfig, against: dict | None = None,
                against_name: str = "the --against report") -> bool:
    """Fill each candidate's `gates` and `passed`; compare with `against` when given, else the baseline.

    `against_name` names the old report where a candidate it lacks is gated against the baseline.
    With no gate configured nothing is checked: `passed` stays null (nothing passed, nothing failed)
    and the result is True.
    """
    baseline = candidate(report, report["baseline"])
    if baseline is None:  # read_report refuses this; a report built in memory is checked here
        raise ConfigError(f"the report names baseline {quote(report['baseline'])}, which is none of its candidates")
    all_passed = True
    for entry in report["candidates"]:
        if against is None:
            gates = {} if entry is baseline else \
                gate_candidate(entry, baseline, f"baseline {report['baseline']}", config)
        else:
            gates = _gates_against(entry, baseline, report["baseline"], against, against_name, config)
        entry["gates"] = gates
        entry["passed"] = all(gate["passed"] for gate in gates.values()) if config.any() else None
        all_passed &= entry["passed"] is not False
    report["gate_config"] = config.to_dict()
    report["passed"] = all_passed if config.any() else None
    return all_passed


def _gates_against(entry: dict, baseline: dict, baseline_name: str, against: dict, against_name: str,
                   config: GateConfig) -> dict:
    """Against the namesake in the old report; a candidate it lacks, against this report's baseline."""
    reference = candidate(against, entry["name"])
    if reference is not None:
        return gate_candidate(entry, reference, f"previous {entry['name']}", config)
    if entry is baseline:
        return {}
    label = f"baseline {baseline_name} ({against_name} has no {entry['name']})"
    return gate_candidate(entry, baseline, label, config)


def failures(report: dict) -> list[str]:
    """One sentence per failed gate."""
    lines = []
    for entry in report["candidates"]:
        for name, gate in entry.get("gates", {}).items():
            if gate["passed"]:
                continue
            if gate.get("value") is None:  # not evaluated: the reason is the sentence
                lines.append(f"{entry['name']}: {name} failed: {gate.get('reason') or 'it has no figure to compare'}")
            else:
                lines.append(f"{entry['name']}: {name} {gate['value']:.4g} exceeds {gate['limit']:g} "
                             f"(against {gate['reference']})")
    return lines
