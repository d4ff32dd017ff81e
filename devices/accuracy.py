"""Accuracy of the exact bundle file, run through the SDK on the `val` batches."""
from __future__ import annotations

import numpy as np

from edgeslim.core.data import feed_for, to_numpy
from edgeslim.core.errors import InputError, SpecError


def first_output(result):
    return next(iter(result.values())) if isinstance(result, dict) else result


def evaluate(model, batches: list, metric, progress=None) -> float:
    """Run `model` (an SDK Model) on every (inputs, labels) batch and score all outputs at once."""
    names = [spec.name for spec in model.inputs]
    outputs, labels = [], []
    for index, (inputs, target) in enumerate(batches):
        try:
            outputs.append(first_output(model.predict(feed_for(inputs, names))))
        except InputError as exc:
            raise InputError(f"the data's val batch {index} does not match bundle '{model.name}': {exc}") from None
        labels.append(to_numpy(target))
        if progress:
            progress(index + 1, len(batches))
    try:
        return float(metric(np.concatenate(outputs), np.concatenate(labels)))
    except Exception as exc:
        raise SpecError(f"the metric failed on the model's outputs ({type(exc).__name__}: {exc}); "
                        "check that the labels fit the metric") from None
