"""Bad input: one clear sentence on stderr, exit code 2, no traceback, nothing half-written."""
import shutil

import pytest
import torch

from helpers import ZOO, run_edgeslim, spec


def _assert_clean_failure(result, fragment, code=2):
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("edgeslim: error: ")
    assert fragment in lines[0]
    assert "Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize("model_spec, fragment", [
    ("no-colon-here", "must have the form path/to/file.py:factory"),
    ("missing.py:factory", "file missing.py does not exist"),
    ("no_such_package.models:net", "no module named 'no_such_package'"),
    (f"{ZOO}:not_there", "has no attribute 'not_there'"),
    (f"{ZOO}:not_a_module", "returned a list; it must return a torch.nn.Module"),
    (f"{ZOO}:raises", "raised RuntimeError: the factory broke"),
])
def test_model_specs_that_do_not_resolve(cli, tmp_path, model_spec, fragment):
    out = tmp_path / "bundle"
    _assert_clean_failure(cli("export", "--model", model_spec, "--data", spec("digits"), "--out", out), fragment)
    assert list(tmp_path.iterdir()) == []


def test_weights_that_do_not_fit(cli, weights, tmp_path):
    result = cli("compress", "--model", spec("mobilenet"), "--weights", weights["cnn"], "--data", spec("digits"),
                 "--quantize", "int8", "--out", tmp_path / "b")
    _assert_clean_failure(result, "do not fit the model: keys")
    assert list(tmp_path.iterdir()) == []


def test_weights_of_another_shape(cli, tmp_path):
    import importlib.util

    from helpers import ZOO  # noqa: F401

    loader = importlib.util.spec_from_file_location("zoo_for_weights", ZOO)
    zoo = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(zoo)
    torch.save(zoo.SmallCNN(width=16).state_dict(), tmp_path / "narrow.pt")
    result = cli("export", "--model", spec("small_cnn"), "--weights", tmp_path / "narrow.pt",
                 "--data", spec("digits"), "--out", tmp_path / "b")
    _assert_clean_failure(result, "of another shape (first: body.0.weight")


@pytest.mark.parametrize("data_spec, fragment", [
    (spec("not_a_mapping"), "must return a mapping with 'val'"),
    (spec("digits_16x16"), "cannot run on the data's first batch"),
])
def test_data_that_does_not_match_the_model(cli, tmp_path, data_spec, fragment):
    result = cli("compress", "--model", spec("transformer"), "--data", data_spec, "--quantize", "int8",
                 "--out", tmp_path / "b")
    _assert_clean_failure(result, fragment)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("data_spec, fragment", [
    (spec("digits_16x16"), "dim 2 should be 8"),
    (spec("digits_float64"), "must be float32, got float64"),
])
def test_validate_with_batches_that_do_not_match_the_bundle(cli, cnn_bundles, tmp_path, data_spec, fragment):
    report = tmp_path / "r.json"
    result = cli("validate", cnn_bundles["fp32"], "--data", data_spec, "--out", report)
    _assert_clean_failure(result, fragment)
    assert "does not match bundle 'fp32'" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_tampered_bundle_is_refused_everywhere(cli, cnn_bundles, tmp_path):
    bundle = tmp_path / "tampered"
    shutil.copytree(cnn_bundles["fp32"], bundle)
    data = bytearray((bundle / "model.onnx").read_bytes())
    data[len(data) // 2] ^= 0x01
    (bundle / "model.onnx").write_bytes(bytes(data))
    for args in (["inspect", bundle], ["bench", bundle, "--runs", "5"],
                 ["validate", bundle, "--data", spec("digits"), "--out", tmp_path / "r.json"]):
        _assert_clean_failure(cli(*args), "was changed after the bundle was written")
    assert not (tmp_path / "r.json").exists()


def test_unknown_device_fails_before_any_work(cli, cnn_bundles, tmp_path):
    result = cli("validate", cnn_bundles["fp32"], "--data", spec("digits"), "--device", "pi9",
                 "--out", tmp_path / "r.json")
    _assert_clean_failure(result, "unknown device 'pi9'")


def test_bad_step_option_from_the_cli(cli, tmp_path):
    result = cli("compress", "--model", spec("small_cnn"), "--data", spec("digits"), "--prune", "1.2",
                 "--out", tmp_path / "b")
    _assert_clean_failure(result, "prune.ratio=1.2 is not allowed")


def test_bad_recipe(cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: x.py:f\ndata: y.py:g\ncandidates:\n  - name: a\n    steps: [{prune: {ratio: 0}}]\n")
    _assert_clean_failure(cli("run", recipe, "--out", tmp_path / "out"), "prune.ratio=0.0 is not allowed")
    assert not (tmp_path / "out").exists()


def test_child_process_shows_no_traceback(tmp_path):
    """The real entry point, as a shell runs it."""
    done = run_edgeslim("inspect", tmp_path / "nothing")
    assert done.returncode == 2
    assert done.stderr.strip() == (f"edgeslim: error: bundle '{tmp_path / 'nothing'}' is not a directory; "
                                   "pass a directory written by edgeslim export/compress")
