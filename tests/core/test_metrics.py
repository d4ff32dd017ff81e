"""What a metric asks for: the first output, or outputs named by its parameters (all but the last, the labels)."""
import functools
import re

import numpy as np
import pytest

from edgeslim.core.errors import SpecError
from edgeslim.core.metrics import Metric, top1, wanted_outputs

OUTPUTS = ["logits", "embedding"]


def _two(logits, embedding, labels):
    return 0.0


def _second(embedding, labels):
    return 0.0


def _with_options(outputs, labels, k=5):
    return 0.0


def _varargs(*arrays):
    return 0.0


@pytest.mark.parametrize("metric, wanted", [
    (top1, None),                                        # (outputs, labels): the first output, as always
    (Metric("top1", top1), None),
    (lambda out, labels: 0.0, None),
    (_with_options, None),                               # parameters with defaults are options, not outputs
    (_varargs, None),
    (_two, ("logits", "embedding")),
    (Metric("m.py:two", _two), ("logits", "embedding")),
    (_second, ("embedding",)),                           # one output, not the first
    (functools.partial(_with_options, k=1), None),
    (len, None),                                         # a builtin: no parameters to read
])
def test_the_parameters_say_which_outputs(metric, wanted):
    assert wanted_outputs(metric, OUTPUTS) == wanted


@pytest.mark.parametrize("metric, asked", [
    (lambda boxes, scores, labels: 0.0, "boxes, scores"),       # none of them an output
    (lambda logits, boxes, labels: 0.0, "logits, boxes"),       # one matches, one does not
])
def test_a_metric_naming_an_output_the_model_lacks_is_one_sentence(metric, asked):
    expected = (f"the metric 'x' asks for outputs ({asked}), but the model's outputs are logits, embedding; "
                "name its parameters after outputs, or take (outputs, labels)")
    with pytest.raises(SpecError, match=re.escape(expected)):
        wanted_outputs(Metric("x", metric), OUTPUTS)


def test_a_metric_still_takes_outputs_and_labels():
    assert Metric("top1", top1)(np.eye(3), np.array([0, 1, 1])) == pytest.approx(100 * 2 / 3)
