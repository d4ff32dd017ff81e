"""Accuracy of the exact bundle file, run through the SDK on the `val` batches."""
from __future__ import annotations

from edgeslim.core.data import feed_for
from edgeslim.core.evaluate import evaluate as evaluate_predict
from edgeslim.core.progress import progress as progress_bar


def evaluate(model, batches: list, metric, progress=None) -> float:
    """Run `model` (an SDK Model) on every (inputs, labels) batch and score all outputs at once: the metric
    gets the first output or the outputs it names, each joined along the batch axis its manifest records."""
    names = [spec.name for spec in model.inputs]
    first = model.outputs[0].name

    def predict(inputs):
        result = model.predict(feed_for(inputs, names))
        return result if isinstance(result, dict) else {first: result}  # one output comes back bare

    with progress_bar(f"{model.name}: accuracy", total=len(batches)) as advance:
        return evaluate_predict(predict, batches, metric, what=f"bundle '{model.name}'",
                                progress=progress or (lambda done, total: advance()),
                                batch_axis={spec.name: spec.batch_axis for spec in model.outputs})
