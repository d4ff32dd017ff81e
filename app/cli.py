"""The `edgeslim` command. Thin: parse options, call the library, map errors to exit codes.

Exit codes: 0 success, 1 a gate failed, 2 bad usage or bad input (one sentence on stderr),
3 an internal error (a bug: please report it with the --debug traceback).
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgeslim.core.errors import ConfigError, EdgeslimError, GateFailed
from edgeslim.core.version import __version__

QUANTIZE_MODES = ("none", "int8", "dynamic", "fp16")


class Cli(click.Group):
    """Turns errors into one sentence and an exit code instead of a traceback."""

    def invoke(self, ctx):
        debug = "--debug" in sys.argv
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.exceptions.Abort):
            raise
        except GateFailed as exc:
            click.echo(f"edgeslim: gate failed: {exc}", err=True)
            ctx.exit(1)
        except EdgeslimError as exc:
            if debug:
                raise
            click.echo(f"edgeslim: error: {exc}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("edgeslim: interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:  # a bug, not bad input
            if debug:
                raise
            click.echo(f"edgeslim: internal error: {type(exc).__name__}: {exc} "
                       "(rerun with --debug for the traceback and report it)", err=True)
            ctx.exit(3)


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgeslim")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines on stderr.")
def main(debug: bool, quiet: bool) -> None:
    """Make trained PyTorch models small and fast for edge devices, and prove it."""
    from edgeslim.core.progress import set_quiet

    set_quiet(quiet)


def _force_option(function):
    return click.option("--force", is_flag=True, help="Write even where the output path holds files edgeslim "
                        "did not write; they are kept, never removed.")(function)


# -- build ----------------------------------------------------------------------------------------

@main.command()
@click.argument("recipe", required=False, type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Directory for bundles and report.")
@_force_option
def run(recipe: str | None, out: Path, force: bool) -> None:
    """The whole pipeline from a RECIPE.yaml; with none, the embedded digits demo."""
    import edgeslim.compress  # noqa: F401  (registers the steps)
    from edgeslim.recipe import default_recipe, load_recipe
    from edgeslim.report.gates import failures
    from edgeslim.report.markdown import render_markdown
    from edgeslim.run import run_recipe

    plan = load_recipe(recipe) if recipe else default_recipe()
    report = run_recipe(plan, out, force)
    click.echo(render_markdown(report))
    if report.get("passed") is False:
        raise GateFailed("; ".join(failures(report)))


def _common_model_options(function):
    function = click.option("--model", "model_spec", required=True, help="path/file.py:factory or package.module:factory")(function)
    function = click.option("--weights", type=click.Path(), help="A state dict: .pt, .pth or .safetensors.")(function)
    function = click.option("--data", "data_spec", required=True, help="Data factory spec returning {'val', 'train', ...}.")(function)
    function = click.option("--metric", default="top1", show_default=True, help="top1 or a spec of fn(outputs, labels).")(function)
    function = click.option("--out", required=True, type=click.Path(path_type=Path), help="Bundle directory to write.")(function)
    function = click.option("--name", help="Bundle name (default: the --out directory's name).")(function)
    function = click.option("--opset", default=17, show_default=True, type=int)(function)
    function = click.option("--atol", default=1e-4, show_default=True, type=float, help="Parity tolerance, absolute.")(function)
    function = click.option("--rtol", default=1e-3, show_default=True, type=float, help="Parity tolerance, relative.")(function)
    return _force_option(function)


def _build(model_spec, weights, data_spec, metric_spec, out, name, steps, opset, atol, rtol, force,
           device: str = "cpu") -> dict:
    from edgeslim.compress import check_order
    from edgeslim.core.model_io import load_model
    from edgeslim.core.specs import load_data, load_metric
    from edgeslim.export.onnx_export import ExportConfig
    from edgeslim.pipeline import build_bundle

    check_order(steps)
    model = load_model(model_spec, weights)
    data = load_data(data_spec)
    metric = load_metric(metric_spec)
    return build_bundle(model, steps, data, out, name or out.name, metric, ExportConfig(opset=opset, atol=atol, rtol=rtol),
                        force=force, device=device)


def _echo_built(manifest: dict, out: Path) -> None:
    metrics = manifest["metrics"]
    accuracy = f", accuracy {metrics['accuracy']:.2f}" if "accuracy" in metrics else ""
    click.echo(f"wrote {out}: {metrics['size_bytes'] / 1024:.1f} KB, {metrics['params']:,} params{accuracy}")


@main.command()
@_common_model_options
def export(model_spec, weights, data_spec, metric, out, name, opset, atol, rtol, force) -> None:
    """The uncompressed baseline as a bundle (parity-checked against torch)."""
    with _bundle_output(out, force):
        manifest = _build(model_spec, weights, data_spec, metric, out, name, [], opset, atol, rtol, force)
    _echo_built(manifest, out)


def _bundle_output(out: Path, force: bool):
    """Refuse a --out that holds the user's files, and hold it against other writers, before any work."""
    from edgeslim.core.outputs import check_bundle_output, claimed

    check_bundle_output(out, force)
    return claimed(out)


