"""A metric that raises or returns no number: one sentence and exit 2, on this host and on an ssh:// device."""
import json
import re

import pytest

from edgeslim.core.errors import SpecError
from helpers import BAD_METRICS, assert_one_sentence, spec


@pytest.mark.parametrize("metric, fragment", BAD_METRICS)
def test_validate_on_the_local_cpu(cli, untrained, tmp_path, metric, fragment):
    result = cli("validate", untrained, "--data", spec("digits"), "--metric", spec(metric), "--runs", "3",
                 "--warmup", "1", "--out", tmp_path / "r.json")
    assert_one_sentence(result, f"the metric '{spec(metric)}' {fragment}")
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("metric, fragment", BAD_METRICS)
def test_the_remote_accuracy_pass_scores_here(untrained, sshd, torch_free_python, metric, fragment):
    """The device predicts; the metric runs on this host, through the same checks."""
    from edgeslim.core.specs import load_data, load_metric
    from edgeslim.devices.accuracy import evaluate
    from edgeslim.devices.remote import RemoteTarget
    from edgeslim.sdk import load

    target, data = RemoteTarget(sshd.url(torch_free_python)), load_data(spec("digits"))
    with pytest.raises(SpecError, match=re.escape(f"the metric '{spec(metric)}' {fragment}")):
        target.accuracy(untrained, data, load_metric(spec(metric)))
    top1 = load_metric("top1")
    assert target.accuracy(untrained, data, top1) == evaluate(load(untrained), data.val, top1)


DEVICE_ONLY_FAILURE = '''
from pathlib import Path

import numpy as np

CALLS = Path(__file__).with_suffix(".calls")


def metric(outputs, labels):
    """Scores the host's pass (the first call), then returns {bad} for the device's outputs."""
    with CALLS.open("a") as calls:
        calls.write("call\\n")
    if len(CALLS.read_text().splitlines()) == 1:
        return float(np.mean(outputs.argmax(axis=1) == labels))
    return {bad}
'''


@pytest.mark.parametrize("bad, fragment", [("float('nan')", "returned nan (type float)"),
                                           ("'high'", "returned 'high' (type str)")])
def test_validate_on_an_ssh_device(cli, untrained, sshd, torch_free_python, tmp_path, bad, fragment):
    """The host's pass is scored first; a metric that fails only on the device's outputs fails there."""
    source = tmp_path / "device_metric.py"
    source.write_text(DEVICE_ONLY_FAILURE.format(bad=bad))
    metric = f"{source}:metric"
    remote = sshd.url(torch_free_python)
    result = cli("validate", untrained, "--data", spec("digits"), "--device", remote, "--metric", metric,
                 "--runs", "3", "--warmup", "1", "--out", tmp_path / "r.json")
    assert_one_sentence(result, f"the metric '{metric}' {fragment}, which is not a finite number")
    assert (tmp_path / "device_metric.calls").read_text().splitlines() == ["call", "call"]  # the second: remote
    assert not (tmp_path / "r.json").exists()


def test_a_good_metric_of_the_users_own_still_validates_remotely(cli, untrained, sshd, torch_free_python, tmp_path):
    result = cli("validate", untrained, "--data", spec("digits"), "--device", "cpu", "--device",
                 sshd.url(torch_free_python), "--metric", spec("top5_error_metric"), "--runs", "3", "--warmup", "1",
                 "--out", tmp_path / "r.json")
    assert result.exit_code == 0, result.stderr
    entry = json.loads((tmp_path / "r.json").read_text())["candidates"][0]
    assert len(entry["accuracy_by_device"]) == 2
    assert set(entry["accuracy_by_device"].values()) == {entry["accuracy"]}
    assert -1.0 <= entry["accuracy"] <= 0.0
