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


def _bn_models():
    import torch
    from torch import nn

    class ConvBN(nn.Module):  # Conv -> BatchNorm2d: export folds the BatchNorm into the convolution
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                                      nn.Linear(512, 64), nn.Linear(64, 10))

        def forward(self, x):
            return self.body(x)

    class LinearBN(nn.Module):  # Linear -> BatchNorm1d: no convolution to fold into, a BatchNormalization node
        def __init__(self):
            super().__init__()
            self.a, self.bn, self.b = nn.Linear(64, 64), nn.BatchNorm1d(64), nn.Linear(64, 10)

        def forward(self, x):
            return self.b(torch.relu(self.bn(self.a(x.flatten(1)))))

    return ConvBN().eval(), LinearBN().eval()


def test_the_onnx_parameter_count_is_torch_s_in_every_weight_form():
    """The table's params (ONNX initializers) and the header's (torch parameters of the source) agree as far as
    the graph allows: BatchNorm running statistics, quantization scales and packed INT4 bytes are no parameters."""
    import copy

    from edgeslim.compress.int4 import Int4Config, _quantized, gemms_as_matmuls, quantizable_matmuls
    from edgeslim.compress.int8_forms import weights_only
    from edgeslim.export.graph import count_params
    from edgeslim.export.onnx_export import ExportConfig, export_onnx

    conv_bn, linear_bn = _bn_models()
    x = np.random.default_rng(0).random((4, 1, 8, 8), dtype=np.float32)
    for model in (conv_bn, linear_bn):
        for bn in (m for m in model.modules() if hasattr(m, "running_var")):  # trained-like statistics
            bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(0.5, 2)
    folded, _, _ = export_onnx(conv_bn, x, ExportConfig())
    kept, _, _ = export_onnx(linear_bn, x, ExportConfig())
    torch_count = {id(m): sum(p.numel() for p in m.parameters()) for m in (conv_bn, linear_bn)}
    assert "BatchNormalization" not in {node.op_type for node in folded.graph.node}
    assert "BatchNormalization" in {node.op_type for node in kept.graph.node}
    # Not folded: BatchNorm1d's weight and bias are initializers, its running mean and variance (buffers in
    # torch) are excluded, so the counts are equal.
    assert count_params(kept) == torch_count[id(linear_bn)] == 64 * 64 + 64 + 2 * 64 + 64 * 10 + 10
    # Folded: BatchNorm2d's weight and bias (2 x 8) live on in the convolution's weight and bias and are no
    # tensors of their own, so the export counts exactly those fewer.
    assert count_params(folded) == torch_count[id(conv_bn)] - 2 * 8
    for proto in (folded, kept):
        # int8 weights expanded by Cast and a per-channel Mul: the scales are no parameters
        assert count_params(weights_only(proto, seven_bit=False)) == count_params(proto)
        # MatMulNBits: a K x N weight packed two to a byte, with its block scales
        converted = copy.deepcopy(proto)
        gemms_as_matmuls(converted, 32)
        int4 = _quantized(converted, quantizable_matmuls(converted, 32), Int4Config(block_size=32))
        assert "MatMulNBits" in {node.op_type for node in int4.graph.node}
        assert count_params(int4) == count_params(proto)