@main.command()
@_common_model_options
@click.option("--prune", "prune_ratio", type=float, default=0.0, show_default=True,
              help="Fraction of channels to remove (structured, dependency-aware).")
@click.option("--round-to", type=int, default=8, show_default=True, help="Keep channel counts multiples of this.")
@click.option("--prune-ignore", multiple=True, help="A module name whose output channels stay whole (repeatable).")
@click.option("--distill/--no-distill", default=None, help="Fine-tune from the original by distillation (default: on when pruning).")
@click.option("--epochs", type=int, default=10, show_default=True, help="Distillation epochs.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Distillation learning rate.")
@click.option("--quantize", type=click.Choice(QUANTIZE_MODES), default="none", show_default=True)
@click.option("--calibration-samples", type=int, default=300, show_default=True)
@click.option("--max-accuracy-drop", type=float, help="INT8 accuracy control: return layers to float, most "
              "sensitive first, until the drop against fp32 is within this many points (implies --quantize int8).")
@click.option("--relative", is_flag=True, help="Read --max-accuracy-drop as a fraction of the fp32 accuracy.")
@click.option("--target-size", type=float, help="Choose the pruning ratio so the bundle fits this many MB.")
@click.option("--target-latency", type=float, help="Choose the pruning ratio so p50 on --device fits this many ms.")
@click.option("--device", default="cpu", show_default=True, help="The device --target-latency is measured on.")
@click.option("--qat", "qat_epochs", type=int, help="Quantization-aware training for this many epochs (NNCF), "
              "exported as INT8 QDQ; instead of --quantize int8.")
@click.option("--qat-lr", type=float, default=1e-4, show_default=True)
@click.option("--overflow-fix", type=click.Choice(["auto", "enable", "first_layer", "disable"]),
              help="Which INT8 weights get a 7-bit range, so that x86 CPUs without VNNI do not saturate "
                   "[default: auto, from --device's instruction set: enable without VNNI, disable with VNNI "
                   "or ARM dot products; first_layer is NNCF's default].")
@click.option("--int8-backend", type=click.Choice(["auto", "nncf", "ort", "dynamic", "weights"]), default="auto",
              show_default=True, help="The INT8 form: auto builds each and keeps the fastest on --device within "
              "the allowed accuracy drop; nncf and ort give integer kernels (NNCF or onnxruntime's quantizer), "
              "dynamic quantizes matmul activations at run time, weights stores int8 and computes in float.")
def compress(model_spec, weights, data_spec, metric, out, name, opset, atol, rtol, force, prune_ratio, round_to,
             prune_ignore, distill, epochs, lr, quantize, calibration_samples, max_accuracy_drop, relative, target_size,
             target_latency, device, qat_epochs, qat_lr, overflow_fix, int8_backend) -> None:
    """One compressed bundle: prune, distill, quantize, export (to a budget with --target-*)."""
    with _bundle_output(out, force):
        _compress(model_spec, weights, data_spec, metric, out, name, opset, atol, rtol, force, prune_ratio, round_to,
                  prune_ignore, distill, epochs, lr, quantize, calibration_samples, max_accuracy_drop, relative,
                  target_size, target_latency, device, qat_epochs, qat_lr, overflow_fix, int8_backend)


