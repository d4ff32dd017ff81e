"""The demo run's report page in a real headless Chromium, and `report --against` on real runs.

Set EDGESLIM_REPORT_SCREENSHOT=docs/report.png to keep the page's screenshot (the README's).
"""
import json
import os
import shutil
import struct

import pytest

from edgeslim.report.pareto import front
from edgeslim.report.plots import available as plots_available
from helpers import spec

pytestmark = pytest.mark.slow
NAMES = ["fp32", "int8", "pruned-kd", "pruned-kd-int8"]

# Runs in the page after layout; its value comes back as JSON (see conftest.Chromium.probe).
PROBE = """
const page = document.documentElement;
const box = element => { const r = element.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; };
const plot = svg => svg && ({
  svg: svg instanceof SVGSVGElement, box: box(svg),
  marks: [...svg.querySelectorAll('g.mark.candidate')].map(g => ({name: g.dataset.candidate, box: box(g),
                                                                  pareto: g.classList.contains('pareto')})),
  old: svg.querySelectorAll('g.mark.old').length,
  front: svg.querySelectorAll('g.pareto-front').length,
  baseline: [...svg.querySelectorAll('g.mark.baseline')].map(g => g.dataset.candidate),
  labels: [...svg.querySelectorAll('g.label')].map(box),
});
return {
  innerWidth: innerWidth, scrollWidth: page.scrollWidth, bodyWidth: document.body.scrollWidth,
  tables: [...document.querySelectorAll('table')].map(t => t.id || t.className),
  pre: document.querySelectorAll('pre').length,
  rows: [...document.querySelectorAll('#candidates tbody tr')].map(tr => tr.dataset.candidate),
  gateCells: [...document.querySelectorAll('#candidates tbody td:last-child')].map(td => td.className),
  modes: [...document.querySelectorAll('#latency tbody .mode')].map(e => e.textContent),
  verdict: document.getElementById('verdict').textContent.trim(),
  byId: {front: !!document.getElementById('pareto-front'),
         baseline: document.getElementById('baseline')?.dataset.candidate},
  size: plot(document.getElementById('size-plot')),
  latency: [...document.querySelectorAll('svg.plot[id^="latency-"]')].map(plot),
  curves: [...document.querySelectorAll('figure.curves-figure svg.plot')].map(svg => ({
    id: svg.id, box: box(svg),
    loss: [...svg.querySelectorAll('g.curve.loss')].map(g => ({name: g.dataset.candidate, box: box(g)})),
    val: [...svg.querySelectorAll('g.curve.val')].map(g => ({name: g.dataset.candidate, box: box(g)})),
  })),
  tuning: [...document.querySelectorAll('#fine-tuning tbody tr')].map(
    tr => [tr.dataset.kind, ...[...tr.cells].map(td => td.textContent)]),
  meta: Object.fromEntries([...document.querySelectorAll('#metadata dt')].map(
    dt => [dt.textContent, dt.nextElementSibling.textContent])),
};
"""


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _inside(inner, outer) -> bool:
    return inner[2] > inner[0] and inner[0] >= outer[0] and inner[2] <= outer[2] and \
        inner[1] >= outer[1] and inner[3] <= outer[3]


def _check_plot(plot: dict, report: dict, cost) -> None:
    """One visible mark per candidate, inside the plot; the baseline marked; the front the one of the data."""
    assert plot["svg"]
    assert [mark["name"] for mark in plot["marks"]] == NAMES
    assert all(_inside(mark["box"], plot["box"]) for mark in plot["marks"]), plot
    assert plot["baseline"] == ["fp32"] and plot["front"] == 1
    expected = front({e["name"]: (e["accuracy"], cost(e)) for e in report["candidates"]})
    assert {mark["name"] for mark in plot["marks"] if mark["pareto"]} == expected
    labels = plot["labels"]
    assert len(labels) == len(NAMES)
    assert not any(_overlap(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]), labels


