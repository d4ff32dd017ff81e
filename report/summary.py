"""What a reader decides from: the run's metadata, and the verdict (which candidate to ship, and what it gains).

Both renderers (Markdown and HTML) show these, so they say the same thing.
"""
from __future__ import annotations

import math

from edgeslim.report.schema import candidate, is_number

# With no accuracy gate, a candidate may lose this fraction of the baseline's accuracy and still be chosen.
TOLERATED_DROP = 0.01


def _finite(value) -> bool:
    return is_number(value) and math.isfinite(value)


def _short(digest) -> str | None:
    return digest[:12] if isinstance(digest, str) and digest else None


def metadata_items(report: dict) -> list[tuple[str, str]]:
    """(label, text) pairs of what the report records about its run; what it lacks is left out."""
    run = report.get("run") or {}
    items = []
    if run.get("created") or run.get("id"):
        items.append(("run", " · ".join(str(v) for v in (run.get("created"), run.get("id"), run.get("command")) if v)))
    host = [str(v) for v in (run.get("host"), run.get("platform")) if v]
    if run.get("python"):
        host.append(f"Python {run['python']}")
    if host:
        items.append(("host", " · ".join(host)))
    devices = [_device_text(d) for d in (report.get("settings") or {}).get("devices") or [] if isinstance(d, dict)]
    if devices:
        items.append(("devices", "; ".join(devices)))
    versions = [f"{name} {version}" for name, version in (report.get("created_with") or {}).items() if version]
    if versions:
        items.append(("versions", ", ".join(versions)))
    if run.get("commit"):
        dirty = " (with uncommitted changes)" if run.get("commit_dirty") else ""
        items.append(("commit", run["commit"][:12] + dirty))
    items += _model_items(report, run)
    settings = report.get("settings") or {}
    bench = settings.get("bench") or {}
    measured = f"metric {settings.get('metric', 'top1')}"
    if bench:
        measured += (f"; batch {bench.get('batch', 1)}, {bench.get('warmup', '?')} warm-up then "
                     f"{bench.get('runs', '?')} timed runs per bundle and device")
    if _finite(settings.get("wall_s")):
        measured += f"; {settings['wall_s']:.0f} s in all"
    items.append(("measured", measured))
    items += _lane_items(report)
    return items


def _lane_items(report: dict) -> list[tuple[str, str]]:
    """Which devices were measured side by side, and each measurement a device failed (it stopped answering)."""
    lanes = (report.get("settings") or {}).get("lanes") or {}
    items = [("side by side", "; ".join(", ".join(group) for group in lanes.get("in_parallel") or []))]
    failed = [f"{entry['name']} on {device}: {reason}" for entry in report.get("candidates") or []
              for device, reason in (entry.get("failed") or {}).items()]
    if failed:
        items.append(("NOT MEASURED", "; ".join(failed)))
    return [(label, text) for label, text in items if text]


def _model_items(report: dict, run: dict) -> list[tuple[str, str]]:
    """Model, weights and data: from the source model the bundles record (each, where they differ), else
    from the run record and recipe alone (reports of bundles built before edgeslim recorded it)."""
    recipe = report.get("recipe") if isinstance(report.get("recipe"), dict) else {}
    groups = source_groups(report)
    items = []
    if not groups:
        for key in ("model", "weights", "data"):
            spec = run.get(key) or recipe.get(key) or ("trained by the recipe" if key == "weights" and
                                                        recipe.get("train") else None)
            parts = [str(part) for part in (spec, _sha(run.get(f"{key}_sha256"))) if part]
            if parts:
                items.append((key, " · ".join(parts)))
        return items
    from edgeslim.report.provenance import weights_text

    for source, names in groups:
        which = f" ({', '.join(names)})" if len(groups) > 1 else ""
        params = source.get("params")
        model = [str(source.get("model") or run.get("model") or recipe.get("model") or "not recorded")]
        items.append((f"model{which}", " · ".join(model + ([f"{params:,} params"] if isinstance(params, int) else []))))
        weights = weights_text(source)
        if source.get("trained") and len(groups) == 1 and _short(run.get("weights_sha256")):
            weights += f" (state sha256 {_short(run['weights_sha256'])}…)"
        items.append((f"weights{which}", weights))
    spec = run.get("data") or recipe.get("data") or groups[0][0].get("data")
    validated = run.get("data_sha256") or groups[0][0].get("data_sha256")
    data = [str(part) for part in (spec, _sha(validated)) if part]
    built = sorted({_short(source.get("data_sha256")) for source, _ in groups} - {_short(validated), None})
    if built:
        data.append(f"bundles built with val data sha256 {', '.join(f'{digest}…' for digest in built)}")
    if data:
        items.append(("data", " · ".join(data)))
    return items


def source_groups(report: dict) -> list[tuple[dict, list[str]]]:
    """The distinct source models of a report's candidates, each with the candidates built from it."""
    from edgeslim.report.provenance import source_key

    groups: dict[tuple, tuple[dict, list[str]]] = {}
    for entry in report["candidates"]:
        source = entry.get("source_model")
        if isinstance(source, dict):
            groups.setdefault(source_key(source), (source, []))[1].append(entry["name"])
    return list(groups.values())


def _sha(digest) -> str | None:
    return f"sha256 {_short(digest)}…" if _short(digest) else None


