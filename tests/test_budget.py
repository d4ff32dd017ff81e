"""Compress to a budget: the pruning ratio chosen by measuring, the distance from the budget reported."""
import json

import pytest

from helpers import spec


def _compress(cli, weights, out, *budget):
    return cli("compress", "--model", spec("small_cnn"), "--weights", weights["cnn"], "--data", spec("digits"),
               "--epochs", "2", "--out", out, *budget)


def test_size_budget_lands_within_ten_percent(cli, weights, cnn_bundles, tmp_path):
    fp32_mb = (cnn_bundles["fp32"] / "model.onnx").stat().st_size / 1e6
    target = round(fp32_mb * 0.4, 4)
    result = _compress(cli, weights, tmp_path / "b", "--target-size", target)
    assert result.exit_code == 0, result.stderr
    budget = json.loads((tmp_path / "b" / "manifest.json").read_text())["metrics"]["budget"]
    print(f"size budget {target} MB: measured {budget['measured']:.4f} MB ({budget['distance']:+.1%}), "
          f"ratio {budget['ratio']:.3f}, {len(budget['probes'])} probes")
    assert budget["measured"] <= target and budget["within_tolerance"]
    assert 0 < budget["ratio"] < 1 and budget["round_to"] == 8
    assert "budget: " in result.stdout and "against" in result.stdout


def test_latency_budget_uses_the_device_and_reports_the_distance(cli, weights, tmp_path):
    result = _compress(cli, weights, tmp_path / "b", "--target-latency", "5", "--device", "cpu-1t")
    assert result.exit_code == 0, result.stderr
    budget = json.loads((tmp_path / "b" / "manifest.json").read_text())["metrics"]["budget"]
    # 5 ms is far above this CNN's time: the unpruned model fits, and the report says why it lands under.
    assert budget["ratio"] == 0.0 and budget["device"] == "cpu-1t"
    assert budget["why"] == "the unpruned model already fits well under the budget"


@pytest.mark.parametrize("budget, message", [
    (["--target-size", "-1"], "--target-size -1 is not a budget: it must be a positive number of MB"),
    (["--target-size", "0.0001"], "--target-size 0.0001 MB cannot be met: the smallest this model gets by pruning is"),
    (["--target-latency", "1", "--device", "pi9"], "unknown device 'pi9'"),
    (["--target-size", "1", "--target-latency", "1"], "exclusive"),
])
def test_bad_budgets_exit_2_and_write_nothing(cli, weights, tmp_path, budget, message):
    result = _compress(cli, weights, tmp_path / "b", *budget)
    assert result.exit_code == 2
    assert message in result.stderr
    assert not (tmp_path / "b").exists()


def test_a_result_over_budget_says_why():
    from edgeslim.budget import Budget, verdict

    budget = Budget("latency", 0.15, probes=[{"ratio": 0.0, "latency": 0.39}, {"ratio": 0.3812, "latency": 0.146}])
    over = verdict(budget, 0.2044, ratio=0.38125)
    assert over["over_budget"] and not over["within_tolerance"]
    assert "probe at ratio 0.3812 measured 0.146 ms" in over["why"] and "varies between runs" in over["why"]
    assert "why" not in verdict(budget, 0.152, ratio=0.38125)
