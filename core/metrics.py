"""Built-in metrics: fn(outputs, labels) -> float on numpy arrays, higher is better."""
from __future__ import annotations

import numpy as np


def top1(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Percentage of samples whose highest score is the label (0-100, so a 'point' is 1%)."""
    predicted = np.asarray(outputs).reshape(len(labels), -1).argmax(axis=1)
    return float(100.0 * np.mean(predicted == np.asarray(labels).reshape(-1)))


METRICS = {"top1": top1}
