"""The `edgeslim` command. Thin: parse options, call the library, map errors to exit codes.

Exit codes: 0 success, 1 a gate failed, 2 bad usage or bad input (one sentence on stderr),
3 an internal error or a crashed worker (a bug: please report it with the --debug output).
"""
from __future__ import annotations

import json
from pathlib import Path

import click

from edgeslim.core.errors import ConfigError, EdgeslimError, GateFailed, Incomplete, RankFailed, WorkerCrashed
from edgeslim.core.version import __version__
from edgeslim.failures import (
    REPORT_IT,
    SHOWS_HELP,
    UsageFailure,
    command_path,
    missing_extra,
    one_line,
    show_cause_chain,
    usage_sentence,
)
from edgeslim.plan import DISTILL_LOSSES, GRAPH_MODEL_TYPES, QUANTIZE_MODES

CONSOLE = "edgeslim.console"  # ctx.meta's key for --quiet and --debug, given before or after the command's name

# The sections of a command's --help, in this order; an option named in none of them goes under Output.
SECTIONS = {
    "Input": ("model_spec", "weights", "data_spec", "metric"),
    "Prune": ("prune_ratio", "round_to", "prune_ignore"),
    "Distill": ("distill", "epochs", "lr", "distill_loss", "distill_features"),
    "Quantize": ("quantize", "int8_backend", "calibration_samples", "max_accuracy_drop", "relative", "qat_epochs",
                 "qat_lr", "overflow_fix", "int4_block_size"),
    "Budget": ("target_size", "target_latency"),
    "Export": ("opset", "atol", "rtol", "dynamic_axes", "optimize_graph"),
    "Measure": ("devices", "device", "baseline", "io", "runs", "warmup", "batch"),
    "Gates": ("against", "allow_different_model", "max_latency_increase", "min_latency_change"),
    "Output": ("out", "name", "as_json", "json_out", "md_out", "html_out", "plot", "force", "mlflow_uri",
               "mlflow_model", "debug", "quiet", "help"),
}
# Where a command reads an option otherwise: compress builds for --device, which its budget is measured on.
SECTION_IN = {("compress", "device"): "Budget", ("report", "max_accuracy_drop"): "Gates"}


def _console(ctx, param, value) -> None:
    """--quiet or --debug, before the command's name or after it: the same settings."""
    from edgeslim.core.progress import configure

    settings = ctx.meta.setdefault(CONSOLE, {"quiet": False, "debug": False})
    if value:
        settings[param.name] = True
        configure(**settings)


def _console_options() -> list[click.Option]:
    return [click.Option(["--debug"], is_flag=True, expose_value=False, is_eager=True, callback=_console,
                         help="Show the libraries' warnings and, on an error, the traceback of it and of every "
                              "exception behind it."),
            click.Option(["--quiet", "-q"], is_flag=True, expose_value=False, is_eager=True, callback=_console,
                         help="No progress lines or bars on stderr (warnings still show).")]


