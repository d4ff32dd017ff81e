"""torch -> ONNX export: dynamic batch, parity against torch, the bundle's manifest."""
import json

import numpy as np
import onnxruntime as ort

from helpers import spec


def test_manifest_holds_what_the_contract_promises(cnn_bundles):
    manifest = json.loads((cnn_bundles["fp32"] / "manifest.json").read_text())
    assert manifest["format"] == "edgeslim-bundle/1"
    assert manifest["name"] == "fp32"
    assert manifest["inputs"] == [{"name": "input", "dtype": "float32", "shape": ["batch", 1, 8, 8],
                                   "batch_axis": 0, "example_shape": [120, 1, 8, 8]}]
    assert manifest["outputs"] == [{"name": "output", "dtype": "float32", "shape": ["batch", 10],
                                    "batch_axis": 0}]
    assert set(manifest["sha256"]) == {"model.onnx"} and len(manifest["sha256"]["model.onnx"]) == 64
    assert manifest["compression"] == []
    assert set(manifest["created_with"]) >= {"edgeslim", "torch", "onnx", "onnxruntime", "nncf"}
    metrics = manifest["metrics"]
    assert metrics["size_bytes"] == (cnn_bundles["fp32"] / "model.onnx").stat().st_size
    # SmallCNN has 56,714 torch parameters; export folds the 320 of BatchNorm into the convolutions.
    assert metrics["params"] == 56394
    assert metrics["accuracy"] > 95.0
    assert metrics["parity"]["max_abs_err"] < 1e-4


def test_batch_axis_is_dynamic(cnn_bundles):
    session = ort.InferenceSession(str(cnn_bundles["fp32"] / "model.onnx"))
    for batch in (1, 7, 33):
        out = session.run(None, {"input": np.zeros((batch, 1, 8, 8), np.float32)})[0]
        assert out.shape == (batch, 10)


def test_parity_failure_exits_2_and_writes_nothing(cli, tmp_path):
    out = tmp_path / "noisy"
    result = cli("export", "--model", spec("noisy"), "--data", spec("digits"), "--out", out)
    assert result.exit_code == 2
    assert "disagrees with torch" in result.stderr and "max abs err" in result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_export_prints_parity_on_progress(cli, weights, tmp_path):
    from click.testing import CliRunner

    from edgeslim.cli import main

    result = CliRunner().invoke(main, ["export", "--model", spec("mobilenet"), "--weights", str(weights["mobilenet"]),
                                       "--data", spec("digits_torch"), "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.stderr
    assert "parity with torch: max abs err" in result.stderr
