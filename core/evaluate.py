"""One evaluation loop for every path: torch models, onnxruntime sessions, SDK bundles, remote devices.

A path gives a predict function (one batch's inputs -> the model's outputs); `evaluate` runs it on
every (inputs, labels) batch and scores all outputs at once with `score`. A remote device gathers
its outputs there and calls `score` here. The metric is the user's code: one that raises, or returns
anything but a finite number, is a SpecError naming the metric and what it did, not a traceback.

Which outputs the metric gets (edgeslim.core.metrics.wanted_outputs): `fn(outputs, labels)` gets the
first output; `fn(boxes, scores, labels)`, whose parameters name outputs, gets each of them. Outputs
are named as export names them (dict keys, namedtuple fields, output_0..., 'output'), and each is
joined along its own batch axis: `batch_axis` is one axis for every output, or a mapping from output
name to its axis (the manifest's `batch_axis` of each output; a name it lacks is joined on 0).
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from edgeslim.core.axes import named_outputs
from edgeslim.core.data import to_numpy
from edgeslim.core.errors import InputError, SpecError
from edgeslim.core.metrics import metric_name, wanted_outputs

_SHOWN_CHARS = 60

BatchAxis = int | Mapping[str, int]


def first_output(result):
    """A model's first output: the first value of a dict, the first item of a tuple or list."""
    if isinstance(result, Mapping):
        return next(iter(result.values()))
    if isinstance(result, (tuple, list)):
        return result[0]
    return result


def evaluate(predict: Callable, batches: Sequence, metric, what: str = "the model", progress=None,
             batch_axis: BatchAxis = 0) -> float:
    """The metric of `predict`'s outputs on every (inputs, labels) batch, scored all at once.

    The metric gets the first output, or the outputs its parameters name (checked on the first batch,
    before the others run); only those are kept. `what` names the model in the message when a batch's
    inputs do not fit it (an InputError). Each output is joined along its batch axis (`batch_axis`: 1
    for a time-major (T, N, C) output; a mapping by output name for several), the labels along 0.
    """
    outputs, labels, keep = [], [], None
    for index, (inputs, target) in enumerate(batches):
        try:
            result = named_outputs(predict(inputs))
        except InputError as exc:
            raise InputError(f"the data's val batch {index} does not match {what}: {exc}") from None
        if keep is None:
            keep = wanted_outputs(metric, list(result)) or list(result)[:1]
        outputs.append({name: to_numpy(result[name]) for name in keep})
        labels.append(to_numpy(target))
        if progress:
            progress(index + 1, len(batches))
    return score(metric, outputs, labels, batch_axis)


def score(metric, outputs: list, labels: list, batch_axis: BatchAxis = 0) -> float:
    """`metric` of the outputs of all batches, joined along their batch axis, against their labels, as a
    finite float.

    Each item of `outputs` is one batch's first output (an array), or its outputs by name (a dict, of
    which the metric gets the first or those it names).
    """
    expected = np.concatenate(labels)
    named = bool(outputs) and isinstance(outputs[0], Mapping)
    wanted = wanted_outputs(metric, list(outputs[0])) if named else None
    if wanted is None:
        first = next(iter(outputs[0]), None) if named else None
        arrays = [_join([first_output(output) for output in outputs], _axis(batch_axis, first))]
        shown = f"outputs of shape {arrays[0].shape}"
    else:
        arrays = [_join([output[name] for output in outputs], _axis(batch_axis, name), name) for name in wanted]
        shown = "outputs " + ", ".join(f"{name} {array.shape}" for name, array in zip(wanted, arrays))
    try:
        value = metric(*arrays, expected)
    except Exception as exc:  # the user's code failed: say which and how, in one sentence
        raise SpecError(f"the metric {metric_name(metric)!r} raised {type(exc).__name__}: {_one_line(exc)} "
                        f"on {shown} and labels of shape {expected.shape}; fix the metric or the labels") from None
    result = finite_number(value)
    if result is None:
        raise SpecError(f"the metric {metric_name(metric)!r} returned {_shown(value)}, which is not a finite "
                        "number; a metric must return a float, higher is better")
    return result


def _axis(batch_axis: BatchAxis, name: str | None) -> int:
    """The batch axis of output `name`: `batch_axis` itself, or its entry for the name (0 where it has none)."""
    if isinstance(batch_axis, Mapping):
        return int(batch_axis.get(name, 0)) if name is not None else int(next(iter(batch_axis.values()), 0))
    return batch_axis


def _join(outputs: list, batch_axis: int, name: str | None = None) -> np.ndarray:
    if batch_axis and any(np.ndim(output) <= batch_axis for output in outputs):
        which, it = (f"output '{name}' has", "it has") if name else ("the outputs have", "they have")
        raise SpecError(f"{which} {min(np.ndim(o) for o in outputs)} dims, so {it} no batch axis "
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