class Sectioned(click.Command):
    """A command whose --help lists its options in sections (Input, Prune, Distill, ...), each with its help
    line and default, and which takes the group's --debug and -q/--quiet after its name too."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.params.extend(_console_options())

    def format_options(self, ctx, formatter) -> None:
        sections: dict[str, list] = {title: [] for title in SECTIONS}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is not None and not isinstance(param, click.Argument):
                title = self.section_of(param.name)
                order = SECTIONS[title].index(param.name) if param.name in SECTIONS[title] else len(SECTIONS[title])
                sections[title].append((order, record))
        for title, records in sections.items():
            if records:
                with formatter.section(title):
                    formatter.write_dl([record for _, record in sorted(records, key=lambda item: item[0])])

    def section_of(self, name: str) -> str:
        named = SECTION_IN.get((self.name, name))
        return named or next((title for title, names in SECTIONS.items() if name in names), "Output")


class Cli(click.Group):
    """Turns errors into one sentence and an exit code instead of a traceback (with --debug: both)."""

    command_class = Sectioned

    def make_context(self, info_name, args, parent=None, **extra):
        try:
            return super().make_context(info_name, args, parent, **extra)
        except SHOWS_HELP:
            raise
        except click.UsageError as exc:  # the group's own options: `edgeslim --fo`
            raise UsageFailure(usage_sentence(exc, command_path(exc.ctx))) from exc

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, UsageFailure, *SHOWS_HELP):
            raise
        except click.ClickException as exc:  # parsing a subcommand's options, or a usage error in its body
            raise UsageFailure(usage_sentence(exc, command_path(getattr(exc, "ctx", None),
                                                                 ctx.invoked_subcommand))) from exc
        except GateFailed as exc:
            click.echo(f"edgeslim: gate failed: {one_line(str(exc))}", err=True)
            ctx.exit(1)
        except Incomplete as exc:
            click.echo(f"edgeslim: {one_line(str(exc))}", err=True)
            ctx.exit(1)
        except RankFailed as exc:
            self._stop_rank(ctx, exc)
        except WorkerCrashed as exc:
            self._fail(ctx, exc, 3, f"internal error: {exc}; this is a crash, not bad input: {REPORT_IT}")
        except EdgeslimError as exc:
            self._fail(ctx, exc, 2, f"error: {exc}")
        except KeyboardInterrupt:
            click.echo("edgeslim: interrupted", err=True)
            ctx.exit(130)
        except Exception as exc:  # a bug, not bad input; or an optional extra not installed (torch, NNCF, ...)
            missing = missing_extra(exc, ctx.invoked_subcommand)
            if missing:
                self._fail(ctx, exc, 2, f"error: {missing}")
            self._fail(ctx, exc, 3, f"internal error: {type(exc).__name__}: {exc}; this is a bug in edgeslim, "
                                    f"not bad input: {REPORT_IT}")

    @staticmethod
    def _stop_rank(ctx, exc: BaseException) -> None:
        """One sentence, then out at once: torch's process-group teardown would abort and print more."""
        import os
        import sys

        if ctx.meta.get(CONSOLE, {}).get("debug"):
            show_cause_chain(exc)
        click.echo(f"edgeslim: {one_line(str(exc))}", err=True)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(3)

    @staticmethod
    def _fail(ctx, exc: BaseException, code: int, sentence: str) -> None:
        if ctx.meta.get(CONSOLE, {}).get("debug"):
            show_cause_chain(exc)
        click.echo(f"edgeslim: {one_line(sentence)}", err=True)
        ctx.exit(code)


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(__version__, prog_name="edgeslim")
@click.option("--debug", is_flag=True, help="Show the libraries' warnings and, on an error, the traceback of it and of "
              "every exception behind it (also after the command's name).")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines or bars on stderr (warnings still show; also "
              "after the command's name).")
@click.pass_context
def main(ctx, debug: bool, quiet: bool) -> None:
    """Make trained PyTorch models small and fast for edge devices, and prove it."""
    from edgeslim.compress.distributed import stop_on_sigterm
    from edgeslim.core.progress import configure

    ctx.meta[CONSOLE] = {"quiet": quiet, "debug": debug}
    configure(quiet, debug)
    stop_on_sigterm()


def _force_option(function):
    return click.option("--force", is_flag=True, help="Write even where the output path holds files edgeslim "
                        "did not write; they are kept, never removed.")(function)


def _mlflow_options(function):
    from edgeslim.tracking import FROM_ENVIRONMENT

    function = click.option("--mlflow-model", metavar="NAME", help="The registered model the shipped bundle becomes "
                            "a version of [default: the model's file and factory, e.g. zoo.small_cnn].")(function)
    return click.option("--mlflow", "mlflow_uri", is_flag=False, flag_value=FROM_ENVIRONMENT, metavar="[URI]",
                        help="Also log params, metrics, the report and the bundles to MLflow and register the shipped "
                             "bundle (needs edgeslim[mlflow]); alone: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db "
                             "in the working directory.")(function)


