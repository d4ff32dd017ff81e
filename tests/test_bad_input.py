"""Bad input: one clear sentence on stderr, exit code 2, no traceback, nothing half-written."""
import re
import shutil
from pathlib import Path

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


MISSING = "needs the module 'no_such_library', which is not installed here: install the package that provides it"


@pytest.mark.parametrize("where, fragment", [
    ("factory", f"data factory '{{spec}}' {MISSING}"),      # imported when called
    ("file", f"data spec '{{spec}}': importing {{file}} {MISSING}"),  # imported by the file
])
def test_a_data_factory_that_needs_a_missing_module_says_to_install_it(cli, tmp_path, where, fragment):
    source = tmp_path / "mydata.py"
    body = "    import no_such_library\n" if where == "factory" else ""
    source.write_text(("" if body else "import no_such_library\n") + f"def data():\n{body}    return {{}}\n")
    data_spec = f"{source}:data"
    result = cli("export", "--model", spec("small_cnn"), "--data", data_spec, "--out", tmp_path / "b")
    _assert_clean_failure(result, fragment.format(spec=data_spec, file=source))


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


# -- documents of the wrong shape: found by probing every verb with tampered bundles, reports, outputs ---
# Each case below ended in `internal error` (exit 3) or was silently accepted before documents were typed.

def _tampered_bundle(folder, change=None, model: bytes | None = None):
    """The tiny bundle (tests/tiny.py) with its manifest changed by `change`, or model.onnx replaced by
    `model` under a matching checksum (the manifest is not itself covered by one)."""
    import hashlib
    import json

    from tiny import write_tiny_bundle

    bundle = write_tiny_bundle(folder / "tampered")
    manifest = json.loads((bundle / "manifest.json").read_text())
    if model is not None:
        (bundle / "model.onnx").write_bytes(model)
        manifest["sha256"]["model.onnx"] = hashlib.sha256(model).hexdigest()
    if change:
        change(manifest)
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    return bundle


def _put(key, value):
    return lambda manifest: manifest.__setitem__(key, value)


def _metric(key, value):
    return lambda manifest: manifest["metrics"].__setitem__(key, value)


def _input(key, value):
    return lambda manifest: manifest["inputs"][0].__setitem__(key, value)


@pytest.mark.parametrize("change, fragment", [
    (_put("inputs", "input"), "'inputs' must be a list of mappings, got 'input'"),
    (_put("inputs", ["input"]), "'inputs[0]' must be a mapping, got 'input'"),
    (_put("inputs", [{}]), "'inputs[0]' lacks 'name'"),
    (_put("outputs", [1]), "'outputs[0]' must be a mapping, got 1"),
    (_put("name", ["a"]), "'name' must be text, got ['a']"),
    (_put("compression", "prune"), "'compression' must be a list of mappings, got 'prune'"),
    (_put("compression", [{}]), "'compression[0]' lacks 'step'"),
    (_put("compression", [{"step": 1}]), "'compression[0].step' must be text, got 1"),
    (_put("metrics", "x"), "'metrics' must be a mapping, got 'x'"),
    (_metric("params", "x"), "'metrics.params' must be a whole number, got 'x'"),
    (_metric("size_bytes", "x"), "'metrics.size_bytes' must be a whole number, got 'x'"),
    (_metric("accuracy_control", {"a": 1}), "'metrics.accuracy_control' lacks 'met'"),
    (_put("created_with", "x"), "'created_with' must be a mapping of names to text values or nulls, got 'x'"),
    (_input("dtype", "float99"), "'inputs[0].dtype' is 'float99', which is not a numpy dtype name"),
    (_input("dtype", 7), "'inputs[0].dtype' must be text, got 7"),
    (_input("shape", None), "'inputs[0].shape' must be a list of whole numbers or text values or nulls, got None"),
    (_input("shape", [-1, 1, 8, 8]), "'inputs[0].shape[0]' is -1, which is not a dimension size"),
    (_put("format", "edgeslim-bundle/2"), "has format 'edgeslim-bundle/2'; this edgeslim reads 'edgeslim-bundle/1'; "
                                          "it was written by another edgeslim version"),
])
def test_a_manifest_of_wrong_types_is_one_sentence_everywhere(cli, tmp_path, change, fragment):
    from edgeslim.sdk import BundleError, load

    bundle = _tampered_bundle(tmp_path, change)
    for args in (["inspect", bundle], ["validate", bundle, "--data", spec("digits"), "--out", tmp_path / "r.json"]):
        _assert_clean_failure(cli(*args), fragment)
    with pytest.raises(BundleError, match=re.escape(fragment)):
        load(bundle)
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("change, fragment", [
    (_put("inputs", []), "lists inputs [], but model.onnx has ['input']"),
    (_input("name", "nope"), "lists inputs ['nope'], but model.onnx has ['input']"),
    (_put("outputs", [{"name": "nope", "dtype": "float32", "shape": ["batch", 10]}]),
     "lists outputs ['nope'], but model.onnx has ['output']"),
    (_input("dtype", "int64"), "declares input 'input' as int64 [batch, 1, 8, 8], but model.onnx has float32"),
    (_input("shape", ["batch", 8, 8]), "declares input 'input' as float32 [batch, 8, 8], but model.onnx has float32 "
                                       "[batch, 1, 8, 8]"),
    (_input("shape", [1000, 1, 8, 8]), "declares input 'input' as float32 [1000, 1, 8, 8]"),
])
def test_a_manifest_that_disagrees_with_its_model_is_refused_at_load(cli, tmp_path, change, fragment):
    """The manifest has no checksum of its own: what it declares is checked against the session."""
    bundle = _tampered_bundle(tmp_path, change)
    result = cli("validate", bundle, "--data", spec("digits"), "--out", tmp_path / "r.json")
    _assert_clean_failure(result, fragment)
    assert cli("inspect", bundle).exit_code == 0  # inspect reads the manifest and checksums, not the model


