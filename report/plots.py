"""The report's charts, drawn with matplotlib as inline SVG (optional: `pip install edgeslim[report]`).

One mark per candidate, numbered as in the report's tables (the numbers, not the names, sit beside
the marks, placed so that they do not collide). The groups a browser test or a stylesheet may
look for carry ids and classes: `class="mark candidate"` on each candidate's mark (also `baseline`
on the baseline's, `old` on the old run's hollow marks), `id="pareto-front"` and `id="baseline"`
in the accuracy-against-size plot (`latency-N-pareto-front`, `latency-N-baseline` in the Nth device's).
The per-epoch curves of distillation and QAT are lines, one per candidate: `class="curve loss"` and
`class="curve val"`, each with `data-candidate`.
"""
from __future__ import annotations

import html
import io
import math
import re

from edgeslim.report.pareto import front
from edgeslim.report.schema import is_number

INSTALL_HINT = "pip install edgeslim[report]"
# Figures beyond these bounds cannot be placed on a log axis (or are not sizes and times); left out.
_LOW, _HIGH = 1e-30, 1e30
_COLOURS = {True: "#2e7d32", False: "#c62828", None: "#1565c0"}   # passed, failed, not gated
_BASELINE_COLOUR = "#424242"
_NEAR = [(7, 5), (7, -13), (-15, 5), (-15, -13), (10, -4), (-18, -4), (-4, 10), (-4, -18),
         (16, 12), (16, -20), (-24, 12), (-24, -20)]
# Then further out, for marks that crowd: a label is never drawn over another.
_OFFSETS = _NEAR + [(dx * 2, dy * 2) for dx, dy in _NEAR] + [(dx * 3, dy * 3) for dx, dy in _NEAR]


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def numbering(report: dict) -> dict[str, int]:
    """Each candidate's number on the plots, in the report's order from 1."""
    return {entry["name"]: index for index, entry in enumerate(report["candidates"], 1)}


def _finite(value) -> bool:
    return is_number(value) and math.isfinite(value) and abs(value) < _HIGH


def _positive(value) -> bool:
    return _finite(value) and value > _LOW


def size_plot(report: dict) -> str | None:
    """Accuracy against size (KB, log axis); None when no candidate has both figures."""
    def point(entry):
        size, accuracy = entry.get("size_bytes"), entry.get("accuracy")
        return (size / 1024, accuracy) if _positive(size) and _finite(accuracy) else None

    return _scatter(report, point, "size (KB, log scale)", "size", "")


def latency_plots(report: dict, devices: list[str]) -> dict[str, str]:
    """Per device: accuracy against p50 (ms, log axis)."""
    plots = {}
    for index, device in enumerate(devices, 1):
        def point(entry, device=device):
            stats = (entry.get("latency") or {}).get(device)
            p50 = stats.get("p50_ms") if isinstance(stats, dict) else None
            accuracy = entry.get("accuracy")
            return (p50, accuracy) if _positive(p50) and _finite(accuracy) else None

        svg = _scatter(report, point, "p50 latency (ms, log scale)", f"latency-{index}", f"latency-{index}-")
        if svg:
            plots[device] = svg
    return plots