def _open_tracker(uri: str | None, model: str | None):
    """The MLflow store, opened before any work so that a bad URI or a missing MLflow fails at once."""
    if uri is None:
        if model is not None:
            raise click.UsageError("--mlflow-model names the registered model of --mlflow; pass --mlflow too")
        return None
    from edgeslim.tracking import Tracker

    return Tracker(uri, model)


def _track(report: dict, report_path: Path, files: list[Path], tracker) -> None:
    """Record the run in the local history (see `edgeslim history`), and log it to MLflow where asked."""
    from edgeslim.core.progress import log
    from edgeslim.history import record_run

    record_run(report, report_path)
    if tracker is not None:
        logged = tracker.log(report, files)
        registered = "registered as" if logged["new_version"] else "is already"
        log(f"mlflow: run {logged['run_id']} at {tracker.uri}; the shipped bundle {registered} {logged['model']} "
            f"version {logged['version']}")


# -- build ----------------------------------------------------------------------------------------

@main.command()
@click.argument("recipe", required=False, type=click.Path(dir_okay=False))
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Directory for bundles and report.")
@_force_option
@_mlflow_options
def run(recipe: str | None, out: Path, force: bool, mlflow_uri: str | None, mlflow_model: str | None) -> None:
    """The whole pipeline from a RECIPE.yaml; with none, the embedded digits demo."""
    import edgeslim.compress  # noqa: F401  (registers the steps)
    from edgeslim.recipe import default_recipe, load_recipe
    from edgeslim.report.gates import failures
    from edgeslim.report.markdown import render_markdown
    from edgeslim.run import run_recipe

    plan = load_recipe(recipe) if recipe else default_recipe()
    tracker = _open_tracker(mlflow_uri, mlflow_model)
    report = run_recipe(plan, out, force)
    if report is None:
        return  # a torchrun rank other than 0: it trained beside rank 0, which writes and reports
    click.echo(render_markdown(report))
    _track(report, out / "report.json", [out / "report.json", out / "report.md", out / "report.html"], tracker)
    _check_measured(report, out / "report.json")
    if report.get("passed") is False:
        raise GateFailed("; ".join(failures(report)))


def _common_model_options(function):
    options = [
        click.option("--model", "model_spec", required=True, help="path/file.py:factory or package.module:factory"),
        click.option("--weights", type=click.Path(), help="A state dict: .pt, .pth or .safetensors."),
        click.option("--data", "data_spec", required=True, help="Data factory spec returning {'val', 'train', ...}."),
        click.option("--metric", default="top1", show_default=True, help="top1 or a spec of fn(outputs, labels)."),
        click.option("--out", required=True, type=click.Path(path_type=Path), help="Bundle directory to write."),
        click.option("--name", help="Bundle name (default: the --out directory's name)."),
        click.option("--opset", default=17, show_default=True, type=int, help="The ONNX opset to export to."),
        click.option("--atol", default=1e-4, show_default=True, type=float, help="Parity tolerance, absolute."),
        click.option("--rtol", default=1e-3, show_default=True, type=float, help="Parity tolerance, relative."),
        click.option("--dynamic-axis", "dynamic_axes", multiple=True, metavar="NAME:AXIS=SYMBOL",
                     help="Export this axis of an input or output as symbolic, e.g. input_ids:1=sequence "
                          "(repeatable); batch and sequence axes are found by running the model."),
    ]
    for option in options:
        function = option(function)
    return _force_option(function)


def _job(model_spec, weights, data_spec, metric, out: Path, name, opset, atol, rtol, force, device: str = "cpu",
         dynamic_axes=()):
    """The bundle the common model options name."""
    from edgeslim.build import BuildJob
    from edgeslim.export.onnx_export import ExportConfig, parse_dynamic_axis

    axes: dict = {}
    for tensor, axis, symbol in map(parse_dynamic_axis, dynamic_axes):
        axes.setdefault(tensor, {})[axis] = symbol
    return BuildJob(model=model_spec, weights=weights, data=data_spec, metric=metric, out=out, name=name or out.name,
                    export=ExportConfig(opset=opset, atol=atol, rtol=rtol, axes=axes), force=force, device=device)


