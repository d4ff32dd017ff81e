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
    recipe = report.get("recipe") if isinstance(report.get("recipe"), dict) else {}
    for key in ("model", "weights", "data"):
        spec = run.get(key) or recipe.get(key) or ("trained by the recipe" if key == "weights" and
                                                    recipe.get("train") else None)
        parts = [str(part) for part in (spec, _sha(run.get(f"{key}_sha256"))) if part]
        if parts:
            items.append((key, " · ".join(parts)))
    settings = report.get("settings") or {}
    bench = settings.get("bench") or {}
    measured = f"metric {settings.get('metric', 'top1')}"
    if bench:
        measured += (f"; batch {bench.get('batch', 1)}, {bench.get('warmup', '?')} warm-up then "
                     f"{bench.get('runs', '?')} timed runs per bundle and device")
    if _finite(settings.get("wall_s")):
        measured += f"; {settings['wall_s']:.0f} s in all"
    items.append(("measured", measured))
    return items


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
