"""Layer sensitivity and accuracy-controlled INT8, with real NNCF on the exported models."""
import json

import onnx

from edgeslim.build import StepContext
from edgeslim.compress import make_step
from edgeslim.compress.quantize import calibration_samples
from edgeslim.compress.sensitivity import Quantizer, accuracy_controlled, quantizable_layers
from edgeslim.core.metrics import top1
from edgeslim.core.model_io import load_model
from edgeslim.core.specs import load_data
from edgeslim.export.onnx_export import ExportConfig, export_onnx
from helpers import spec


def test_transformer_within_half_a_point_with_most_layers_int8(cli, weights, tmp_path):
    out = tmp_path / "ctl"
    result = cli("compress", "--model", spec("transformer"), "--weights", weights["transformer"],
                 "--data", spec("digits"), "--max-accuracy-drop", "0.5", "--int8-backend", "nncf", "--out", out)
    assert result.exit_code == 0, result.stderr
    control = json.loads((out / "manifest.json").read_text())["metrics"]["accuracy_control"]
    print(f"transformer: fp32 {control['fp32_accuracy']:.2f}, int8 {control['accuracy']:.2f}, "
          f"{control['layers_int8']} of {control['layers']} layers INT8, in float {control['in_float']}")
    assert control["met"] and control["drop"] <= 0.5
    assert control["layers_int8"] >= control["layers"] // 2
    assert f"{control['layers_int8']} of {control['layers']} layers INT8" in result.stdout
    ops = {node.op_type for node in onnx.load(out / "model.onnx").graph.node}
    assert "QuantizeLinear" in ops


def test_sensitivity_command_scores_every_layer(cli, weights, tmp_path):
    result = cli("sensitivity", "--model", spec("small_cnn"), "--weights", weights["cnn"], "--data", spec("digits"),
                 "--calibration-samples", "100", "--out", tmp_path / "s.json")
    assert result.exit_code == 0, result.stderr
    table = json.loads((tmp_path / "s.json").read_text())
    assert [row["op"] for row in table["layers"]].count("Conv") == 3 and len(table["layers"]) == 4
    for row in table["layers"]:
        assert 0 <= row["alone_in_float"] <= 100 and 0 <= row["alone_quantized"] <= 100
        assert row["gain_in_float"] == row["alone_in_float"] - table["int8_accuracy"]
    assert "| layer | op | alone in float | gain | alone INT8 | drop |" in result.stdout


class PunishingQuantizer(Quantizer):
    """Real NNCF quantization; a quantized model's score loses 1 point, and 1 more per INT8 layer,
    so no limit under a point can be met and the fewer INT8 layers, the better."""

    def quantize(self, in_float):
        model = super().quantize(in_float)
        model.doc_string = str(1 + len(self.layers) - len(in_float))
        return model

    def score(self, model):
        return super().score(model) - float(model.doc_string or 0)


def test_when_no_model_meets_the_limit_the_best_is_kept():
    data = load_data(spec("digits"))
    proto, names, _ = export_onnx(load_model(spec("small_cnn")), data.sample_inputs(), ExportConfig())
    ctx = StepContext(data=data, teacher=None, metric=top1, example_inputs=data.sample_inputs(), candidate="t",
                      input_names=names)
    quantizer = PunishingQuantizer(proto, calibration_samples(ctx, 32), make_step("int8"), ctx)
    result, table = accuracy_controlled(quantizer, 0.5, relative=False)
    assert not result.met
    assert len(table) == len(quantizable_layers(proto)) == 4
    # The best model found is the last one tried, every layer back in float: it is the one kept.
    assert result.in_float == [row["layer"] for row in table]
    assert result.accuracy == quantizer.fp32_accuracy - 1.0
