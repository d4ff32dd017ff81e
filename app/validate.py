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
    against every bundle before any work. `specs` (model, weights, weights_sha256, data: what is known
    of them) go into the report's run record.
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
    candidates = [_validate_one(bundle, model, data, targets, metric, bench_config)
                  for bundle, model in zip(bundles, models)]
    settings = {"metric": metric_name, "devices": [t.describe() for t in targets], "bench": bench_config.to_dict()}
    run = {**run_info(command, data_sha256=data_digest(data.val), **(specs or {})),
           "source_model": report_sources(candidates)}
    return new_report(baseline, candidates, settings, run)


def _validate_one(bundle, model, data: DataSplits, targets: list, metric, bench_config) -> dict:
    from edgeslim.devices.accuracy import evaluate
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
    if data.val:
        entry["accuracy"] = evaluate(model, data.val, metric)
    by_runtime = {}
    for target in targets:
        if data.val:
            key = target.runtime_key()
            if key not in by_runtime:
                by_runtime[key] = entry["accuracy"] if key == "local:cpu" else target.accuracy(bundle, data, metric)
            entry["accuracy_by_device"][target.name] = by_runtime[key]
        log(f"validate {model.name} on {target.name}: {bench_config.warmup} warm-up + {bench_config.runs} runs")
        entry["latency"][target.name] = target.latency(bundle, bench_config)
    accuracy = f"accuracy {entry['accuracy']:.2f}" if entry["accuracy"] is not None else "no val data"
    p50s = ", ".join(f"{d} p50 {s['p50_ms']:.3f} ms" for d, s in entry["latency"].items())
    log(f"validate {model.name}: {accuracy}; {p50s}")
    return entry