def _echo_built(manifest: dict, out: Path) -> None:
    from edgeslim.views import built_text

    click.echo(built_text(manifest, out))


def _echo_gain(manifest: dict) -> None:
    """The bundle against its source, last on stdout; a warning on stderr where accuracy fell far."""
    from edgeslim.core.progress import warn
    from edgeslim.views import accuracy_drop_warning, gain_text

    text = gain_text(manifest)
    if text:
        click.echo(text)
    warning = accuracy_drop_warning(manifest)
    if warning:
        warn(warning)


def _warn_initial_weights(weights) -> None:
    """A model built without --weights has the weights its factory gave it: random, unless it loads its own."""
    from edgeslim.core.progress import warn

    if not weights:
        warn("no --weights: the model has its factory's initial weights (random, unless the factory loads "
             "trained ones)")


@main.command()
@_common_model_options
def export(model_spec, weights, data_spec, metric, out, name, opset, atol, rtol, dynamic_axes, force) -> None:
    """The uncompressed baseline as a bundle (parity-checked against torch)."""
    from edgeslim.build import build_job

    with _bundle_output(out, force):
        job = _job(model_spec, weights, data_spec, metric, out, name, opset, atol, rtol, force,
                   dynamic_axes=dynamic_axes)
        manifest = build_job(job, [])
    _echo_built(manifest, out)
    _warn_initial_weights(weights)


def _bundle_output(out: Path, force: bool):
    """Refuse a --out that holds the user's files, and hold it against other writers, before any work."""
    import contextlib

    from edgeslim.compress.distributed import is_writer
    from edgeslim.core.outputs import check_bundle_output, claimed

    if not is_writer():
        return contextlib.nullcontext()  # torchrun: rank 0 checks, holds and writes the output
    check_bundle_output(out, force)
    return claimed(out)


@main.command()
@_common_model_options
@click.option("--prune", "prune_ratio", type=float, default=0.0, show_default=True,
              help="Fraction of channels to remove (structured, dependency-aware).")
@click.option("--round-to", type=int, default=8, show_default=True, help="Keep channel counts multiples of this.")
@click.option("--prune-ignore", multiple=True, help="A module name whose output channels stay whole (repeatable).")
@click.option("--distill/--no-distill", default=None,
              help="Fine-tune from the original by distillation (default: on when pruning).")
@click.option("--epochs", type=int, default=10, show_default=True, help="Distillation epochs.")
@click.option("--lr", type=float, default=1e-3, show_default=True, help="Distillation learning rate.")
@click.option("--distill-loss", type=click.Choice(DISTILL_LOSSES), default="auto", show_default=True,
              help="What the output matches the original's by: kl (class logits), sequence_kl (per time step), "
                   "cosine or mse (embeddings, features); auto chooses from the output's shape and the labels.")
@click.option("--distill-features", multiple=True, help="A module whose output the compressed model learns to "
              "give as the original does (repeatable), or auto: each layer of the model's ModuleLists whose output "
              "keeps the original's shape (a transformer's layers). Default: the model's output alone.")
@click.option("--quantize", type=click.Choice(QUANTIZE_MODES), default="none", show_default=True,
              help="int8: integer kernels (see --int8-backend); dynamic: int8 matmul weights, activations quantized "
                   "at run time; fp16: half precision; int4: weight-only 4-bit MatMul weights (onnxruntime's "
                   "MatMulNBits), a size mode: kept even where it runs slower than float, and then the manifest "
                   "and the build's output say so.")
@click.option("--int4-block-size", type=int, help="INT4 weights per scale, a power of two of at least 16 "
              "[default: 32]; with --quantize int4.")
