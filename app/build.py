"""Build a bundle: torch steps -> export -> ONNX steps -> a bundle written once, measured on its staged files."""
from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgeslim.core.data import DataSplits
from edgeslim.core.progress import Timer, log, warn

# Measures a staged bundle (its folder, its manifest so far) and returns metrics to add to the manifest.
Finish = Callable[[Path, dict], dict]


@dataclass
class StepContext:
    """What a step may need beyond the model: data, the original model as teacher, the metric."""

    data: DataSplits
    teacher: Any
    metric: Callable
    example_inputs: Any
    candidate: str
    input_names: list = field(default_factory=list)
    records: dict = field(default_factory=dict)
    # The device the bundle is built for: its name and instruction-set features, and a function
    # that times ONNX models against each other there (None where this host cannot measure it).
    target: dict = field(default_factory=lambda: {"name": "cpu"})
    measure: Callable | None = None
    # Per-kernel times of one model on the target, from onnxruntime's profiler ({kernel name: µs});
    # None where the target is not this host (a remote device, an estimated board).
    profile: Callable | None = None
    # The ONNX steps that run after the current one: a step that keeps its result only where it is faster
    # times it in the form those steps will give it (a fused graph as the INT8 that follows will run it).
    after: list = field(default_factory=list)

    def record(self, **facts) -> None:
        """Facts a step measured (parameters before and after, samples used) for the manifest."""
        self.records.update(facts)


@dataclass(frozen=True)
class BuildJob:
    """One bundle to build, as `export` and `compress` name it: user specs, the output, the export settings."""

    model: str
    weights: str | None
    data: str
    metric: str
    out: Path
    name: str
    export: Any = None              # an ExportConfig; None: its defaults
    force: bool = False
    device: str = "cpu"             # the target: INT8 settings and forms follow it

    def load(self) -> tuple:
        """(model, data, metric) from the specs."""
        from edgeslim.core.model_io import load_model
        from edgeslim.core.specs import load_data, load_metric

        return load_model(self.model, self.weights), load_data(self.data), load_metric(self.metric)

    def source(self, model, data: DataSplits) -> dict:
        """The manifest's source_model: this job's specs, the weights file's sha256, `model`'s parameters."""
        from edgeslim.report.provenance import source_model

        return source_model(model, self.model, self.weights, self.data, data.val)


def build_job(job: BuildJob, steps: list) -> dict:
    """Check the order of `steps`, load what the job names, and build its bundle; return the manifest."""
    from edgeslim.compress import check_order

    check_order(steps)
    model, data, metric = job.load()
    return build_bundle(model, steps, data, job.out, job.name, metric, job.export, force=job.force, device=job.device,
                        source=job.source(model, data), measure_source=bool(steps))


def build_bundle(base_model, steps: list, data: DataSplits, out_dir: Path, name: str, metric,
                 export_config=None, torch_cache: dict | None = None, force: bool = False,
                 device: str = "cpu", finish: Finish | None = None, source: dict | None = None,
                 measure_source: bool = False) -> dict:
    """Apply `steps` to a copy of `base_model`, export, quantize, and write the bundle; return its manifest.

    `force` writes the bundle beside files of the user's that a folder at `out_dir` holds (see
    edgeslim.core.outputs); without it such a folder is refused. `device` is the target the bundle is
    built for: INT8 settings follow its instruction set and INT8 forms are timed there.

    `torch_cache` lets candidates that share their torch steps (pruned-kd and pruned-kd-int8) prune
    and distill once. `finish` measures the staged bundle (see write_verified_bundle). `source` is the
    manifest's source_model (edgeslim.report.provenance.source_model): which model the bundle comes from.
    `measure_source` records metrics["source"], the unchanged model's fp32 export (see fp32_source).
    """
    from edgeslim.compress import apply_step, check_order, distributed
    from edgeslim.compress.quant_sim import settled
    from edgeslim.export.onnx_export import ExportConfig, check_parity, export_onnx

    check_order(steps)
    steps = settled(steps, base_model)
    export_config = export_config or ExportConfig()
    sample = data.sample_inputs()
    ctx = StepContext(data=data, teacher=base_model, metric=metric, example_inputs=sample, candidate=name)
    if any(step.stage == "onnx" for step in steps):
        ctx.target, ctx.measure = build_target(device)
        ctx.profile = build_profiler(device)
    with Timer() as timer:
        model = _torch_stage(base_model, [s for s in steps if s.stage == "torch"], ctx, torch_cache)
        if not distributed.is_writer():
            return None  # under torchrun rank 0 exports and writes; this rank's part ended with training
        log(f"{name}: export to ONNX (opset {export_config.opset}, dynamic batch)")
        proto, in_names, _ = export_onnx(model, sample, export_config)
        ctx.input_names = in_names
        if measure_source:
            unchanged = not any(step.stage == "torch" for step in steps)
            exported = (proto, in_names) if unchanged else None
            ctx.record(source=fp32_source(base_model, data, metric, export_config, exported))
        parity_batches = [inputs for inputs, _ in data.val] or data.calibration_inputs()
        parity = check_parity(model, proto, parity_batches, in_names, _parity_config(proto, export_config))
        onnx_steps = [s for s in steps if s.stage == "onnx"]
        for index, step in enumerate(onnx_steps):
            log(f"{name}: {step.name} {_options(step)}".rstrip())
            ctx.after = onnx_steps[index + 1:]
            proto = apply_step(proto, step, ctx)
        kernels = _int8_kernel_check(proto, parity_batches, in_names, name)
        coverage = _int8_coverage(proto, steps, ctx)
    metrics = {"parity": parity, "build_s": round(timer.seconds, 2), **({"int8_kernels": kernels} if kernels else {}),
               **({"int8_coverage": coverage} if coverage else {}), **ctx.records}
    compression = [step.to_dict() for step in steps]
    return write_verified_bundle(proto, out_dir, name, compression, metrics, data, metric,
                                 {"export": export_config.to_dict(), **({"source_model": source} if source else {})},
                                 force, finish)


