"""Outputs by name: a metric whose parameters name a model's outputs gets each of them, joined along its own
batch axis, on every path (torch, the SDK, validate, an ssh:// device); `fn(outputs, labels)` still gets the
first output; a name the model lacks is one sentence and exit 2."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgeslim.core.specs import load_data, load_metric, resolve
from edgeslim.devices.remote import RemoteTarget
from helpers import assert_one_sentence, spec

FIXTURE = Path(__file__).parent / "fixtures" / "named_outputs.py"
SAMPLES = 360                       # the digits' val split: 3 batches of 120


def named(name: str) -> str:
    return f"{FIXTURE}:{name}"


@pytest.fixture
def seen():
    """What the fixture's metrics received, as edgeslim loads them (the module its spec names)."""
    record = resolve(named("logits_and_embedding"), "metric").__globals__["SEEN"]
    record.clear()
    return record


def _export(cli, folder: Path, model: str) -> Path:
    result = cli("export", "--model", model, "--data", spec("digits"), "--out", folder)
    assert result.exit_code == 0, result.stderr
    return folder


@pytest.fixture(scope="module")
def dict_bundle(cli, tmp_path_factory):
    """zoo.py's DictHeads, untrained: outputs logits (N, 10) and embedding (N, 32)."""
    return _export(cli, tmp_path_factory.mktemp("dict") / "heads", spec("dict_heads"))


def _validate(cli, bundle, metric, out, *devices):
    return cli("validate", bundle, "--data", spec("digits"), "--metric", metric, "--runs", "3", "--warmup", "1",
               *devices, "--out", out)


def _by_hand(bundle, output: str) -> tuple[np.ndarray, np.ndarray]:
    """One output of the bundle on every val batch, joined on axis 0, and the labels: through the SDK."""
    from edgeslim.sdk import load

    model, val = load(bundle), load_data(spec("digits")).val
    return np.concatenate([model.predict(x)[output] for x, _ in val]), np.concatenate([y for _, y in val])


def test_validate_gives_the_metric_both_outputs_it_names(cli, dict_bundle, seen, tmp_path):
    result = _validate(cli, dict_bundle, named("logits_and_embedding"), tmp_path / "named.json")
    assert result.exit_code == 0, result.stderr
    assert seen == [{"logits": (SAMPLES, 10), "embedding": (SAMPLES, 32), "labels": (SAMPLES,)}]
    logits, labels = _by_hand(dict_bundle, "logits")
    expected = 100.0 * np.mean(logits.argmax(axis=1) == labels)
    accuracy = json.loads((tmp_path / "named.json").read_text())["candidates"][0]["accuracy"]
    assert accuracy == pytest.approx(expected, abs=1e-9)
    # A metric of (outputs, labels) gets the first output, as before: the same figure.
    result = _validate(cli, dict_bundle, "top1", tmp_path / "top1.json")
    assert result.exit_code == 0, result.stderr
    assert json.loads((tmp_path / "top1.json").read_text())["candidates"][0]["accuracy"] == pytest.approx(expected)


def test_a_metric_may_name_one_output_that_is_not_the_first(cli, dict_bundle, seen, tmp_path):
    result = _validate(cli, dict_bundle, named("embedding_norm"), tmp_path / "r.json")
    assert result.exit_code == 0, result.stderr
    assert seen == [{"embedding": (SAMPLES, 32), "labels": (SAMPLES,)}]
    embedding, _ = _by_hand(dict_bundle, "embedding")
    accuracy = json.loads((tmp_path / "r.json").read_text())["candidates"][0]["accuracy"]
    assert accuracy == pytest.approx(float(np.linalg.norm(embedding, axis=1).mean()), rel=1e-6) and accuracy > 0


@pytest.mark.parametrize("metric, asked", [("boxes_and_scores", "boxes, scores"),
                                           ("logits_and_boxes", "logits, boxes")])