def _compress(model_spec, weights, data_spec, metric, out, name, opset, atol, rtol, force, prune_ratio, round_to,
              prune_ignore, distill, epochs, lr, quantize, calibration_samples, max_accuracy_drop, relative,
              target_size, target_latency, device, qat_epochs, qat_lr, overflow_fix, int8_backend) -> None:
    from edgeslim.compress import make_step

    if max_accuracy_drop is not None and quantize not in ("none", "int8"):
        raise click.UsageError(f"--max-accuracy-drop controls INT8 quantization; it cannot go with --quantize {quantize}")
    onnx_step = None
    chosen_fix = {"overflow_fix": overflow_fix} if overflow_fix else {}
    if quantize == "int8" or max_accuracy_drop is not None:
        onnx_step = make_step("int8", {"subset_size": calibration_samples, "max_accuracy_drop": max_accuracy_drop,
                                       "relative": relative, "backend": int8_backend, **chosen_fix})
    elif quantize != "none":
        onnx_step = make_step(quantize)
    if target_size is not None or target_latency is not None:
        _compress_to_budget(model_spec, weights, data_spec, metric, out, name, opset, atol, rtol, force, prune_ratio,
                            round_to, epochs, lr, onnx_step, target_size, target_latency, device)
        return
    steps = []
    if prune_ratio:
        steps.append(make_step("prune", {"ratio": prune_ratio, "round_to": round_to, "ignore": list(prune_ignore)}))
    if distill if distill is not None else bool(prune_ratio):
        steps.append(make_step("distill", {"epochs": epochs, "lr": lr}))
    if qat_epochs is not None:
        qat_fix = {"overflow_fix": overflow_fix} if overflow_fix not in (None, "auto") else {}
        steps.append(make_step("qat", {"epochs": qat_epochs, "lr": qat_lr, "subset_size": calibration_samples,
                                       **qat_fix}))
    steps += [onnx_step] if onnx_step else []
    manifest = _build(model_spec, weights, data_spec, metric, out, name, steps, opset, atol, rtol, force, device)
    _echo_built(manifest, out)
    _check_accuracy_control(manifest, out)


def _check_accuracy_control(manifest: dict, out: Path) -> None:
    control = manifest["metrics"].get("accuracy_control")
    if control:
        click.echo(f"accuracy control: {control['accuracy']:.2f} vs fp32 {control['fp32_accuracy']:.2f} "
                   f"(drop {control['drop']:.2f}, allowed {control['allowed_drop']:.3g}); "
                   f"{control['layers_int8']} of {control['layers']} layers INT8"
                   + (f", in float: {', '.join(control['in_float'])}" if control["in_float"] else ""))
        if not control["met"]:
            raise GateFailed(f"no INT8 model met the accuracy drop of {control['allowed_drop']:.3g}; "
                             f"the best one found ({control['accuracy']:.2f}, drop {control['drop']:.2f}) "
                             f"is written to {out}")


@main.command()
@click.option("--model", "model_spec", required=True, help="path/file.py:factory or package.module:factory")
@click.option("--weights", type=click.Path(), help="A state dict: .pt, .pth or .safetensors.")
@click.option("--data", "data_spec", required=True)
@click.option("--metric", default="top1", show_default=True)
@click.option("--calibration-samples", type=int, default=300, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), help="Write the table as JSON (and Markdown beside it).")
@_force_option
def sensitivity(model_spec, weights, data_spec, metric, calibration_samples, out, force) -> None:
    """Each quantizable layer's accuracy when it alone is in float, and when it alone is INT8."""
    from edgeslim.core.model_io import load_model
    from edgeslim.core.specs import load_data, load_metric
    from edgeslim.pipeline import layer_sensitivity
    from edgeslim.report.markdown import sensitivity_markdown

    outputs = [(out, "json"), (out.with_suffix(".md"), "markdown")] if out else []
    with _document_outputs(outputs, [model_spec, weights, data_spec], force):
        table = layer_sensitivity(load_model(model_spec, weights), load_data(data_spec), load_metric(metric),
                                  calibration_samples)
        text = sensitivity_markdown(table)
        click.echo(text)
        _write_documents(outputs, {"json": {"format": "edgeslim-sensitivity/1", **table}, "markdown": text}, force)


