"""Device profiles: real boards, emulation by thread count and affinity, the calibrated cost model."""
import json
from dataclasses import replace

import onnx
import pytest

from edgeslim.devices import costmodel
from edgeslim.devices.profiles import EDGE_BOARDS, get_profile, host_arch, profiles
from edgeslim.devices.runner import BenchConfig
from edgeslim.devices.targets import LocalTarget
from edgeslim.report.markdown import render_markdown
from helpers import spec


def test_boards_state_what_a_user_and_the_cost_model_need():
    names = {board.name for board in EDGE_BOARDS}
    assert {"rpi4", "rpi5", "x86-edge", "jetson-orin-nano-cpu"} <= names
    for board in EDGE_BOARDS:
        assert board.cores and board.memory_gb and board.features and board.provider == "cpu"
        assert board.ghz and board.fp32_flops_per_cycle and board.int8_ops_per_cycle and board.memory_gbps


def test_devices_command_lists_every_profile(cli):
    result = cli("devices", "--json")
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == set(profiles())
    assert rows["cpu"]["mode"] == "measured" and rows["gpu"]["prefers"] == "fp16"
    assert rows["rpi4"]["mode"] == (
        "emulated" if host_arch() == "aarch64" and rows["cpu"]["cores"] >= 4 else "estimated")
    text = cli("devices").stdout
    assert "Raspberry Pi 4 Model B" in text and "ssh://" in text


def test_cost_model_counts_the_flops_of_each_layer(cnn_bundles):
    costs = costmodel.node_costs(onnx.load(cnn_bundles["fp32"] / "model.onnx"), batch=1)
    compute = [c for c in costs if c.op in ("Conv", "Gemm")]
    # SmallCNN on 1x8x8: 2 * outputs * (inputs per output) for each conv, then the classifier.
    expected = [2 * 32 * 64 * 9, 2 * 64 * 64 * 32 * 9, 2 * 64 * 16 * 64 * 9, 2 * 10 * 64]
    assert [c.flops for c in compute] == expected
    assert not any(c.int8 for c in compute)
    int8_costs = costmodel.node_costs(onnx.load(cnn_bundles["int8"] / "model.onnx"), batch=1)
    assert sum(c.int8 for c in int8_costs if c.op == "Conv") == 3
    batch8 = costmodel.node_costs(onnx.load(cnn_bundles["fp32"] / "model.onnx"), batch=8)
    assert sum(c.flops for c in batch8) == pytest.approx(8 * sum(c.flops for c in costs))


def test_a_same_isa_profile_within_the_host_is_emulated_and_pinned(cnn_bundles):
    board = replace(get_profile("x86-edge"), name="one-core-box", arch=host_arch(), cores=1, threads=1)
    assert board.mode() == "emulated"
    stats = LocalTarget(board).latency(cnn_bundles["fp32"], BenchConfig(runs=20, warmup=3))
    assert stats["mode"] == "emulated" and stats["threads"] == 1 and stats["p50_ms"] > 0


def test_boards_this_host_cannot_emulate_are_estimated(cnn_bundles):
    config = BenchConfig(runs=30, warmup=5)
    host = LocalTarget(get_profile("cpu-1t")).latency(cnn_bundles["fp32"], config)
    estimates = {}
    for name in ("rpi4", "rpi5"):
        board = get_profile(name)
        if board.mode() != "estimated":
            pytest.skip("this host can emulate the boards")
        estimates[name] = LocalTarget(board).latency(cnn_bundles["fp32"], config)
        assert estimates[name]["mode"] == "estimated" and estimates[name]["calibration"]["factor"] > 0
    # A Cortex-A72 at 1.5 GHz is slower than one core of this host; the A76 at 2.4 GHz beats the A72.
    assert estimates["rpi4"]["p50_ms"] > host["p50_ms"] * 0.5
    assert estimates["rpi5"]["p50_ms"] < estimates["rpi4"]["p50_ms"]


def test_validate_labels_estimated_figures(cli, cnn_bundles, tmp_path):
    result = cli("validate", cnn_bundles["fp32"], "--data", spec("digits"), "--device", "cpu", "--device", "rpi4",
                 "--runs", "20", "--warmup", "3", "--out", tmp_path / "r.json")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    mode = report["candidates"][0]["latency"]["rpi4"]["mode"]
    assert mode in ("estimated", "emulated")
    assert f"| {mode} |" in render_markdown(report)


def test_a_provider_that_is_not_installed_is_one_sentence(cli, cnn_bundles, tmp_path):
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this host has CUDA")
    result = cli("validate", cnn_bundles["fp32"], "--data", spec("digits"), "--device", "gpu",
                 "--out", tmp_path / "r.json")
    assert result.exit_code == 2
    assert "device 'cuda' needs CUDAExecutionProvider, which this onnxruntime does not offer" in result.stderr
    assert not (tmp_path / "r.json").exists()