@click.option("--optimize-graph", type=click.Choice(GRAPH_MODEL_TYPES), is_flag=False, flag_value="bert",
              help="Fuse attention, layer norms and GELUs with onnxruntime's transformer optimizer for this model "
                   "type (alone: bert, for BERT-like encoders such as MiniLM), before quantizing; the fused graph is "
                   "kept only where its outputs match and it is no slower on --device.")
@click.option("--calibration-samples", type=int, default=300, show_default=True,
              help="Samples that calibrate INT8 activation ranges (and QAT's quantizers).")
@click.option("--max-accuracy-drop", type=float, help="INT8 accuracy control: return layers to float, most "
              "sensitive first, until the drop against fp32 is within this many points (implies --quantize int8).")
@click.option("--relative", is_flag=True, help="Read --max-accuracy-drop as a fraction of the fp32 accuracy.")
@click.option("--target-size", type=float, help="Choose the pruning ratio so the bundle fits this many MB.")
@click.option("--target-latency", type=float, help="Choose the pruning ratio so p50 on --device fits this many ms.")
@click.option("--device", default="cpu", show_default=True, help="The device --target-latency is measured on.")
@click.option("--qat", "qat_epochs", type=int, help="Quantization-aware training for this many epochs (NNCF), "
              "exported as INT8 QDQ; instead of --quantize int8.")
@click.option("--qat-lr", type=float, default=1e-4, show_default=True, help="Quantization-aware training's "
              "learning rate.")
@click.option("--overflow-fix", type=click.Choice(["auto", "enable", "first_layer", "disable"]),
              help="Which INT8 weights get a 7-bit range, so that x86 CPUs without VNNI do not saturate "
                   "[default: auto, from --device's instruction set: enable without VNNI, disable with VNNI "
                   "or ARM dot products; first_layer is NNCF's default].")
@click.option("--int8-backend", type=click.Choice(["auto", "nncf", "ort", "dynamic", "weights"]), default="auto",
              show_default=True, help="The INT8 form: auto builds each and keeps the fastest on --device within "
              "the allowed accuracy drop; nncf and ort give integer kernels (NNCF or onnxruntime's quantizer), "
              "dynamic quantizes matmul activations at run time, weights stores int8 and computes in float.")
def compress(model_spec, weights, data_spec, metric, out, name, opset, atol, rtol, dynamic_axes, force, prune_ratio,
             round_to, prune_ignore, distill, epochs, lr, distill_loss, distill_features, quantize, calibration_samples,
             max_accuracy_drop, relative, target_size, target_latency, device, qat_epochs, qat_lr, overflow_fix,
             int8_backend, int4_block_size, optimize_graph) -> None:
    """One compressed bundle: prune, distill, quantize, export (to a budget with --target-*)."""
    from edgeslim.budget import budget_from_flags, compress_to_budget
    from edgeslim.build import build_job
    from edgeslim.plan import OptionConflict, PlanOptions, plan_steps
    from edgeslim.views import budget_text

    with _bundle_output(out, force):
        try:
            options = PlanOptions(prune=prune_ratio, round_to=round_to, prune_ignore=prune_ignore, distill=distill,
                                  epochs=epochs, lr=lr, distill_loss=distill_loss,
                                  distill_features=distill_features, qat_epochs=qat_epochs,
                                  qat_lr=qat_lr, quantize=quantize,
                                  calibration_samples=calibration_samples, max_accuracy_drop=max_accuracy_drop,
                                  relative=relative, overflow_fix=overflow_fix, int8_backend=int8_backend,
                                  int4_block_size=int4_block_size, optimize_graph=optimize_graph)
            budget = budget_from_flags(target_size, target_latency, device, options)
            _refuse_budget_under_torchrun(budget)
        except OptionConflict as exc:
            raise click.UsageError(str(exc)) from None
        job = _job(model_spec, weights, data_spec, metric, out, name, opset, atol, rtol, force, device,
                   dynamic_axes)
        if budget is None:
            manifest = build_job(job, plan_steps(options))
            if manifest is None:
                return  # a torchrun rank other than 0: it trained beside rank 0, which writes the bundle
            _echo_built(manifest, out)
        else:
            manifest = compress_to_budget(job, options, budget)
            _echo_built(manifest, out)
            click.echo(budget_text(manifest["metrics"]["budget"]))
        _echo_accuracy_control(manifest)
        _echo_gain(manifest)
        _warn_initial_weights(weights)
        _check_accuracy_control(manifest, out)
        if budget is not None:
            _check_budget(manifest["metrics"]["budget"], out)