def _document_outputs(outputs: list, inputs: list, force: bool):
    """Check each document path (suffix, not an input, absent or edgeslim's) and hold it, before any work."""
    from edgeslim.core.outputs import check_file_output, claimed_all

    sources = [spec.rpartition(":")[0] if spec and ".py:" in spec else spec for spec in inputs]
    for path, kind in outputs:
        check_file_output(path, kind, inputs=sources, force=force)
    paths = [path for path, _ in outputs]
    if len(set(paths)) != len(paths):
        raise ConfigError(f"two outputs of this command are the same file ({paths}); give each its own path")
    return claimed_all(paths)


def _write_documents(outputs: list, content: dict, force: bool) -> None:
    from edgeslim.core.outputs import write_document

    for path, kind in outputs:
        write_document(path, content[kind], kind, force)


def _compress_to_budget(model_spec, weights, data_spec, metric_spec, out, name, opset, atol, rtol, force, prune_ratio,
                        round_to, epochs, lr, onnx_step, target_size, target_latency, device) -> None:
    """Measure probes to choose the ratio, then prune, distill and quantize at it, and say how close it landed."""
    from dataclasses import replace

    from edgeslim.budget import Budget, Prober, search_ratio, verdict
    from edgeslim.compress import check_order, make_step
    from edgeslim.core.model_io import load_model
    from edgeslim.core.outputs import write_json
    from edgeslim.core.specs import load_data, load_metric
    from edgeslim.devices.profiles import get_profile
    from edgeslim.devices.runner import BenchConfig
    from edgeslim.devices.targets import get_target
    from edgeslim.export.onnx_export import ExportConfig
    from edgeslim.pipeline import build_bundle

    if target_size is not None and target_latency is not None:
        raise click.UsageError("--target-size and --target-latency are exclusive; give one budget")
    if prune_ratio:
        raise click.UsageError("--prune and a --target-* budget are exclusive: the budget chooses the ratio")
    budget = Budget("size", target_size) if target_size is not None else Budget("latency", target_latency, device)
    target = get_target(budget.device) if budget.kind == "latency" else None
    if budget.kind == "latency" and not budget.device.startswith("ssh://"):
        round_to = max(round_to, get_profile(budget.device).channel_multiple())
    model, data, metric = load_model(model_spec, weights), load_data(data_spec), load_metric(metric_spec)
    # Probes quantize cheaply: 32 samples, and with backend auto the weights form, whose size is
    # INT8's and whose speed is float's (the final bundle's auto choice is never slower).
    probe_step = (replace(onnx_step, subset_size=32, max_accuracy_drop=None,
                          backend="weights" if onnx_step.backend == "auto" else onnx_step.backend)
                  if onnx_step is not None and onnx_step.name == "int8" else onnx_step)
    ratio = search_ratio(Prober(model, data, budget, probe_step, round_to, metric, target))
    steps = ([make_step("prune", {"ratio": round(ratio, 4), "round_to": round_to}),
              make_step("distill", {"epochs": epochs, "lr": lr})] if ratio > 0 else []) + ([onnx_step] if onnx_step else [])
    check_order(steps)
    manifest = build_bundle(model, steps, data, out, name or out.name, metric, ExportConfig(opset=opset, atol=atol, rtol=rtol),
                            force=force, device=device)
    measured = (manifest["metrics"]["size_bytes"] / 1e6 if budget.kind == "size"
                else target.latency(out, BenchConfig(runs=300, warmup=30))["p50_ms"])
    result = verdict(budget, measured, ratio)
    manifest["metrics"]["budget"] = {**budget.to_dict(), **result, "ratio": ratio, "round_to": round_to}
    write_json(out / "manifest.json", manifest)
    _echo_built(manifest, out)
    click.echo(f"budget: {measured:.4g} {budget.unit} against {budget.target:g} {budget.unit} "
               f"({result['distance']:+.1%}) at pruning ratio {ratio:.3f}, channels in multiples of {round_to}"
               + (f"; {result['why']}" if "why" in result else ""))
    _check_accuracy_control(manifest, out)
    if result["over_budget"]:
        raise GateFailed(f"the result is {result['distance']:+.1%} over the budget ({measured:.4g} against "
                         f"{budget.target:g} {budget.unit}); the best bundle found is written to {out}")


