"""Batches from a user's data factory, as numpy feeds for onnxruntime. Torch-free."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np

from edgeslim.core.errors import SpecError


def to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor, without importing torch
        return value.detach().cpu().numpy()
    return np.asarray(value)


def feed_for(inputs, names: list[str]) -> dict:
    """Map one batch's inputs (array, tuple of arrays, or dict) onto the model's input names."""
    if isinstance(inputs, Mapping):
        return {key: to_numpy(value) for key, value in inputs.items()}
    values = list(inputs) if isinstance(inputs, (tuple, list)) else [inputs]
    return {name: to_numpy(value) for name, value in zip(names, values)}


def batch_size(inputs) -> int:
    if isinstance(inputs, Mapping):
        inputs = next(iter(inputs.values()))
    elif isinstance(inputs, (tuple, list)):
        inputs = inputs[0]
    return int(to_numpy(inputs).shape[0])


def _materialize(split: str, batches) -> list:
    """A one-shot iterator would be empty the second time; keep its batches."""
    if batches is None:
        return []
    if not isinstance(batches, Iterable):
        raise SpecError(f"data split '{split}' must be an iterable of batches, got {type(batches).__name__}")
    return list(batches)


def _check_labelled(split: str, batches: list) -> None:
    for batch in batches[:1]:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise SpecError(f"each batch of '{split}' must be an (inputs, labels) pair, "
                            f"got {type(batch).__name__}{'' if not hasattr(batch, '__len__') else f' of length {len(batch)}'}")


@dataclass
class DataSplits:
    """The splits of a data factory: val and train hold (inputs, labels); calibration inputs only."""

    val: list = field(default_factory=list)
    train: list = field(default_factory=list)
    calibration: list = field(default_factory=list)

    @classmethod
    def from_mapping(cls, data) -> DataSplits:
        if not isinstance(data, Mapping):
            raise SpecError(f"a data factory must return a mapping with 'val' (and 'train'), "
                            f"got {type(data).__name__}")
        splits = cls(val=_materialize("val", data.get("val")),
                     train=_materialize("train", data.get("train")),
                     calibration=_materialize("calibration", data.get("calibration")))
        _check_labelled("val", splits.val)
        _check_labelled("train", splits.train)
        return splits

    def need(self, split: str, purpose: str) -> list:
        batches = getattr(self, split)
        if not batches:
            raise SpecError(f"{purpose} needs the '{split}' split, but the data factory returned none; "
                            f"add '{split}': an iterable of (inputs, labels) batches")
        return batches

    def calibration_inputs(self) -> list:
        """Input batches for calibration: 'calibration', else the inputs of 'train', else 'val'."""
        if self.calibration:
            return self.calibration
        return [inputs for inputs, _ in (self.train or self.need("val", "calibration"))]

    def sample_inputs(self):
        """The inputs of the first val (or train) batch, used to trace and export the model."""
        source = self.val or self.train
        if not source:
            raise SpecError("the data factory returned neither 'val' nor 'train' batches; export needs sample inputs")
        return source[0][0]
