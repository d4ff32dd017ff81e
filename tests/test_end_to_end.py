"""The same commands on three architectures: export, prune + distill + int8, validate, report."""
import json

import onnx
import pytest

from helpers import ARCHITECTURES, spec

# Worst accuracy drop (points) allowed after pruning half the channels, 6 epochs of distillation
# and INT8, on 360 validation digits. Measured drops are printed in the test output. The
# transformer loses most: pruning narrows its whole residual stream (96 -> 45 before distillation).
MAX_DROP = {"cnn": 2.0, "mobilenet": 3.0, "transformer": 5.0}
# Least size reduction. On models this small, node names weigh in, NNCF keeps squeeze-excitation
# in float, and its transformer rules keep more ops in float (measured: 9.9x, 3.4x, 3.0x).
MIN_SHRINK = {"cnn": 8.0, "mobilenet": 3.0, "transformer": 2.5}


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_compress_validate_report(arch, cli, weights, tmp_path):
    factory = ARCHITECTURES[arch][0]
    common = ["--model", spec(factory), "--weights", weights[arch], "--data", spec("digits")]
    assert cli("export", *common, "--out", tmp_path / "fp32").exit_code == 0
    result = cli("compress", *common, "--prune", "0.5", "--round-to", "4", "--epochs", "6", "--lr", "3e-3",
                 "--quantize", "int8", "--int8-backend", "nncf",
                 "--out", tmp_path / "small")
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((tmp_path / "small" / "manifest.json").read_text())
    assert [step["step"] for step in manifest["compression"]] == ["prune", "distill", "int8"]
    assert manifest["metrics"]["params_after"] < 0.6 * manifest["metrics"]["params_before"]
    ops = {node.op_type for node in onnx.load(tmp_path / "small" / "model.onnx").graph.node}
    assert "QuantizeLinear" in ops and "FakeQuantize" not in ops

    report_path = tmp_path / "report.json"
    result = cli("validate", tmp_path / "fp32", tmp_path / "small", "--data", spec("digits"),
                 "--runs", "30", "--warmup", "5", "--out", report_path)
    assert result.exit_code == 0, result.stderr
    report = json.loads(report_path.read_text())
    fp32, small = report["candidates"]
    drop = fp32["accuracy"] - small["accuracy"]
    print(f"{arch}: fp32 {fp32['accuracy']:.2f}, pruned-kd-int8 {small['accuracy']:.2f}, drop {drop:.2f}, "
          f"size {fp32['size_bytes'] / small['size_bytes']:.1f}x smaller")
    assert fp32["accuracy"] > 90.0
    assert drop <= MAX_DROP[arch]
    assert fp32["size_bytes"] / small["size_bytes"] >= MIN_SHRINK[arch]
    assert (tmp_path / "report.md").is_file()

    gated = cli("report", report_path, "--max-accuracy-drop", MAX_DROP[arch], "--json", tmp_path / "gated.json")
    assert gated.exit_code == 0, gated.stderr
    assert json.loads((tmp_path / "gated.json").read_text())["candidates"][1]["gates"]["accuracy_drop"]["passed"]
