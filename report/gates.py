"""Gates a CI can act on: accuracy drop and latency increase, against the baseline or an old report."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from edgeslim.compress.registry import require
from edgeslim.report.schema import candidate


@dataclass
class GateConfig:
    max_accuracy_drop: float | None = None      # points of the metric (top1: percentage points)
    max_latency_increase: float | None = None   # fraction of p50, e.g. 0.10 for +10 %

    def __post_init__(self):
        if self.max_accuracy_drop is not None:
            require(self.max_accuracy_drop >= 0, "--max-accuracy-drop", self.max_accuracy_drop, "0 or more")
        if self.max_latency_increase is not None:
            require(self.max_latency_increase >= 0, "--max-latency-increase", self.max_latency_increase,
                    "0 or more (a fraction: 0.1 allows +10 %)")

    def to_dict(self) -> dict:
        return asdict(self)


def _gate(value: float, limit: float, reference: str) -> dict:
    return {"value": round(value, 6), "limit": limit, "reference": reference, "passed": value <= limit + 1e-12}


def gate_candidate(entry: dict, reference: dict, label: str, config: GateConfig) -> dict:
    gates = {}
    if config.max_accuracy_drop is not None and entry.get("accuracy") is not None \
            and reference.get("accuracy") is not None:
        gates["accuracy_drop"] = _gate(reference["accuracy"] - entry["accuracy"], config.max_accuracy_drop, label)
    if config.max_latency_increase is not None:
        for device, stats in entry.get("latency", {}).items():
            ref = reference.get("latency", {}).get(device)
            if ref and ref.get("p50_ms"):
                increase = stats["p50_ms"] / ref["p50_ms"] - 1.0
                gates[f"latency_increase[{device}]"] = _gate(increase, config.max_latency_increase, label)
    return gates


def apply_gates(report: dict, config: GateConfig, against: dict | None = None) -> bool:
    """Fill each candidate's `gates` and `passed`; compare with `against` when given, else the baseline."""
    baseline = candidate(report, report["baseline"])
    all_passed = True
    for entry in report["candidates"]:
        if against is not None:
            reference, label = candidate(against, entry["name"]), f"previous {entry['name']}"
        else:
            reference, label = baseline, f"baseline {report['baseline']}"
        if reference is None or (against is None and entry is baseline):
            entry["gates"], entry["passed"] = {}, True
            continue
        entry["gates"] = gate_candidate(entry, reference, label, config)
        entry["passed"] = all(gate["passed"] for gate in entry["gates"].values())
        all_passed &= entry["passed"]
    report["gate_config"] = config.to_dict()
    report["passed"] = all_passed
    return all_passed


def failures(report: dict) -> list[str]:
    """One sentence per failed gate."""
    lines = []
    for entry in report["candidates"]:
        for name, gate in entry.get("gates", {}).items():
            if not gate["passed"]:
                lines.append(f"{entry['name']}: {name} {gate['value']:.4g} exceeds {gate['limit']:g} "
                             f"(against {gate['reference']})")
    return lines