def test_a_name_the_model_lacks_is_one_sentence_and_exit_2(cli, dict_bundle, tmp_path, metric, asked):
    result = _validate(cli, dict_bundle, named(metric), tmp_path / "r.json")
    assert_one_sentence(result, f"the metric '{named(metric)}' asks for outputs ({asked}), but the model's outputs "
                                "are logits, embedding; name its parameters after outputs, or take (outputs, labels)")
    assert not (tmp_path / "r.json").exists()


def test_each_output_is_joined_on_its_own_batch_axis_in_torch_and_in_the_bundle(cli, seen, tmp_path):
    """steps is time-major (8, N, 10), pooled (N, 10): the manifest records axes 1 and 0, and torch finds them."""
    import onnx

    from edgeslim.compress.sensitivity import evaluate_proto
    from edgeslim.compress.train import evaluate_torch
    from edgeslim.core.model_io import load_model
    from edgeslim.devices.accuracy import evaluate
    from edgeslim.sdk import load

    bundle = _export(cli, tmp_path / "heads", named("time_major_heads"))
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [(o["name"], o["batch_axis"]) for o in manifest["outputs"]] == [("steps", 1), ("pooled", 0)]
    val, metric = load_data(spec("digits")).val, load_metric(named("steps_and_pooled"))
    seen.clear()  # export scored the bundle with top1
    on_torch = evaluate_torch(load_model(named("time_major_heads")), val, metric)
    on_bundle = evaluate(load(bundle), val, metric)
    # the in-memory ONNX path INT8 forms, accuracy control, sensitivity and budgets score with
    on_proto = evaluate_proto(onnx.load(str(bundle / "model.onnx")), val, ["input"], metric)
    shapes = {"steps": (8, SAMPLES, 10), "pooled": (SAMPLES, 10), "labels": (SAMPLES,)}
    assert seen == [shapes, shapes, shapes]
    assert 0.0 <= on_bundle <= 100.0 and on_torch == pytest.approx(on_bundle, abs=1.0) == on_proto


class LoopbackTarget(RemoteTarget):
    """An ssh:// device whose shell and copies are this host's: the worker, the files it reads and writes,
    and the scoring here go exactly as over ssh."""

    def __init__(self, workdir: Path):
        super().__init__(f"ssh://device?python={sys.executable}&workdir={workdir}")

    def ssh(self, remote_command, what, timeout=None):
        return subprocess.run(["sh", "-c", remote_command], capture_output=True, text=True, timeout=300)

    def copy_to(self, local, remote):
        if Path(local).is_dir():
            shutil.copytree(local, Path(remote) / Path(local).name)
        else:
            shutil.copy(local, remote)

    def copy_from(self, remote, local):
        shutil.copy(remote, local)


def test_a_device_sends_back_every_output_the_metric_names(dict_bundle, seen, tmp_path):
    from edgeslim.devices.accuracy import evaluate
    from edgeslim.sdk import load

    target, data = LoopbackTarget(tmp_path / "device"), load_data(spec("digits"))
    metric = load_metric(named("logits_and_embedding"))
    on_device = target.accuracy(dict_bundle, data, metric)
    here = evaluate(load(dict_bundle), data.val, metric)
    shapes = {"logits": (SAMPLES, 10), "embedding": (SAMPLES, 32), "labels": (SAMPLES,)}
    assert seen == [shapes, shapes] and on_device == here
    top1 = load_metric("top1")   # (outputs, labels): the first output only travels, as before
    assert target.accuracy(dict_bundle, data, top1) == evaluate(load(dict_bundle), data.val, top1) == here


def test_a_torch_free_device_over_ssh_sends_back_the_named_outputs(dict_bundle, seen, sshd, torch_free_python):
    target, data = RemoteTarget(sshd.url(torch_free_python)), load_data(spec("digits"))
    metric = load_metric(named("logits_and_embedding"))
    logits, labels = _by_hand(dict_bundle, "logits")
    assert target.accuracy(dict_bundle, data, metric) == pytest.approx(100.0 * np.mean(logits.argmax(1) == labels))
    assert seen == [{"logits": (SAMPLES, 10), "embedding": (SAMPLES, 32), "labels": (SAMPLES,)}]