QUANTIZED_RTOL = 0.05
QUANTIZING_STEPS = ("int8", "dynamic", "qat", "int4")


def _int8_coverage(proto, steps: list, ctx) -> dict | None:
    """Which convolutions and matmuls onnxruntime runs as integer kernels; warn where most run in float."""
    from edgeslim.core.coverage import coverage_text, mostly_float
    from edgeslim.export.kernels import int8_coverage

    if not any(step.name in QUANTIZING_STEPS for step in steps):
        return None
    coverage = int8_coverage(proto)
    form = ctx.records.get("int8_form", {}).get("chosen")
    log(f"{ctx.candidate}: {coverage_text(coverage)}" + (f" (form {form})" if form else ""))
    weight_only = any(step.name == "int4" for step in steps)  # it quantizes matmul weights alone, by design
    if mostly_float(coverage) and form != "weights" and not weight_only:
        warn(f"{ctx.candidate}: most convolutions and matmuls of this quantized model run in float on "
             f"onnxruntime's CPU provider ({coverage_text(coverage)}); see the manifest's int8_coverage")
    return coverage


def build_target(device: str) -> tuple[dict, Callable | None]:
    """The target as the INT8 step sees it: name and features, and how to time models there.

    The timer takes {"parent": float model, name: model, ...} and one feed, and returns {"p50_ms": {name: ms},
    "x_parent": {name: its time over the parent's}, "where": words}."""
    from edgeslim.devices.targets import get_target

    target = get_target(device)
    if not hasattr(target, "profile"):  # a remote device: its features are not known here
        return {"name": target.name, "features": []}, _remote_measure(target)
    profile = target.profile
    info = {"name": profile.name, "features": list(profile.features), "mode": profile.mode()}
    here = _run_here(target)
    return info, (_local_measure(here) if here else None)


def build_profiler(device: str) -> Callable | None:
    """Per-kernel times of a model on `device` (see StepContext.profile), or None where it is not this host."""
    from edgeslim.devices.targets import get_target
    from edgeslim.export.kernels import kernel_times

    here = _run_here(get_target(device))
    if here is None:
        return None

    def profile(model, feed: dict) -> dict:
        return kernel_times(model, feed, *_session_settings(here))

    return profile


def _run_here(target):
    """The device profile of a target this host runs, whose models it can time and profile; None for a remote
    device (timed there, one bundle after another) and for a board only estimated from here."""
    profile = getattr(target, "profile", None)
    return None if profile is None or profile.mode() == "estimated" else profile


def _session_settings(profile) -> tuple:
    """(SessionOptions, providers) that time a model as the device profile runs it."""
    import onnxruntime as ort

    from edgeslim.sdk.providers import provider_chain, resolve_provider

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if profile.provider == "cpu" and profile.threads:
        # Only where the profile fixes a count: onnxruntime's own default beats an explicit
        # count of all cores here (measured: fp32 MobileNetV3-style 0.33 against 0.39 ms).
        options.intra_op_num_threads = profile.threads
    return options, provider_chain(resolve_provider(profile.provider))


