"""Validate bundles into a report: accuracy and latency of each bundle on each device, through the SDK."""
from __future__ import annotations

from edgeslim.core.data import DataSplits
from edgeslim.core.progress import log


def validate_bundles(bundles: list[str], data: DataSplits, devices: list[str], metric, metric_name: str,
                     baseline: str | None, bench_config, command: str = "validate", specs: dict | None = None) -> dict:
    """Accuracy and latency of each bundle on each device, every figure through the SDK.

    `accuracy` is measured on this host's CPU; `accuracy_by_device` once per other provider
    (a GPU, a remote board), so that a numeric difference between targets shows. The metric gets
    each bundle's first output, or the outputs its parameters name (edgeslim.core.metrics), checked
    against every bundle before any work. `specs` (model, weights, weights_sha256, data, data_sha256: what
    is known of them) go into the report's run record; the val split is hashed here where they lack it.
    """
    from edgeslim.core.errors import ConfigError
    from edgeslim.core.metrics import wanted_outputs
    from edgeslim.devices.targets import get_target
    from edgeslim.report.provenance import data_digest, report_sources, run_info
    from edgeslim.report.schema import new_report
    from edgeslim.sdk import load

    targets = [get_target(device) for device in devices]  # unknown devices fail before any work
    models = [load(bundle) for bundle in bundles]
    names = [model.name for model in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"bundle names repeat ({names}); give each bundle its own name")
    baseline = baseline or names[0]
    if baseline not in names:
        raise ConfigError(f"--baseline {baseline!r} names no bundle; the bundles are {names}")
    if data.val:  # a metric that names outputs a bundle lacks fails before any work
        for model in models:
            wanted_outputs(metric, [spec.name for spec in model.outputs])
    candidates, lanes = _measure(bundles, models, data, targets, metric, bench_config)
    settings = {"metric": metric_name, "devices": [t.describe() for t in targets], "bench": bench_config.to_dict(),
                "lanes": lanes}
    specs = {"data_sha256": None, **(specs or {})}
    specs["data_sha256"] = specs["data_sha256"] or data_digest(data.val)
    run = {**run_info(command, **specs),
           "source_model": report_sources(candidates)}
    return new_report(baseline, candidates, settings, run)


def _measure(bundles: list, models: list, data: DataSplits, targets: list, metric, bench_config) -> tuple:
    """Each bundle's entry with its accuracy and latency on every target, and how the lanes ran.

    Targets measured on this host take turns in one lane; each remote device runs in its own lane beside
    the others (edgeslim.devices.fleet). A device that stops answering fails its remaining rows, which the
    entry's `failed` names; the other figures stand."""
    from edgeslim.devices.fleet import HOST_LANE, Job, lane_of, ran_in_parallel, run_lanes

    entries = [_entry(bundle, model) for bundle, model in zip(bundles, models)]
    jobs = []
    for index, (bundle, model) in enumerate(zip(bundles, models)):
        if data.val:
            jobs.append(Job(HOST_LANE, (index, "accuracy", "local:cpu"), _accuracy_here(model, data, metric)))
        runtimes = {"local:cpu"}
        for target in targets:
            key = target.runtime_key()
            if data.val and key not in runtimes:
                runtimes.add(key)
                jobs.append(Job(lane_of(target), (index, "accuracy", key), _accuracy_on(target, bundle, data, metric)))
            jobs.append(Job(lane_of(target), (index, "latency", target.name),
                            _latency_on(target, bundle, model.name, bench_config)))
    results, spans = run_lanes(jobs)
    for index, entry in enumerate(entries):
        _fill(entry, index, results, targets, data)
    lanes = {"spans_s": {name: [round(start, 2), round(end, 2)] for name, (start, end) in spans.items()},
             "in_parallel": ran_in_parallel(spans)}
    if lanes["in_parallel"]:
        log("validate: measured side by side: " + "; ".join(", ".join(group) for group in lanes["in_parallel"]))
    return entries, lanes


def _accuracy_here(model, data: DataSplits, metric):
    from edgeslim.devices.accuracy import evaluate

    return lambda: evaluate(model, data.val, metric)


def _accuracy_on(target, bundle, data: DataSplits, metric):
    return lambda: target.accuracy(bundle, data, metric)


def _latency_on(target, bundle, name: str, bench_config):
    def measure():
        log(f"validate {name} on {target.name}: {bench_config.warmup} warm-up + {bench_config.runs} runs")
        stats = target.latency(bundle, bench_config)
        log(f"validate {name} on {target.name}: p50 {stats['p50_ms']:.3f} ms")
        return stats
    return measure


def _fill(entry: dict, index: int, results: dict, targets: list, data: DataSplits) -> None:
    """Put the lanes' results into the entry; a failed measurement goes to entry["failed"][device]."""
    from edgeslim.devices.fleet import Failed

    def take(key, device):
        value = results.get((index, *key))
        if isinstance(value, Failed):
            entry.setdefault("failed", {})[device] = value.reason
            return None
        return value

    if data.val:
        entry["accuracy"] = take(("accuracy", "local:cpu"), "cpu (accuracy)")
    for target in targets:
        if data.val:
            key = target.runtime_key()
            entry["accuracy_by_device"][target.name] = (
                entry["accuracy"] if key == "local:cpu" else take(("accuracy", key), target.name))
        stats = take(("latency", target.name), target.name)
        if stats is not None:
            entry["latency"][target.name] = stats
    accuracy = f"accuracy {entry['accuracy']:.2f}" if entry["accuracy"] is not None else "no val data"
    p50s = ", ".join(f"{d} p50 {s['p50_ms']:.3f} ms" for d, s in entry["latency"].items())
    failed = "; ".join(f"{device} failed: {reason}" for device, reason in entry.get("failed", {}).items())
    log(f"validate {entry['name']}: {accuracy}; {p50s}" + (f"; {failed}" if failed else ""))


def _entry(bundle, model) -> dict:
    """A candidate's entry before measuring: its size, parameters and what its manifest recorded at build."""
    from edgeslim.sdk.bundle import bundle_size

    entry = {"name": model.name, "bundle": str(bundle), "size_bytes": bundle_size(bundle, model.manifest),
             "params": model.manifest.get("metrics", {}).get("params"), "accuracy": None,
             "accuracy_by_device": {}, "latency": {}, "compression": model.manifest.get("compression", []),
             "sha256": dict(model.manifest["sha256"])}
    # Build-time findings the report shows.
    for key in ("accuracy_control", "sensitivity", "int8_coverage", "int8_form", "kept_whole", "int4", "speed_note",
                "graph_optimization", "distill_history", "qat_history"):
        if model.manifest.get("metrics", {}).get(key):
            entry[key] = model.manifest["metrics"][key]
    if model.manifest.get("source_model"):
        entry["source_model"] = model.manifest["source_model"]
    return entry
