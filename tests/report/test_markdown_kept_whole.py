"""The report names the modules pruning left whole, and why; read_report accepts them."""
import pytest

from edgeslim.core.errors import ConfigError
from edgeslim.report.markdown import render_markdown
from edgeslim.report.schema import check_report

REASON = "LSTM (2 layers, bidirectional) is recurrent: torch-pruning cannot resize its gates"


def _report(pruned_entry_extra):
    stats = {"p50_ms": 1.0, "p90_ms": 1.1, "p99_ms": 1.3, "mean_ms": 1.0, "throughput": 1000.0}

    def entry(name, **extra):
        return {"name": name, "bundle": f"out/{name}", "size_bytes": 4000, "params": 1000, "accuracy": 0.9,
                "latency": {"cpu": stats}, "compression": [], "gates": {}, "passed": True, **extra}

    return {"format": "edgeslim-report/1", "baseline": "fp32", "settings": {"metric": "cer"},
            "candidates": [entry("fp32"), entry("pruned", **pruned_entry_extra)]}


def test_kept_modules_are_listed_under_the_candidate():
    report = _report({"kept_whole": [{"module": "rnn", "reason": REASON}]})
    assert f"- kept whole by pruning: `pruned`: `rnn` ({REASON})\n" in render_markdown(report)
    check_report(report, "the test report")


def test_a_kept_entry_without_a_module_name_is_refused():
    with pytest.raises(ConfigError, match="module"):
        check_report(_report({"kept_whole": [{"reason": REASON}]}), "the test report")


def test_nothing_kept_adds_no_line():
    assert "kept whole" not in render_markdown(_report({}))
