"""The INT8 forms and the choice among them: measured on the target, recorded in the manifest.

No timing is asserted here (speed is the benchmark's job); these tests check that every form is
built, scored and timed, that the choice respects the accuracy rule, that the instruction set
decides the weight range, and that the integer forms run as integer kernels.
"""
import json

import numpy as np
import onnx
import pytest

from edgeslim.devices.profiles import host_features
from helpers import spec


def _compress(cli, weights, arch, factory, out, *extra):
    result = cli("compress", "--model", spec(factory), "--weights", weights[arch], "--data", spec("digits"),
                 "--quantize", "int8", "--calibration-samples", "100", "--out", out, *extra)
    assert result.exit_code == 0, result.stderr
    return json.loads((out / "manifest.json").read_text())


def test_weights_form_stores_int8_and_runs_the_float_graph(weights):
    import onnxruntime as ort

    from edgeslim.compress.int8_forms import weights_only
    from edgeslim.core.model_io import load_model
    from edgeslim.core.specs import load_data
    from edgeslim.export.kernels import int8_coverage
    from edgeslim.export.onnx_export import ExportConfig, export_onnx

    data = load_data(spec("digits"))
    proto, _, _ = export_onnx(load_model(spec("mobilenet"), str(weights["mobilenet"])), data.sample_inputs(),
                              ExportConfig())
    small = weights_only(proto, seven_bit=True)
    assert small.ByteSize() < 0.35 * proto.ByteSize()
    int8_weights = [t for t in small.graph.initializer if t.data_type == onnx.TensorProto.INT8]
    assert len(int8_weights) >= 20
    assert max(int(np.abs(onnx.numpy_helper.to_array(t).astype(np.int32)).max()) for t in int8_weights) <= 63
    # onnxruntime folds every Cast and Mul of the weights at load: what runs is the float graph.
    coverage = int8_coverage(small)
    assert coverage["int8"] == 0 and coverage["weights_dequantized_per_run"] == 0
    x = data.val[0][0][:16]
    ref = ort.InferenceSession(proto.SerializeToString()).run(None, {"input": x})[0]
    got = ort.InferenceSession(small.SerializeToString()).run(None, {"input": x})[0]
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.9


def test_auto_measures_every_form_against_the_float_parent(cli, weights, tmp_path):
    manifest = _compress(cli, weights, "mobilenet", "mobilenet", tmp_path / "auto")
    form = manifest["metrics"]["int8_form"]
    print(json.dumps(form, indent=1))
    assert set(form["forms"]) == {"nncf", "ort", "weights"}      # no MatMul: no dynamic form
    parent = form["parent"]
    assert parent["p50_ms"] > 0 and parent["accuracy"] > 90
    for name, row in form["forms"].items():
        assert row["p50_ms"] > 0 and row["x_parent"] > 0   # the median of per-round ratios to the parent
        assert row["size_bytes"] < 0.6 * parent["size_bytes"], name  # a tiny model: names weigh in
    chosen = form["forms"][form["chosen"]]
    assert parent["accuracy"] - chosen["accuracy"] <= 0.01 * parent["accuracy"] + 1e-9
    fastest = min(row["x_parent"] for row in form["forms"].values()
                  if parent["accuracy"] - row["accuracy"] <= 0.01 * parent["accuracy"] + 1e-9)
    assert chosen["x_parent"] <= fastest * 1.02 + 1e-12
    assert "alternating in one process" in form["measured_on"]
    assert "int8_coverage" in manifest["metrics"]
    mixed = form["mixed"]  # per-layer timing of the fastest QDQ form, the layers it sent back to float
    assert mixed["tried"] and mixed["base"] in ("nncf", "ort") and len(mixed["layers"]) == 22
    assert set(mixed["in_float"]) == {name for name, row in mixed["layers"].items() if row["in_float"]}
    if mixed.get("kept"):
        assert form["chosen"] == "mixed" and mixed["x_parent"] < 0.98 * mixed["chosen_x_parent"]
        convs = manifest["metrics"]["int8_coverage"]["families"]["conv"]
        assert convs["float"] == sum(1 for name in mixed["in_float"] if mixed["layers"][name]["op"] == "Conv")
    else:
        assert form["chosen"] != "mixed" and mixed["why"]


def test_transformers_also_try_dynamic_int8(cli, weights, tmp_path):
    form = _compress(cli, weights, "transformer", "transformer", tmp_path / "auto")["metrics"]["int8_form"]
    assert "dynamic" in form["forms"] and form["forms"]["dynamic"]["accuracy"] > 85


@pytest.mark.parametrize("backend", ["nncf", "ort"])
def test_integer_forms_run_as_integer_kernels(cli, weights, tmp_path, backend):
    manifest = _compress(cli, weights, "mobilenet", "mobilenet", tmp_path / backend, "--int8-backend", backend)
    coverage = manifest["metrics"]["int8_coverage"]["families"]
    assert coverage["conv"]["float"] == 0 and coverage["conv"]["int8"] == 21
    assert coverage["gemm"]["int8"] == 1
    assert manifest["metrics"]["int8_form"]["chosen"] == backend
    assert manifest["metrics"]["int8_form"]["mixed"] == {
        "tried": False, "why": f"--int8-backend {backend} asks for that form as it is"}


@pytest.mark.parametrize("device, bits, chosen", [("rpi5", "8-bit", "nncf"), ("rpi4", "7-bit", "weights")])
def test_the_targets_instruction_set_decides(cli, weights, tmp_path, device, bits, chosen):
    """Boards this host cannot emulate are not timed: int8 dot products (rpi5) get integer kernels
    with full-range weights; without them (rpi4) int8 storage at float speed."""
    manifest = _compress(cli, weights, "cnn", "small_cnn", tmp_path / device, "--device", device)
    settings, form = manifest["metrics"]["int8_settings"], manifest["metrics"]["int8_form"]
    assert bits in settings["weights"] and settings["target"] == device
    assert form["chosen"] == chosen and "not measured" in form["why"]
    assert not form["mixed"]["tried"] and f"{device} is not this host" in form["mixed"]["why"]


def test_this_hosts_settings_follow_its_features(cli, weights, tmp_path):
    settings = _compress(cli, weights, "cnn", "small_cnn", tmp_path / "host", "--int8-backend", "weights")
    settings = settings["metrics"]["int8_settings"]
    wide = bool(set(host_features()) & {"avx512_vnni", "avx_vnni", "asimddp"})
    assert settings["overflow_fix"] == ("disable" if wide else "enable")


def test_graphs_timed_against_each_other_run_with_threads_that_do_not_spin():
    # Two sessions in one process: one's spinning threads hold the cores the other's run needs next, and
    # the comparison of a fused transformer against the unfused one flipped (app/build.py _local_measure).
    from edgeslim.build import build_target, timing_settings
    from edgeslim.devices.targets import get_target

    options, providers = timing_settings(get_target("cpu").profile)
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert providers[0] == "CPUExecutionProvider"
    target, measure = build_target("cpu")
    import onnx.helper as h

    graph = h.make_graph([h.make_node("Relu", ["x"], ["y"])], "g",
                         [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
                         [h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])])
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    timed = measure({"parent": model, "same": model}, {"x": np.ones((1, 4), np.float32)})
    assert set(timed["p50_ms"]) == {"parent", "same"} and timed["x_parent"]["parent"] == 1.0
