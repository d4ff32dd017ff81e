"""`report --against OLD.json`: the old run beside the new, so that a change cannot be missed.

`check_same_model` refuses a report of another model; `attach` puts the old figures into the
report (its `against` section) with the notes to warn about; `comparison_rows` gives the
renderers old, new and delta for accuracy, size and each p50.
"""
from __future__ import annotations

import math

from edgeslim.core.errors import ConfigError
from edgeslim.report.gates import GateConfig, same_bundle
from edgeslim.report.provenance import describe_source, model_name, same_model, source_keys
from edgeslim.report.schema import candidate, is_number, latency_spread, quote

# With no accuracy gate, a drop against the old run larger than this fraction of its accuracy is warned about.
NOTABLE_DROP = 0.01


def check_same_model(report: dict, old: dict, old_name: str, allow: bool) -> tuple[str, bool] | None:
    """Refuse (ConfigError) an old report of another model unless `allow`. Else None, or a note and whether
    to warn with it: a comparison allowed across models is warned about; one where a report records no
    model (`validate` of bundles older than their source_model record) is only noted in the report.

    Where both reports' bundles record their source model, the same model is the same spec, weights file
    (sha256), parameter count and training; else the same model spec (`same_model`).
    """
    new_sources, old_sources = source_keys(report), source_keys(old)
    if new_sources is not None and old_sources is not None:
        if new_sources == old_sources:
            return None
        return _different(_sources_text(old), _sources_text(report), old_name, allow)
    new_model, old_model = model_name(report), model_name(old)
    if new_model is None or old_model is None:
        which = "neither report" if new_model is None and old_model is None else \
            (old_name if old_model is None else "this report")
        return (f"cannot tell whether {old_name} is a report of the same model: {which} records no model "
                "(reports of `edgeslim run` do)", False)
    if same_model(new_model, old_model):
        return None
    return _different(quote(old_model, 80), quote(new_model, 80), old_name, allow)


def _different(old_model: str, new_model: str, old_name: str, allow: bool) -> tuple[str, bool]:
    if not allow:
        raise ConfigError(f"{old_name} is a report of {old_model}, this is {new_model}; "
                          "pass --allow-different-model to compare anyway")
    return (f"{old_name} is a report of {old_model}, this is {new_model}: compared anyway "
            "(--allow-different-model)", True)


def _sources_text(report: dict) -> str:
    """The source models of a report's candidates, as a message names them (one, normally)."""
    texts = []
    for entry in report["candidates"]:
        source = entry.get("source_model")
        text = describe_source(source) if isinstance(source, dict) else None
        if text and text not in texts:
            texts.append(text)
    return " and ".join(quote(text, 200) for text in texts)


def attach(report: dict, old: dict, old_name: str, config: GateConfig,
           model_note: tuple[str, bool] | None = None) -> list[str]:
    """Add the `against` section to `report` (after gates ran) with its notes; return those to warn about."""
    names = {entry["name"] for entry in report["candidates"]}
    unmatched = [entry["name"] for entry in report["candidates"] if candidate(old, entry["name"]) is None]
    notes = []
    for name in unmatched:
        notes.append(f"the baseline {name} has no namesake in {old_name}: it is not compared with the old run"
                     if name == report["baseline"] else
                     f"{name} has no namesake in {old_name}: gated against the baseline {report['baseline']} instead")
    notes += [f"{old_name}'s candidate {entry['name']} is not in this report"
              for entry in old["candidates"] if entry["name"] not in names]
    if config.max_accuracy_drop is None:
        notes += _ungated_drops(report, old, old_name)
    report["against"] = {
        "report": old_name, "model": model_name(old), **({"run": old["run"]} if old.get("run") else {}),
        "candidates": [{"name": entry["name"], "accuracy": entry.get("accuracy"), "size_bytes": entry["size_bytes"],
                        "latency": entry.get("latency") or {},
                        **({"sha256": entry["sha256"]} if entry.get("sha256") else {})}
                       for entry in old["candidates"]],
        "unmatched": unmatched, "notes": ([model_note[0]] if model_note else []) + notes}
    return ([model_note[0]] if model_note and model_note[1] else []) + notes


def _ungated_drops(report: dict, old: dict, old_name: str) -> list[str]:
    """Accuracy lost against the old run when no gate checks it: said, since exit 0 would hide it."""
    notes = []
    for entry in report["candidates"]:
        previous = candidate(old, entry["name"])
        new, was = entry.get("accuracy"), previous.get("accuracy") if previous else None
        if _finite(new) and _finite(was) and was - new > NOTABLE_DROP * max(abs(was), 1e-12):
            notes.append(f"{entry['name']} lost {was - new:.4g} points of accuracy against {old_name} "
                         f"({was:.4g} -> {new:.4g}) and no gate checks it (--max-accuracy-drop)")
    return notes


def _finite(value) -> bool:
    return is_number(value) and math.isfinite(value)


def _delta(old, new, relative: bool):
    """new - old, or new / old - 1 with `relative`; None where it cannot be computed."""
    if not (_finite(old) and _finite(new)) or (relative and old == 0):
        return None
    return new / old - 1.0 if relative else new - old


def comparison_devices(report: dict) -> list[str]:
    against = report.get("against") or {}
    devices = []
    for entry in [*report["candidates"], *against.get("candidates", [])]:
        devices += [device for device in entry.get("latency") or {} if device not in devices]
    return devices


def comparison_rows(report: dict) -> list[dict]:
    """Per candidate of the report: old, new and delta of accuracy (points), size and each p50 (fractions).

    A p50 change is `noise` where it is no larger than either side's spread (p90 - p50) or the gates'
    minimum change, or where the bundle is the same files.
    """
    against = report.get("against")
    if not against:
        return []
    olds = {entry["name"]: entry for entry in against.get("candidates", [])}
    minimum = (report.get("gate_config") or {}).get("min_latency_change_ms")
    minimum = minimum if _finite(minimum) else 0.0
    rows = []
    for entry in report["candidates"]:
        old = olds.get(entry["name"])
        row = {"name": entry["name"], "matched": old is not None, "same_bundle": bool(old) and same_bundle(entry, old),
               "accuracy": _triple(old, entry, lambda e: e.get("accuracy"), relative=False),
               "size": _triple(old, entry, lambda e: e.get("size_bytes"), relative=True), "p50": {}}
        for device in comparison_devices(report):
            new_stats = (entry.get("latency") or {}).get(device)
            old_stats = (old.get("latency") or {}).get(device) if old else None
            triple = _triple(old_stats, new_stats, lambda s: s.get("p50_ms"), relative=True)
            spreads = [s for s in (latency_spread(new_stats), latency_spread(old_stats)) if s is not None]
            change = _delta(triple["old"], triple["new"], relative=False)
            triple["noise"] = change is not None and (row["same_bundle"] or abs(change) <= max([minimum, *spreads]))
            row["p50"][device] = triple
        rows.append(row)
    return rows


def _triple(old: dict | None, new: dict | None, figure, relative: bool) -> dict:
    was = figure(old) if isinstance(old, dict) else None
    now = figure(new) if isinstance(new, dict) else None
    return {"old": was, "new": now, "delta": _delta(was, now, relative)}