def _scatter(report: dict, point, xlabel: str, plot_id: str, prefix: str) -> str | None:
    numbers = numbering(report)
    points = {entry["name"]: point(entry) for entry in report["candidates"]}
    points = {name: xy for name, xy in points.items() if xy is not None}
    if not points:
        return None
    olds = {entry["name"]: point(entry) for entry in (report.get("against") or {}).get("candidates", [])}
    olds = {name: xy for name, xy in olds.items() if xy is not None}
    status = {entry["name"]: entry.get("passed") for entry in report["candidates"]}
    with _style(plot_id):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7.2, 4.2), dpi=72)
        ax = fig.add_subplot()
        fig.subplots_adjust(left=0.1, right=0.97, top=0.95, bottom=0.13)
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(_metric_label(report))
        ax.grid(True, which="major", color="#e0e0e0", linewidth=0.8)
        _limits(ax, list(points.values()) + list(olds.values()))
        _log_axis(ax)
        ids = {}
        on_front = front({name: (xy[1], xy[0]) for name, xy in points.items()})
        line = sorted(points[name] for name in on_front)
        if len(line) > 1:
            (artist,) = ax.step([x for x, _ in line], [y for _, y in line], where="post", color="#f9a825",
                                linewidth=2, linestyle="--", zorder=1)
        else:  # one candidate beats all the others on both axes: the front is that point, ringed
            (artist,) = ax.plot([x for x, _ in line], [y for _, y in line], marker="o", markersize=18,
                                markerfacecolor="none", markeredgecolor="#f9a825", markeredgewidth=2,
                                linestyle="none", zorder=1)
        ids[_gid(artist, "front")] = (f"{prefix}pareto-front", "pareto-front", None)
        for name, (x, y) in olds.items():
            (artist,) = ax.plot([x], [y], marker="o", markersize=9, markerfacecolor="none", markeredgewidth=1.5,
                                color="#9e9e9e", linestyle="none", zorder=2)
            ids[_gid(artist, f"old{numbers.get(name, 0)}")] = (f"{plot_id}-old-{numbers.get(name, 0)}", "mark old",
                                                               name)
            if name in points:
                ax.annotate("", xy=points[name], xytext=(x, y), zorder=2,
                            arrowprops={"arrowstyle": "->", "color": "#bdbdbd", "linewidth": 1})
        for name, (x, y) in points.items():
            baseline = name == report["baseline"]
            colour = _BASELINE_COLOUR if baseline else _COLOURS.get(status.get(name), _COLOURS[None])
            (artist,) = ax.plot([x], [y], marker="D" if baseline else "o", markersize=9 if baseline else 8,
                                color=colour, markeredgecolor="white", linestyle="none", zorder=3)
            classes = "mark candidate" + (" baseline" if baseline else "") + (" pareto" if name in on_front else "")
            element_id = f"{prefix}baseline" if baseline else f"{plot_id}-candidate-{numbers[name]}"
            ids[_gid(artist, f"mark{numbers[name]}")] = (element_id, classes, name)
        _number_labels(fig, ax, points, numbers, ids, plot_id)
        svg = _svg(fig)
    return _tagged(svg, ids, plot_id)


def _log_axis(ax) -> None:
    """The x axis (its limits set) as log scale labelled in plain numbers: 0.5, 1, 2; minor ticks labelled
    too where it spans less than about a decade and a half, so that it never has one label alone."""
    from matplotlib.ticker import FuncFormatter

    low, high = ax.get_xlim()
    decades = math.log10(high / low)

    def minor(value, _):
        digit = round(value / 10 ** math.floor(math.log10(value) + 1e-9))
        return f"{value:g}" if decades < 0.8 or (decades < 1.6 and digit in (2, 5)) else ""

    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(minor))


def _metric_label(report: dict) -> str:
    metric = (report.get("settings") or {}).get("metric")
    return f"accuracy ({metric})" if isinstance(metric, str) and len(metric) <= 40 else "accuracy"


def _limits(ax, points: list[tuple[float, float]]) -> None:
    xs, ys = [x for x, _ in points], [y for _, y in points]
    low, high = math.log10(min(xs)), math.log10(max(xs))
    margin = max((high - low) * 0.12, 0.15)
    ax.set_xlim(10 ** (low - margin), 10 ** (high + margin))
    spread = max(ys) - min(ys)
    pad = spread * 0.15 if spread > 0 else max(abs(max(ys)) * 0.01, 0.5)
    ax.set_ylim(min(ys) - pad, max(ys) + pad)


