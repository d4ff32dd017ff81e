"""Built-in metrics and what a metric asks for: fn(outputs, labels) -> float on numpy arrays, higher is better.

A metric takes the model's first output, or asks for outputs by name by naming its parameters after them:

    def detection_metric(boxes, scores, labels):   # the outputs 'boxes' and 'scores', then the labels
        ...

Each named output reaches it joined along its own batch axis (the manifest's `batch_axis`).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from edgeslim.core.errors import SpecError


def top1(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Percentage of samples whose highest score is the label (0-100, so a 'point' is 1%)."""
    predicted = np.asarray(outputs).reshape(len(labels), -1).argmax(axis=1)
    return float(100.0 * np.mean(predicted == np.asarray(labels).reshape(-1)))


METRICS = {"top1": top1}


@dataclass(frozen=True)
class Metric:
    """A metric function with the name the user gave it (`top1` or its spec), so that errors can name it."""

    name: str
    fn: Callable

    def __call__(self, *arrays):
        """fn(outputs, labels), or fn(*named outputs, labels) for a metric that names outputs."""
        return self.fn(*arrays)


def metric_name(metric) -> str:
    """What to call `metric` in a message: its spec where it has one, else its function's name."""
    if isinstance(metric, Metric):
        return metric.name
    return getattr(metric, "__name__", None) or repr(metric)


def _required_positional(fn) -> list[str] | None:
    """The names of `fn`'s positional parameters that have no default; None where they cannot be read."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or an extension type without a signature
        return None
    return [p.name for p in parameters
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]


def wanted_outputs(metric, outputs: Sequence[str]) -> tuple[str, ...] | None:
    """The outputs `metric` asks for by name, in its parameter order; None for a metric of the first output.

    The metric's positional parameters without a default, all but the last (which gets the labels), name
    outputs when every one of them is among `outputs` (the model's output names). One parameter besides
    the labels that names no output (`outputs` in `top1(outputs, labels)`) means the first output, as
    always. Two or more where any names no output is a SpecError that lists the model's outputs.
    """
    fn = metric.fn if isinstance(metric, Metric) else metric
    names = (_required_positional(fn) or [None])[:-1]
    if not names or (len(names) == 1 and names[0] not in outputs):
        return None
    if any(name not in outputs for name in names):
        raise SpecError(f"the metric {metric_name(metric)!r} asks for outputs ({', '.join(names)}), but the model's "
                        f"outputs are {', '.join(outputs)}; name its parameters after outputs, or take "
                        "(outputs, labels)")
    return tuple(names)
