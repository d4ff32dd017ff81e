"""Quantization-aware training: NNCF torch QAT, exported as QDQ with int8 weights that onnxruntime runs."""
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from helpers import spec
from edgeslim.compress import check_order, make_step
from edgeslim.errors import ConfigError


def test_qat_bundle_is_int8_qdq_and_as_accurate_as_ptq(cli, weights, cnn_bundles, tmp_path):
    result = cli("compress", "--model", spec("small_cnn"), "--weights", weights["cnn"], "--data", spec("digits"),
                 "--qat", "2", "--out", tmp_path / "qat")
    assert result.exit_code == 0, result.stderr
    model = onnx.load(tmp_path / "qat" / "model.onnx")
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "FakeQuantize" not in ops
    # Weights are stored as int8 (folded), so the bundle is as small as PTQ's.
    int8_weights = [t for t in model.graph.initializer if numpy_helper.to_array(t).dtype == np.int8 and len(t.dims) >= 2]
    assert len(int8_weights) == 4
    qat = json.loads((tmp_path / "qat" / "manifest.json").read_text())
    ptq = json.loads((cnn_bundles["int8"] / "manifest.json").read_text())
    print(f"small CNN: QAT {qat['metrics']['accuracy']:.2f}, PTQ {ptq['metrics']['accuracy']:.2f}")
    assert qat["metrics"]["size_bytes"] < 1.2 * ptq["metrics"]["size_bytes"]
    assert qat["metrics"]["accuracy"] >= ptq["metrics"]["accuracy"] - 0.6
    assert qat["compression"][0]["step"] == "qat"


@pytest.mark.parametrize("steps, message", [
    (["qat", "int8"], "qat already quantizes the model"),
    (["qat", "distill"], "qat must be the last torch step"),
])
def test_qat_order_rules(steps, message):
    with pytest.raises(ConfigError, match=message):
        check_order([make_step(name) for name in steps])
