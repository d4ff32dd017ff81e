"""The report as one self-contained HTML page (no script, no network): rendered from the Jinja2 template
templates/report.html.j2, with the charts of edgeslim.report.plots inline as SVG where matplotlib is
installed (else the page says how to get them).

The page holds what the Markdown holds, as tables: the run's metadata, the verdict, each candidate
against the baseline (and against an old run with `--against`), latency per device with how it was
obtained (measured, emulated, estimated), gates, integer kernels, layer sensitivity, and the epochs of
distillation and QAT (a table, and their curves).
"""
from __future__ import annotations

import math
from pathlib import Path

from edgeslim.report import plots
from edgeslim.report.compare import comparison_devices, comparison_rows
from edgeslim.report.markdown import devices_of, form_text, size_text, summary_rows
from edgeslim.report.schema import is_number
from edgeslim.report.summary import HISTORIES, history_rows, metadata_items, speed_text, verdict

TEMPLATES = Path(__file__).parent / "templates"
MODES = {"measured": "on the device itself",
         "emulated": "on this host cut to the board's cores (same instruction set)",
         "estimated": "by the cost model calibrated on this host (a board this host cannot emulate)"}


def render_html(report: dict) -> str:
    """The page, as text (the caller writes it)."""
    return _environment().get_template("report.html.j2").render(**page_context(report))


def _environment():
    import jinja2

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                                     undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    environment.filters.update(num=_num, signed=_signed, percent=_percent, size=_size_or_dash)
    return environment


def page_context(report: dict) -> dict:
    """What the template shows, computed here so the template only lays it out."""
    from markupsafe import Markup

    devices = devices_of(report)
    numbers = plots.numbering(report)
    choice = verdict(report)
    context = {"baseline": report["baseline"], "metadata": metadata_items(report), "verdict": choice,
               "model": _model(report), "devices": devices, "modes": MODES,
               "rows": _candidate_rows(report, devices, numbers, choice["best"]),
               "comparison": _comparison(report), "latency": _latency_rows(report, devices),
               "gates": _gate_rows(report), "coverage": _coverage_rows(report),
               "kept_whole": [(entry["name"], {"reason": "", **kept}) for entry in report["candidates"]
                              for kept in entry.get("kept_whole") or []],
               "quantization": _quantization(report), "plots_available": plots.available(),
               "training": history_rows(report), "curves": [],
               "install_hint": plots.INSTALL_HINT, "size_plot": None, "latency_plots": []}
    if context["plots_available"]:
        size = plots.size_plot(report)
        context["size_plot"] = Markup(size) if size else None
        by_device = plots.latency_plots(report, devices)
        context["latency_plots"] = [(device, _device_mode(report, device), Markup(svg))
                                    for device, svg in by_device.items()]
        for section in context["quantization"]:
            section["plot"] = Markup(section["plot"]) if section.get("plot") else None
        context["curves"] = [(key.removesuffix("_history"), HISTORIES[key], Markup(svg))
                             for key, svg in plots.history_plots(report).items()]
    context["legend"] = [{"number": numbers[entry["name"]], "name": entry["name"],
                          "status": _status(entry.get("passed")), "baseline": entry["name"] == report["baseline"]}
                         for entry in report["candidates"]]
    return context


def _model(report: dict) -> str | None:
    from edgeslim.report.provenance import model_name

    return model_name(report)


def _status(passed) -> str:
    return {True: "pass", False: "fail"}.get(passed, "none")


def _finite(value) -> bool:
    return is_number(value) and math.isfinite(value)


def _num(value, digits: int = 2) -> str:
    return f"{value:,.{digits}f}" if _finite(value) else ("—" if value is None else str(value))


def _signed(value, digits: int = 2) -> str:
    return f"{value:+.{digits}f}" if _finite(value) else "—"


def _percent(value) -> str:
    return f"{value:+.1%}" if _finite(value) else "—"


def _size_or_dash(value) -> str:
    return size_text(value) if _finite(value) and value >= 0 else "—"


