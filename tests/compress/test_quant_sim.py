"""Quantization-aware distillation: the simulated rounding is onnxruntime's dynamic INT8, to the bit."""
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from edgeslim.compress import make_step
from edgeslim.compress.quant_sim import SimulatedInt8, dynamic_uint8, settled
from edgeslim.core.model_io import load_model
from helpers import spec

REAL = Path(__file__).resolve().parents[1] / "fixtures" / "real_arch.py"


def _session(model):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_the_simulated_rounding_is_onnxruntimes_dynamic_quantize_linear():
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "scale", "zero"]),
         helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"])], "dq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 7, 33])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 7, 33])])
    session = _session(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]))
    rng = np.random.default_rng(0)
    for x in (rng.standard_normal((4, 7, 33)) * 3 + 1, np.abs(rng.standard_normal((4, 7, 33))),
              -np.abs(rng.standard_normal((4, 7, 33))) * 40):
        x = x.astype(np.float32)
        expected = session.run(None, {"x": x})[0]
        simulated = dynamic_uint8(torch.from_numpy(x)).numpy()
        assert np.abs(simulated - x).max() > 1e-3  # it does round
        np.testing.assert_allclose(simulated, expected, rtol=0, atol=1e-6 * np.abs(x).max())


def test_the_gradient_passes_straight_through():
    x = torch.randn(3, 5, requires_grad=True)
    (dynamic_uint8(x) * torch.arange(5.0)).sum().backward()
    assert torch.equal(x.grad, torch.arange(5.0).expand(3, 5))


def _int8_exact_mlp():
    """An MLP whose weights int8 per-channel quantization keeps exactly (integers up to 127 per row, times a
    scale), so that the only rounding left in onnxruntime's dynamic INT8 is the activations'."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(24, 40), torch.nn.GELU(), torch.nn.Linear(40, 8))
    with torch.no_grad():
        for layer in (model[0], model[2]):
            steps = torch.randint(-127, 128, layer.weight.shape).float()
            steps[:, 0] = 127  # each row's largest magnitude is 127 steps: its scale is the row's own
            layer.weight.copy_(steps * torch.rand(layer.weight.shape[0], 1) * 0.01)
    return model.eval()


def test_a_model_under_the_simulation_computes_what_its_dynamic_int8_bundle_does():
    from types import SimpleNamespace

    from edgeslim.compress.int8_forms import _dynamic
    from edgeslim.export.onnx_export import ExportConfig, export_onnx

    model = _int8_exact_mlp()
    x = torch.randn(16, 24) * 2
    proto, names, _ = export_onnx(model, x, ExportConfig())
    bundle = _dynamic(proto, None, SimpleNamespace(overflow_fix="disable", in_float=()), None)
    assert any(node.op_type in ("MatMulInteger", "DynamicQuantizeMatMul") for node in bundle.graph.node)
    int8_out = _session(bundle).run(None, {names[0]: x.numpy()})[0]
    with torch.no_grad(), SimulatedInt8(model, "dynamic_int8") as simulated:
        simulated_out = model(x).numpy()
    with torch.no_grad():
        float_out = model(x).numpy()
    assert simulated.layers == 2 and not any(m._forward_pre_hooks for m in model.modules())  # hooks gone after
    assert np.abs(float_out - int8_out).max() > 20 * np.abs(simulated_out - int8_out).max()
    np.testing.assert_allclose(simulated_out, int8_out, rtol=1e-4, atol=1e-4)


def test_auto_settles_from_the_steps_after_distill_and_the_model(weights):
    mlp, cnn = _int8_exact_mlp(), load_model(spec("small_cnn"), weights["cnn"])

    def simulation(model, *names, **options):
        steps = [make_step("prune"), make_step("distill", options), *map(make_step, names)]
        (distill,) = [step for step in settled(steps, model) if step.name == "distill"]
        return distill.quantization

    assert simulation(mlp, "int8") == simulation(mlp, "optimize", "dynamic") == "dynamic_int8"
    assert simulation(mlp) == simulation(mlp, "fp16") == simulation(mlp, "int4") == "none"
    assert simulation(cnn, "int8") == "none"  # its convolutions, which the simulation does not reach, dominate
    assert simulation(mlp, "int8", quantization="none") == "none"
    assert simulation(cnn, "int8", quantization="dynamic_int8") == "dynamic_int8"


def test_a_bad_simulation_is_one_sentence(cli, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"model: {REAL}:sentence_encoder\ndata: {REAL}:tokens\nmetric: {REAL}:output_scale\n"
                      "candidates:\n  - name: x\n    steps: [{distill: {quantization: int4}}, int8]\n")
    result = cli("run", recipe, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "quantization" in result.stderr and "'dynamic_int8'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_tiny_bert_distills_through_simulated_int8_and_says_so(cli, tmp_path):
    pytest.importorskip("transformers")
    out = tmp_path / "bert"
    result = cli("compress", "--model", f"{REAL}:sentence_encoder", "--data", f"{REAL}:tokens",
                 "--metric", f"{REAL}:output_scale", "--prune", "0.5", "--round-to", "4", "--distill",
                 "--epochs", "1", "--quantize", "dynamic", "--out", out)
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    (distill,) = [step for step in manifest["compression"] if step["step"] == "distill"]
    assert distill["quantization"] == "dynamic_int8"
    simulated = manifest["metrics"]["distill_run"]["quantization"]
    assert simulated["simulated"] == "dynamic_int8" and simulated["linear_layers"] >= 12
    # the float epoch, then one through the simulation at a quarter of the learning rate
    history = manifest["metrics"]["distill_history"]
    assert [(epoch["epoch"], epoch.get("simulated")) for epoch in history] == [(1, None), (2, "dynamic_int8")]
    assert simulated["epochs"] == [2] and simulated["lr"] == pytest.approx(distill["lr"] / 4)
    assert np.isfinite(simulated["val_simulated"])
    onnx.checker.check_model(onnx.load(out / "model.onnx"))
    shown = cli("inspect", out)
    assert "through simulated dynamic INT8" in shown.stdout
