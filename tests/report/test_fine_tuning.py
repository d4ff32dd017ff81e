"""Distillation's and QAT's epochs in the report: carried from the manifest by validate, a table in both
renderers, and one figure per fine-tuning in the page with a line per candidate."""
import json
import re

import pytest
from tiny import tiny_report, write_tiny_bundle

from edgeslim.core.errors import ConfigError
from edgeslim.report import plots
from edgeslim.report.html import render_html
from edgeslim.report.markdown import render_markdown
from edgeslim.report.schema import check_report
from edgeslim.report.summary import history_rows
from helpers import spec

needs_matplotlib = pytest.mark.skipif(not plots.available(), reason="needs matplotlib (pip install edgeslim[report])")

# Best val at epoch 2 (epoch 3 is worse); 1.5 + 1.25 + 1.0 seconds.
DISTILL = [{"epoch": 1, "loss": 1.2, "val": 90.0, "lr": 1e-3, "seconds": 1.5},
           {"epoch": 2, "loss": 0.7, "val": 95.5, "lr": 5e-4, "seconds": 1.25},
           {"epoch": 3, "loss": 0.6, "val": 95.0, "lr": 0.0, "seconds": 1.0}]
QAT = [{"epoch": 1, "loss": 0.31, "val": None, "lr": 1e-5, "seconds": 2.0},
       {"epoch": 2, "loss": 0.29, "val": None, "lr": 0.0, "seconds": 2.5}]


def _report() -> dict:
    """fp32 (no fine-tuning), int8 distilled three epochs, qat distilled two and then QAT two."""
    report = tiny_report()
    report["candidates"][1]["distill_history"] = DISTILL
    report["candidates"].append(dict(report["candidates"][1], name="qat", distill_history=DISTILL[:2],
                                     qat_history=QAT))
    check_report(json.loads(json.dumps(report)), "the report with histories")
    return report


def test_each_fine_tuning_in_one_row():
    rows = history_rows(_report())
    assert [(row["name"], row["kind"]) for row in rows] == [("int8", "distillation"), ("qat", "distillation"),
                                                            ("qat", "QAT")]
    int8, _, qat = rows
    assert (int8["epochs"], int8["first_loss"], int8["last_loss"]) == (3, 1.2, 0.6)
    assert (int8["best_val"], int8["best_epoch"]) == (95.5, 2) and int8["seconds"] == pytest.approx(3.75)
    assert (qat["best_val"], qat["best_epoch"]) == (None, None) and qat["seconds"] == pytest.approx(4.5)
    assert history_rows(tiny_report()) == []


def test_quantization_aware_epochs_are_named_as_simulated():
    report = _report()
    report["candidates"][1]["distill_history"] = DISTILL[:2] + [dict(DISTILL[2], simulated="dynamic_int8")]
    check_report(json.loads(json.dumps(report)), "the report with a quantization-aware epoch")
    kinds = [row["kind"] for row in history_rows(report)]
    assert kinds == ["distillation; epoch 3 through simulated dynamic_int8", "distillation", "QAT"]
    assert "| `int8` | distillation; epoch 3 through simulated dynamic_int8 | 3 |" in render_markdown(report)


def test_the_markdown_has_the_compact_table():
    text = render_markdown(_report())
    assert ("## Fine-tuning per epoch\n\n| candidate | fine-tuning | epochs | train loss, first → last | best val "
            "| seconds |\n|---|---|---|---|---|---|\n"
            "| `int8` | distillation | 3 | 1.2 → 0.6 | 95.50 at epoch 2 | 3.8 |\n"
            "| `qat` | distillation | 2 | 1.2 → 0.7 | 95.50 at epoch 2 | 2.8 |\n"
            "| `qat` | QAT | 2 | 0.31 → 0.29 | — | 4.5 |\n") in text
    assert "Fine-tuning" not in render_markdown(tiny_report())


@needs_matplotlib
def test_one_figure_per_fine_tuning_with_a_line_per_candidate():
    page = render_html(_report())

    def figure(plot_id):
        start = page.index(f'id="{plot_id}-plot"')
        return page[start:page.index("</svg>", start)]

    distill, qat = figure("distill"), figure("qat")
    lines = re.compile(r'<g id="([^"]+)" class="curve (loss|val)" data-candidate="([^"]+)">')
    assert lines.findall(distill) == [("distill-loss-2", "loss", "int8"), ("distill-loss-3", "loss", "qat"),
                                      ("distill-val-2", "val", "int8"), ("distill-val-3", "val", "qat")]
    assert lines.findall(qat) == [("qat-loss-3", "loss", "qat")]  # no val recorded: the loss panel alone
    assert "val accuracy (top1)" in distill and "val accuracy" not in qat
    rows = re.findall(r'<tr data-candidate="([^"]+)" data-kind="([^"]+)">', page)
    assert rows == [("int8", "distill_history"), ("qat", "distill_history"), ("qat", "qat_history")]
    assert "<td>1.2000 → 0.6000</td><td>95.50</td><td>2</td><td>3.8</td>" in page


def test_no_history_no_section():
    page = render_html(tiny_report())
    assert "Fine-tuning per epoch" not in page and 'id="fine-tuning"' not in page and "curve loss" not in page


def test_a_history_of_the_wrong_type_is_refused():
    report = _report()
    report["candidates"][1]["distill_history"] = [{"epoch": 1, "loss": "low"}]
    with pytest.raises(ConfigError, match="distill_history"):
        check_report(report, "report r.json")


def test_validate_carries_the_epochs_from_the_manifest(cli, tmp_path):
    bundle = write_tiny_bundle(tmp_path / "distilled", "distilled")
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["metrics"].update(distill_history=DISTILL, qat_history=QAT)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = cli("validate", bundle, "--data", spec("digits"), "--runs", "5", "--warmup", "1",
                 "--out", tmp_path / "report.json")
    assert result.exit_code == 0, result.stderr
    entry = json.loads((tmp_path / "report.json").read_text())["candidates"][0]
    assert entry["distill_history"] == DISTILL and entry["qat_history"] == QAT
    shown = cli("report", tmp_path / "report.json")
    assert "| `distilled` | distillation | 3 | 1.2 → 0.6 | 95.50 at epoch 2 | 3.8 |" in shown.stdout