def _device_mode(report: dict, device: str) -> str:
    modes = {(entry.get("latency") or {}).get(device, {}).get("mode", "measured") for entry in report["candidates"]
             if device in (entry.get("latency") or {})}
    return "/".join(sorted(modes)) or "measured"


def _candidate_rows(report: dict, devices: list[str], numbers: dict, best: str | None) -> list[dict]:
    rows = []
    for row in summary_rows(report):
        latency = []
        for device in devices:
            stats, speedup = row["latency"].get(device, (None, None))
            latency.append({"p50": stats.get("p50_ms") if stats else None,
                            "mode": stats.get("mode", "measured") if stats else None,
                            "speedup": speed_text(speedup) if _finite(speedup) and speedup > 0 else "—",
                            "slower": _finite(speedup) and speedup < 1})
        rows.append({**row, "number": numbers[row["name"]], "status": _status(row["passed"]),
                     "baseline": row["name"] == report["baseline"], "best": row["name"] == best,
                     "latency": latency, "delta": row.get("delta")})
    return rows


def _comparison(report: dict) -> dict | None:
    against = report.get("against")
    if not against:
        return None
    return {"report": against.get("report"), "notes": against.get("notes") or [],
            "devices": comparison_devices(report), "rows": comparison_rows(report)}


def _latency_rows(report: dict, devices: list[str]) -> list[dict]:
    rows = []
    for entry in report["candidates"]:
        for device in devices:
            stats = (entry.get("latency") or {}).get(device)
            if isinstance(stats, dict):
                rows.append({"name": entry["name"], "device": device, "mode": stats.get("mode", "measured"),
                             "threads": stats.get("threads"), **{key: stats.get(key) for key in (
                                 "p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput", "load_ms", "first_run_ms",
                                 "peak_rss_mb", "runs")}})
    return rows


def _gate_rows(report: dict) -> list[dict]:
    return [{"name": entry["name"], "gate": name, "value": None, "limit": None, "reference": "", "reason": None,
             "change_ms": None, "noise_ms": None, **gate, "status": _status(gate.get("passed"))}
            for entry in report["candidates"] for name, gate in (entry.get("gates") or {}).items()]


def _coverage_rows(report: dict) -> list[dict]:
    from edgeslim.core.coverage import FAMILIES, float_node_names, kernel_counts_text, mostly_float, provider_label

    rows = []
    for entry in report["candidates"]:
        coverage = entry.get("int8_coverage")
        if not isinstance(coverage, dict):
            continue
        families = coverage.get("families") if isinstance(coverage.get("families"), dict) else {}
        counts = []
        for family in FAMILIES:
            counted = families.get(family)
            if isinstance(counted, dict) and all(isinstance(counted.get(k), int) for k in ("int8", "float")):
                total = counted["int8"] + counted["float"]
                counts.append({"family": family, "int8": counted["int8"], "total": total,
                               "share": counted["int8"] / total if total > 0 else 0.0})
        form = entry.get("int8_form") if isinstance(entry.get("int8_form"), dict) else {}
        rows.append({"name": entry["name"], "provider": provider_label(coverage), "families": counts,
                     "counts": kernel_counts_text(coverage),
                     "mostly_float": mostly_float(coverage) and form.get("chosen") != "weights",
                     "in_float": float_node_names(coverage)[:8], "form": form_text(form).removeprefix("; ")})
    return rows


def _quantization(report: dict) -> list[dict]:
    sections = []
    for entry in report["candidates"]:
        control, rows = entry.get("accuracy_control"), entry.get("sensitivity") or []
        if not control and not rows:
            continue
        control = {"in_float": [], **control} if control else None
        rows = [{"alone_quantized": None, "drop_quantized": None, **row} for row in rows]
        sections.append({"name": entry["name"], "control": control, "rows": rows,
                         "plot": plots.sensitivity_plot(rows) if rows and plots.available() else None})
    return sections