# -- measure --------------------------------------------------------------------------------------

def _bench_options(function):
    function = click.option("--runs", default=200, show_default=True, type=click.IntRange(1))(function)
    function = click.option("--warmup", default=20, show_default=True, type=click.IntRange(0))(function)
    function = click.option("--batch", default=1, show_default=True, type=click.IntRange(1))(function)
    return function


@main.command()
@click.argument("bundles", nargs=-1, required=True)
@click.option("--data", "data_spec", required=True)
@click.option("--device", "devices", multiple=True, default=("cpu",), show_default=True)
@click.option("--metric", default="top1", show_default=True)
@click.option("--baseline", help="The bundle name the others are compared with (default: the first).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="REPORT.json to write (a .md beside it).")
@click.option("--io", type=click.Choice(["host", "device"]), default="host", show_default=True,
              help="host: numpy in and out; device: inputs and outputs kept in GPU memory.")
@_bench_options
@_force_option
def validate(bundles, data_spec, devices, metric, baseline, out, io, runs, warmup, batch, force) -> None:
    """Accuracy and latency of each bundle on each device."""
    from edgeslim.core.specs import load_data, load_metric
    from edgeslim.devices.runner import BenchConfig
    from edgeslim.pipeline import validate_bundles
    from edgeslim.report.markdown import render_markdown

    outputs = [(out, "json"), (out.with_suffix(".md"), "markdown")]
    with _document_outputs(outputs, [data_spec, metric, *bundles], force):
        data = load_data(data_spec)
        report = validate_bundles(list(bundles), data, list(devices), load_metric(metric), metric, baseline,
                                  BenchConfig(runs=runs, warmup=warmup, batch=batch, io=io))
        text = render_markdown(report)
        _write_documents(outputs, {"json": report, "markdown": text}, force)
    click.echo(text)


@main.command()
@click.argument("report_path", metavar="REPORT.json")
@click.option("--against", type=click.Path(), help="An older report: gate each candidate against its namesake.")
@click.option("--max-accuracy-drop", type=float, help="Points of the metric a candidate may lose.")
@click.option("--max-latency-increase", type=float, help="Fraction of p50 a candidate may add (0.1 = +10%).")
@click.option("--html", "html_out", type=click.Path(path_type=Path), help="Also write an HTML page.")
@click.option("--md", "md_out", type=click.Path(path_type=Path), help="Also write the Markdown to a file.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the report with its gates.")
@_force_option
def report(report_path, against, max_accuracy_drop, max_latency_increase, html_out, md_out, json_out, force) -> None:
    """Render a report and apply gates (exit 1 when one fails)."""
    from edgeslim.report.gates import GateConfig, apply_gates, failures
    from edgeslim.report.html import render_html
    from edgeslim.report.markdown import render_markdown
    from edgeslim.report.schema import read_report

    outputs = [(path, kind) for path, kind in ((md_out, "markdown"), (html_out, "html"), (json_out, "json")) if path]
    with _document_outputs(outputs, [report_path, against], force):
        document = read_report(report_path)
        gates = GateConfig(max_accuracy_drop, max_latency_increase)
        passed = apply_gates(document, gates, read_report(against) if against else None,
                             against_name=str(against) if against else "the --against report")
        text = render_markdown(document)
        click.echo(text)
        rendered = {"markdown": text, "json": document, **({"html": render_html(document)} if html_out else {})}
        _write_documents(outputs, rendered, force)
    if not passed:
        raise GateFailed("; ".join(failures(document)))


@main.command()
@click.argument("bundle")
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@click.option("--io", type=click.Choice(["host", "device"]), default="host", show_default=True,
              help="host: numpy in and out; device: inputs and outputs kept in GPU memory.")
@_bench_options
def bench(bundle, device, as_json, io, runs, warmup, batch) -> None:
    """Latency statistics of one bundle on one device."""
    from edgeslim.devices.runner import BenchConfig
    from edgeslim.devices.targets import get_target
    from edgeslim.sdk import read_manifest

    read_manifest(bundle)
    target = get_target(device)
    stats = target.latency(bundle, BenchConfig(runs=runs, warmup=warmup, batch=batch, io=io))
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    click.echo(f"{bundle} on {device}, {stats.get('mode', 'measured')} (batch {batch}, {warmup} warm-up, "
               f"{runs} runs, threads {stats.get('threads') or 'default'}, io {stats.get('io', 'host')}):")
    for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "throughput", "load_ms",
                "first_run_ms", "peak_rss_mb"):
        if stats.get(key) is not None:
            click.echo(f"  {key:<13} {stats[key]:.3f}")


