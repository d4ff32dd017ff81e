"""int8_coverage: which layers onnxruntime runs as integer kernels, read off the graph a default
session executes; its summaries; and `edgeslim inspect` showing it."""
import json
import re

import onnx
import pytest
from qdq_models import calibration, exported, quantized

from edgeslim.compress.ort_qdq import ortify
from edgeslim.core.coverage import coverage_text, float_node_names, kernel_counts_text, mostly_float
from edgeslim.core.errors import DeviceError
from edgeslim.export.kernels import int8_coverage
from helpers import spec


@pytest.fixture(scope="module")
def mobilenet(weights):
    proto, names = exported("mobilenet", weights["mobilenet"])
    return {"fp32": proto, "fixed": ortify(quantized("mobilenet", weights["mobilenet"]), calibration(names))}


def test_a_float_model_runs_every_layer_in_float(mobilenet):
    coverage = int8_coverage(mobilenet["fp32"])
    assert coverage["provider"] == "CPUExecutionProvider"
    assert {f: (e["int8"], e["float"]) for f, e in coverage["families"].items()} == {"conv": (0, 21), "gemm": (0, 1)}
    assert coverage["int8"] == 0 and coverage["float"] == 22 and coverage["weights_dequantized_per_run"] == 0
    assert mostly_float(coverage)
    # Named as in the ONNX model, although the NCHWc pass renames the convolutions it runs.
    onnx_names = {node.name for node in mobilenet["fp32"].graph.node if node.op_type in ("Conv", "Gemm")}
    assert set(float_node_names(coverage)) == onnx_names


def test_coverage_is_json_and_reads_bytes_as_a_model(mobilenet):
    coverage = int8_coverage(mobilenet["fixed"])
    assert json.loads(json.dumps(coverage)) == coverage
    assert int8_coverage(mobilenet["fixed"].SerializeToString()) == coverage
    assert coverage["int8"] == 22 and coverage["float"] == 0 and not mostly_float(coverage)


def test_coverage_text(mobilenet, weights):
    assert coverage_text(int8_coverage(mobilenet["fixed"])) == "int8 kernels: 21/21 conv, 1/1 gemm"
    assert coverage_text(int8_coverage(mobilenet["fp32"])) == "int8 kernels: 0/21 conv, 0/1 gemm"
    # Families in a fixed order (conv, matmul, gemm, attention), not the graph's.
    transformer = coverage_text(int8_coverage(quantized("transformer", weights["transformer"])))
    assert re.fullmatch(r"int8 kernels: [0-6]/6 matmul, [0-2]/2 gemm", transformer), transformer
    assert kernel_counts_text({"families": {}}) == "no conv, matmul, gemm or attention nodes"


def test_mostly_float_is_fewer_than_half_integer():
    def cov(int8, float_):
        return {"families": {"conv": {"int8": int8, "float": float_, "float_nodes": []}}}

    assert mostly_float(cov(10, 11)) and not mostly_float(cov(11, 10)) and not mostly_float(cov(5, 5))
    assert not mostly_float({"families": {}})


def test_an_unavailable_provider_is_named(mobilenet):
    with pytest.raises(DeviceError, match="'NoSuchExecutionProvider' is not available.*CPUExecutionProvider"):
        int8_coverage(mobilenet["fp32"], provider="NoSuchExecutionProvider")


def test_inspect_shows_the_kernel_coverage(cli, tmp_path):
    bundle = tmp_path / "cnn"
    result = cli("export", "--model", spec("small_cnn"), "--data", spec("digits"), "--out", bundle)
    assert result.exit_code == 0, result.stderr
    plain = cli("inspect", bundle)
    assert plain.exit_code == 0 and "int8 kernels" not in plain.stdout
    manifest = json.loads((bundle / "manifest.json").read_text())
    manifest["metrics"]["int8_coverage"] = int8_coverage(onnx.load(bundle / "model.onnx"))
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    result = cli("inspect", bundle)
    assert result.exit_code == 0, result.stderr
    assert "\n  int8 kernels: 0/3 conv, 0/1 gemm\n" in result.stdout
    assert "\n  in float: /body/body.0/Conv, /body/body.3/Conv, /body/body.7/Conv, /classifier/Gemm\n" in result.stdout
