"""Figures over runs (`edgeslim history --plot`): accuracy, size and p50 per device, one series per candidate.

Drawn with matplotlib in the report's style (edgeslim.report.plots). Each candidate's line in each
panel is a group `class="series candidate"` with `data-candidate` and `data-panel`, so that a test
or a stylesheet finds it. The x axis numbers the runs, oldest first, as `edgeslim history` lists them.
"""
from __future__ import annotations

import math

from edgeslim.report.plots import _gid, _style, _svg, _tagged
from edgeslim.report.schema import is_number


def _finite(value) -> bool:
    return is_number(value) and math.isfinite(value)


def panels(records: list[dict]) -> list[tuple[str, str, object]]:
    """(panel id, y label, figure of a candidate's record entry) for accuracy, size and each device's p50."""
    devices = []
    for record in records:
        for entry in record["candidates"]:
            devices += [device for device in entry.get("p50_ms") or {} if device not in devices]
    metric = next((record["metric"] for record in reversed(records) if record.get("metric")), None)
    found = [("accuracy", f"accuracy ({metric})" if metric and len(metric) <= 30 else "accuracy",
              lambda entry: entry.get("accuracy")),
             ("size", "size (KB)", lambda entry: entry["size_bytes"] / 1024 if _finite(entry.get("size_bytes"))
              else None)]
    for index, device in enumerate(devices, 1):
        found.append((f"p50-{index}", f"p50 on {device} (ms)",
                      lambda entry, device=device: (entry.get("p50_ms") or {}).get(device)))
    return found


def candidate_names(records: list[dict]) -> list[str]:
    """Every candidate of the runs, in the order they first appear."""
    names = []
    for record in records:
        names += [entry["name"] for entry in record["candidates"] if entry["name"] not in names]
    return names


def trend_plot(records: list[dict]) -> str:
    """One SVG: a panel per figure, runs along x, one line with marks per candidate (gaps where a run lacks it)."""
    names = candidate_names(records)
    shown = panels(records)
    with _style("history"):
        from matplotlib.figure import Figure

        fig = Figure(figsize=(7.2, 1.0 + 2.3 * len(shown)), dpi=72)
        axes = fig.subplots(len(shown), 1, sharex=True, squeeze=False)[:, 0]
        fig.subplots_adjust(left=0.12, right=0.97, top=1 - 0.3 / (1.0 + 2.3 * len(shown)),
                            bottom=0.6 / (1.0 + 2.3 * len(shown)), hspace=0.25)
        runs = list(range(1, len(records) + 1))
        ids = {}
        for ax, (panel, label, figure) in zip(axes, shown):
            ax.set_ylabel(label)
            ax.grid(True, color="#e0e0e0", linewidth=0.8)
            for number, name in enumerate(names, 1):
                ys = []
                for record in records:
                    entry = next((e for e in record["candidates"] if e["name"] == name), None)
                    value = figure(entry) if entry else None
                    ys.append(value if _finite(value) else math.nan)
                if all(math.isnan(y) for y in ys):
                    continue
                (artist,) = ax.plot(runs, ys, marker="o", markersize=5, linewidth=1.5, label=name,
                                    color=f"C{(number - 1) % 10}")
                ids[_gid(artist, f"{panel}_{number}")] = (f"{panel}-series-{number}", "series candidate", name)
        axes[0].legend(loc="best", fontsize=9, frameon=False)
        axes[-1].set_xlabel("run (oldest first, as `edgeslim history` lists them)")
        axes[-1].set_xticks(runs if len(runs) <= 20 else runs[:: math.ceil(len(runs) / 20)])
        svg = _svg(fig)
    svg = _tagged(svg, ids, "history")
    for element_id, _, _ in ids.values():  # the panel each series belongs to
        panel = element_id.rpartition("-series-")[0]
        svg = svg.replace(f'<g id="{element_id}" class="series candidate"',
                          f'<g id="{element_id}" class="series candidate" data-panel="{panel}"')
    return svg
