"""A metric that raises or returns no number fails sensitivity analysis and distillation with one sentence,
through the same evaluation loop as validation (edgeslim.core.evaluate)."""
import re

import pytest

from edgeslim.core.errors import SpecError
from helpers import BAD_METRICS, assert_one_sentence, spec


@pytest.fixture(scope="module")
def digits():
    from edgeslim.core.specs import load_data

    return load_data(spec("digits"))


@pytest.mark.parametrize("metric, fragment", BAD_METRICS)
def test_sensitivity(cli, tmp_path, metric, fragment):
    result = cli("sensitivity", "--model", spec("small_cnn"), "--data", spec("digits"), "--metric", spec(metric),
                 "--calibration-samples", "16", "--out", tmp_path / "s.json")
    assert_one_sentence(result, f"the metric '{spec(metric)}' {fragment}")
    assert not (tmp_path / "s.json").exists()


@pytest.mark.parametrize("metric, fragment", BAD_METRICS)
def test_distillation_after_pruning(cli, tmp_path, metric, fragment):
    """The val score after each epoch is the first use of the metric in `compress --prune`."""
    result = cli("compress", "--model", spec("small_cnn"), "--data", spec("digits"), "--prune", "0.5",
                 "--epochs", "1", "--metric", spec(metric), "--out", tmp_path / "pruned")
    line = assert_one_sentence(result, f"the metric '{spec(metric)}' {fragment}")
    assert "raised" not in fragment or "on outputs of shape (360, 10) and labels of shape (360,)" in line
    assert not (tmp_path / "pruned").exists()


@pytest.mark.parametrize("metric, fragment", BAD_METRICS)
def test_evaluate_torch(digits, metric, fragment):
    from edgeslim.compress.train import evaluate_torch
    from edgeslim.core.model_io import load_model
    from edgeslim.core.specs import load_metric

    with pytest.raises(SpecError, match=re.escape(f"the metric '{spec(metric)}' {fragment}")):
        evaluate_torch(load_model(spec("small_cnn")), digits.val, load_metric(spec(metric)))


@pytest.mark.parametrize("metric, fragment", BAD_METRICS)
def test_evaluate_proto(digits, metric, fragment):
    """The sensitivity table and accuracy control score ONNX models in memory, through onnxruntime."""
    from edgeslim.compress.sensitivity import evaluate_proto
    from edgeslim.compress.train import evaluate_torch
    from edgeslim.core.model_io import load_model
    from edgeslim.core.specs import load_metric
    from edgeslim.export.onnx_export import ExportConfig, export_onnx

    model = load_model(spec("small_cnn")).eval()
    proto, names, _ = export_onnx(model, digits.sample_inputs(), ExportConfig())
    with pytest.raises(SpecError, match=re.escape(f"the metric '{spec(metric)}' {fragment}")):
        evaluate_proto(proto, digits.val, names, load_metric(spec(metric)))
    top1 = load_metric("top1")  # the loop itself: the same score as the torch model's
    assert evaluate_proto(proto, digits.val, names, top1) == pytest.approx(evaluate_torch(model, digits.val, top1),
                                                                           abs=0.3)
