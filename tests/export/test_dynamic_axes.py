"""Axes that really vary: found at export by running the model, recorded in the manifest, and used
to join outputs in evaluation (a time-major recurrent model's metric sees (T, N, C))."""
import json

import numpy as np
import pytest
import torch

from edgeslim.core.axes import batch_axes
from edgeslim.core.errors import ExportError
from edgeslim.core.evaluate import evaluate, score
from edgeslim.core.specs import resolve
from edgeslim.export.graph import tensor_specs
from edgeslim.export.onnx_export import ExportConfig, export_onnx
from helpers import assert_one_sentence, spec


class _Zoo:
    """tests/fixtures/zoo.py by attribute, loaded as edgeslim loads the user's specs."""

    def __getattr__(self, name):
        return resolve(spec(name), "model")


zoo = _Zoo()


def _export(model, inputs):
    proto, _, out_names = export_onnx(model.eval(), inputs, ExportConfig())
    return proto, out_names


def _digits(count=120):
    return zoo.digits()["val"][0][0][:count]


def test_time_major_output_records_its_batch_axis():
    proto, _ = _export(zoo.crnn(), _digits())
    (output,) = tensor_specs(proto, "outputs")
    assert output["shape"] == [8, "batch", 10] and output["batch_axis"] == 1
    assert tensor_specs(proto, "inputs")[0]["batch_axis"] == 0


def test_token_ids_get_a_symbolic_sequence_axis():
    proto, _ = _export(zoo.token_tagger(), zoo.digits_tokens()["val"][0][0])
    assert tensor_specs(proto, "inputs")[0]["shape"] == ["batch", "sequence"]
    assert tensor_specs(proto, "outputs")[0]["shape"] == ["batch", "sequence", 10]


def test_a_dict_exports_named_outputs():
    proto, names = _export(zoo.dict_heads(), _digits())
    assert names == ["logits", "embedding"]
    assert [(s["name"], s["shape"]) for s in tensor_specs(proto, "outputs")] == [
        ("logits", ["batch", 10]), ("embedding", ["batch", 32])]


def test_a_namedtuple_exports_named_outputs():
    from collections import namedtuple

    Pair = namedtuple("Pair", ["scores", "features"])

    class Named(torch.nn.Module):
        def forward(self, x):
            return Pair(x.flatten(1)[:, :10], x.flatten(1))

    _, names = _export(Named(), _digits(4))
    assert names == ["scores", "features"]


def test_an_output_without_a_batch_axis_is_one_sentence():
    with pytest.raises(ExportError, match="output 'output' has no batch axis: its shape is \\(10,\\)"):
        _export(zoo.no_batch_axis(), _digits())


def test_probe_finds_axis_1_of_a_time_major_model():
    model = zoo.crnn().eval()
    with torch.no_grad():
        assert batch_axes(lambda x: model(torch.as_tensor(x)), _digits()) == [1]


def test_score_joins_outputs_on_their_batch_axis():
    parts = [np.full((8, n, 10), n, np.float32) for n in (3, 5)]
    seen = {}

    def metric(outputs, labels):
        seen["shape"] = outputs.shape
        return float(outputs[0, 3, 0])

    assert score(metric, parts, [np.zeros(3), np.zeros(5)], batch_axis=1) == 5.0
    assert seen["shape"] == (8, 8, 10)


def test_evaluate_passes_the_metric_a_time_major_join():
    model = zoo.crnn().eval()
    data = zoo.digits()["val"]
    with torch.no_grad():
        accuracy = evaluate(lambda x: model(torch.as_tensor(x)), data, zoo.sequence_accuracy, batch_axis=1)
    assert 0.0 <= accuracy <= 100.0