def _check_measured(report: dict, path: Path) -> None:
    """Exit 1 where a device failed some measurements: the report, written, holds the rest."""
    failed = [f"{entry['name']} on {device}" for entry in report["candidates"] for device in entry.get("failed") or {}]
    if failed:
        raise Incomplete(f"{len(failed)} measurement(s) failed ({', '.join(failed[:4])}"
                         f"{', ...' if len(failed) > 4 else ''}); {path} has the others and says why")


def _refuse_budget_under_torchrun(budget) -> None:
    from edgeslim.compress.distributed import is_distributed

    if budget is not None and is_distributed():
        raise ConfigError("--target-size and --target-latency search the pruning ratio in one process; run them "
                          "without torchrun, or give --prune")


def _echo_accuracy_control(manifest: dict) -> None:
    from edgeslim.views import accuracy_control_text

    control = manifest["metrics"].get("accuracy_control")
    if control:
        click.echo(accuracy_control_text(control))


def _check_accuracy_control(manifest: dict, out: Path) -> None:
    control = manifest["metrics"].get("accuracy_control")
    if control and not control["met"]:
        raise GateFailed(f"no INT8 model met the accuracy drop of {control['allowed_drop']:.3g}; "
                         f"the best one found ({control['accuracy']:.2f}, drop {control['drop']:.2f}) "
                         f"is written to {out}")


def _check_budget(budget: dict, out: Path) -> None:
    if budget["over_budget"]:
        raise GateFailed(f"the result is {budget['distance']:+.1%} over the budget ({budget['measured']:.4g} against "
                         f"{budget['target']:g} {budget['unit']}); the best bundle found is written to {out}")


@main.command()
@click.option("--model", "model_spec", required=True, help="path/file.py:factory or package.module:factory")
@click.option("--weights", type=click.Path(), help="A state dict: .pt, .pth or .safetensors.")
@click.option("--data", "data_spec", required=True, help="Data factory spec returning {'val', 'train', ...}.")
@click.option("--metric", default="top1", show_default=True, help="top1 or a spec of fn(outputs, labels).")
@click.option("--calibration-samples", type=int, default=300, show_default=True,
              help="Samples that calibrate INT8 activation ranges.")
@click.option("--out", type=click.Path(path_type=Path), help="Write the table as JSON (and Markdown beside it).")
@_force_option
def sensitivity(model_spec, weights, data_spec, metric, calibration_samples, out, force) -> None:
    """Each quantizable layer's accuracy when it alone is in float, and when it alone is INT8."""
    from edgeslim.build import layer_sensitivity
    from edgeslim.core.model_io import load_model
    from edgeslim.core.specs import load_data, load_metric
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


# -- measure --------------------------------------------------------------------------------------

def _bench_options(function):
    function = click.option("--runs", default=200, show_default=True, type=click.IntRange(1),
                            help="Timed runs per bundle and device.")(function)
    function = click.option("--warmup", default=20, show_default=True, type=click.IntRange(0),
                            help="Untimed runs before them.")(function)
    function = click.option("--batch", default=1, show_default=True, type=click.IntRange(1),
                            help="Batch size of each run.")(function)
    return function


