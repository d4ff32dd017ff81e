"""Quantization of the exported ONNX model: QDQ that onnxruntime runs, dynamic INT8, fp16."""
import json

import onnx
import pytest

from helpers import int8_weight_extent, spec


def _ops(bundle):
    return {node.op_type for node in onnx.load(bundle / "model.onnx").graph.node}


def _manifest(bundle):
    return json.loads((bundle / "manifest.json").read_text())


def test_int8_is_qdq_smaller_and_accurate(cnn_bundles):
    ops = _ops(cnn_bundles["int8"])
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "FakeQuantize" not in ops
    fp32, int8 = _manifest(cnn_bundles["fp32"]), _manifest(cnn_bundles["int8"])
    assert fp32["metrics"]["size_bytes"] / int8["metrics"]["size_bytes"] > 3.0
    assert abs(fp32["metrics"]["accuracy"] - int8["metrics"]["accuracy"]) <= 1.0
    assert int8["compression"][0]["step"] == "int8" and int8["metrics"]["calibration_samples"] == 300


@pytest.mark.parametrize("mode, marker_ops", [("dynamic", {"DynamicQuantizeLinear"}), ("fp16", set())])
def test_dynamic_and_fp16(cli, weights, cnn_bundles, tmp_path, mode, marker_ops):
    out = tmp_path / mode
    result = cli("compress", "--model", spec("small_cnn"), "--weights", weights["cnn"], "--data", spec("digits"),
                 "--quantize", mode, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert marker_ops <= _ops(out)
    manifest = _manifest(out)
    assert manifest["inputs"][0]["dtype"] == "float32"  # fp16 keeps float32 at the edges
    assert abs(manifest["metrics"]["accuracy"] - _manifest(cnn_bundles["fp32"])["metrics"]["accuracy"]) <= 1.0
    if mode == "fp16":
        weights_fp16 = [t for t in onnx.load(out / "model.onnx").graph.initializer
                        if t.data_type == onnx.TensorProto.FLOAT16]
        assert weights_fp16
        assert manifest["metrics"]["size_bytes"] < 0.6 * _manifest(cnn_bundles["fp32"])["metrics"]["size_bytes"]


def test_int8_weight_range_follows_the_host_and_the_kernels_agree(cnn_bundles):
    # overflow_fix auto: without VNNI every weight in [-64, 63], so uint8 x int8 pair sums fit int16;
    # with VNNI (int32 sums) the full range.
    from edgeslim.devices.profiles import host_features

    wide_sums = bool(set(host_features()) & {"avx512_vnni", "avx_vnni", "asimddp"})
    extent = int8_weight_extent(cnn_bundles["int8"])
    assert extent > 100 if wide_sums else extent <= 64
    kernels = _manifest(cnn_bundles["int8"])["metrics"]["int8_kernels"]
    assert kernels["max_rel_err"] < 0.05 and "saturated" not in kernels


def test_overflow_fix_disable_gives_the_full_range(cli, weights, tmp_path):
    out = tmp_path / "full"
    result = cli("compress", "--model", spec("small_cnn"), "--weights", weights["cnn"], "--data", spec("digits"),
                 "--quantize", "int8", "--overflow-fix", "disable", "--out", out)
    assert result.exit_code == 0, result.stderr
    assert int8_weight_extent(out) > 100
    assert _manifest(out)["compression"][0]["overflow_fix"] == "disable"
