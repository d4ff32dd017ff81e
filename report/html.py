"""A self-contained HTML page: the Markdown tables plus an accuracy-against-size plot (inline SVG)."""
from __future__ import annotations

import html

from edgeslim.report.markdown import render_markdown


def _scatter(report: dict, width: int = 520, height: int = 320) -> str:
    points = [(entry["size_bytes"] / 1024, entry["accuracy"], entry["name"])
              for entry in report["candidates"] if entry.get("accuracy") is not None]
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = 0.0, max(xs) * 1.1
    y0, y1 = min(ys) - 1.0, max(ys) + 0.5
    pad = 50

    def sx(x):
        return pad + (x - x0) / (x1 - x0 or 1) * (width - 2 * pad)

    def sy(y):
        return height - pad - (y - y0) / (y1 - y0 or 1) * (height - 2 * pad)

    marks = "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="#3465a4"/>'
                    f'<text x="{sx(x) + 7:.1f}" y="{sy(y) - 7:.1f}" font-size="12">{html.escape(n)}</text>'
                    for x, y, n in points)
    axes = (f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#555"/>'
            f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#555"/>'
            f'<text x="{width / 2}" y="{height - 12}" font-size="12" text-anchor="middle">size (KB)</text>'
            f'<text x="14" y="{height / 2}" font-size="12" transform="rotate(-90 14 {height / 2})" '
            f'text-anchor="middle">accuracy</text>'
            f'<text x="{pad}" y="{height - pad + 16}" font-size="10">{x0:.0f}</text>'
            f'<text x="{width - pad}" y="{height - pad + 16}" font-size="10">{x1:.0f}</text>'
            f'<text x="{pad - 6}" y="{height - pad}" font-size="10" text-anchor="end">{y0:.1f}</text>'
            f'<text x="{pad - 6}" y="{pad + 4}" font-size="10" text-anchor="end">{y1:.1f}</text>')
    return f'<svg width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">{axes}{marks}</svg>'


def render_html(report: dict) -> str:
    """Markdown tables shown as preformatted text beside the plot: readable with no renderer."""
    body = html.escape(render_markdown(report))
    return ("<!doctype html><html><head><meta charset='utf-8'><title>edgeslim report</title>"
            "<style>body{font-family:sans-serif;margin:2em}pre{font-size:12px}</style></head><body>"
            f"<h1>edgeslim report</h1><h2>Accuracy against size</h2>{_scatter(report)}"
            f"<pre>{body}</pre></body></html>\n")
