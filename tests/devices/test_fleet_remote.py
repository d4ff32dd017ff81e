"""Two real loopback devices (two sshd): measured side by side; one that stops answering mid-run fails its own
rows, and the report still holds every other figure."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import spec, wait_for_text

pytestmark = pytest.mark.slow


@pytest.fixture
def second_sshd(tmp_path):
    from sshd import LoopbackSshd, ensure_installed

    reason = ensure_installed()
    if reason:
        pytest.skip(reason)
    (tmp_path / "second").mkdir()
    server = LoopbackSshd(tmp_path / "second").start()
    yield server
    server.stop()


def test_two_devices_are_measured_side_by_side(cli, cnn_bundles, sshd, second_sshd, torch_free_python, tmp_path):
    devices = [sshd.url(torch_free_python), second_sshd.url(torch_free_python)]
    result = cli("validate", cnn_bundles["fp32"], cnn_bundles["int8"], "--data", spec("digits"),
                 *[arg for device in devices for arg in ("--device", device)], "--runs", "30", "--warmup", "5",
                 "--out", tmp_path / "r.json")
    assert result.exit_code == 0, result.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    lanes = [f"ssh:{server.user}@127.0.0.1:{server.port}" for server in (sshd, second_sshd)]
    assert any(set(lanes) <= set(group) for group in report["settings"]["lanes"]["in_parallel"])
    for entry in report["candidates"]:
        assert len(entry["latency"]) == 2 and "failed" not in entry
    assert "side by side" in (tmp_path / "r.md").read_text()


def test_a_device_that_stops_answering_leaves_the_others_figures(cnn_bundles, sshd, second_sshd, torch_free_python,
                                                                 tmp_path):
    steady, dropping = sshd.url(torch_free_python), second_sshd.url(torch_free_python)
    dropping_name = dropping.split("?")[0]
    log = tmp_path / "stderr.txt"
    env = {**os.environ, "EDGESLIM_HISTORY": "off"}
    with open(log, "w") as sink:
        job = subprocess.Popen([sys.executable, "-m", "edgeslim", "validate", cnn_bundles["fp32"], cnn_bundles["int8"],
                                "--data", spec("digits"), "--device", "cpu", "--device", steady, "--device", dropping,
                                "--runs", "200", "--warmup", "5", "--out", tmp_path / "r.json"],
                               stdout=subprocess.DEVNULL, stderr=sink, env=env, text=True)
        wait_for_text(log, f"validate fp32 on {dropping_name}: p50", 180.0)  # the first bundle measured there
        _kill_server_and_sessions(second_sshd)
        job.wait(timeout=300)
    stderr = log.read_text()
    assert job.returncode == 1, stderr[-3000:]
    assert stderr.strip().splitlines()[-1].startswith("edgeslim: 1 measurement(s) failed (int8 on " + dropping_name)
    report = json.loads((tmp_path / "r.json").read_text())
    fp32, int8 = report["candidates"]
    steady_name = steady.split("?")[0]
    assert set(fp32["latency"]) == {"cpu", steady_name, dropping_name} and "failed" not in fp32
    assert set(int8["latency"]) == {"cpu", steady_name}
    assert list(int8["failed"]) == [dropping_name] and "does not answer" in int8["failed"][dropping_name]
    assert int8["accuracy"] > 90.0
    assert f"int8 on {dropping_name}" in (tmp_path / "r.md").read_text()


def _kill_server_and_sessions(server) -> None:
    """The device goes away: its sshd and every session it forked, at once."""
    pids = [server.process.pid]
    for pid in pids:  # grows while walking: children of children
        children = Path(f"/proc/{pid}/task/{pid}/children")
        if children.exists():
            pids += [int(child) for child in children.read_text().split()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    server.process.wait(timeout=10)
