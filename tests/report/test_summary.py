"""The verdict (which candidate to ship and what it gains) and the run's metadata, in both renderers."""
import pytest

from edgeslim.report.gates import GateConfig, apply_gates
from edgeslim.report.html import render_html
from edgeslim.report.markdown import render_markdown
from edgeslim.report.summary import metadata_items, verdict


def _entry(name, accuracy, size, p50):
    stats = {"p50_ms": p50, "p90_ms": p50, "p99_ms": p50, "mean_ms": p50, "throughput": 1000 / p50}
    return {"name": name, "size_bytes": size, "accuracy": accuracy, "latency": {"cpu": stats}}


def _report():
    return {"format": "edgeslim-report/1", "baseline": "fp32",
            "candidates": [_entry("fp32", 98.0, 4000, 1.0), _entry("int8", 97.5, 1000, 0.5),
                           _entry("tiny", 90.0, 400, 0.25), _entry("pruned", 97.9, 2000, 0.8)]}


def test_with_no_gate_the_smallest_within_one_percent_is_chosen():
    choice = verdict(_report())   # tiny is smaller but 8 points worse: not chosen
    assert choice["best"] == "int8" and choice["smaller"] == 4.0
    assert choice["accuracy_delta"] == pytest.approx(-0.5) and choice["faster"] == {"cpu": 2.0}
    assert choice["text"] == ("Ship int8: the smallest candidate that keeps the baseline's accuracy within 1% "
                              "(no gate was given). Against the baseline fp32: 4.00x smaller, accuracy -0.50 points, "
                              "2.00x faster on cpu.")


def test_gates_decide_which_candidates_may_be_chosen():
    report = _report()
    apply_gates(report, GateConfig(max_accuracy_drop=0.2))
    choice = verdict(report)
    assert choice["best"] == "pruned" and choice["smaller"] == 2.0
    assert choice["text"].startswith("Ship pruned: the smallest candidate that passes the gates. ")
    assert "1.25x faster on cpu" in choice["text"]
    apply_gates(report, GateConfig(max_accuracy_drop=0.01))
    assert verdict(report)["text"] == "No candidate passes the gates: keep the baseline fp32."


def test_a_slower_pick_says_slower():
    report = _report()
    report["candidates"][1]["latency"]["cpu"]["p50_ms"] = 1.6
    assert "1.60x slower on cpu" in verdict(report)["text"]


def test_metadata_and_verdict_in_both_renderers():
    report = _report()
    report["run"] = {"id": "20260101T000000Z-abc123", "created": "2026-01-01T00:00:00+00:00", "command": "run",
                     "host": "ci-7", "platform": "Linux-6.1-x86_64", "python": "3.11.2", "commit": "0123456789abcdef",
                     "commit_dirty": True, "model": "zoo.py:small_cnn", "weights_sha256": "f" * 64,
                     "data": "zoo.py:digits", "data_sha256": "e" * 64}
    report["created_with"] = {"edgeslim": "0.1.0", "onnxruntime": "1.32.0", "nncf": None}
    report["recipe"] = {"train": {"epochs": 3}}
    items = dict(metadata_items(report))
    assert items["run"] == "2026-01-01T00:00:00+00:00 · 20260101T000000Z-abc123 · run"
    assert items["host"] == "ci-7 · Linux-6.1-x86_64 · Python 3.11.2"
    assert items["commit"] == "0123456789ab (with uncommitted changes)"
    assert items["weights"] == "trained by the recipe · sha256 ffffffffffff…"
    assert items["versions"] == "edgeslim 0.1.0, onnxruntime 1.32.0"
    text = render_markdown(report)
    assert "- data: zoo.py:digits · sha256 eeeeeeeeeeee…\n" in text
    assert "**Verdict.** Ship int8:" in text
    page = render_html(report)
    assert "<dt>commit</dt><dd>0123456789ab (with uncommitted changes)</dd>" in page
    assert '<tr class="candidate best" data-candidate="int8">' in page