def test_export_validate_and_predict_a_crnn_through_the_cli(cli, tmp_path):
    bundle = tmp_path / "crnn"
    result = cli("export", "--model", spec("crnn"), "--data", spec("digits"),
                 "--metric", spec("sequence_accuracy"), "--out", bundle)
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["outputs"][0]["shape"] == [8, "batch", 10] and manifest["outputs"][0]["batch_axis"] == 1
    assert manifest["inputs"][0]["example_shape"] == [120, 1, 8, 8]   # the first val batch: what it was built on
    result = cli("validate", bundle, "--data", spec("digits"), "--metric", spec("sequence_accuracy"),
                 "--out", tmp_path / "report.json")
    assert result.exit_code == 0, result.stderr
    accuracy = json.loads((tmp_path / "report.json").read_text())["candidates"][0]["accuracy"]
    assert 0.0 <= accuracy <= 100.0   # sequence_accuracy asserts that axis 1 holds every label

    from edgeslim.sdk import load

    model = load(bundle)
    assert model.outputs[0].batch_axis == 1
    assert model.predict(_digits(3)).shape == (8, 3, 10)
    assert model.predict(_digits(7), batch_size=3).shape == (8, 7, 10)


def test_export_of_a_model_without_a_batch_axis_exits_2(cli, tmp_path):
    result = cli("export", "--model", spec("no_batch_axis"), "--data", spec("digits"), "--out", tmp_path / "b")
    assert_one_sentence(result, "has no batch axis")


def test_a_dict_model_exports_and_validates(cli, tmp_path):
    bundle = tmp_path / "dict"
    result = cli("export", "--model", spec("dict_heads"), "--data", spec("digits"), "--out", bundle)
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [o["name"] for o in manifest["outputs"]] == ["logits", "embedding"]

    from edgeslim.sdk import load

    outputs = load(bundle).predict(_digits(3))
    assert outputs["logits"].shape == (3, 10) and outputs["embedding"].shape == (3, 32)


def test_a_bert_model_fed_by_name_exports_named_outputs_and_any_length():
    transformers = pytest.importorskip("transformers")
    from edgeslim.export.onnx_export import check_parity

    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=64)
    model = transformers.BertModel(config).eval()
    ids = np.random.default_rng(0).integers(0, 100, (4, 16)).astype(np.int64)
    proto, in_names, out_names = export_onnx(model, {"input_ids": ids, "attention_mask": np.ones_like(ids)},
                                             ExportConfig())
    assert out_names == ["last_hidden_state", "pooler_output"]
    assert [s["shape"] for s in tensor_specs(proto, "inputs")] == [["batch", "sequence"]] * 2
    assert tensor_specs(proto, "outputs")[0]["shape"] == ["batch", "sequence", 32]
    mask = np.ones((3, 40), np.int64)
    mask[0, 20:] = 0
    longer = {"input_ids": np.tile(ids, 3)[:3, :40], "attention_mask": mask}
    assert check_parity(model, proto, [longer], in_names, ExportConfig())["max_abs_err"] < 1e-4


def test_the_user_names_an_axis(cli, tmp_path):
    bundle = tmp_path / "crnn"
    result = cli("export", "--model", spec("crnn"), "--data", spec("digits"), "--metric", spec("sequence_accuracy"),
                 "--dynamic-axis", "output:0=T", "--out", bundle)
    assert result.exit_code == 0, result.stderr
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["outputs"][0]["shape"] == ["T", "batch", 10] and manifest["outputs"][0]["batch_axis"] == 1
    assert manifest["export"]["axes"] == {"output": {"0": "T"}}


@pytest.mark.parametrize("flag, fragment", [
    ("input_ids:1=sequence", "names 'input_ids', which the model has neither as an input nor an output"),
    ("input:7=wide", "is outside 'input', which has 4 axes"),
    ("input=1", "must have the form NAME:AXIS=SYMBOL")])
def test_a_wrong_dynamic_axis_is_one_sentence(cli, tmp_path, flag, fragment):
    result = cli("export", "--model", spec("crnn"), "--data", spec("digits"), "--dynamic-axis", flag,
                 "--out", tmp_path / "b")
    assert_one_sentence(result, fragment)


def test_torch_and_onnx_evaluation_find_the_batch_axis_themselves():
    from edgeslim.compress.sensitivity import evaluate_proto
    from edgeslim.compress.train import evaluate_torch

    model, data = zoo.crnn().eval(), zoo.digits()["val"]
    on_torch = evaluate_torch(model, data, zoo.sequence_accuracy)   # the metric asserts axis 1 holds the batch
    proto, _ = _export(model, _digits())
    on_onnx = evaluate_proto(proto, data, ["input"], zoo.sequence_accuracy)
    assert 0.0 <= on_torch <= 100.0 and on_onnx == pytest.approx(on_torch, abs=1.0)
