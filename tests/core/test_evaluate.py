"""The one evaluation loop: outputs of every batch scored at once, and a metric's result checked."""
import math
import re

import numpy as np
import pytest

from edgeslim.core.errors import InputError, SpecError
from edgeslim.core.evaluate import evaluate, finite_number, first_output, score
from edgeslim.core.metrics import Metric, top1
from edgeslim.core.specs import load_metric

BATCHES = [(np.eye(3, dtype=np.float32), np.array([0, 1, 2])), (np.eye(3, dtype=np.float32)[::-1], np.array([0, 0, 0]))]


def test_every_batch_is_scored_at_once():
    seen = []
    accuracy = evaluate(lambda x: x, BATCHES, lambda out, labels: seen.append((out.shape, labels.shape)) or 0.5)
    assert seen == [((6, 3), (6,))] and accuracy == 0.5
    assert evaluate(lambda x: x, BATCHES, top1) == pytest.approx(100 * 4 / 6)  # rows 0, 1, 2 and the reversed row 2


@pytest.mark.parametrize("shape", [dict, tuple, list])
def test_the_first_output_is_scored(shape):
    def predict(x):
        both = (x, -x)
        return {"logits": both[0], "other": both[1]} if shape is dict else shape(both)

    assert evaluate(predict, BATCHES, top1) == evaluate(lambda x: x, BATCHES, top1)
    assert first_output(np.ones(2)).shape == (2,)


def test_a_batch_that_does_not_fit_is_named():
    def predict(x):
        if x[0, 0] == 0:
            raise InputError("input 'x' has shape (3, 3), expected (N, 64)")
        return x

    with pytest.raises(InputError, match=re.escape("the data's val batch 1 does not match bundle 'fp32': input 'x'")):
        evaluate(predict, BATCHES, top1, what="bundle 'fp32'")


def test_progress_counts_batches():
    calls = []
    evaluate(lambda x: x, BATCHES, top1, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 2), (2, 2)]


@pytest.mark.parametrize("value, expected", [
    (0.5, 0.5), (np.float32(2.5), 2.5), (np.int64(3), 3.0), (np.array(7.0), 7.0), (np.array([1.5]), 1.5), (80, 80.0),
    (math.nan, None), (math.inf, None), (-math.inf, None), (np.float32("nan"), None), ("0.9", None), (None, None),
    (True, None), (np.bool_(True), None), (np.array([1.0, 2.0]), None), ([0.5], None), (np.array(["a"]), None),
])
def test_finite_numbers(value, expected):
    assert finite_number(value) == expected


def test_a_torch_scalar_counts_as_a_number():
    torch = pytest.importorskip("torch")
    assert finite_number(torch.tensor(0.25)) == 0.25
    assert finite_number(torch.tensor([0.25, 0.5])) is None


def test_a_metric_is_named_by_its_spec_or_its_function():
    def my_metric(outputs, labels):
        raise ZeroDivisionError("no positives")

    with pytest.raises(SpecError, match=re.escape("the metric 'my_metric' raised ZeroDivisionError: no positives on "
                                                  "outputs of shape (6, 3) and labels of shape (6,)")):
        evaluate(lambda x: x, BATCHES, my_metric)
    with pytest.raises(SpecError, match=re.escape("the metric 'metrics.py:f1' returned [0.5, 0.25] (type list), "
                                                  "which is not a finite number")):
        score(Metric("metrics.py:f1", lambda out, labels: [0.5, 0.25]), [np.ones((2, 3))], [np.zeros(2)])


def test_a_long_or_multiline_value_stays_one_short_line():
    with pytest.raises(SpecError) as raised:
        score(Metric("m", lambda out, labels: "line one\nline two " * 50), [np.ones((2, 3))], [np.zeros(2)])
    message = str(raised.value)
    assert "\n" not in message and len(message) < 250 and "..." in message


def test_load_metric_names_the_metric_and_still_calls_it():
    metric = load_metric(None)
    assert metric.name == "top1" and metric.fn is top1
    assert metric(np.eye(3), np.array([0, 1, 1])) == pytest.approx(100 * 2 / 3)


# -- outputs by name --------------------------------------------------------------------------------

def _heads(x):
    """Two outputs with different batch axes: time-major steps (4, N, 3) and pooled (N, 3)."""
    steps = np.stack([x * (step + 1) for step in range(4)])
    return {"steps": steps, "pooled": steps.mean(axis=0)}


def test_named_outputs_are_joined_each_on_its_own_batch_axis():
    seen = []

    def metric(steps, pooled, labels):
        seen.append((steps.shape, pooled.shape, labels.shape))
        return float(pooled[5, 0])

    # batch 1's pooled row 2 is 2.5 * eye[::-1][2] = [2.5, 0, 0]: sample 5 of 6 after the join on axis 0
    assert evaluate(_heads, BATCHES, metric, batch_axis={"steps": 1, "pooled": 0}) == 2.5
    assert seen == [((4, 6, 3), (6, 3), (6,))]


def test_a_metric_gets_the_output_it_names_or_else_the_first():
    def pooled_only(pooled, labels):
        return float(pooled.shape[0])

    assert evaluate(_heads, BATCHES, pooled_only, batch_axis={"steps": 1}) == 6.0
    shapes = []
    evaluate(_heads, BATCHES, lambda out, labels: shapes.append(out.shape) or 0.0, batch_axis={"steps": 1})
    assert shapes == [(4, 6, 3)]


def test_unnamed_outputs_are_named_as_export_names_them():
    def metric(output_0, output_1, labels):
        return float(output_1.sum())

    assert evaluate(lambda x: (x, -x), BATCHES, metric) == -6.0
    assert evaluate(lambda x: x, BATCHES, lambda output, labels: float(output.shape[0])) == 6.0


def test_a_metric_naming_a_missing_output_fails_before_the_other_batches_run():
    calls = []

    def predict(x):
        calls.append(1)
        return _heads(x)

    with pytest.raises(SpecError, match=re.escape("the metric 'm.py:det' asks for outputs (boxes, scores), but the "
                                                  "model's outputs are steps, pooled; name its parameters after "
                                                  "outputs, or take (outputs, labels)")):
        evaluate(predict, BATCHES, Metric("m.py:det", lambda boxes, scores, labels: 0.0))
    assert calls == [1]


def test_a_failing_named_metric_shows_each_output():
    def metric(steps, pooled, labels):
        raise IndexError("no such class")

    with pytest.raises(SpecError, match=re.escape("raised IndexError: no such class on outputs steps (4, 6, 3), "
                                                  "pooled (6, 3) and labels of shape (6,)")):
        evaluate(_heads, BATCHES, metric, batch_axis={"steps": 1, "pooled": 0})


def test_score_takes_batches_of_named_outputs():
    parts = [{"steps": np.ones((4, n, 3)), "pooled": np.ones((n, 3))} for n in (2, 5)]
    labels = [np.zeros(2), np.zeros(5)]
    assert score(lambda steps, labels: float(steps.shape[1]), parts, labels, {"steps": 1}) == 7.0
    assert score(lambda outputs, labels: float(outputs.shape[1]), parts, labels, {"steps": 1}) == 7.0
