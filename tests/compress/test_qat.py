"""Quantization-aware training: NNCF torch QAT, exported as QDQ with int8 weights that onnxruntime runs."""
import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgeslim.compress import check_order, make_step
from edgeslim.core.errors import ConfigError
from helpers import int8_weight_extent, run_edgeslim, spec


def test_qat_bundle_is_int8_qdq_and_as_accurate_as_ptq(cli, weights, cnn_bundles, tmp_path):
    result = cli("compress", "--model", spec("small_cnn"), "--weights", weights["cnn"], "--data", spec("digits"),
                 "--qat", "2", "--out", tmp_path / "qat")
    assert result.exit_code == 0, result.stderr
    model = onnx.load(tmp_path / "qat" / "model.onnx")
    ops = {node.op_type for node in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops and "FakeQuantize" not in ops
    # Weights are stored as int8 (folded), so the bundle is as small as PTQ's.
    int8_weights = [t for t in model.graph.initializer
                    if numpy_helper.to_array(t).dtype == np.int8 and len(t.dims) >= 2]
    assert len(int8_weights) == 4
    # BatchNorm folded before QAT: Conv feeds its quantizer directly, so onnxruntime fuses integer convs.
    assert "BatchNormalization" not in ops
    # 7-bit weights (overflow fix): what was trained is what every CPU computes.
    assert int8_weight_extent(tmp_path / "qat") <= 64
    qat = json.loads((tmp_path / "qat" / "manifest.json").read_text())
    ptq = json.loads((cnn_bundles["int8"] / "manifest.json").read_text())
    print(f"small CNN: QAT {qat['metrics']['accuracy']:.2f}, PTQ {ptq['metrics']['accuracy']:.2f}")
    assert qat["metrics"]["size_bytes"] < 1.2 * ptq["metrics"]["size_bytes"]
    assert qat["metrics"]["accuracy"] >= ptq["metrics"]["accuracy"] - 0.6
    assert qat["compression"][0]["step"] == "qat"
    assert qat["metrics"]["qat_batchnorm_folded"] == 3 and qat["metrics"]["qat_weights_7bit"] == 4
    assert qat["metrics"]["int8_kernels"]["max_rel_err"] < 0.05


def test_transformer_qat_exports_at_the_default_tolerance(cli, weights, tmp_path):
    """Attention's in-projection fed by uint8 activations saturated the x86 kernels (logits 2.5 apart)
    until QAT's weights got a 7-bit range; now torch and onnxruntime agree within the QDQ tolerance."""
    result = cli("compress", "--model", spec("transformer"), "--weights", weights["transformer"],
                 "--data", spec("digits"), "--qat", "1", "--out", tmp_path / "qat")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((tmp_path / "qat" / "manifest.json").read_text())["metrics"]
    assert metrics["parity"]["max_rel_err"] < 0.05
    assert metrics["int8_kernels"]["max_rel_err"] < 0.05
    assert metrics["accuracy"] >= metrics["qat_start_accuracy"] - 1.0


@pytest.mark.parametrize("steps, message", [
    (["qat", "int8"], "qat already quantizes the model"),
    (["qat", "distill"], "qat must be the last torch step"),
])
def test_qat_order_rules(steps, message):
    with pytest.raises(ConfigError, match=message):
        check_order([make_step(name) for name in steps])


def test_batchnorm_folds_only_where_the_conv_feeds_it_alone():
    import torch
    from torch import nn

    from edgeslim.compress.qat import fold_batchnorm

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.bn1 = nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4)
            self.conv2, self.bn2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.bn1(self.conv1(x))
            z = self.conv2(y)
            return self.bn2(z) + z  # conv2's output feeds more than its BatchNorm

    torch.manual_seed(0)
    model = Branchy()
    model.train()(torch.randn(8, 1, 8, 8))  # running statistics that are not the identity
    model.eval()
    x = torch.randn(4, 1, 8, 8)
    expected = model(x)
    assert fold_batchnorm(model, "test") == 1
    assert isinstance(model.bn1, nn.Identity) and isinstance(model.bn2, nn.BatchNorm2d)
    assert torch.allclose(model(x), expected, atol=1e-5)


def test_a_build_lock_left_by_a_killed_build_is_removed_and_a_fresh_one_kept(tmp_path):
    """torch's extension-build lock has no process id: a build killed mid-way left one that made every
    later QAT wait out NNCF's 60 s timeout and fail. Age decides: older than any build, it goes."""
    import os

    from edgeslim.compress.qat import STALE_BUILD_LOCK_SECONDS, clear_stale_build_lock

    lock = tmp_path / "lock"
    assert not clear_stale_build_lock(tmp_path)
    lock.touch()
    now = lock.stat().st_mtime
    assert not clear_stale_build_lock(tmp_path, now=now + 60) and lock.exists()  # a build may be running
    os.utime(lock, (now - STALE_BUILD_LOCK_SECONDS - 1, now - STALE_BUILD_LOCK_SECONDS - 1))
    assert clear_stale_build_lock(tmp_path, now=now) and not lock.exists()


def test_kernels_held_by_a_running_build_end_in_one_sentence_and_exit_2(tmp_path):
    """A fresh lock (a build that may still be running) is left alone; NNCF's timeout then reads as one
    sentence naming the lock and the ways out, not as a bug in edgeslim."""
    import os

    import torch

    build_dir = tmp_path / "extensions" / "nncf" / "quantized_functions_cpu" / torch.__version__
    build_dir.mkdir(parents=True)
    (build_dir / "lock").touch()
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "extensions"), "NNCF_EXTENSION_LOAD_TIMEOUT": "2"}
    done = run_edgeslim("compress", "--model", spec("small_cnn"), "--data", spec("digits"), "--qat", "1",
                        "--calibration-samples", "8", "--out", tmp_path / "qat", env=env)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert str(build_dir / "lock") in last and "NNCF_EXTENSION_LOAD_TIMEOUT=0" in last
    assert "Traceback" not in done.stderr
    assert (build_dir / "lock").exists() and not (tmp_path / "qat").exists()