def timing_settings(profile) -> tuple:
    """(SessionOptions, providers) for sessions timed against each other in one process (see _local_measure)."""
    options, providers = _session_settings(profile)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options, providers


def _local_measure(profile) -> Callable:
    """Alternating in one process, with the profile's provider and threads, the sessions' threads not spinning.

    Two sessions in one process each keep their pool's threads spinning after a run, on the cores the other
    session's run needs next. Measured 2026-11-24, all-MiniLM-L6-v2 pruned by 0.3, dynamic INT8 fused
    (QAttention) against unfused, 2 cores: with spinning the fused graph read 1.03x to 1.53x the unfused one's
    time over nineteen measurements, median 1.20x (the optimize step refused it); without, 0.94x, 0.95x,
    0.94x; each in a process of its own (what a device runs), 0.87x to 1.02x, median 0.97x."""
    import onnxruntime as ort

    from edgeslim.sdk.stats import alternating, paired_ratios

    def measure(models: dict, feed: dict) -> dict:
        options, providers = timing_settings(profile)
        sessions = {name: ort.InferenceSession(model.SerializeToString(), options, providers=providers)
                    for name, model in models.items()}
        calls = {name: (lambda s=session: s.run(None, feed)) for name, session in sessions.items()}
        timed = alternating(calls)
        return {"p50_ms": timed["p50_ms"], "x_parent": paired_ratios(timed["round_p50_ms"], "parent"),
                "where": f"{profile.name}, alternating in one process"}

    return measure


def _remote_measure(target) -> Callable:
    """One after another on the device, each through a temporary bundle (the SDK runs there)."""
    import tempfile

    from edgeslim.devices.runner import BenchConfig
    from edgeslim.export.bundle import write_unverified_bundle

    def measure(models: dict, feed: dict) -> dict:
        p50 = {}
        with tempfile.TemporaryDirectory() as tmp:
            for name, model in models.items():
                bundle = write_unverified_bundle(model, Path(tmp) / name, name)
                p50[name] = target.latency(bundle, BenchConfig(runs=200, warmup=20))["p50_ms"]
        return {"p50_ms": p50, "x_parent": {name: value / p50["parent"] for name, value in p50.items()},
                "where": f"{target.name}, one after another"}

    return measure


def _int8_kernel_check(proto, batches: list, in_names: list, name: str) -> dict | None:
    """Measure the INT8 kernels against the QDQ graph; say so where they saturate on this CPU."""
    from edgeslim.export.onnx_export import check_int8_kernels

    kernels = check_int8_kernels(proto, batches, in_names)
    if kernels and kernels["max_rel_err"] > QUANTIZED_RTOL:
        kernels["saturated"] = True
        warn(f"{name}: onnxruntime's INT8 kernels on this CPU depart from the QDQ graph (max rel err "
             f"{kernels['max_rel_err']:.3g}): x86 without VNNI saturates int16 sums; "
             "--overflow-fix enable gives the weights a 7-bit range that cannot")
    return kernels


def _parity_config(proto, config):
    """A quantization-aware export holds QDQ on both sides; torch and onnxruntime may round one
    activation a step apart, so the relative tolerance widens to QUANTIZED_RTOL."""
    from dataclasses import replace

    from edgeslim.export.graph import is_quantized

    if not is_quantized(proto) or config.rtol >= QUANTIZED_RTOL:
        return config
    log(f"parity: the exported model is quantized; relative tolerance {QUANTIZED_RTOL:g}")
    return replace(config, rtol=QUANTIZED_RTOL)


def _torch_stage(base_model, steps: list, ctx: StepContext, cache: dict | None):
    import json

    from edgeslim.compress import apply_step

    key = json.dumps([step.to_dict() for step in steps], sort_keys=True)
    if cache is not None and key in cache:
        model, records = cache[key]
        log(f"{ctx.candidate}: reusing the torch steps already run for another candidate")
        ctx.records.update(records)
        return copy.deepcopy(model)
    model = copy.deepcopy(base_model).eval()
    for step in steps:
        log(f"{ctx.candidate}: {step.name} {_options(step)}".rstrip())
        model = apply_step(model, step, ctx)
    if cache is not None:
        cache[key] = (copy.deepcopy(model), dict(ctx.records))
    return model


