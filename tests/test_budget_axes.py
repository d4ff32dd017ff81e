"""A budget's probes score the model (an INT8 form's accuracy) through the one evaluation loop: a time-major
CRNN's metric sees (T, N, C), joined on the batch axis; a metric naming no output fails at the first probe."""
import re

import pytest

from edgeslim.core.errors import SpecError
from edgeslim.core.metrics import Metric
from edgeslim.core.model_io import load_model
from edgeslim.core.specs import load_data, resolve
from helpers import spec

SAMPLES = 360                       # the digits' val split: 3 batches of 120


def _prober(metric, quantize="int8"):
    from edgeslim.budget import Budget, Prober
    from edgeslim.plan import PlanOptions

    return Prober(load_model(spec("crnn")), load_data(spec("digits")), Budget("size", 100.0),
                  PlanOptions(quantize=quantize), metric)


def test_a_probe_scores_a_time_major_model_on_its_batch_axis():
    seen = []
    sequence_accuracy = resolve(spec("sequence_accuracy"), "metric")   # asserts axis 1 holds every label

    def metric(outputs, labels):
        seen.append(outputs.shape)
        return sequence_accuracy(outputs, labels)

    prober = _prober(Metric("sequence_accuracy", metric))
    size = prober.measure(0.25)
    assert 0 < size < 1 and prober.budget.probes == [{"ratio": 0.25, "size": size}]
    assert seen and set(seen) == {(8, SAMPLES, 10)}   # the float parent and the INT8 form, each joined on axis 1


def test_a_metric_naming_no_output_fails_at_the_first_probe():
    prober = _prober(Metric("m.py:det", lambda boxes, scores, labels: 0.0), quantize="none")
    with pytest.raises(SpecError, match=re.escape("the metric 'm.py:det' asks for outputs (boxes, scores), but the "
                                                  "model's outputs are output;")):
        prober.measure(0.25)
    assert prober.budget.probes == []
