"""What the CLI prints: the text of a built bundle, a budget's landing, a bench run, a bundle's contents,
the device profiles. Plain functions from results to text; the CLI only echoes them."""
from __future__ import annotations

from pathlib import Path

BENCH_KEYS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms", "throughput", "load_ms",
              "first_run_ms", "peak_rss_mb")


def built_text(manifest: dict, out: Path) -> str:
    """'wrote DIR: 1.2 KB, ...', and below it the note of a bundle kept slower than its float parent (int4)."""
    metrics = manifest["metrics"]
    accuracy = f", accuracy {metrics['accuracy']:.2f}" if "accuracy" in metrics else ""
    note = f"\nnote: {metrics['speed_note']}" if metrics.get("speed_note") else ""
    return f"wrote {out}: {metrics['size_bytes'] / 1024:.1f} KB, {metrics['params']:,} params{accuracy}{note}"


# compress warns where the bundle's accuracy falls below its source's by more than this fraction of it.
WARN_ACCURACY_DROP = 0.02


def gain_text(manifest: dict) -> str | None:
    """'pkd: 17.3 KB (12.8x smaller than the 222.0 KB fp32 export), accuracy 97.50 (-2.22 points against 99.72)':
    the bundle against metrics["source"], the unchanged model's fp32 export (None where it was not measured)."""
    metrics = manifest["metrics"]
    source = metrics.get("source")
    if not source:
        return None
    size, before = metrics["size_bytes"], source["size_bytes"]
    ratio = f"{before / size:.1f}x smaller than" if before >= size else f"{size / before:.1f}x larger than"
    text = f"{manifest['name']}: {_kilobytes(size)} ({ratio} the {_kilobytes(before)} {source['what']})"
    if metrics.get("accuracy") is not None and source.get("accuracy") is not None:
        delta = metrics["accuracy"] - source["accuracy"]
        text += f", accuracy {metrics['accuracy']:.2f} ({delta:+.2f} points against {source['accuracy']:.2f})"
    return text


def accuracy_drop_warning(manifest: dict) -> str | None:
    """The warning for a bundle whose accuracy falls below its source's by more than WARN_ACCURACY_DROP of it
    (none where --max-accuracy-drop set the limit: its own gate says whether the bundle met it)."""
    metrics = manifest["metrics"]
    source = metrics.get("source") or {}
    if metrics.get("accuracy") is None or source.get("accuracy") is None or metrics.get("accuracy_control"):
        return None
    drop = source["accuracy"] - metrics["accuracy"]
    if drop <= WARN_ACCURACY_DROP * abs(source["accuracy"]):
        return None
    return (f"{manifest['name']}: accuracy {metrics['accuracy']:.2f} is {drop:.2f} points below the "
            f"{source['what']}'s {source['accuracy']:.2f}, a drop of more than {WARN_ACCURACY_DROP:.0%}")


def _kilobytes(size: int) -> str:
    return f"{size / 1024:.1f} KB"


def budget_text(budget: dict) -> str:
    """A manifest's metrics["budget"]: where the bundle landed against the budget, at which ratio."""
    unit = budget["unit"]
    return (f"budget: {budget['measured']:.4g} {unit} against {budget['target']:g} {unit} "
            f"({budget['distance']:+.1%}) at pruning ratio {budget['ratio']:.3f}, channels in multiples of "
            f"{budget['round_to']}" + (f"; {budget['why']}" if "why" in budget else ""))


def accuracy_control_text(control: dict) -> str:
    return (f"accuracy control: {control['accuracy']:.2f} vs fp32 {control['fp32_accuracy']:.2f} "
            f"(drop {control['drop']:.2f}, allowed {control['allowed_drop']:.3g}); "
            f"{control['layers_int8']} of {control['layers']} layers INT8"
            + (f", in float: {', '.join(control['in_float'])}" if control["in_float"] else ""))