def _options(step) -> str:
    """The options a step was given other than their defaults: 'ratio=0.5', '' for none."""
    from dataclasses import MISSING, fields

    def default(option):
        return option.default_factory() if option.default_factory is not MISSING else option.default

    return " ".join(f"{option.name}={getattr(step, option.name)}" for option in fields(step)
                    if option.name != "version" and getattr(step, option.name) != default(option))


def fp32_source(base_model, data: DataSplits, metric, export_config, exported: tuple | None = None) -> dict:
    """The unchanged model's fp32 export, which `compress` states its gain against: its size in bytes and its
    accuracy through onnxruntime on the val data (None without). `exported`: (proto, input names) of that
    export where the build has made it already."""
    from edgeslim.compress.sensitivity import evaluate_proto
    from edgeslim.export.onnx_export import export_onnx

    if exported is None:
        exported = export_onnx(copy.deepcopy(base_model).eval(), data.sample_inputs(), export_config)[:2]
    proto, names = exported
    accuracy = evaluate_proto(proto, data.val, names, metric) if data.val else None
    return {"what": "fp32 export", "size_bytes": proto.ByteSize(), "accuracy": accuracy}


def write_verified_bundle(proto, out_dir: Path, name: str, compression: list, metrics: dict,
                          data: DataSplits, metric, extra: dict, force: bool = False,
                          finish: Finish | None = None) -> dict:
    """Write the bundle to a staging dir, measure accuracy on that exact file via the SDK, then rename.

    `finish(staging, manifest)` returns further metrics, measured on the staged bundle (a budget's
    latency, say); they go into its manifest before the bundle is swapped in, so it is written once.
    """
    from edgeslim.core.outputs import staged_bundle, write_json
    from edgeslim.devices.accuracy import evaluate
    from edgeslim.export.bundle import manifest_for, save_model
    from edgeslim.sdk import load

    with staged_bundle(Path(out_dir), force) as staging:
        files = save_model(proto, staging)
        manifest = manifest_for(proto, name, files, staging, compression, metrics, extra)
        record_example_shapes(manifest, data)
        write_json(staging / "manifest.json", manifest)
        if data.val:
            accuracy = evaluate(load(staging), data.val, metric)
            manifest["metrics"]["accuracy"] = accuracy
            log(f"{name}: accuracy {accuracy:.2f}, {manifest['metrics']['size_bytes'] / 1024:.1f} KB, "
                f"{manifest['metrics']['params']:,} params -> {out_dir}")
        if finish is not None:
            manifest["metrics"].update(finish(staging, manifest))
        if data.val or finish is not None:
            write_json(staging / "manifest.json", manifest)
    return manifest


def record_example_shapes(manifest: dict, data: DataSplits) -> None:
    """Each input's shape in the data's first batch, so that the SDK benchmarks a sequence model at the
    length it was built for rather than guessing one."""
    from edgeslim.core.data import feed_for

    if not (data.val or data.train):
        return
    feed = feed_for(data.sample_inputs(), [spec["name"] for spec in manifest["inputs"]])
    for spec in manifest["inputs"]:
        if spec["name"] in feed:
            spec["example_shape"] = [int(size) for size in feed[spec["name"]].shape]


def layer_sensitivity(base_model, data: DataSplits, metric, calibration_samples: int = 300) -> dict:
    """Export the model and score each quantizable layer alone in float and alone in INT8."""
    from edgeslim.compress import make_step
    from edgeslim.compress.quantize import calibration_samples as samples_of
    from edgeslim.compress.sensitivity import Quantizer, sensitivity_table
    from edgeslim.export.onnx_export import ExportConfig, export_onnx

    proto, names, _ = export_onnx(copy.deepcopy(base_model).eval(), data.sample_inputs(), ExportConfig())
    ctx = StepContext(data=data, teacher=None, metric=metric, example_inputs=data.sample_inputs(),
                      candidate="sensitivity", input_names=names, target=build_target("cpu")[0])
    config = make_step("int8", {"subset_size": calibration_samples})
    quantizer = Quantizer(proto, samples_of(ctx, calibration_samples), config, ctx)
    all_int8 = quantizer.score(quantizer.quantize([]))
    rows = sensitivity_table(quantizer, all_int8, both=True)
    return {"fp32_accuracy": quantizer.fp32_accuracy, "int8_accuracy": all_int8, "layers": rows,
            "config": config.to_dict()}
