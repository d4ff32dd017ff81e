"""Remote validation over SSH, against a real sshd on the loopback interface."""
import json
import time

import pytest
from sshd import free_port

from helpers import spec


def test_remote_validation_matches_the_local_run(cli, cnn_bundles, sshd, torch_free_python, tmp_path):
    remote = sshd.url(torch_free_python)
    result = cli("validate", cnn_bundles["fp32"], cnn_bundles["int8"], "--data", spec("digits"),
                 "--device", "cpu", "--device", remote, "--runs", "30", "--warmup", "5", "--out", tmp_path / "r.json")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    name = remote.split("?")[0]
    for entry in report["candidates"]:
        assert entry["accuracy_by_device"][name] == entry["accuracy"] > 90.0
        stats = entry["latency"][name]
        assert stats["remote"] == name and stats["p50_ms"] > 0 and stats["runs"] == 30
    assert name in (tmp_path / "r.md").read_text()


def test_remote_tampered_bundle_is_refused_there(cli, cnn_bundles, sshd, torch_free_python, tmp_path):
    import shutil

    bundle = tmp_path / "tampered"
    shutil.copytree(cnn_bundles["fp32"], bundle)
    local = {path.name: path.read_bytes() for path in bundle.iterdir()}
    from edgeslim.core.errors import BundleError
    from edgeslim.devices.remote import RemoteTarget
    from edgeslim.devices.runner import BenchConfig

    target = RemoteTarget(sshd.url(torch_free_python))
    target.check_available()
    folder, remote_bundle = target._staged(bundle)
    try:
        target.ssh(f"printf x >> {remote_bundle}/model.onnx", "tampering")
        with pytest.raises(BundleError, match="was changed after the bundle was written"):
            target._worker(remote_bundle, ["--runs", "5"], "the benchmark")
    finally:
        target._cleanup(folder)
    # Tampering with the remote copy left the local bundle as it was: same files, same bytes, and
    # the remote accepts it again (its checksums verify there) and benchmarks it.
    assert {path.name: path.read_bytes() for path in bundle.iterdir()} == local
    assert target.latency(bundle, BenchConfig(runs=5, warmup=1))["p50_ms"] > 0


def test_a_remote_that_does_not_answer_fails_fast(cli, cnn_bundles, tmp_path):
    closed = free_port()  # nothing listens there
    started = time.monotonic()
    result = cli("validate", cnn_bundles["fp32"], "--data", spec("digits"), "--device", f"ssh://127.0.0.1:{closed}",
                 "--out", tmp_path / "r.json")
    assert result.exit_code == 2
    assert f"remote ssh://127.0.0.1:{closed} does not answer" in result.stderr
    assert time.monotonic() - started < 30
    assert not (tmp_path / "r.json").exists()


def test_a_remote_without_edgeslim_says_so(cli, cnn_bundles, sshd, tmp_path):
    result = cli("validate", cnn_bundles["fp32"], "--data", spec("digits"),
                 "--device", sshd.url("/usr/bin/python3").replace("python=/usr/bin/python3", "python=/bin/false"),
                 "--out", tmp_path / "r.json")
    assert result.exit_code == 2
    assert "cannot import edgeslim.sdk with /bin/false" in result.stderr


def test_int8_forms_are_timed_on_the_remote_device(cli, weights, sshd, torch_free_python, tmp_path):
    """--device ssh://...: each INT8 form runs on the device through the SDK there, one after another."""
    out = tmp_path / "int8"
    result = cli("compress", "--model", spec("small_cnn"), "--weights", weights["cnn"], "--data", spec("digits"),
                 "--quantize", "int8", "--calibration-samples", "64", "--device", sshd.url(torch_free_python),
                 "--out", out)
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    form = metrics["int8_form"]
    assert "one after another" in form["measured_on"] and form["parent"]["p50_ms"] > 0
    assert all(row["p50_ms"] > 0 for row in form["forms"].values())
    assert metrics["int8_settings"]["weights"].endswith("7-bit range")  # features unknown: the safe range