def bench_text(bundle: str, device: str, stats: dict, runs: int, warmup: int, batch: int) -> str:
    lines = [f"{bundle} on {device}, {stats.get('mode', 'measured')} (batch {batch}, {warmup} warm-up, "
             f"{runs} runs, threads {stats.get('threads') or 'default'}, io {stats.get('io', 'host')}):"]
    lines += [f"  {key:<13} {stats[key]:.3f}" for key in BENCH_KEYS if stats.get(key) is not None]
    return "\n".join(lines)


def inspect_text(manifest: dict) -> str:
    """A verified bundle's manifest: inputs, outputs, files, steps, build-time metrics, versions."""
    metrics = manifest.get("metrics", {})
    lines = [f"{manifest['name']}  ({manifest['format']}, checksums verified)"]
    for kind in ("inputs", "outputs"):
        lines += [f"  {kind[:-1]:<7} {spec['name']}: {spec['dtype']} {spec['shape']}" for spec in manifest[kind]]
    lines += [f"  file    {file}  sha256 {digest[:16]}…" for file, digest in manifest["sha256"].items()]
    steps = manifest.get("compression") or []
    lines.append("  steps   " + (" → ".join(s["step"] for s in steps) if steps else "none (baseline)"))
    for key in ("size_bytes", "params", "accuracy"):
        if key in metrics:
            value = metrics[key]
            lines.append(f"  {key:<11} {value:,}" if isinstance(value, int) else f"  {key:<11} {value:.3f}")
    lines += _int8_lines(metrics if isinstance(metrics, dict) else {})
    lines += _onnx_step_lines(metrics if isinstance(metrics, dict) else {})
    lines += [f"  kept    {kept['module']} whole by pruning: {kept['reason']}"
              for kept in metrics.get("kept_whole") or []]
    lines += _source_lines(manifest.get("source_model"), metrics)
    versions = ", ".join(f"{k} {v}" for k, v in manifest.get("created_with", {}).items() if v)
    lines.append(f"  made with {versions}")
    return "\n".join(lines)


def _source_lines(source, metrics: dict) -> list[str]:
    """Which model the bundle was built from, and how fine-tuning ran (ranks, teacher cached or live)."""
    lines = []
    if isinstance(source, dict) and source.get("model"):
        weights = (f"{source['weights']} (sha256 {str(source.get('weights_sha256'))[:12]})" if source.get("weights")
                   else "initial weights of the factory" + (", trained by the recipe" if source.get("trained") else ""))
        params = f", {source['params']:,} params" if isinstance(source.get("params"), int) else ""
        lines.append(f"  source  {source['model']}: {weights}{params}")
    for kind in ("distill", "qat"):
        run, history = metrics.get(f"{kind}_run"), metrics.get(f"{kind}_history")
        if isinstance(run, dict) and isinstance(history, list) and history:
            ranks = f"{run.get('ranks')} ranks ({run.get('backend')}), " if (run.get("ranks") or 1) > 1 else ""
            simulated = (run.get("quantization") or {}).get("simulated")
            aware = ", through simulated dynamic INT8" if simulated == "dynamic_int8" else ""
            lines.append(f"  {kind:<7} {len(history)} epochs, {ranks}{run.get('precision')}, teacher "
                         f"{run.get('teacher') or 'none'}{aware}, final loss {history[-1].get('loss')}")
    return lines


def _int8_lines(metrics: dict) -> list[str]:
    lines = []
    coverage = metrics.get("int8_coverage")
    if isinstance(coverage, dict):  # which layers onnxruntime runs as integer kernels, measured at build time
        from edgeslim.core.coverage import coverage_text, float_node_names

        lines.append(f"  {coverage_text(coverage)}")
        in_float = float_node_names(coverage)
        if in_float:
            more = f" … (+{len(in_float) - 4} more)" if len(in_float) > 4 else ""
            lines.append(f"  in float: {', '.join(in_float[:4])}{more}")
    form = metrics.get("int8_form")
    if isinstance(form, dict) and form.get("chosen"):
        from edgeslim.report.markdown import form_text

        lines.append(f"  int8{form_text(form).removeprefix(';')}")
    settings = metrics.get("int8_settings")
    if isinstance(settings, dict):
        lines.append(f"  int8 weights {settings.get('weights')} for {settings.get('target')} ({settings.get('why')})")
    return lines


