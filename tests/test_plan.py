"""One planner: each option becomes its step, and `compress`, a budget and a recipe sweep plan alike."""
import json

import pytest

from edgeslim.budget import Budget, budget_from_flags, probe_steps
from edgeslim.core.errors import ConfigError
from edgeslim.plan import OptionConflict, PlanOptions, plan_steps
from edgeslim.recipe import recipe_from_dict, sweep_candidates
from helpers import spec


def _steps(**options) -> list[dict]:
    return [step.to_dict() for step in plan_steps(PlanOptions(**options))]


def _by_name(steps: list[dict]) -> dict:
    return {step["step"]: step for step in steps}


def test_no_option_is_no_step():
    assert _steps() == []


def test_prune_with_its_rounding_and_ignored_layers_then_distill_by_default():
    steps = _steps(prune=0.4, round_to=4, prune_ignore=["body.0", "body.3"], epochs=3, lr=0.01)
    assert [s["step"] for s in steps] == ["prune", "distill"]
    prune, distill = steps
    assert (prune["ratio"], prune["round_to"], prune["ignore"]) == (0.4, 4, ["body.0", "body.3"])
    assert (distill["epochs"], distill["lr"]) == (3, 0.01)


@pytest.mark.parametrize("prune, distill, names", [
    (0.5, None, ["prune", "distill"]),
    (0.5, False, ["prune"]),
    (0.0, None, []),
    (0.0, True, ["distill"]),
])
def test_distill_is_on_when_pruning_unless_told(prune, distill, names):
    assert [s["step"] for s in _steps(prune=prune, distill=distill)] == names


def test_qat_takes_its_epochs_rate_and_samples_and_a_fixed_overflow_fix_only():
    qat = _by_name(_steps(qat_epochs=2, qat_lr=5e-4, calibration_samples=64, overflow_fix="auto"))["qat"]
    assert (qat["epochs"], qat["lr"], qat["subset_size"], qat["overflow_fix"]) == (2, 5e-4, 64, "enable")
    assert _by_name(_steps(qat_epochs=1, overflow_fix="disable"))["qat"]["overflow_fix"] == "disable"


@pytest.mark.parametrize("mode", ["dynamic", "fp16", "int4"])
def test_a_quantize_mode_is_its_step(mode):
    assert [s["step"] for s in _steps(quantize=mode)] == [mode]


def test_int4_takes_its_block_size_and_graph_optimization_comes_before_quantizing():
    assert _by_name(_steps(quantize="int4", int4_block_size=64))["int4"]["block_size"] == 64
    assert _by_name(_steps(quantize="int4"))["int4"]["block_size"] == 32
    steps = _steps(prune=0.5, optimize_graph="vit", quantize="int8")
    assert [s["step"] for s in steps] == ["prune", "distill", "optimize", "int8"]
    assert _by_name(steps)["optimize"]["model_type"] == "vit"
    assert [s["step"] for s in _steps(optimize_graph="bert")] == ["optimize"]
    with pytest.raises(ConfigError, match="--optimize-graph 'llama' is not a model type; the types are bert, "):
        PlanOptions(optimize_graph="llama")


def test_int8_takes_samples_accuracy_control_backend_and_overflow_fix():
    int8 = _by_name(_steps(quantize="int8", calibration_samples=50, max_accuracy_drop=0.02, relative=True,
                           int8_backend="ort", overflow_fix="first_layer"))["int8"]
    assert (int8["subset_size"], int8["max_accuracy_drop"], int8["relative"]) == (50, 0.02, True)
    assert (int8["backend"], int8["overflow_fix"]) == ("ort", "first_layer")
    assert _by_name(_steps(max_accuracy_drop=1.0))["int8"]["max_accuracy_drop"] == 1.0  # implies int8


def test_conflicting_options_are_one_sentence():
    with pytest.raises(OptionConflict, match="^--max-accuracy-drop controls INT8 quantization; it cannot go with "
                                             "--quantize fp16$"):
        PlanOptions(quantize="fp16", max_accuracy_drop=1.0)
    with pytest.raises(ConfigError, match="qat already quantizes the model; it cannot be followed by int8"):
        plan_steps(PlanOptions(qat_epochs=1, quantize="int8"))
    with pytest.raises(OptionConflict, match="--target-size and --target-latency are exclusive"):
        budget_from_flags(1.0, 2.0, "cpu", PlanOptions())
    with pytest.raises(OptionConflict, match="--prune and a --target-\\* budget are exclusive"):
        budget_from_flags(1.0, None, "cpu", PlanOptions(prune=0.5))
    assert budget_from_flags(None, None, "cpu", PlanOptions()) is None
    assert budget_from_flags(None, 2.0, "cpu-1t", PlanOptions()) == Budget("latency", 2.0, "cpu-1t")


def test_a_sweep_plans_as_the_options_say():
    sweep = {"prune": [0, 0.5], "quantize": ["none", "int8", "qat"], "distill": {"epochs": 3, "alpha": 0.5},
             "round_to": 4}
    planned = {c["name"]: c["steps"] for c in sweep_candidates(sweep)}
    assert planned["p0.5-kd-int8"] == _steps(prune=0.5, round_to=4, epochs=3, distill_options={"alpha": 0.5},
                                             quantize="int8")
    assert planned["fp32-int8"] == _steps(quantize="int8")
    assert planned["p0.5-kd-qat"] == _steps(prune=0.5, round_to=4, distill_options={"epochs": 3, "alpha": 0.5},
                                            qat_epochs=3)
    recipe = recipe_from_dict({"model": "m.py:f", "data": "d.py:g", "sweep": sweep})
    assert [c.to_dict()["steps"] for c in recipe.candidates] == list(planned.values())