def _check_curves(seen: dict, report: dict) -> None:
    """The demo distils pruned-kd (two epochs; pruned-kd-int8 shares its torch steps): one figure, a loss
    and a val line for each of the two, inside the figure; their table rows hold the manifest's figures."""
    distilled = {e["name"]: e["distill_history"] for e in report["candidates"] if e.get("distill_history")}
    assert list(distilled) == ["pruned-kd", "pruned-kd-int8"]
    assert all([epoch["epoch"] for epoch in history] == [1, 2] for history in distilled.values())
    assert not any(e.get("qat_history") for e in report["candidates"])
    (figure,) = seen["curves"]
    assert figure["id"] == "distill-plot"
    for panel in ("loss", "val"):
        assert [line["name"] for line in figure[panel]] == list(distilled)
        assert all(_inside(line["box"], figure["box"]) for line in figure[panel]), figure
    rows = []
    for name, history in distilled.items():
        scored = [(epoch["val"], epoch["epoch"]) for epoch in history]
        best, at = max(scored, key=lambda pair: pair[0])
        rows.append(["distill_history", name, "distillation", "2",
                     f"{history[0]['loss']:,.4f} → {history[1]['loss']:,.4f}", f"{best:,.2f}", str(at),
                     f"{sum(epoch['seconds'] for epoch in history):,.1f}"])
    assert seen["tuning"] == rows