def _onnx_step_lines(metrics: dict) -> list[str]:
    """The INT4 step's figures and speed note, and what graph optimization fused (or why it was not kept)."""
    lines = []
    int4 = metrics.get("int4")
    if isinstance(int4, dict):
        speed = (f", {int4['x_parent']:.2f}x the float parent's time on {int4.get('measured_on')}"
                 if isinstance(int4.get("x_parent"), (int, float)) else "")
        lines.append(f"  int4    {int4.get('matmul_nbits')} of {int4.get('matmuls')} MatMul weights as MatMulNBits "
                     f"(block {int4.get('block_size')}, accuracy_level {int4.get('accuracy_level')}){speed}")
    if metrics.get("speed_note"):
        lines.append(f"  note    {metrics['speed_note']}")
    graph = metrics.get("graph_optimization")
    return lines + (_graph_lines(graph) if isinstance(graph, dict) else [])


def _graph_lines(graph: dict) -> list[str]:
    """The optimize step's record: what fused, whether kept and why, which layer-norm form was timed faster."""
    fused = ", ".join(f"{count} {op}" for op, count in (graph.get("fused") or {}).items()) or "nothing"
    timed = (f" ({graph['x_parent']:.2f}x the input graph's time, timed as {graph.get('timed_as', 'float')})"
             if isinstance(graph.get("x_parent"), (int, float)) else "")
    verdict = f"kept{timed}" if graph.get("kept") else f"not kept: {graph.get('why')}"
    lines = [f"  graph   {graph.get('model_type')} fusions: {fused}; {verdict}"]
    forms = graph.get("forms") if isinstance(graph.get("forms"), dict) else {}
    if len(forms) > 1:
        times = {form: f"{row['x_parent']:.2f}x" for form, row in forms.items()
                 if isinstance(row, dict) and isinstance(row.get("x_parent"), (int, float))}
        kept = "neither kept" if not graph.get("kept") else "apart kept" if graph.get("form") == "layer_norm" \
            else "fused kept"
        lines.append(f"  graph   layer norms fused into SkipLayerNormalization {times.get('skip_layer_norm', '?')}, "
                     f"apart after a residual Sum {times.get('layer_norm', '?')}: {kept}")
    if graph.get("note"):
        lines.append(f"  graph   {graph['note']}")
    return lines


def device_rows() -> list[dict]:
    """Each device profile, and whether its execution provider is installed here."""
    from edgeslim.devices.profiles import profiles
    from edgeslim.sdk.providers import PROVIDER_ALIASES, available_providers

    available = set(available_providers())
    return [dict(p.to_dict(), available=PROVIDER_ALIASES.get(p.provider, p.provider) in available)
            for p in profiles().values()]


def devices_text(rows: list[dict]) -> str:
    lines = [f"{'name':<21} {'provider':<9} {'threads':<8} {'mode here':<10} description"]
    for row in rows:
        state = "" if row["available"] else "  [provider not installed here]"
        features = f" [{', '.join(row['features'])}]" if row["features"] else ""
        memory = f", {row['memory_gb']:g} GB" if row["memory_gb"] else ""
        lines.append(f"{row['name']:<21} {row['provider']:<9} {str(row['threads'] or 'all'):<8} {row['mode']:<10} "
                     f"{row['description']}{memory}{features}, prefers {row['prefers']}{state}")
    lines.append("also: ssh://[user@]host[:port] runs on a remote device with the torch-free edgeslim installed")
    return "\n".join(lines)