@pytest.mark.parametrize("sweep, words", [
    ({"quantize": ["int3"]}, "unknown step 'int3'"),
    ({"quantize": ["prune"]}, "recipe 'sweep' quantize 'prune' is not a quantization mode"),
    ({"prune": [0.5], "round_to": "8x"}, "recipe 'sweep' round_to must be a whole number"),
    ({"prune": [0.5], "distill": {"epochs": {"a": 1}}}, "step 'distill' option 'epochs' must be a number"),
])
def test_a_wrong_sweep_is_one_sentence(sweep, words):
    with pytest.raises(ConfigError, match=words):
        sweep_candidates(sweep)


def test_probes_prune_as_planned_and_quantize_cheaply():
    steps = plan_steps(PlanOptions(prune=0.3, prune_ignore=["body.0"], qat_epochs=2))
    probe = [s.to_dict() for s in probe_steps(steps)]
    assert [s["step"] for s in probe] == ["prune", "int8"]  # no fine-tuning: it changes neither size nor speed
    assert probe[0] == steps[0].to_dict()
    assert (probe[1]["backend"], probe[1]["subset_size"], probe[1]["overflow_fix"]) == ("nncf", 32, "enable")
    int8 = probe_steps(plan_steps(PlanOptions(prune=0.3, quantize="int8", max_accuracy_drop=1.0)))[-1]
    assert (int8.backend, int8.subset_size, int8.max_accuracy_drop) == ("weights", 32, None)


@pytest.mark.parametrize("flags, words", [
    (["--max-accuracy-drop", "1", "--quantize", "fp16"], "--max-accuracy-drop controls INT8 quantization"),
    (["--prune", "0.5", "--target-size", "1"], "--prune and a --target-* budget are exclusive"),
    (["--int4-block-size", "64"], "--int4-block-size sets INT4 quantization; it cannot go with --quantize none"),
])
def test_conflicting_flags_exit_2_before_any_work(cli, tmp_path, flags, words):
    result = cli("compress", "--model", spec("small_cnn"), "--data", spec("digits"), "--out", tmp_path / "b", *flags)
    assert result.exit_code == 2 and words in result.stderr
    assert not (tmp_path / "b").exists()


def _conv_weight_shapes(bundle) -> list[list[int]]:
    import onnx

    return [list(t.dims) for t in onnx.load(bundle / "model.onnx").graph.initializer if len(t.dims) == 4]


def test_compress_plans_as_a_sweep_does(cli, weights, tmp_path):
    result = cli("compress", "--model", spec("small_cnn"), "--weights", weights["cnn"], "--data", spec("digits"),
                 "--prune", "0.5", "--epochs", "1", "--quantize", "dynamic", "--out", tmp_path / "b")
    assert result.exit_code == 0, result.stderr
    built = json.loads((tmp_path / "b" / "manifest.json").read_text())["compression"]
    swept = sweep_candidates({"prune": [0.5], "quantize": ["dynamic"], "distill": {"epochs": 1}})[0]["steps"]
    planned = _steps(prune=0.5, epochs=1, quantize="dynamic")
    assert swept == planned
    # The manifest records the plan as it ran: distill's quantization "auto" settled (a CNN: not simulated)
    assert built == [{**step, "quantization": "none"} if step["step"] == "distill" else step for step in planned]


def test_a_budget_honours_qat_prune_ignore_and_no_distill(cli, weights, cnn_bundles, tmp_path, monkeypatch):
    import edgeslim.core.outputs as outputs

    written, write_json = [], outputs.write_json
    monkeypatch.setattr(outputs, "write_json", lambda path, *a, **k: (written.append(path), write_json(path, *a, **k)))
    # 60% of the INT8 model: QAT quantizes, so only pruning gets there.
    target = round((cnn_bundles["int8"] / "model.onnx").stat().st_size / 1e6 * 0.6, 4)
    out = tmp_path / "b"
    result = cli("compress", "--model", spec("small_cnn"), "--weights", weights["cnn"], "--data", spec("digits"),
                 "--target-size", target, "--qat", "1", "--prune-ignore", "body.0", "--no-distill", "--out", out)
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    budget = manifest["metrics"]["budget"]
    print(f"size budget {target} MB with QAT: {budget['measured']:.4f} MB at ratio {budget['ratio']:.3f}")
    steps = _by_name(manifest["compression"])
    assert list(steps) == ["prune", "qat"]  # no distill
    assert steps["qat"]["epochs"] == 1 and steps["prune"]["ignore"] == ["body.0"]
    assert manifest["compression"] == _steps(prune=round(budget["ratio"], 4), prune_ignore=["body.0"], distill=False,
                                             qat_epochs=1)
    shapes = _conv_weight_shapes(out)
    assert [32, 1, 3, 3] in shapes  # body.0 keeps its 32 channels
    assert all(shape[0] < 64 for shape in shapes if shape[1] != 1)  # the others are pruned
    assert not budget["over_budget"] and "budget: " in result.stdout
    assert written and all(path.parent != out for path in written)  # written in staging only, once swapped in