def _number_labels(fig, ax, points: dict, numbers: dict, ids: dict, plot_id: str) -> None:
    """Each mark's number at the first offset whose box meets no mark and no number placed before."""
    taken = []   # boxes in display pixels (x0, y0, x1, y1)
    marks = {name: ax.transData.transform(xy) for name, xy in points.items()}
    for px, py in marks.values():
        taken.append((px - 5, py - 5, px + 5, py + 5))
    for name, (px, py) in marks.items():
        text = str(numbers[name])
        chosen = _OFFSETS[0]
        for dx, dy in _OFFSETS:
            box = _label_box(px, py, dx, dy, text)
            if not any(_overlap(box, other) for other in taken) and _inside(box, ax):
                chosen = (dx, dy)
                break
        dx, dy = chosen
        taken.append(_label_box(px, py, dx, dy, text))
        label = ax.annotate(text, xy=points[name], xytext=(dx, dy), textcoords="offset points", fontsize=11,
                            fontweight="bold", color="#212121", zorder=4)
        ids[_gid(label, f"label{numbers[name]}")] = (f"{plot_id}-label-{numbers[name]}", "label", name)


def _label_box(px: float, py: float, dx: float, dy: float, text: str) -> tuple:
    """The box a bold 11 px number takes with its baseline at (px + dx, py + dy), as a browser measures
    it: the font's descent below the baseline, its ascent above, a little wider than the glyphs."""
    return (px + dx - 1, py + dy - 3, px + dx + 7.5 * len(text) + 1, py + dy + 11)


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _inside(box, ax) -> bool:
    x0, y0, x1, y1 = ax.bbox.extents
    return box[0] >= x0 and box[2] <= x1 and box[1] >= y0 and box[3] <= y1


def sensitivity_plot(rows: list[dict], limit: int = 12) -> str | None:
    """The accuracy a layer gains when it alone stays in float, most sensitive first."""
    rows = [row for row in rows if isinstance(row, dict) and _finite(row.get("gain_in_float"))][:limit]
    if not rows:
        return None
    with _style("sensitivity"):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7.2, 0.9 + 0.28 * len(rows)), dpi=72)
        ax = fig.add_subplot()
        fig.subplots_adjust(left=0.42, right=0.97, top=0.97, bottom=0.6 / (0.9 + 0.28 * len(rows)) + 0.05)
        names = [_clip(str(row.get("layer", "?"))).replace("$", r"\$") for row in rows][::-1]
        gains = [row["gain_in_float"] for row in rows][::-1]
        ax.barh(range(len(rows)), gains, color="#1565c0")
        ax.set_yticks(range(len(rows)), names, fontsize=9)
        ax.set_xlabel("accuracy gained with the layer alone in float (points)")
        ax.grid(True, axis="x", color="#e0e0e0")
        svg = _svg(fig)
    return _tagged(svg, {}, "sensitivity")


_LINE_COLOURS = ["#1565c0", "#c62828", "#2e7d32", "#6a1b9a", "#ef6c00", "#00838f", "#4e342e", "#ad1457"]
_LINE_STYLES = ["-", "--", ":", "-."]   # lines that coincide (candidates sharing their torch steps) both show


def history_plots(report: dict) -> dict[str, str]:
    """Per fine-tuning (`distill_history`, `qat_history`) some candidate recorded: train loss and val metric
    against epoch, two panels, one line per candidate. Each line is a group `class="curve loss"` or
    `class="curve val"` with `data-candidate`."""
    from edgeslim.report.summary import HISTORIES, epochs_of

    plots = {}
    for key in HISTORIES:
        histories = {entry["name"]: epochs_of(entry, key) for entry in report["candidates"]}
        histories = {name: epochs for name, epochs in histories.items() if epochs}
        svg = _curves(report, histories, key.removesuffix("_history")) if histories else None
        if svg:
            plots[key] = svg
    return plots