def _check_header(meta: dict, report: dict) -> None:
    """The header names the model (spec, parameters), its weights (trained here from the factory's) and data."""
    source = report["run"]["source_model"]
    assert all(entry["source_model"] == source for entry in report["candidates"])
    assert source["model"] == spec("small_cnn") and source["trained"] and source["weights"] is None
    assert meta["model"] == f"{spec('small_cnn')} · {source['params']:,} params"
    assert meta["weights"] == (f"initial weights of the factory, trained by the recipe "
                               f"(state sha256 {report['run']['weights_sha256'][:12]}…)")
    assert meta["data"] == f"{spec('digits_torch')} · sha256 {report['run']['data_sha256'][:12]}…"
    assert source["data_sha256"] == report["run"]["data_sha256"]   # built and validated on the same val split


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@pytest.mark.skipif(not plots_available(), reason="the plots need matplotlib (pip install edgeslim[report])")
def test_the_demo_report_page_in_chromium(cli, demo_run, chromium, tmp_path):
    report = json.loads((demo_run / "report.json").read_text())
    page = tmp_path / "report.html"
    result = cli("report", demo_run / "report.json", "--html", page)
    assert result.exit_code == 0, result.stderr
    seen = chromium.probe(page, PROBE)

    assert seen["innerWidth"] == 1280
    assert seen["scrollWidth"] <= 1280 and seen["bodyWidth"] <= 1280, seen  # nothing overflows at 1280 px
    assert {"candidates", "latency"} <= set(seen["tables"]) and seen["pre"] == 1  # only the probe's own <pre>
    assert seen["rows"] == NAMES
    assert seen["gateCells"] == ["none"] * 4  # the demo gives no gate: no cell says pass
    assert seen["modes"] == ["measured"] * 4
    assert seen["byId"] == {"front": True, "baseline": "fp32"}
    _check_plot(seen["size"], report, lambda e: e["size_bytes"])
    assert len(seen["latency"]) == 1
    _check_plot(seen["latency"][0], report, lambda e: e["latency"]["cpu"]["p50_ms"])
    _check_curves(seen, report)
    _check_header(seen["meta"], report)

    # The verdict: the smallest candidate within 1 % of the baseline's accuracy (no gate), its gains in figures.
    base = report["candidates"][0]
    kept = [e for e in report["candidates"][1:] if base["accuracy"] - e["accuracy"] <= 0.01 * base["accuracy"]]
    if kept:
        best = min(kept, key=lambda e: e["size_bytes"])
        assert seen["verdict"].startswith(f"Verdict. Ship {best['name']}:"), seen["verdict"]
        assert f"{base['size_bytes'] / best['size_bytes']:.2f}x smaller" in seen["verdict"]
        assert f"accuracy {best['accuracy'] - base['accuracy']:+.2f} points" in seen["verdict"]
    else:
        assert "keep the baseline fp32" in seen["verdict"]

    shot = chromium.screenshot(page, tmp_path / "report.png", 1280, 1150)
    assert _png_size(shot) == (1280, 1150)
    keep = os.environ.get("EDGESLIM_REPORT_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


def _old_copy(demo_run, tmp_path, change) -> str:
    old = json.loads((demo_run / "report.json").read_text())
    change(old)
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    return path


def test_report_against_an_old_run_shows_old_new_and_delta(cli, demo_run, tmp_path):
    report = json.loads((demo_run / "report.json").read_text())
    int8 = report["candidates"][1]

    def older(old):
        old["candidates"][1]["accuracy"] += 3.0           # the old int8 was 3 points better
        old["candidates"][2]["size_bytes"] *= 2           # and the old pruned-kd twice the size

    old = _old_copy(demo_run, tmp_path, older)
    result = cli("report", demo_run / "report.json", "--against", old, "--html", tmp_path / "r.html")
    assert result.exit_code == 0, result.stderr  # no gate given: it passes, but says so
    assert f"[edgeslim] warning: int8 lost 3 points of accuracy against {old}" in result.stderr
    rows = {line.split(" | ")[0]: line for line in result.stdout.splitlines() if "(same bundle)" in line}
    assert rows["| `int8` (same bundle)"].startswith(
        f"| `int8` (same bundle) | {int8['accuracy'] + 3:.2f} | {int8['accuracy']:.2f} | -3.00 |")
    assert " | -50.0% | " in rows["| `pruned-kd` (same bundle)"]  # size: half the old one
    page = (tmp_path / "r.html").read_text()
    assert 'id="comparison"' in page
    if plots_available():  # the old run overlaid: one hollow mark per old candidate in each plot
        assert page.count('class="mark old"') == 8


def test_a_renamed_candidate_is_warned_about_and_gated_against_the_baseline(cli, demo_run, tmp_path):
    old = _old_copy(demo_run, tmp_path, lambda r: r["candidates"][2].update(name="pkd"))
    result = cli("report", demo_run / "report.json", "--against", old, "--max-accuracy-drop", "100",
                 "--json", tmp_path / "gated.json")
    assert result.exit_code == 0, result.stderr
    assert f"[edgeslim] warning: pruned-kd has no namesake in {old}: gated against the baseline fp32 instead" \
        in result.stderr
    gated = json.loads((tmp_path / "gated.json").read_text())
    fp32, pruned = gated["candidates"][0], gated["candidates"][2]
    gate = pruned["gates"]["accuracy_drop"]
    assert gate["reference"] == f"baseline fp32 ({old} has no pruned-kd)" and gate["passed"]
    assert gate["value"] == pytest.approx(fp32["accuracy"] - pruned["accuracy"], abs=1e-6)
    assert gated["against"]["unmatched"] == ["pruned-kd"]
    assert gated["candidates"][1]["gates"]["accuracy_drop"]["reference"] == "previous int8"


def test_a_report_of_another_model_is_refused(cli, demo_run, tmp_path):
    def other(old):
        old["run"]["model"] = old["recipe"]["model"] = "models/resnet.py:resnet18"
        for source in [old["run"]["source_model"], *(entry["source_model"] for entry in old["candidates"])]:
            source.update(model="models/resnet.py:resnet18", params=11689512)

    old = _old_copy(demo_run, tmp_path, other)
    refused = cli("report", demo_run / "report.json", "--against", old)
    assert refused.exit_code == 2
    params = json.loads((demo_run / "report.json").read_text())["run"]["source_model"]["params"]
    weights = "initial weights of the factory, trained by the recipe"
    assert refused.stderr == (f"edgeslim: error: {old} is a report of 'models/resnet.py:resnet18 ({weights}, "
                              f"11,689,512 params)', this is '{spec('small_cnn')} ({weights}, {params:,} params)'; "
                              "pass --allow-different-model to compare anyway\n")
    allowed = cli("report", demo_run / "report.json", "--against", old, "--allow-different-model")
    assert allowed.exit_code == 0 and "compared anyway (--allow-different-model)" in allowed.stderr


def test_an_unchanged_bundle_never_fails_the_latency_gate(cli, demo_run, tmp_path):
    """The same bundle validated 21 times: gated against the first with no latency increase allowed at all,
    it passes every time, whatever the timing noise (it is said where the noise would have failed it)."""
    def validate(out):
        result = cli("validate", demo_run / "int8", "--data", spec("digits_torch"), "--runs", "20", "--warmup", "2",
                     "--out", out)
        assert result.exit_code == 0, result.stderr
        return out

    first = validate(tmp_path / "first.json")
    slower = 0
    for attempt in range(20):
        again = validate(tmp_path / f"again{attempt}.json")
        result = cli("report", again, "--against", first, "--max-latency-increase", "0", "--json",
                     tmp_path / "gated.json")
        assert result.exit_code == 0, (attempt, result.stderr)
        gate = json.loads((tmp_path / "gated.json").read_text())["candidates"][0]["gates"]["latency_increase[cpu]"]
        assert gate["passed"] and gate["reference"] == "previous int8"
        if gate["value"] > 0:  # slower by noise: passed for being the same bundle
            slower += 1
            assert gate["reason"].startswith("the same bundle (equal sha256)")
    print(f"the unchanged bundle measured slower than the first time in {slower} of 20 tries")
