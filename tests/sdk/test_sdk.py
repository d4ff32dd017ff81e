"""The SDK: load, verify, predict, benchmark; torch-free."""
import json
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from edgeslim.demo import digits_arrays
from edgeslim.sdk import BundleError, InputError, load


@pytest.fixture(scope="module")
def x_val():
    return digits_arrays()[2]


def test_predict_matches_batch_and_accuracy(cnn_bundles, x_val):
    model = load(cnn_bundles["fp32"])
    assert [s.name for s in model.inputs] == ["input"]
    assert model.inputs[0].shape == ("batch", 1, 8, 8)
    logits = model.predict(x_val[:7])
    assert logits.shape == (7, 10) and logits.dtype == np.float32
    y_val = digits_arrays()[3]
    assert np.mean(model.predict(x_val).argmax(1) == y_val) > 0.95
    # A dict by name gives the same answer as a bare array.
    np.testing.assert_array_equal(model.predict({"input": x_val[:7]}), logits)


def test_predict_accepts_a_torch_tensor(cnn_bundles, x_val):
    import torch

    model = load(cnn_bundles["fp32"])
    np.testing.assert_array_equal(model.predict(torch.from_numpy(x_val[:3])), model.predict(x_val[:3]))


@pytest.mark.parametrize("bad, expected", [
    (np.zeros((1, 1, 8, 8), np.float64), "must be float32"),
    (np.zeros((1, 1, 16, 16), np.float32), "dim 2 should be 8"),
    (np.zeros((1, 8, 8), np.float32), "(4 dims), got (1, 8, 8)"),
    ({"image": np.zeros((1, 1, 8, 8), np.float32)}, "missing ['input']"),
    ([np.zeros((1, 1, 8, 8), np.float32)] * 2, "takes 1 inputs"),
])
def test_wrong_inputs_raise_input_error(cnn_bundles, bad, expected):
    model = load(cnn_bundles["fp32"])
    with pytest.raises(InputError) as caught:
        model.predict(bad)
    assert expected in str(caught.value)
    assert isinstance(caught.value, ValueError)


def _copy(bundle, tmp_path):
    target = tmp_path / "copy"
    shutil.copytree(bundle, target)
    return target


def test_tampered_model_file_is_refused(cnn_bundles, tmp_path):
    bundle = _copy(cnn_bundles["int8"], tmp_path)
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[-10] ^= 0xFF
    (bundle / "model.onnx").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="was changed after the bundle was written"):
        load(bundle)


@pytest.mark.parametrize("damage, expected", [
    (lambda b: (b / "manifest.json").unlink(), "has no manifest.json"),
    (lambda b: (b / "model.onnx").unlink(), "is missing model.onnx"),
    (lambda b: (b / "manifest.json").write_text("{not json"), "not valid JSON"),
    (lambda b: (b / "manifest.json").write_text(json.dumps({"format": "other/9"})), "has format 'other/9'"),
])
def test_damaged_bundles_raise_bundle_error(cnn_bundles, tmp_path, damage, expected):
    bundle = _copy(cnn_bundles["fp32"], tmp_path)
    damage(bundle)
    with pytest.raises(BundleError, match=expected.replace("(", r"\(").replace("[", r"\[")):
        load(bundle)


def test_missing_bundle_directory(tmp_path):
    with pytest.raises(BundleError, match="is not a directory"):
        load(tmp_path / "nope")


def test_benchmark_reports_ordered_percentiles(cnn_bundles):
    stats = load(cnn_bundles["fp32"], threads=1).benchmark(runs=50, warmup=5)
    assert stats["runs"] == 50 and stats["warmup"] == 5
    assert 0 < stats["p50_ms"] <= stats["p90_ms"] <= stats["p99_ms"] <= stats["max_ms"]
    assert stats["throughput"] == pytest.approx(1000.0 / stats["mean_ms"])
    assert stats["load_ms"] > 0 and stats["first_run_ms"] > 0


def test_predict_from_eight_threads_matches_serial(cnn_bundles, x_val):
    model = load(cnn_bundles["int8"])
    chunks = [x_val[i:i + 9] for i in range(0, 9 * 16, 9)]
    serial = [model.predict(chunk) for chunk in chunks]
    results = [None] * len(chunks)

    def work(worker):
        for index in range(worker, len(chunks), 8):
            results[index] = model.predict(chunks[index])

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for got, want in zip(results, serial):
        np.testing.assert_array_equal(got, want)


def test_import_leaves_torch_and_nncf_out():
    code = ("import sys, edgeslim, edgeslim.sdk, edgeslim.sdk.model; "
            "print(sorted(m for m in ('torch', 'nncf', 'torch_pruning') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_sdk_runs_with_only_numpy_and_onnxruntime(cnn_bundles, torch_free_python, tmp_path, x_val):
    """A fresh venv with numpy and onnxruntime alone loads and runs a bundle through the SDK."""
    np.save(tmp_path / "x.npy", x_val[:5])
    code = ("import sys, numpy as np; from edgeslim.sdk import load; "
            f"m = load({str(cnn_bundles['int8'])!r}); y = m.predict(np.load({str(tmp_path / 'x.npy')!r})); "
            "import importlib.util as u; "
            "print(y.shape, u.find_spec('torch') is None, u.find_spec('nncf') is None)")
    done = subprocess.run([torch_free_python, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(5, 10) True True"


def test_batched_predict_equals_one_call(cnn_bundles, x_val):
    model = load(cnn_bundles["fp32"])
    whole = model.predict(x_val[:100])
    np.testing.assert_allclose(model.predict(x_val[:100], batch_size=32), whole, rtol=1e-5, atol=1e-5)


def test_unknown_provider_is_a_device_error(cnn_bundles):
    from edgeslim.sdk import DeviceError

    with pytest.raises(DeviceError, match="which this onnxruntime does not offer"):
        load(cnn_bundles["fp32"], device="tensorrt")