@main.command()
@click.argument("bundles", nargs=-1, required=True)
@click.option("--data", "data_spec", required=True, help="Data factory spec returning {'val', ...}.")
@click.option("--device", "devices", multiple=True, default=("cpu",), show_default=True,
              help="A device profile (see `edgeslim devices`) or ssh://[user@]host[:port] (repeatable).")
@click.option("--metric", default="top1", show_default=True, help="top1 or a spec of fn(outputs, labels).")
@click.option("--baseline", help="The bundle name the others are compared with (default: the first).")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="REPORT.json to write (a .md beside it).")
@click.option("--io", type=click.Choice(["host", "device"]), default="host", show_default=True,
              help="host: numpy in and out; device: inputs and outputs kept in GPU memory.")
@_bench_options
@_force_option
@_mlflow_options
def validate(bundles, data_spec, devices, metric, baseline, out, io, runs, warmup, batch, force, mlflow_uri,
             mlflow_model) -> None:
    """Accuracy and latency of each bundle on each device."""
    from edgeslim.core.specs import load_data, load_metric
    from edgeslim.devices.runner import BenchConfig
    from edgeslim.report.markdown import render_markdown
    from edgeslim.validate import validate_bundles

    outputs = [(out, "json"), (out.with_suffix(".md"), "markdown")]
    with _document_outputs(outputs, [data_spec, metric, *bundles], force):
        tracker = _open_tracker(mlflow_uri, mlflow_model)
        data = load_data(data_spec)
        report = validate_bundles(list(bundles), data, list(devices), load_metric(metric), metric, baseline,
                                  BenchConfig(runs=runs, warmup=warmup, batch=batch, io=io), specs={"data": data_spec})
        text = render_markdown(report)
        _write_documents(outputs, {"json": report, "markdown": text}, force)
    click.echo(text)
    _track(report, out, [path for path, _ in outputs], tracker)
    _check_measured(report, out)


@main.command()
@click.argument("report_path", metavar="REPORT.json")
@click.option("--against", type=click.Path(), help="An older report: show old, new and delta, and gate each candidate "
              "against its namesake (one it lacks: against the baseline, with a warning); `last`: the run recorded "
              "before this report's, of the same model (see `edgeslim history`).")
@click.option("--allow-different-model", is_flag=True, help="Compare with an --against report of another model.")
@click.option("--max-accuracy-drop", type=float, help="Points of the metric a candidate may lose.")
@click.option("--max-latency-increase", type=float, help="Fraction of p50 a candidate may add (0.1 = +10%).")
@click.option("--min-latency-change", type=float, default=0.05, show_default=True, help="Milliseconds of p50 "
              "below which a latency change is noise, whatever its fraction (so is one within the p90 - p50 spread).")
@click.option("--html", "html_out", type=click.Path(path_type=Path), help="Also write an HTML page.")
@click.option("--md", "md_out", type=click.Path(path_type=Path), help="Also write the Markdown to a file.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Write the report with its gates.")
@_force_option
def report(report_path, against, allow_different_model, max_accuracy_drop, max_latency_increase, min_latency_change,
           html_out, md_out, json_out, force) -> None:
    """Render a report and apply gates (exit 1 when one fails)."""
    from edgeslim.core.progress import warn
    from edgeslim.report.compare import attach, check_same_model
    from edgeslim.report.gates import GateConfig, apply_gates, failures
    from edgeslim.report.html import render_html
    from edgeslim.report.markdown import render_markdown
    from edgeslim.report.schema import read_report

    outputs = [(path, kind) for path, kind in ((md_out, "markdown"), (html_out, "html"), (json_out, "json")) if path]
    with _document_outputs(outputs, [report_path, against], force):
        document = read_report(report_path)
        gates = GateConfig(max_accuracy_drop, max_latency_increase, min_latency_change)
        if against == "last":
            against = _last_report(document)
        old = read_report(against) if against else None
        model_note = check_same_model(document, old, str(against), allow_different_model) if old else None
        passed = apply_gates(document, gates, old, against_name=str(against) if against else "the --against report")
        for note in attach(document, old, str(against), gates, model_note) if old else []:
            warn(note)
        text = render_markdown(document)
        click.echo(text)
        rendered = {"markdown": text, "json": document, **({"html": render_html(document)} if html_out else {})}
        _write_documents(outputs, rendered, force)
    if not passed:
        raise GateFailed("; ".join(failures(document)))


