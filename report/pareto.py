"""Which candidates are worth having: the Pareto front of accuracy against size and against latency.

A candidate is on a front when no other is at least as accurate and at least as small (or fast),
and strictly better in one of the two.
"""
from __future__ import annotations


def front(points: dict[str, tuple[float, float]]) -> set[str]:
    """Names whose (accuracy, cost) no other point dominates: higher accuracy, lower cost."""
    names = set()
    for name, (accuracy, cost) in points.items():
        dominated = any(other_acc >= accuracy and other_cost <= cost and (other_acc > accuracy or other_cost < cost)
                        for other, (other_acc, other_cost) in points.items() if other != name)
        if not dominated:
            names.add(name)
    return names


def mark_fronts(report: dict) -> None:
    """Add `pareto` (front name -> bool) and `slower_than_baseline` (device -> bool) to each candidate."""
    entries = [e for e in report["candidates"] if e.get("accuracy") is not None]
    fronts = {"size": front({e["name"]: (e["accuracy"], e["size_bytes"]) for e in entries})}
    devices = sorted({device for e in report["candidates"] for device in e.get("latency", {})})
    for device in devices:
        timed = {e["name"]: (e["accuracy"], e["latency"][device]["p50_ms"])
                 for e in entries if device in e.get("latency", {})}
        fronts[f"latency[{device}]"] = front(timed)
    baseline = next((e for e in report["candidates"] if e["name"] == report["baseline"]), None)
    for entry in report["candidates"]:
        entry["pareto"] = {kind: entry["name"] in names for kind, names in fronts.items()}
        entry["slower_than_baseline"] = {
            device: stats["p50_ms"] > baseline["latency"][device]["p50_ms"]
            for device, stats in entry.get("latency", {}).items()
            if baseline and entry is not baseline and device in baseline.get("latency", {})}
