"""`report --against`: the same model or a refusal, old/new/delta per candidate, notes for what is not compared."""
import json

import pytest

from edgeslim.core.errors import ConfigError
from edgeslim.report.compare import attach, check_same_model, comparison_rows
from edgeslim.report.gates import GateConfig, apply_gates
from edgeslim.report.markdown import render_markdown
from edgeslim.report.schema import check_report


def _entry(name, accuracy, size, p50, p90=None, sha=None):
    stats = {"p50_ms": p50, "p90_ms": p90 or p50, "p99_ms": p50, "mean_ms": p50, "throughput": 1000 / p50}
    return {"name": name, "size_bytes": size, "accuracy": accuracy, "latency": {"cpu": stats},
            **({"sha256": {"model.onnx": sha}} if sha else {})}


def _report(model, *entries):
    return {"format": "edgeslim-report/1", "baseline": entries[0]["name"], "candidates": list(entries),
            "run": {"model": model}}


def test_a_report_of_another_model_is_refused_in_one_sentence():
    new, old = _report("a/zoo.py:small_cnn", _entry("fp32", 98, 4000, 1.0)), \
        _report("b/other.py:resnet", _entry("fp32", 98, 4000, 1.0))
    with pytest.raises(ConfigError) as refused:
        check_same_model(new, old, "OLD.json", allow=False)
    assert str(refused.value) == ("OLD.json is a report of 'b/other.py:resnet', this is 'a/zoo.py:small_cnn'; "
                                  "pass --allow-different-model to compare anyway")
    note, loud = check_same_model(new, old, "OLD.json", allow=True)
    assert loud and note.endswith("compared anyway (--allow-different-model)")


def test_the_same_model_checked_out_elsewhere_is_the_same_model():
    new = _report("/home/ci/repo/models/zoo.py:small_cnn", _entry("fp32", 98, 4000, 1.0))
    old = _report("/Users/me/src/models/zoo.py:small_cnn", _entry("fp32", 98, 4000, 1.0))
    assert check_same_model(new, old, "OLD.json", allow=False) is None
    old["run"] = {}
    old["recipe"] = {"model": "pkg.models:small_cnn"}   # an old report of `run`, without a run record
    with pytest.raises(ConfigError, match="is a report of 'pkg.models:small_cnn'"):
        check_same_model(new, old, "OLD.json", allow=False)
    del old["recipe"]  # a report of `validate` records no model: said in the report, not refused
    note, loud = check_same_model(new, old, "OLD.json", allow=False)
    assert not loud and note.startswith("cannot tell whether OLD.json is a report of the same model: OLD.json")


def test_old_new_and_delta_per_candidate():
    old = _report("m.py:f", _entry("fp32", 98.0, 4000, 1.0, p90=1.1, sha="a" * 64),
                  _entry("int8", 97.0, 1000, 0.50, p90=0.52), _entry("gone", 90.0, 500, 0.2))
    new = _report("m.py:f", _entry("fp32", 98.0, 4000, 1.2, p90=1.3, sha="a" * 64),
                  _entry("int8", 94.5, 800, 0.60, p90=0.62), _entry("fresh", 96.0, 700, 0.4))
    config = GateConfig()
    apply_gates(new, config, against=old, against_name="OLD")
    notes = attach(new, old, "OLD", config)
    assert notes == ["fresh has no namesake in OLD: gated against the baseline fp32 instead",
                     "OLD's candidate gone is not in this report",
                     "int8 lost 2.5 points of accuracy against OLD (97 -> 94.5) and no gate checks it "
                     "(--max-accuracy-drop)"]
    fp32, int8, fresh = comparison_rows(new)
    assert fp32["same_bundle"] and fp32["p50"]["cpu"]["noise"]   # +20 %, but the same files
    assert int8["accuracy"] == {"old": 97.0, "new": 94.5, "delta": -2.5}
    assert int8["size"]["delta"] == pytest.approx(-0.2)
    assert int8["p50"]["cpu"]["delta"] == pytest.approx(0.2) and not int8["p50"]["cpu"]["noise"]  # 0.1 ms > 0.05
    assert not fresh["matched"] and fresh["accuracy"]["delta"] is None
    text = render_markdown(new)
    assert "- **warning:** fresh has no namesake in OLD: gated against the baseline fp32 instead" in text
    assert "| `int8` | 97.00 | 94.50 | -2.50 | 1000 B | 800 B | -20.0% | 0.500 | 0.600 | +20.0% |" in text
    assert ("| `fp32` (same bundle) | 98.00 | 98.00 | +0.00 | 3.9 KB | 3.9 KB | +0.0% | 1.000 | 1.200 "
            "| +20.0% (noise) |") in text
    assert "| `fresh` (new) | — | 96.00 | — |" in text
    check_report(json.loads(json.dumps(new)), "the report with its comparison")  # --json writes what reads back


def test_no_warning_for_a_drop_that_a_gate_checks():
    old = _report("m.py:f", _entry("fp32", 98.0, 4000, 1.0), _entry("int8", 97.0, 1000, 0.5))
    new = _report("m.py:f", _entry("fp32", 98.0, 4000, 1.0), _entry("int8", 90.0, 1000, 0.5))
    config = GateConfig(max_accuracy_drop=1.0)
    assert apply_gates(new, config, against=old, against_name="OLD") is False
    assert attach(new, old, "OLD", config) == []
