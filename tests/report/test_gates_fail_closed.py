"""Gates fail closed: what cannot be compared fails with a sentence; a bad report is refused (exit 2)."""
import json
import math
import os
import time

import pytest

from edgeslim.core.errors import ConfigError
from edgeslim.core.limits import REPORT_MAX_BYTES
from edgeslim.report.gates import GateConfig, apply_gates, failures
from edgeslim.report.markdown import render_markdown


def _entry(name, accuracy, latency):
    """A candidate as `edgeslim validate` writes it; `latency` maps device to p50 ms."""
    return {"name": name, "bundle": f"out/{name}", "size_bytes": 4000, "params": 1000, "accuracy": accuracy,
            "latency": {device: {"p50_ms": p50, "p90_ms": p50, "p99_ms": p50, "mean_ms": p50,
                                 "throughput": 1000 / p50, "peak_rss_mb": 80.0} for device, p50 in latency.items()},
            "compression": [], "gates": {}, "passed": True}


def _write(path, *entries, baseline="fp32"):
    report = {"format": "edgeslim-report/1", "baseline": baseline, "candidates": list(entries),
              "settings": {"metric": "top1"}}
    path.write_text(json.dumps(report))  # json writes NaN as the literal NaN, which json reads back
    return path


def _one_sentence(result):
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.fixture
def pair(tmp_path):
    """A report with a baseline and one candidate 1 point less accurate and 20 % slower."""
    return _write(tmp_path / "r.json", _entry("fp32", 98.0, {"cpu": 1.0}), _entry("int8", 97.0, {"cpu": 1.2}))


def test_a_normal_report_passes_and_fails_as_before(cli, pair):
    assert cli("report", pair, "--max-accuracy-drop", "1", "--max-latency-increase", "0.25").exit_code == 0
    failed = cli("report", pair, "--max-accuracy-drop", "0.5")
    assert failed.exit_code == 1
    assert "int8: accuracy_drop 1 exceeds 0.5 (against baseline fp32)" in _one_sentence(failed)


@pytest.mark.parametrize("baseline", ["nothing", None, ["fp32"]])
def test_a_baseline_that_names_no_candidate_is_refused(cli, tmp_path, baseline):
    path = _write(tmp_path / "r.json", _entry("fp32", 98.0, {"cpu": 1.0}), _entry("int8", 90.0, {"cpu": 1.0}),
                  baseline=baseline)
    result = cli("report", path, "--max-accuracy-drop", "0")
    assert result.exit_code == 2
    assert "baseline" in _one_sentence(result)


def test_a_candidate_without_a_namesake_is_gated_against_the_baseline(cli, tmp_path, pair):
    """Renamed candidates are not left ungated: each is warned about and gated against the baseline."""
    old = _write(tmp_path / "old.json", _entry("base", 98.0, {"cpu": 1.0}), _entry("other", 97.0, {"cpu": 1.0}),
                 baseline="base")
    result = cli("report", pair, "--against", old, "--max-accuracy-drop", "0")
    assert result.exit_code == 1
    warnings, failed = result.stderr.strip().splitlines()[:-1], result.stderr.strip().splitlines()[-1]
    assert f"[edgeslim] warning: int8 has no namesake in {old}: gated against the baseline fp32 instead" in warnings
    assert f"[edgeslim] warning: the baseline fp32 has no namesake in {old}: it is not compared with the old run" \
        in warnings
    assert failed == ("edgeslim: gate failed: int8: accuracy_drop 1 exceeds 0 "
                      f"(against baseline fp32 ({old} has no int8))")
    assert f"| `int8` | accuracy_drop | 1 | 0 | baseline fp32 ({old} has no int8) | **FAIL** |" in result.stdout
    assert cli("report", pair, "--against", old, "--max-accuracy-drop", "1").exit_code == 0


def test_a_nan_accuracy_fails_its_gate(cli, tmp_path):
    path = _write(tmp_path / "r.json", _entry("fp32", 98.0, {"cpu": 1.0}), _entry("int8", math.nan, {"cpu": 1.0}))
    result = cli("report", path, "--max-accuracy-drop", "5", "--json", tmp_path / "gated.json")
    assert result.exit_code == 1
    assert "int8: accuracy_drop failed: the accuracy of int8 is not a number (nan)" in _one_sentence(result)
    gate = json.loads((tmp_path / "gated.json").read_text())["candidates"][1]["gates"]["accuracy_drop"]
    assert gate == {"value": None, "limit": 5.0, "reference": "baseline fp32", "passed": False,
                    "reason": "the accuracy of int8 is not a number (nan)"}


def test_a_missing_accuracy_fails_its_gate(cli, tmp_path):
    path = _write(tmp_path / "r.json", _entry("fp32", None, {"cpu": 1.0}), _entry("int8", 97.0, {"cpu": 1.0}))
    result = cli("report", path, "--max-accuracy-drop", "5")
    assert result.exit_code == 1
    assert "the accuracy of baseline fp32 is missing" in _one_sentence(result)