def _device_text(device: dict) -> str:
    parts = [str(device.get("name", "?"))]
    details = [str(device[key]) for key in ("mode",) if device.get(key)]
    if device.get("threads"):
        details.append(f"{device['threads']} threads")
    if device.get("description"):
        details.append(str(device["description"]))
    return parts[0] + (f" ({', '.join(details)})" if details else "")


# The per-epoch records a candidate may carry (from its manifest), and what each fine-tuning is called.
HISTORIES = {"distill_history": "distillation", "qat_history": "QAT"}


def epochs_of(entry: dict, key: str) -> list[dict]:
    """A candidate's epoch records of one fine-tuning (`key` of HISTORIES)."""
    return [epoch for epoch in entry.get(key) or [] if isinstance(epoch, dict)]


def history_rows(report: dict) -> list[dict]:
    """Per candidate and fine-tuning it ran: epochs, first and last train loss, best val and its epoch,
    seconds in all. Empty when no candidate recorded epochs."""
    rows = []
    for key, kind in HISTORIES.items():
        for entry in report["candidates"]:
            epochs = epochs_of(entry, key)
            if not epochs:
                continue
            scored = [(epoch["val"], epoch.get("epoch")) for epoch in epochs if _finite(epoch.get("val"))]
            best = max(scored, key=lambda pair: pair[0]) if scored else (None, None)  # the first epoch of the best
            seconds = [epoch["seconds"] for epoch in epochs if _finite(epoch.get("seconds"))]
            rows.append({"name": entry["name"], "key": key, "kind": kind + _simulated_text(epochs),
                         "epochs": len(epochs), "first_loss": epochs[0].get("loss"),
                         "last_loss": epochs[-1].get("loss"), "best_val": best[0], "best_epoch": best[1],
                         "seconds": sum(seconds) if seconds else None})
    return rows


def _simulated_text(epochs: list[dict]) -> str:
    """"; epochs 9-10 through simulated dynamic_int8" where some epochs ran quantization-aware (their val is the
    simulated quantized model's, not the float one's), else ""."""
    simulated = [epoch for epoch in epochs if epoch.get("simulated")]
    if not simulated:
        return ""
    numbers = [epoch.get("epoch") for epoch in simulated]
    span = f"epoch {numbers[0]}" if len(numbers) == 1 else f"epochs {numbers[0]}-{numbers[-1]}"
    return f"; {span} through simulated {simulated[0]['simulated']}"


def speed_text(ratio: float) -> str:
    """2.0 -> '2.00x faster', 0.5 -> '2.00x slower'."""
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


def verdict(report: dict) -> dict:
    """The best candidate to ship: the smallest that passes the gates (and, with no accuracy gate, keeps
    the baseline's accuracy within TOLERATED_DROP); what it gains against the baseline; a sentence.

    Returns {"best": name or None, "smaller", "accuracy_delta", "faster": {device: ratio}, "text"}.
    """
    base = candidate(report, report["baseline"]) or report["candidates"][0]
    config = report.get("gate_config") or {}
    accuracy_gated = report.get("passed") is not None and config.get("max_accuracy_drop") is not None
    keeps = f"keeps the baseline's accuracy within {TOLERATED_DROP:.0%}"
    if report.get("passed") is None:
        rule = f"{keeps} (no gate was given)"
    else:
        rule = "passes the gates" + ("" if accuracy_gated else f" and {keeps}")
    eligible = [entry for entry in report["candidates"]
                if entry is not base and entry.get("passed") is not False and _finite(entry["size_bytes"])
                and (accuracy_gated or _keeps_accuracy(entry, base))]
    if not eligible:
        return {"best": None, "smaller": None, "accuracy_delta": None, "faster": {},
                "text": f"No candidate {rule}: keep the baseline {base['name']}."}
    best = min(eligible, key=lambda entry: (entry["size_bytes"], _first_p50(entry)))
    smaller = base["size_bytes"] / best["size_bytes"] if _finite(base["size_bytes"]) else None
    delta = best["accuracy"] - base["accuracy"] if _finite(best.get("accuracy")) and _finite(base.get("accuracy")) \
        else None
    faster = {}
    for device, stats in (best.get("latency") or {}).items():
        ref = (base.get("latency") or {}).get(device) or {}
        if _finite(stats.get("p50_ms")) and _finite(ref.get("p50_ms")) and stats["p50_ms"] > 0:
            faster[device] = ref["p50_ms"] / stats["p50_ms"]
    gains = []
    if smaller is not None:
        gains.append(f"{smaller:.2f}x smaller")
    if delta is not None:
        gains.append(f"accuracy {delta:+.2f} points")
    gains += [f"{speed_text(ratio)} on {device}" for device, ratio in faster.items()]
    text = (f"Ship {best['name']}: the smallest candidate that {rule}. Against the baseline {base['name']}: "
            + (", ".join(gains) if gains else "no figure to compare") + ".")
    return {"best": best["name"], "smaller": smaller, "accuracy_delta": delta, "faster": faster, "text": text}


def _keeps_accuracy(entry: dict, base: dict) -> bool:
    new, old = entry.get("accuracy"), base.get("accuracy")
    if not (_finite(new) and _finite(old)):
        return False
    return old - new <= TOLERATED_DROP * abs(old) + 1e-12


def _first_p50(entry: dict) -> float:
    for stats in (entry.get("latency") or {}).values():
        if _finite(stats.get("p50_ms")):
            return stats["p50_ms"]
    return math.inf
