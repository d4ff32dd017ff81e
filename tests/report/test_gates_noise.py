"""Latency gates fail on a real slow-down only: over the limit, the minimum change and the measured spread."""
import pytest

from edgeslim.core.errors import ConfigError
from edgeslim.report.gates import GateConfig, apply_gates, failures


def _entry(name, p50, p90=None, sha=None):
    stats = {"p50_ms": p50, "p90_ms": p50 if p90 is None else p90, "p99_ms": p50 * 2, "mean_ms": p50,
             "throughput": 1000 / p50}
    return {"name": name, "size_bytes": 1000, "accuracy": 98.0, "latency": {"cpu": stats},
            **({"sha256": {"model.onnx": sha}} if sha else {})}


def _gate(new, old, config):
    report = {"format": "edgeslim-report/1", "baseline": "fp32", "candidates": [_entry("fp32", 1.0), new]}
    against = {"format": "edgeslim-report/1", "baseline": "fp32", "candidates": [_entry("fp32", 1.0), old]}
    apply_gates(report, config, against=against, against_name="OLD")
    return report["candidates"][1]["gates"]["latency_increase[cpu]"]


def test_a_change_within_the_spread_is_noise():
    # +30 % (0.30 ms) on a bundle whose p90 sits 0.4 ms above its p50: within its spread, so it passes.
    gate = _gate(_entry("int8", 1.3, p90=1.7), _entry("int8", 1.0, p90=1.2), GateConfig(max_latency_increase=0.1))
    assert gate["passed"] and gate["value"] == pytest.approx(0.3)
    assert gate["change_ms"] == pytest.approx(0.3) and gate["noise_ms"] == pytest.approx(0.4)
    assert gate["reason"].startswith("+0.3 ms is within the noise (0.4 ms")


def test_a_change_beyond_the_spread_and_the_minimum_fails():
    gate = _gate(_entry("int8", 1.5, p90=1.6), _entry("int8", 1.0, p90=1.2), GateConfig(max_latency_increase=0.1))
    assert not gate["passed"] and gate["noise_ms"] == pytest.approx(0.2) and gate["change_ms"] == pytest.approx(0.5)
    assert "reason" not in gate


def test_a_small_absolute_change_is_noise_until_the_minimum_is_lowered():
    """0.1 ms more (+50 %) is over the 0.05 ms default minimum and fails; with a 0.2 ms minimum it is noise.
    0.01 ms more (+50 % of 0.02 ms) is noise by default and fails with no minimum."""
    new, old = _entry("int8", 0.3), _entry("int8", 0.2)   # no spread recorded (p90 == p50)
    assert not _gate(new, old, GateConfig(max_latency_increase=0.1))["passed"]  # 0.1 ms > 0.05 ms default
    lenient = _gate(new, old, GateConfig(max_latency_increase=0.1, min_latency_change_ms=0.2))
    assert lenient["passed"] and lenient["noise_ms"] == 0.2
    tiny_new, tiny_old = _entry("int8", 0.03), _entry("int8", 0.02)  # +50 %, +0.01 ms: noise by default
    assert _gate(tiny_new, tiny_old, GateConfig(max_latency_increase=0.1))["passed"]
    strict = GateConfig(max_latency_increase=0.1, min_latency_change_ms=0.0)
    assert not _gate(tiny_new, tiny_old, strict)["passed"]


def test_the_same_bundle_never_fails_the_latency_gate():
    gate = _gate(_entry("int8", 3.0, sha="ab" * 32), _entry("int8", 1.0, sha="ab" * 32),
                 GateConfig(max_latency_increase=0.0))
    assert gate["passed"] and gate["value"] == pytest.approx(2.0)
    assert gate["reason"].startswith("the same bundle (equal sha256)")
    rebuilt = _gate(_entry("int8", 3.0, sha="cd" * 32), _entry("int8", 1.0, sha="ab" * 32),
                    GateConfig(max_latency_increase=0.0))
    assert not rebuilt["passed"]


def test_failures_name_the_slow_down():
    report = {"format": "edgeslim-report/1", "baseline": "fp32",
              "candidates": [_entry("fp32", 1.0, p90=1.05), _entry("int8", 1.5, p90=1.55)]}
    assert apply_gates(report, GateConfig(max_latency_increase=0.2)) is False
    assert failures(report) == ["int8: latency_increase[cpu] 0.5 exceeds 0.2 (against baseline fp32)"]


@pytest.mark.parametrize("value", [-0.01, float("nan"), float("inf"), "0.1", True])
def test_a_bad_minimum_change_is_refused(value):
    with pytest.raises(ConfigError, match="--min-latency-change"):
        GateConfig(max_latency_increase=0.1, min_latency_change_ms=value)


def test_cli_min_latency_change(cli, tmp_path):
    import json

    from tiny import tiny_report

    report = tiny_report()
    report["candidates"][0]["latency"]["cpu"].update(p50_ms=1.0, p90_ms=1.0)    # no spread on either side
    report["candidates"][1]["latency"]["cpu"].update(p50_ms=1.08, p90_ms=1.08)  # +8 % and +0.08 ms
    path = tmp_path / "r.json"
    path.write_text(json.dumps(report))
    assert cli("report", path, "--max-latency-increase", "0.05").exit_code == 1
    assert cli("report", path, "--max-latency-increase", "0.05", "--min-latency-change", "0.1").exit_code == 0
    bad = cli("report", path, "--min-latency-change", "-1")
    assert bad.exit_code == 2 and "--min-latency-change=-1.0 is not allowed" in bad.stderr