def test_a_device_missing_from_the_reference_fails_its_latency_gate(cli, tmp_path, pair):
    old = _write(tmp_path / "old.json", _entry("fp32", 98.0, {"cpu": 1.0}), _entry("int8", 97.0, {"gpu": 1.0}))
    result = cli("report", pair, "--against", old, "--max-latency-increase", "0.5")
    assert result.exit_code == 1
    sentence = _one_sentence(result)
    assert "int8: latency_increase[cpu] failed: the p50 of previous int8 on cpu is missing" in sentence
    assert "int8: latency_increase[gpu] failed: the p50 of int8 on gpu is missing" in sentence
    # The same comparison against the baseline, whose device list matches, passes.
    assert cli("report", pair, "--max-latency-increase", "0.5").exit_code == 0


def test_no_latency_on_either_side_fails_a_latency_gate(cli, tmp_path):
    path = _write(tmp_path / "r.json", _entry("fp32", 98.0, {}), _entry("int8", 97.0, {}))
    result = cli("report", path, "--max-latency-increase", "0.1")
    assert result.exit_code == 1
    assert "neither int8 nor baseline fp32 has a latency" in _one_sentence(result)


def test_an_infinite_p50_fails_its_gate():
    report = {"format": "edgeslim-report/1", "baseline": "fp32",
              "candidates": [_entry("fp32", 98.0, {"cpu": math.inf}), _entry("int8", 98.0, {"cpu": 1.0})]}
    assert apply_gates(report, GateConfig(max_latency_increase=1.0)) is False
    assert failures(report) == ["int8: latency_increase[cpu] failed: "
                                "the p50 of baseline fp32 on cpu is not a positive number (inf)"]
    assert "**FAIL**: the p50 of baseline fp32 on cpu is not a positive number (inf)" in render_markdown(report)


def test_apply_gates_refuses_an_unknown_baseline():
    report = {"format": "edgeslim-report/1", "baseline": "gone", "candidates": [_entry("fp32", 98.0, {})]}
    with pytest.raises(ConfigError, match="baseline 'gone'"):
        apply_gates(report, GateConfig(max_accuracy_drop=0))


def test_an_old_report_without_namesakes_passes_when_no_gate_is_asked(pair, tmp_path):
    from edgeslim.report.schema import read_report

    old = _write(tmp_path / "old.json", _entry("base", 98.0, {"cpu": 1.0}), baseline="base")
    report = read_report(pair)
    assert apply_gates(report, GateConfig(), against=read_report(old), against_name=str(old)) is True
    assert apply_gates(report, GateConfig(max_accuracy_drop=0.5), against=read_report(old), against_name="OLD") is False
    assert failures(report) == ["int8: accuracy_drop 1 exceeds 0.5 (against baseline fp32 (OLD has no int8))"]


@pytest.mark.parametrize("change, words", [
    (lambda r: r["candidates"][1].update(name="fp32"), "two candidates named 'fp32'"),
    (lambda r: r["candidates"][1].pop("size_bytes"), "'candidates[1]' lacks 'size_bytes'"),
    (lambda r: r["candidates"][1].update(size_bytes=0), "has size_bytes 0; a size is a positive number"),
    (lambda r: r["candidates"][1].update(accuracy="high"),
     "'candidates[1].accuracy' must be a number or null, got 'high'"),
    (lambda r: r["candidates"][1]["latency"]["cpu"].pop("p90_ms"), "'candidates[1].latency.cpu' lacks 'p90_ms'"),
    (lambda r: r["candidates"][1]["latency"]["cpu"].update(p50_ms=0), "a latency is positive"),
    (lambda r: r.update(candidates=[]), "'candidates' must not be empty"),
    (lambda r: r.update(format="x" * 10_000), "is not an edgeslim report"),
])
def test_a_report_of_the_wrong_shape_is_refused(cli, pair, change, words):
    report = json.loads(pair.read_text())
    change(report)
    pair.write_text(json.dumps(report))
    result = cli("report", pair)
    assert result.exit_code == 2
    sentence = _one_sentence(result)
    assert words in sentence and len(sentence) < 400


def test_a_deeply_nested_report_is_refused_quickly(cli, tmp_path):
    path = tmp_path / "deep.json"
    path.write_text('{"format": "edgeslim-report/1", "candidates": ' + "[" * 200_000 + "]" * 200_000 + "}")
    started = time.perf_counter()
    result = cli("report", path)
    assert result.exit_code == 2 and "nested deeper than" in _one_sentence(result)
    assert time.perf_counter() - started < 5


def test_an_oversized_report_is_refused_before_reading(cli, tmp_path, pair):
    path = tmp_path / "huge.json"
    path.write_bytes(pair.read_bytes())
    os.truncate(path, REPORT_MAX_BYTES + 1)  # sparse: no disk, but stat says 64 MiB + 1
    started = time.perf_counter()
    result = cli("report", path)
    assert result.exit_code == 2 and "over the limit" in _one_sentence(result)
    against = cli("report", pair, "--against", path, "--max-accuracy-drop", "1")
    assert against.exit_code == 2 and "over the limit" in _one_sentence(against)
    assert time.perf_counter() - started < 5
