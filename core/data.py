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


def _unlabelled_as_pairs(batches: list) -> list:
    """Train batches may be `(inputs,)`: distillation's targets are the teacher's outputs. As (inputs, None)."""
    return [(batch[0], None) if isinstance(batch, (tuple, list)) and len(batch) == 1 else batch for batch in batches]


def _check_labelled(split: str, batches: list) -> None:
    for batch in batches[:1]:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            length = f" of length {len(batch)}" if hasattr(batch, "__len__") else ""
            raise SpecError(f"each batch of '{split}' must be an (inputs, labels) pair, "
                            f"got {type(batch).__name__}{length}")


def _not_numeric(value) -> str | None:
    """None for a torch tensor or an array of numbers; else what `value` is, for a message."""
    if hasattr(value, "detach"):
        return None
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as exc:  # ragged nesting, objects numpy cannot hold
        return f"{type(value).__name__} that is no array ({exc})"
    if array.dtype.kind in "biuf":
        return None
    if isinstance(value, np.ndarray):
        return f"a numpy array of dtype {array.dtype}"
    return f"{type(value).__name__} {_short(value)}"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_numeric_inputs(split: str, inputs, source: str) -> None:
    """The first batch's inputs must be arrays of numbers: say so here, not as a TypeError deep in torch."""
    several = isinstance(inputs, (Mapping, tuple, list))
    values = inputs.items() if isinstance(inputs, Mapping) else enumerate(inputs if several else [inputs])
    for key, value in values:
        found = _not_numeric(value)
        if found is not None:
            what = f"input {key!r} is" if several else "inputs are"
            raise SpecError(f"{source} returned '{split}' batches whose {what} {found}; inputs must be torch "
                            "tensors or numpy arrays of numbers (a tuple or dict of them for several inputs): "
                            "convert them (tokenize text, encode categories) in the factory")


@dataclass
class DataSplits:
    """The splits of a data factory: val and train hold (inputs, labels), train's labels may be None
    (or a batch `(inputs,)`) for distillation from unlabelled data; calibration inputs only."""

    val: list = field(default_factory=list)
    train: list = field(default_factory=list)
    calibration: list = field(default_factory=list)

    @classmethod
    def from_mapping(cls, data, spec: str | None = None) -> DataSplits:
        """The splits of what a data factory returned; `spec` names the factory in messages."""
        if not isinstance(data, Mapping):
            raise SpecError(f"a data factory must return a mapping with 'val' (and 'train'), "
                            f"got {type(data).__name__}")
        splits = cls(val=_materialize("val", data.get("val")),
                     train=_unlabelled_as_pairs(_materialize("train", data.get("train"))),
                     calibration=_materialize("calibration", data.get("calibration")))
        _check_labelled("val", splits.val)
        _check_labelled("train", splits.train)
        source = f"data factory {spec!r}" if spec else "the data factory"
        for split in ("val", "train"):
            for inputs, _ in getattr(splits, split)[:1]:
                _check_numeric_inputs(split, inputs, source)
        for inputs in splits.calibration[:1]:
            _check_numeric_inputs("calibration", inputs, source)
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


def data_digest(batches: list) -> str | None:
    """sha256 of (inputs, labels) batches: each array's dtype, shape and bytes, inputs by name where named."""
    import hashlib

    if not batches:
        return None
    digest = hashlib.sha256()

    def add(value) -> None:
        if isinstance(value, Mapping):
            for key in sorted(value, key=str):
                digest.update(str(key).encode())
                add(value[key])
        elif isinstance(value, (tuple, list)):
            for item in value:
                add(item)
        elif value is not None:
            array = np.ascontiguousarray(to_numpy(value))
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(array.tobytes())

    for batch in batches:
        add(batch)
    return digest.hexdigest()
