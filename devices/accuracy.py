"""Accuracy of the exact bundle file, run through the SDK on the `val` batches."""
from __future__ import annotations

from edgeslim.core.data import feed_for
from edgeslim.core.evaluate import evaluate as evaluate_predict


def evaluate(model, batches: list, metric, progress=None) -> float:
    """Run `model` (an SDK Model) on every (inputs, labels) batch and score all outputs at once, joined along
    the batch axis its manifest records."""
    names = [spec.name for spec in model.inputs]
    return evaluate_predict(lambda inputs: model.predict(feed_for(inputs, names)), batches, metric,
                            what=f"bundle '{model.name}'", progress=progress, batch_axis=model.outputs[0].batch_axis)
