"""`edgeslim run` on a recipe: train (cached), build candidates, validate, report."""
import json
import re
from pathlib import Path

from click.testing import CliRunner

from edgeslim.cli import main
from edgeslim.core.outputs import cache_dir
from helpers import ZOO

RECIPE = f"""
model: {ZOO}:small_cnn
data: {ZOO}:digits_torch
train: {{epochs: 3, lr: 0.003}}
devices: [cpu, cpu-1t]
bench: {{runs: 20, warmup: 3}}
gates: {{max_accuracy_drop: 5.0}}
candidates:
  - name: fp32
  - name: pkd-int8
    steps: [{{prune: {{ratio: 0.5, round_to: 4}}}}, {{distill: {{epochs: 2}}}}, int8]
  - name: fp16
    steps: [fp16]
"""

KEYS = {"p50_ms", "p90_ms", "p99_ms", "mean_ms", "throughput", "peak_rss_mb"}


def test_run_recipe_writes_bundles_and_report(cli, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    result = cli("run", recipe, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["format"] == "edgeslim-report/1" and report["baseline"] == "fp32"
    assert [c["name"] for c in report["candidates"]] == ["fp32", "pkd-int8", "fp16"]
    for entry in report["candidates"]:
        assert (tmp_path / "out" / entry["name"] / "manifest.json").is_file()
        assert set(entry["latency"]) == {"cpu", "cpu-1t"}
        assert KEYS <= set(entry["latency"]["cpu"])
        assert entry["latency"]["cpu-1t"]["threads"] == 1
        assert entry["passed"] is True and "accuracy_drop" in entry["gates"] or entry["name"] == "fp32"
    assert report["recipe"]["candidates"][1]["steps"][0] == {"step": "prune", "version": 1, "ratio": 0.5,
                                                           "round_to": 4, "importance": "auto",
                                                           "importance_batches": 8, "global_pruning": None,
                                                           "ignore": []}
    assert report["recipe"]["candidates"][1]["steps"][1]["device"] == "auto"
    assert "| `pkd-int8` |" in (tmp_path / "out" / "report.md").read_text()
    # The trained model is cached: a second run reads it and does not train again (no training
    # progress line, and the cached file is the same one, not rewritten).
    cached = {path: path.stat().st_mtime_ns for path in cache_dir().glob("trained-*.pt")}
    assert cached, "the first run cached no trained model"
    again = CliRunner().invoke(main, ["run", str(recipe), "--out", str(tmp_path / "out2")])  # progress shown
    assert again.exit_code == 0, again.stderr
    used = re.search(r"using the trained model cached at (\S+)", again.stderr)
    assert used and Path(used[1]) in cached, again.stderr
    assert "] train epoch" not in again.stderr and "[edgeslim] [1/3] building fp32" in again.stderr
    assert {path: path.stat().st_mtime_ns for path in cache_dir().glob("trained-*.pt")} == cached