def _last_report(document: dict) -> str:
    from edgeslim.core.progress import log
    from edgeslim.history import previous_report

    path, record = previous_report(document)
    log(f"--against last: run {record['id']} ({record.get('created') or record['recorded']}), "
        f"its report kept at {path}")
    return str(path)


@main.command()
@click.argument("store", required=False, type=click.Path(path_type=Path), metavar="[DIR]")
@click.option("--model", "model_spec", help="Only the runs of this model spec.")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@click.option("--plot", type=click.Path(path_type=Path), metavar="FILE.svg|FILE.html",
              help="Draw accuracy, size and p50 per device over the runs, one line per candidate.")
@_force_option
def history(store, model_spec, as_json, plot, force) -> None:
    """The runs that `run` and `validate` recorded, oldest first: id, time, commit, model, the shipped candidate.

    DIR is the store: by default $EDGESLIM_HISTORY, else .edgeslim/history under the working directory
    (EDGESLIM_HISTORY=off records nothing). It keeps a copy of each report, for `report --against last`.
    """
    from edgeslim.core.outputs import claimed
    from edgeslim.core.progress import log
    from edgeslim.history import history_text, nothing_recorded, read_records, records_json, write_plot

    records = read_records(store, model_spec)
    if plot:
        with claimed(plot, "--plot"):
            write_plot(records, plot, force)
        log(f"wrote {plot} ({len(records)} runs)")
    if as_json:
        click.echo(records_json(records))
    elif records:
        click.echo(history_text(records))
    else:
        log(nothing_recorded(store, model_spec))


@main.command()
@click.argument("bundle")
@click.option("--device", default="cpu", show_default=True,
              help="A device profile (see `edgeslim devices`) or ssh://[user@]host[:port].")
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
@click.option("--io", type=click.Choice(["host", "device"]), default="host", show_default=True,
              help="host: numpy in and out; device: inputs and outputs kept in GPU memory.")
@_bench_options
def bench(bundle, device, as_json, io, runs, warmup, batch) -> None:
    """Latency statistics of one bundle on one device."""
    from edgeslim.devices.runner import BenchConfig
    from edgeslim.devices.targets import get_target
    from edgeslim.sdk import read_manifest
    from edgeslim.views import bench_text

    read_manifest(bundle)
    stats = get_target(device).latency(bundle, BenchConfig(runs=runs, warmup=warmup, batch=batch, io=io))
    click.echo(json.dumps(stats, indent=2) if as_json else bench_text(bundle, device, stats, runs, warmup, batch))


@main.command()
@click.argument("bundle")
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def inspect(bundle, as_json) -> None:
    """What is in a bundle, and whether its files match their checksums."""
    from edgeslim.sdk import read_manifest, verify_files
    from edgeslim.views import inspect_text

    manifest = read_manifest(bundle)
    verify_files(bundle, manifest)
    click.echo(json.dumps(manifest, indent=2) if as_json else inspect_text(manifest))


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the profiles as JSON.")
def devices(as_json) -> None:
    """The device profiles."""
    from edgeslim.views import device_rows, devices_text

    rows = device_rows()
    click.echo(json.dumps(rows, indent=2) if as_json else devices_text(rows))


@main.command()
@click.argument("kind", type=click.Choice(["recipe", "manifest", "report", "history"]))
def schema(kind) -> None:
    """The JSON Schema of a recipe, a manifest, a report or a history record (point an editor at a recipe's)."""
    from edgeslim.schemas import schema_text

    click.echo(schema_text(kind), nl=False)


if __name__ == "__main__":
    main()
