"""Render a report as Markdown: what each compression costs and gains against the baseline."""
from __future__ import annotations

from edgeslim.report.schema import candidate


def size_text(num_bytes: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if num_bytes < 1024 or unit == "GB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1024
    return str(num_bytes)


def _steps(entry: dict) -> str:
    steps = entry.get("compression") or []
    if not steps:
        return "—"
    parts = []
    for step in steps:
        options = {k: v for k, v in step.items() if k in ("ratio", "epochs", "subset_size")}
        parts.append(step["step"] + (f"({', '.join(f'{k}={v}' for k, v in options.items())})" if options else ""))
    return " → ".join(parts)


def devices_of(report: dict) -> list[str]:
    seen = []
    for entry in report["candidates"]:
        for device in entry.get("latency", {}):
            if device not in seen:
                seen.append(device)
    return seen


def summary_rows(report: dict) -> list[dict]:
    """Per candidate: the figures and their ratios against the baseline."""
    base = candidate(report, report["baseline"]) or report["candidates"][0]
    rows = []
    for entry in report["candidates"]:
        row = {"name": entry["name"], "size": size_text(entry["size_bytes"]),
               "smaller": base["size_bytes"] / entry["size_bytes"], "params": entry.get("params"),
               "accuracy": entry.get("accuracy"), "steps": _steps(entry), "passed": entry.get("passed"),
               "latency": {}, "pareto": _pareto(entry)}
        if entry.get("accuracy") is not None and base.get("accuracy") is not None:
            row["delta"] = entry["accuracy"] - base["accuracy"]
        for device, stats in entry.get("latency", {}).items():
            ref = base.get("latency", {}).get(device)
            speedup = ref["p50_ms"] / stats["p50_ms"] if ref else None
            row["latency"][device] = (stats, speedup)
        rows.append(row)
    return rows


def _pareto(entry: dict) -> str:
    """The fronts a candidate is on, by short name: size, and each device's latency."""
    fronts = [front.replace("latency[", "").rstrip("]") for front, on in (entry.get("pareto") or {}).items() if on]
    return "★ " + ", ".join(fronts) if fronts else ""


def _kernel_lines(report: dict) -> str:
    """Per quantized candidate: how many of its layers onnxruntime runs as integer kernels."""
    measured = [entry for entry in report["candidates"] if isinstance(entry.get("int8_coverage"), dict)]
    if not measured:
        return ""
    from edgeslim.core.coverage import kernel_counts_text, mostly_float, provider_label

    lines = []
    for entry in measured:
        coverage = entry["int8_coverage"]
        form = entry.get("int8_form") if isinstance(entry.get("int8_form"), dict) else {}
        if form.get("chosen") == "weights":
            warning = " (int8 weights, float compute: chosen because integer kernels did not pay on the target)"
        else:
            warning = " (**mostly float**: the INT8 graph computes in float here)" if mostly_float(coverage) else ""
        lines.append(f"- int8 kernels ({provider_label(coverage)}): `{entry['name']}`: "
                     f"{kernel_counts_text(coverage)}{warning}{form_text(form)}")
    return "\n".join(lines) + "\n"


def _kept_lines(report: dict) -> str:
    """Per pruned candidate: the modules pruning left whole, and why."""
    lines = [f"- kept whole by pruning: `{entry['name']}`: `{kept['module']}` ({kept['reason']})"
             for entry in report["candidates"] for kept in entry.get("kept_whole") or []]
    return "\n".join(lines) + "\n" if lines else ""


def form_text(form: dict) -> str:
    """The INT8 form chosen at build, and why (its speed against the float parent where measured)."""
    if not form.get("chosen"):
        return ""
    text = f"; form `{form['chosen']}`: {form.get('why', '')}"
    mixed = form.get("mixed") if isinstance(form.get("mixed"), dict) else {}
    if mixed.get("tried") and form["chosen"] != "mixed":
        layers = mixed.get("layers") or {}
        text += (f"; per layer: {len(mixed.get('in_float') or [])} of {len(layers)} integer layers of "
                 f"{mixed.get('base')} ran slower in INT8, mixed not kept ({mixed.get('why', '')})")
    return text


def _slower_lines(report: dict) -> str:
    slower = [f"- `{entry['name']}` is **slower than the baseline** on {device} "
              f"({entry['latency'][device]['p50_ms']:.3f} ms p50)"
              for entry in report["candidates"] for device, flag in (entry.get("slower_than_baseline") or {}).items()
              if flag and device in entry.get("latency", {})]
    return "\n".join(slower) + "\n" if slower else ""


def render_markdown(report: dict) -> str:
    from edgeslim.report.summary import metadata_items, verdict

    devices = devices_of(report)
    lines = ["# edgeslim report", "", f"Baseline: **{report['baseline']}**. "
             f"Accuracy: {report.get('settings', {}).get('metric', 'top1')} on the val split, run through the SDK "
             "on each exact bundle file.", ""]
    lines += [f"- {label}: {text}" for label, text in metadata_items(report)]
    lines += ["", f"**Verdict.** {verdict(report)['text']}", ""]
    header = ["candidate", "size", "x smaller", "params", "accuracy", "Δ acc"]
    for device in devices:
        header += [f"p50 ms ({device})", f"speed-up ({device})"]
    header += ["Pareto", "steps", "gates"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary_rows(report):
        cells = [f"`{row['name']}`", row["size"], f"{row['smaller']:.2f}x",
                 f"{row['params']:,}" if row["params"] is not None else "—",
                 f"{row['accuracy']:.2f}" if row["accuracy"] is not None else "—",
                 f"{row['delta']:+.2f}" if "delta" in row else "—"]
        for device in devices:
            stats, speedup = row["latency"].get(device, (None, None))
            label = f" ({stats['mode']})" if stats and stats.get("mode") in ("emulated", "estimated") else ""
            cells += [f"{stats['p50_ms']:.3f}{label}" if stats else "—",
                      f"{speedup:.2f}x" if speedup else "—"]
        # passed is null until gates run: a candidate no gate checked shows a dash, not "pass".
        cells += [row["pareto"], row["steps"], {True: "pass", False: "**FAIL**"}.get(row["passed"], "—")]
        lines.append("| " + " | ".join(cells) + " |")
    blocks = [_comparison(report), _kernel_lines(report), _kept_lines(report), _slower_lines(report),
              _accuracy_by_device(report), _latency_details(report, devices), _fine_tuning(report),
              _quantization(report), _gate_lines(report)]
    # One blank line between blocks: a block the report has nothing for ("") leaves none.
    lines += ["", "★: on the Pareto front of accuracy against size, or against p50 latency on that device.", "",
              *(block.strip("\n") + "\n" for block in blocks if block.strip())]
    return "\n".join(lines).rstrip() + "\n"


def _comparison(report: dict) -> str:
    """With --against: the notes to heed, then old, new and delta of accuracy, size and each p50."""
    from edgeslim.report.compare import comparison_devices, comparison_rows

    against = report.get("against")
    if not against:
        return ""
    devices = comparison_devices(report)
    lines = [f"## Against {against.get('report')}", ""]
    lines += [f"- **warning:** {note}" for note in against.get("notes") or []]
    header = ["candidate", "accuracy old", "new", "Δ", "size old", "new", "Δ"]
    for device in devices:
        header += [f"p50 ms ({device}) old", "new", "Δ"]
    lines += ["" if against.get("notes") else None, "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in comparison_rows(report):
        name = f"`{row['name']}`" + (" (new)" if not row["matched"] else " (same bundle)" if row["same_bundle"] else "")
        accuracy, size = row["accuracy"], row["size"]
        cells = [name, _num(accuracy["old"], 2), _num(accuracy["new"], 2), _signed(accuracy["delta"]),
                 _bytes(size["old"]), _bytes(size["new"]), _fraction(size["delta"])]
        for device in devices:
            p50 = row["p50"][device]
            cells += [_num(p50["old"], 3), _num(p50["new"], 3),
                      _fraction(p50["delta"]) + (" (noise)" if p50["noise"] else "")]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Δ: accuracy in points; size and p50 as a change of the old figure. A p50 change within either "
              "run's spread (p90 - p50) or the minimum change is noise.", ""]
    return "\n".join(line for line in lines if line is not None) + "\n"


def _finite(value) -> bool:
    import math

    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _signed(value) -> str:
    return f"{value:+.2f}" if _finite(value) else "—"


def _fraction(value) -> str:
    return f"{value:+.1%}" if _finite(value) else "—"


def _bytes(value) -> str:
    return size_text(value) if _finite(value) and value >= 0 else "—"


def _latency_details(report: dict, devices: list[str]) -> str:
    bench = report.get("settings", {}).get("bench", {})
    lines = ["## Latency", "",
             f"Batch {bench.get('batch', 1)}, {bench.get('warmup', '?')} warm-up runs then {bench.get('runs', '?')} "
             "timed runs, each bundle in its own process; load time and the first run are reported apart.", "",
             "Mode: *measured* on the device itself; *emulated* on this host cut to the board's cores (same "
             "instruction set); *estimated* by the cost model calibrated on this host (a board this host cannot "
             "emulate).", "",
             "| candidate | device | mode | threads | p50 ms | p90 ms | p99 ms | mean ms | throughput/s | load ms "
             "| first run ms | peak RSS MB |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for entry in report["candidates"]:
        for device in devices:
            s = entry.get("latency", {}).get(device)
            if s:
                mode = s.get("mode", "measured")
                lines.append(f"| `{entry['name']}` | {device} | {mode} | {s.get('threads') or '—'} "
                             f"| {s['p50_ms']:.3f} | {s['p90_ms']:.3f} | {s['p99_ms']:.3f} | {s['mean_ms']:.3f} "
                             f"| {s['throughput']:.0f} | {_num(s.get('load_ms'), 1)} "
                             f"| {_num(s.get('first_run_ms'), 2)} | {_num(s.get('peak_rss_mb'), 0)} |")
    return "\n".join(lines) + "\n"


def _fine_tuning(report: dict) -> str:
    """Per candidate that distilled or ran QAT: its epochs in one line (the HTML draws the curves)."""
    from edgeslim.report.summary import history_rows

    rows = history_rows(report)
    if not rows:
        return ""
    lines = ["## Fine-tuning per epoch", "", "| candidate | fine-tuning | epochs | train loss, first → last "
             "| best val | seconds |", "|---|---|---|---|---|---|"]
    for row in rows:
        best = "—" if row["best_val"] is None else f"{row['best_val']:.2f} at epoch {row['best_epoch']}"
        lines.append(f"| `{row['name']}` | {row['kind']} | {row['epochs']} | {_loss(row['first_loss'])} → "
                     f"{_loss(row['last_loss'])} | {best} | {_num(row['seconds'], 1)} |")
    return "\n".join(lines) + "\n"


def _loss(value) -> str:
    return f"{value:.4g}" if _finite(value) else "—"


def _accuracy_by_device(report: dict) -> str:
    """Only when some device runs another runtime (a GPU, a remote board) than this host's CPU."""
    rows = [(entry["name"], entry.get("accuracy"), entry.get("accuracy_by_device") or {})
            for entry in report["candidates"]]
    devices = [d for d in devices_of(report) if any(d in by for _, _, by in rows)]
    if all(by.get(d) == acc for _, acc, by in rows for d in devices if d in by):
        return ""
    lines = ["## Accuracy by device", "", "| candidate | host CPU | " + " | ".join(devices) + " |",
             "|---|---|" + "---|" * len(devices)]
    for name, accuracy, by in rows:
        cells = [_num(by.get(d), 2) for d in devices]
        lines.append(f"| `{name}` | {_num(accuracy, 2)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _quantization(report: dict) -> str:
    """Accuracy control and layer sensitivity, for candidates whose INT8 step measured them."""
    parts = []
    for entry in report["candidates"]:
        control = entry.get("accuracy_control")
        if not control:
            continue
        parts.append(f"### `{entry['name']}`: accuracy-controlled INT8\n\n"
                     f"{control['layers_int8']} of {control['layers']} layers INT8; accuracy {control['accuracy']:.2f} "
                     f"against fp32 {control['fp32_accuracy']:.2f} (drop {control['drop']:.2f}, allowed "
                     f"{control['allowed_drop']:.3g}: {'met' if control['met'] else '**not met**'}). In float: "
                     f"{', '.join(f'`{name}`' for name in control['in_float']) or 'none'}.\n")
        if entry.get("sensitivity"):
            parts.append(sensitivity_markdown({"layers": entry["sensitivity"]}, heading=False))
    return ("## Quantization\n\n" + "\n".join(parts)) if parts else ""


def sensitivity_markdown(table: dict, heading: bool = True) -> str:
    rows = table["layers"]
    both = any("alone_quantized" in row for row in rows)
    lines = []
    if heading:
        lines += ["# Layer sensitivity", "",
                  f"fp32 {table['fp32_accuracy']:.2f}, every layer INT8 {table['int8_accuracy']:.2f}. "
                  "Most sensitive first: the accuracy with the layer alone left in float"
                  + (" and with it alone quantized." if both else "."), ""]
    header = "| layer | op | alone in float | gain |" + (" alone INT8 | drop |" if both else "")
    lines += [header, "|---|---|---|---|" + ("---|---|" if both else "")]
    for row in rows:
        line = f"| `{row['layer']}` | {row['op']} | {row['alone_in_float']:.2f} | {row['gain_in_float']:+.2f} |"
        if both:
            drop = row.get("drop_quantized")
            line += f" {_num(row.get('alone_quantized'), 2)} | {'—' if drop is None else f'{drop:+.2f}'} |"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _num(value, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _gate_lines(report: dict) -> str:
    gated = [(entry["name"], name, gate) for entry in report["candidates"]
             for name, gate in entry.get("gates", {}).items()]
    if not gated:
        return ""
    lines = ["## Gates", "", "| candidate | gate | value | limit | against | result |", "|---|---|---|---|---|---|"]
    for name, gate_name, gate in gated:
        # A gate that could not be evaluated has no value (and `against` no limit): its reason shows instead.
        value = "—" if gate.get("value") is None else f"{gate['value']:.4g}"
        limit = "—" if gate.get("limit") is None else f"{gate['limit']:g}"
        result = "pass" if gate["passed"] else "**FAIL**"
        if gate.get("reason"):
            result += ": " + gate["reason"].replace("|", "\\|")
        lines.append(f"| `{name}` | {gate_name} | {value} | {limit} | {gate['reference']} | {result} |")
    return "\n".join(lines) + "\n"
