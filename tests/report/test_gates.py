"""Gates on a report of known numbers: exit 1 when one fails, and the report says which."""
import json

import pytest

from edgeslim.report.gates import GateConfig, apply_gates, failures
from edgeslim.report.html import render_html
from edgeslim.report.markdown import render_markdown
from edgeslim.report.plots import available as plots_available


def _entry(name, accuracy, p50, size):
    stats = {"p50_ms": p50, "p90_ms": p50 * 1.1, "p99_ms": p50 * 1.3, "mean_ms": p50, "throughput": 1000 / p50,
             "peak_rss_mb": 80.0, "load_ms": 5.0, "first_run_ms": 1.0, "threads": 2}
    return {"name": name, "bundle": f"out/{name}", "size_bytes": size, "params": size // 4, "accuracy": accuracy,
            "latency": {"cpu": stats}, "compression": [], "gates": {}, "passed": True}


def _report(*entries):
    return {"format": "edgeslim-report/1", "baseline": entries[0]["name"], "candidates": list(entries),
            "settings": {"metric": "top1", "bench": {"runs": 100, "warmup": 10, "batch": 1}}}


def test_gates_against_the_baseline():
    report = _report(_entry("fp32", 98.0, 1.0, 4000), _entry("int8", 97.5, 1.2, 1000), _entry("tiny", 95.0, 0.4, 500))
    assert apply_gates(report, GateConfig(max_accuracy_drop=1.0, max_latency_increase=0.1)) is False
    int8, tiny = report["candidates"][1], report["candidates"][2]
    assert int8["gates"]["accuracy_drop"] == {"value": 0.5, "limit": 1.0, "reference": "baseline fp32", "passed": True}
    assert int8["gates"]["latency_increase[cpu]"]["value"] == pytest.approx(0.2)
    assert not int8["passed"] and not tiny["passed"]
    assert failures(report) == [
        "int8: latency_increase[cpu] 0.2 exceeds 0.1 (against baseline fp32)",
        "tiny: accuracy_drop 3 exceeds 1 (against baseline fp32)",
    ]


def test_gates_against_an_older_report():
    old = _report(_entry("fp32", 98.0, 1.0, 4000), _entry("int8", 97.9, 1.0, 1000))
    new = _report(_entry("fp32", 98.0, 1.0, 4000), _entry("int8", 97.0, 1.0, 1000))
    assert apply_gates(new, GateConfig(max_accuracy_drop=0.5), against=old) is False
    assert new["candidates"][1]["gates"]["accuracy_drop"]["reference"] == "previous int8"


def test_cli_report_exit_codes(cli, tmp_path):
    path = tmp_path / "r.json"
    path.write_text(json.dumps(_report(_entry("fp32", 98.0, 1.0, 4000), _entry("int8", 96.0, 0.8, 1000))))
    passed = cli("report", path, "--max-accuracy-drop", "2.5", "--html", tmp_path / "r.html")
    assert passed.exit_code == 0
    assert "| `int8` | 1000 B | 4.00x | 250 | 96.00 | -2.00 | 0.800 | 1.25x |" in passed.stdout
    assert "<svg" in (tmp_path / "r.html").read_text()
    failed = cli("report", path, "--max-accuracy-drop", "1")
    assert failed.exit_code == 1
    assert "int8: accuracy_drop 2 exceeds 1" in failed.stderr
    bad = cli("report", path, "--max-accuracy-drop", "-1")
    assert bad.exit_code == 2 and "--max-accuracy-drop=-1.0 is not allowed" in bad.stderr
    assert cli("report", tmp_path / "none.json").exit_code == 2


def test_markdown_and_html_render():
    report = _report(_entry("fp32", 98.0, 1.0, 4000), _entry("int8", 97.5, 1.2, 1000))
    text = render_markdown(report)
    assert "## Latency" in text and "| `int8` | cpu | measured | 2 | 1.200 |" in text
    page = render_html(report)
    assert "<table" in page and "| `int8` |" not in page  # real tables, not the Markdown in a <pre>
    if plots_available():  # one mark per candidate in each plot: accuracy against size, and against p50 on cpu
        assert page.count('class="mark candidate') == 4