@pytest.mark.parametrize("model, fragment", [
    (b"", "is not a valid ONNX model (it holds no graph)"),
    (b"\x08\x07", "is not a valid ONNX model (it holds no graph)"),                # ir_version 7, nothing else
    (b"\x3a\x02\x0a\x00", "onnxruntime cannot load"),                               # a graph with a nameless node
    (b"\xff" * 64, "is not a valid ONNX model (a varint is truncated"),
])
def test_a_model_that_is_no_model_under_a_matching_checksum_is_refused(cli, tmp_path, model, fragment):
    from edgeslim.sdk import BundleError, load

    bundle = _tampered_bundle(tmp_path, model=model)
    with pytest.raises(BundleError, match=re.escape(fragment)):
        load(bundle)
    _assert_clean_failure(cli("validate", bundle, "--data", spec("digits"), "--out", tmp_path / "r.json"), fragment)


def _report_with(change):
    from tiny import tiny_report

    report = tiny_report()
    change(report["candidates"][1])
    return report


@pytest.mark.parametrize("change, fragment", [
    (lambda c: c.update(params="x"), "'candidates[1].params' must be a whole number or null, got 'x'"),
    (lambda c: c.update(params=[1]), "'candidates[1].params' must be a whole number or null, got [1]"),
    (lambda c: c["latency"]["cpu"].update(peak_rss_mb="x"), "'candidates[1].latency.cpu.peak_rss_mb' must be a number"),
    (lambda c: c["latency"]["cpu"].update(load_ms="x"), "'candidates[1].latency.cpu.load_ms' must be a number"),
    (lambda c: c.update(compression="prune"), "'candidates[1].compression' must be a list of mappings, got 'prune'"),
    (lambda c: c.update(compression=[1]), "'candidates[1].compression[0]' must be a mapping, got 1"),
    (lambda c: c.update(compression=[{}]), "'candidates[1].compression[0]' lacks 'step'"),
    (lambda c: c.update(pareto="x"), "'candidates[1].pareto' must be a mapping of names to true/false values"),
    (lambda c: c.update(slower_than_baseline="x"), "'candidates[1].slower_than_baseline' must be a mapping"),
    (lambda c: c.update(accuracy_control="x"), "'candidates[1].accuracy_control' must be a mapping or null, got 'x'"),
    (lambda c: c.update(accuracy_control={}), "'candidates[1].accuracy_control' lacks 'met'"),
    (lambda c: c.update(accuracy_by_device={"cpu": "x"}), "'candidates[1].accuracy_by_device.cpu' must be a number"),
    (lambda c: c.update(passed="yes"), "'candidates[1].passed' must be true or false or null, got 'yes'"),
    (lambda c: c.update(gates={"a": {}}), "'candidates[1].gates.a' lacks 'value'"),
])
def test_a_report_of_wrong_types_is_one_sentence(cli, tmp_path, change, fragment):
    import json

    path = tmp_path / "r.json"
    path.write_text(json.dumps(_report_with(change)))
    for args in (["report", path], ["report", path, "--max-accuracy-drop", "1", "--json", tmp_path / "gated.json"]):
        _assert_clean_failure(cli(*args), fragment)
    assert not (tmp_path / "gated.json").exists()


