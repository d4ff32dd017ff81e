"""One evaluation loop for every path: torch models, onnxruntime sessions, SDK bundles, remote devices.

A path gives a predict function (one batch's inputs -> the model's outputs); `evaluate` runs it on
every (inputs, labels) batch and scores all outputs at once with `score`. A remote device gathers
its outputs there and calls `score` here. The metric is the user's code: one that raises, or returns
anything but a finite number, is a SpecError naming the metric and what it did, not a traceback.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from edgeslim.core.data import to_numpy
from edgeslim.core.errors import InputError, SpecError
from edgeslim.core.metrics import metric_name

_SHOWN_CHARS = 60


def first_output(result):
    """A model's first output: the first value of a dict, the first item of a tuple or list."""
    if isinstance(result, Mapping):
        return next(iter(result.values()))
    if isinstance(result, (tuple, list)):
        return result[0]
    return result


def evaluate(predict: Callable, batches: Sequence, metric, what: str = "the model", progress=None,
             batch_axis: int = 0) -> float:
    """The metric of `predict`'s first output on every (inputs, labels) batch, scored all at once.

    `what` names the model in the message when a batch's inputs do not fit it (an InputError).
    The outputs are joined along `batch_axis` (1 for a time-major (T, N, C) output), the labels along 0.
    """
    outputs, labels = [], []
    for index, (inputs, target) in enumerate(batches):
        try:
            outputs.append(to_numpy(first_output(predict(inputs))))
        except InputError as exc:
            raise InputError(f"the data's val batch {index} does not match {what}: {exc}") from None
        labels.append(to_numpy(target))
        if progress:
            progress(index + 1, len(batches))
    return score(metric, outputs, labels, batch_axis)


def score(metric, outputs: list, labels: list, batch_axis: int = 0) -> float:
    """`metric` of the outputs of all batches, joined along their batch axis, against their labels, as a
    finite float."""
    predicted, expected = _join(outputs, batch_axis), np.concatenate(labels)
    try:
        value = metric(predicted, expected)
    except Exception as exc:  # the user's code failed: say which and how, in one sentence
        raise SpecError(f"the metric {metric_name(metric)!r} raised {type(exc).__name__}: {_one_line(exc)} "
                        f"on outputs of shape {predicted.shape} and labels of shape {expected.shape}; "
                        "fix the metric or the labels") from None
    result = finite_number(value)
    if result is None:
        raise SpecError(f"the metric {metric_name(metric)!r} returned {_shown(value)}, which is not a finite "
                        "number; a metric must return a float, higher is better")
    return result


def _join(outputs: list, batch_axis: int) -> np.ndarray:
    if batch_axis and any(np.ndim(output) <= batch_axis for output in outputs):
        raise SpecError(f"the outputs have {min(np.ndim(o) for o in outputs)} dims, so they have no batch axis "
                        f"{batch_axis}; rebuild the bundle with this edgeslim")
    return np.concatenate(outputs, axis=batch_axis)


def finite_number(value) -> float | None:
    """`value` as a float when it is one finite number (a scalar, or an array or tensor of one), else None."""
    if isinstance(value, np.ndarray) or hasattr(value, "detach"):
        array = to_numpy(value)
        if array.size != 1 or array.dtype.kind not in "iuf":
            return None
        value = array.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _one_line(value) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= 200 else text[:200] + "..."


def _shown(value) -> str:
    text = " ".join(repr(value).split())
    text = text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."
    shape = f" of shape {tuple(value.shape)}" if hasattr(value, "shape") and not np.isscalar(value) else ""
    return f"{text} (type {type(value).__name__}{shape})"
