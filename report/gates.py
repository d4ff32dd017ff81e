"""Gates a CI can act on: accuracy drop and latency increase, against the baseline or an old report.

Gates fail closed: a configured gate that cannot be evaluated (its figure is missing or not a
number on either side, or the old report has no candidate of that name) fails and says why in
`reason`, rather than passing because nothing was compared.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from edgeslim.core.errors import ConfigError, require
from edgeslim.report.schema import candidate, is_number, quote


@dataclass
class GateConfig:
    max_accuracy_drop: float | None = None      # points of the metric (top1: percentage points)
    max_latency_increase: float | None = None   # fraction of p50, e.g. 0.10 for +10 %

    def __post_init__(self):
        # is_number first: a string from a recipe would make the comparison a TypeError.
        if self.max_accuracy_drop is not None:
            require(is_number(self.max_accuracy_drop) and self.max_accuracy_drop >= 0, "--max-accuracy-drop",
                    self.max_accuracy_drop, "0 or more")
        if self.max_latency_increase is not None:
            require(is_number(self.max_latency_increase) and self.max_latency_increase >= 0,
                    "--max-latency-increase", self.max_latency_increase, "0 or more (a fraction: 0.1 allows +10 %)")

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


def _p50(entry: dict, device: str):
    stats = (entry.get("latency") or {}).get(device)
    return stats.get("p50_ms") if isinstance(stats, dict) else None


def _latency_gates(entry: dict, reference: dict, label: str, limit: float) -> dict:
    """One gate per device either side was measured on: a device one side lacks fails its gate."""
    mine, theirs = entry.get("latency") or {}, reference.get("latency") or {}
    devices = list(mine) + [device for device in theirs if device not in mine]
    if not devices:
        return {"latency_increase": _failed(limit, label, f"neither {entry['name']} nor {label} has a latency")}
    gates = {}
    for device in devices:
        new, old = _p50(entry, device), _p50(reference, device)
        problem = (_problem(new, f"the p50 of {entry['name']} on {device}", positive=True)
                   or _problem(old, f"the p50 of {label} on {device}", positive=True))
        gates[f"latency_increase[{device}]"] = (_failed(limit, label, problem) if problem
                                                else _gate(new / old - 1.0, limit, label))
    return gates


def gate_candidate(entry: dict, reference: dict, label: str, config: GateConfig) -> dict:
    gates = {}
    if config.max_accuracy_drop is not None:
        gates["accuracy_drop"] = _accuracy_gate(entry, reference, label, config.max_accuracy_drop)
    if config.max_latency_increase is not None:
        gates.update(_latency_gates(entry, reference, label, config.max_latency_increase))
    return gates


def apply_gates(report: dict, config: GateConfig, against: dict | None = None,
                against_name: str = "the --against report") -> bool:
    """Fill each candidate's `gates` and `passed`; compare with `against` when given, else the baseline.

    `against_name` names the old report in the sentence of a candidate it lacks. With no gate
    configured nothing is checked: `passed` stays null (nothing passed, nothing failed) and the
    result is True.
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
            gates = _gates_against(entry, against, against_name, config)
        entry["gates"] = gates
        entry["passed"] = all(gate["passed"] for gate in gates.values()) if config.any() else None
        all_passed &= entry["passed"] is not False
    report["gate_config"] = config.to_dict()
    report["passed"] = all_passed if config.any() else None
    return all_passed


def _gates_against(entry: dict, against: dict, against_name: str, config: GateConfig) -> dict:
    label = f"previous {entry['name']}"
    reference = candidate(against, entry["name"])
    if reference is not None:
        return gate_candidate(entry, reference, label, config)
    if not config.any():
        return {}  # no gate asked for: nothing to compare, so nothing failed
    return {"against": _failed(None, label, f"{against_name} has no candidate named {quote(entry['name'])}")}


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