@main.command()
@click.argument("bundle")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def inspect(bundle, as_json) -> None:
    """What is in a bundle, and whether its files match their checksums."""
    from edgeslim.sdk import read_manifest, verify_files

    manifest = read_manifest(bundle)
    verify_files(bundle, manifest)
    if as_json:
        click.echo(json.dumps(manifest, indent=2))
        return
    metrics = manifest.get("metrics", {})
    click.echo(f"{manifest['name']}  ({manifest['format']}, checksums verified)")
    for kind in ("inputs", "outputs"):
        for spec in manifest[kind]:
            click.echo(f"  {kind[:-1]:<7} {spec['name']}: {spec['dtype']} {spec['shape']}")
    for file, digest in manifest["sha256"].items():
        click.echo(f"  file    {file}  sha256 {digest[:16]}…")
    steps = manifest.get("compression") or []
    click.echo("  steps   " + (" → ".join(s["step"] for s in steps) if steps else "none (baseline)"))
    for key in ("size_bytes", "params", "accuracy"):
        if key in metrics:
            click.echo(f"  {key:<11} {metrics[key]:,}" if isinstance(metrics[key], int) else f"  {key:<11} {metrics[key]:.3f}")
    coverage = metrics.get("int8_coverage") if isinstance(metrics, dict) else None
    if isinstance(coverage, dict):  # which layers onnxruntime runs as integer kernels, measured at build time
        from edgeslim.core.coverage import coverage_text, float_node_names

        click.echo(f"  {coverage_text(coverage)}")
        in_float = float_node_names(coverage)
        if in_float:
            more = f" … (+{len(in_float) - 4} more)" if len(in_float) > 4 else ""
            click.echo(f"  in float: {', '.join(in_float[:4])}{more}")
    form = metrics.get("int8_form") if isinstance(metrics, dict) else None
    if isinstance(form, dict) and form.get("chosen"):
        from edgeslim.report.markdown import form_text

        click.echo(f"  int8{form_text(form).removeprefix(';')}")
    settings = metrics.get("int8_settings") if isinstance(metrics, dict) else None
    if isinstance(settings, dict):
        click.echo(f"  int8 weights {settings.get('weights')} for {settings.get('target')} ({settings.get('why')})")
    versions = ", ".join(f"{k} {v}" for k, v in manifest.get("created_with", {}).items() if v)
    click.echo(f"  made with {versions}")


@main.command()
@click.option("--json", "as_json", is_flag=True)
def devices(as_json) -> None:
    """The device profiles."""
    from edgeslim.devices.profiles import profiles
    from edgeslim.sdk.providers import PROVIDER_ALIASES, available_providers

    available = set(available_providers())
    rows = [dict(p.to_dict(), available=PROVIDER_ALIASES.get(p.provider, p.provider) in available)
            for p in profiles().values()]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    click.echo(f"{'name':<21} {'provider':<9} {'threads':<8} {'mode here':<10} description")
    for row in rows:
        state = "" if row["available"] else "  [provider not installed here]"
        features = f" [{', '.join(row['features'])}]" if row["features"] else ""
        memory = f", {row['memory_gb']:g} GB" if row["memory_gb"] else ""
        click.echo(f"{row['name']:<21} {row['provider']:<9} {str(row['threads'] or 'all'):<8} {row['mode']:<10} "
                   f"{row['description']}{memory}{features}, prefers {row['prefers']}{state}")
    click.echo("also: ssh://[user@]host[:port] runs on a remote device with the torch-free edgeslim installed")


if __name__ == "__main__":
    main()