def _curves(report: dict, histories: dict[str, list[dict]], plot_id: str) -> str | None:
    numbers = numbering(report)

    def series(epochs: list[dict], figure: str) -> tuple[list, list]:
        points = [(epoch.get("epoch"), epoch.get(figure)) for epoch in epochs]
        points = [(x, y) for x, y in points if _finite(x) and _finite(y)]
        return [x for x, _ in points], [y for _, y in points]

    with_val = any(series(epochs, "val")[0] for epochs in histories.values())
    epochs_drawn = [x for epochs in histories.values() for x in series(epochs, "loss")[0] + series(epochs, "val")[0]]
    if not epochs_drawn:
        return None
    with _style(plot_id):
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator

        fig = Figure(figsize=(7.2, 3.6), dpi=72)
        axes = fig.subplots(1, 2 if with_val else 1, squeeze=False)[0]
        fig.subplots_adjust(left=0.1, right=0.98, top=0.95, bottom=0.3, wspace=0.3)
        panels = [("loss", "train loss")] + ([("val", f"val {_metric_label(report)}")] if with_val else [])
        ids = {}
        for ax, (figure, label) in zip(axes, panels):
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.grid(True, color="#e0e0e0", linewidth=0.8)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlim(min(epochs_drawn) - 0.25, max(epochs_drawn) + 0.25)  # whole epochs, even with one
            for index, (name, epochs) in enumerate(histories.items()):
                xs, ys = series(epochs, figure)
                if not xs:
                    continue
                (artist,) = ax.plot(xs, ys, color=_LINE_COLOURS[index % len(_LINE_COLOURS)],
                                    linestyle=_LINE_STYLES[index % len(_LINE_STYLES)], marker="o", markersize=4,
                                    linewidth=1.8, label=f"{numbers[name]} {_clip(name)}".replace("$", r"\$"))
                ids[_gid(artist, f"{figure}{numbers[name]}")] = (f"{plot_id}-{figure}-{numbers[name]}",
                                                                  f"curve {figure}", name)
        handles, labels = max((ax.get_legend_handles_labels() for ax in axes), key=lambda found: len(found[1]))
        fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), frameon=False, fontsize=10)
        svg = _svg(fig)
    return _tagged(svg, ids, plot_id)


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else "…" + text[-(limit - 1):]


def _gid(artist, name: str) -> str:
    gid = f"edgeslim_{name}"
    artist.set_gid(gid)
    return gid


class _style:
    """matplotlib's settings for one figure: text kept as text (the page's font), no math parsing of
    names, ids salted by the plot so that two plots on one page share none."""

    def __init__(self, salt: str):
        self.salt = salt

    def __enter__(self):
        import warnings

        import matplotlib

        self.warnings = warnings.catch_warnings()
        self.warnings.__enter__()
        warnings.simplefilter("ignore")   # matplotlib's notes on degenerate axes: the page says what is missing
        self.context = matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": f"edgeslim-{self.salt}",
                                              "font.size": 11,
                                              "font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"],
                                              "axes.spines.top": False, "axes.spines.right": False})
        self.context.__enter__()
        return self

    def __exit__(self, *exc):
        self.context.__exit__(*exc)
        self.warnings.__exit__(*exc)
        return False


def _svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    return buffer.getvalue()


def _tagged(svg: str, ids: dict, plot_id: str) -> str:
    """The SVG as an element of the page: no XML prologue or metadata, sized by the page, our groups'
    ids and classes in place of matplotlib's gids."""
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, count=1, flags=re.S)
    svg = re.sub(r'<svg ([^>]*?)width="[^"]*" height="[^"]*"',
                 lambda m: f'<svg {m.group(1)}id="{plot_id}-plot" class="plot" role="img"', svg, count=1)
    for gid, (element_id, classes, name) in ids.items():
        data = f' data-candidate="{html.escape(name, quote=True)}"' if name is not None else ""
        svg = svg.replace(f'<g id="{gid}">', f'<g id="{html.escape(element_id, quote=True)}" class="{classes}"{data}>')
    return svg
