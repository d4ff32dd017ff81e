"""Built-in metrics: fn(outputs, labels) -> float on numpy arrays, higher is better."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


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

    def __call__(self, outputs, labels):
        return self.fn(outputs, labels)


def metric_name(metric) -> str:
    """What to call `metric` in a message: its spec where it has one, else its function's name."""
    if isinstance(metric, Metric):
        return metric.name
    return getattr(metric, "__name__", None) or repr(metric)