@pytest.mark.parametrize("settings, fragment", [
    ("x", "'settings' must be a mapping, got 'x'"), ([1], "'settings' must be a mapping, got [1]"),
    ({"bench": "x"}, "'settings.bench' must be a mapping, got 'x'"), ({"metric": 5}, "'settings.metric' must be text"),
])
def test_report_settings_of_wrong_types_are_one_sentence(cli, tmp_path, settings, fragment):
    import json

    from tiny import tiny_report

    path = tmp_path / "r.json"
    path.write_text(json.dumps({**tiny_report(), "settings": settings}))
    _assert_clean_failure(cli("report", path), fragment)


def test_a_report_flag_for_a_device_without_latency_renders(cli, tmp_path):
    import json

    path = tmp_path / "r.json"
    path.write_text(json.dumps(_report_with(lambda c: c.update(slower_than_baseline={"tpu": True}))))
    result = cli("report", path)
    assert result.exit_code == 0, result.stderr
    assert "slower than the baseline" not in result.stdout


def test_a_candidate_not_yet_gated_reads_as_neither_passed_nor_failed(cli, tmp_path):
    import json

    from tiny import tiny_report

    from edgeslim.report.gates import GateConfig, apply_gates

    report = tiny_report()
    assert apply_gates(report, GateConfig()) is True
    assert report["passed"] is None and all(entry["passed"] is None for entry in report["candidates"])
    path = tmp_path / "r.json"
    path.write_text(json.dumps(tiny_report()))
    shown = cli("report", path, "--json", tmp_path / "out.json")
    assert shown.exit_code == 0 and "| pass |" not in shown.stdout and "| — |" in shown.stdout
    assert json.loads((tmp_path / "out.json").read_text())["candidates"][1]["passed"] is None
    gated = cli("report", path, "--max-accuracy-drop", "1", "--json", tmp_path / "gated.json", "--force")
    assert gated.exit_code == 0 and "| pass |" in gated.stdout
    assert json.loads((tmp_path / "gated.json").read_text())["candidates"][1]["passed"] is True


# -- outputs the OS refuses ----------------------------------------------------------------------------

def _unprivileged(*args):
    """`edgeslim ARGS` as a child process that file permissions apply to (root ignores a read-only folder)."""
    import os
    import shutil
    import subprocess
    import sys

    command = [sys.executable, "-m", "edgeslim", "--quiet", *map(str, args)]
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("runs as root, and setpriv (to drop to an unprivileged user) is not installed")
        command = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups", *command]
    env = {key: value for key, value in os.environ.items() if key != "EDGESLIM_CACHE"}
    return subprocess.run(command, capture_output=True, text=True, env={**env, "HOME": "/tmp"}, timeout=120,
                          cwd="/tmp")


@pytest.fixture
def shared_folder():
    """A folder that an unprivileged user can read (pytest's own are private to their owner)."""
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="edgeslim-outputs-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("command", ["report", "validate", "run"])
@pytest.mark.parametrize("nested", [False, True])
def test_an_output_in_a_read_only_folder_is_one_sentence_and_leaves_nothing(shared_folder, command, nested):
    import json

    from tiny import tiny_report

    report = shared_folder / "r.json"
    report.write_text(json.dumps(tiny_report()))
    recipe = shared_folder / "r.yaml"
    recipe.write_text("model: m.py:f\ndata: d.py:g\ncandidates: [{name: a}]\n")
    read_only = shared_folder / "read-only"
    read_only.mkdir(mode=0o555)
    read_only.chmod(0o555)
    out = read_only / "deeper" if nested else read_only
    args = {"report": ["report", report, "--json", out / "gated.json"],
            "validate": ["validate", shared_folder / "none", "--data", "d.py:g", "--out", out / "v.json"],
            "run": ["run", recipe, "--out", out / "run"]}[command]
    done = _unprivileged(*args)
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgeslim: error: cannot write "), done.stderr
    assert "permission denied" in lines[0] and "choose a path in a folder you can write to" in lines[0]
    assert list(read_only.iterdir()) == []


def test_an_output_below_a_file_is_one_sentence(cli, tmp_path):
    import json

    from tiny import tiny_report

    report = tmp_path / "r.json"
    report.write_text(json.dumps(tiny_report()))
    _assert_clean_failure(cli("report", report, "--json", report / "gated.json"),
                          f"cannot write {report / 'gated.json'}: {report} is a file, not a folder")
