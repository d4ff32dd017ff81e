"""The contract's other shapes of user code: several inputs, and a metric of the user's own."""
import json

import numpy as np

from edgeslim.sdk import load
from helpers import spec


def test_a_model_with_two_inputs_goes_the_whole_way(cli, tmp_path):
    common = ["--model", spec("two_inputs"), "--data", spec("digits_two_inputs")]
    assert cli("export", *common, "--out", tmp_path / "fp32").exit_code == 0
    prune = ["--prune", "0.5", "--round-to", "4", "--epochs", "2", "--quantize", "int8", "--out", tmp_path / "small"]
    # torch-pruning cannot map channels through flatten-into-concat: one sentence, and the way out.
    refused = cli("compress", *common, *prune)
    assert refused.exit_code == 2 and "keep it whole with prune.ignore" in refused.stderr
    assert not (tmp_path / "small").exists()
    result = cli("compress", *common, *prune, "--prune-ignore", "conv.0")
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "small" / "manifest.json").read_text())["compression"][0]["ignore"] == ["conv.0"]
    model = load(tmp_path / "small")
    assert [(s.name, s.shape) for s in model.inputs] == [("image", ("batch", 1, 8, 8)), ("rows", ("batch", 8))]
    out = model.predict({"image": np.zeros((3, 1, 8, 8), np.float32), "rows": np.zeros((3, 8), np.float32)})
    assert out.shape == (3, 10)
    report = cli("validate", tmp_path / "fp32", tmp_path / "small", "--data", spec("digits_two_inputs"),
                 "--runs", "20", "--warmup", "2", "--out", tmp_path / "r.json")
    assert report.exit_code == 0, report.stderr
    assert all(c["accuracy"] is not None for c in json.loads((tmp_path / "r.json").read_text())["candidates"])


def test_a_metric_of_the_users_own(cli, cnn_bundles, tmp_path):
    result = cli("validate", cnn_bundles["fp32"], "--data", spec("digits"), "--metric", spec("top5_error_metric"),
                 "--runs", "10", "--warmup", "1", "--out", tmp_path / "r.json")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["settings"]["metric"] == spec("top5_error_metric")
    assert -0.05 <= report["candidates"][0]["accuracy"] <= 0.0  # minus the top-5 error of a trained CNN
