"""Which axes of a model's outputs follow the batch and the sequence, found by running it.

A model is run on the same inputs cut to two batch sizes (and, for integer sequence inputs such
as token ids, two lengths); an output axis whose size follows is that output's batch (or
sequence) axis. A time-major recurrent model's (T, N, C) output has its batch axis at 1.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

from edgeslim.core.errors import ExportError

PROBE_BATCHES = (2, 3)


def flat_outputs(result) -> list:
    """A model's outputs as a list: a dict's (or ModelOutput's) values, a tuple's items, or the one tensor."""
    if isinstance(result, Mapping):
        return list(result.values())
    if isinstance(result, (tuple, list)):
        return list(result)
    return [result]


def output_names(result) -> list[str] | None:
    """The keys of a dict or ModelOutput, the fields of a namedtuple; None for unnamed outputs."""
    if isinstance(result, Mapping):
        return [str(key) for key in result]
    if isinstance(result, tuple) and hasattr(result, "_fields"):
        return list(result._fields)
    return None


def named_outputs(result) -> dict:
    """A model's outputs by the names export gives them: a dict's keys, a ModelOutput's or namedtuple's
    fields; output_0, output_1, ... for a tuple or list; 'output' for one tensor."""
    values = flat_outputs(result)
    names = output_names(result)
    if names is None:
        names = [f"output_{index}" for index in range(len(values))] if isinstance(result, (tuple, list)) \
            else ["output"]
    return dict(zip(names, values))


def _map(inputs, fn):
    if isinstance(inputs, Mapping):
        return {key: fn(value) for key, value in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        return tuple(fn(value) for value in inputs)
    return fn(inputs)


def take_rows(inputs, count: int):
    """Every input cut (or its rows repeated) to `count` rows along axis 0."""
    def rows(value):
        total = value.shape[0]
        return value[[index % total for index in range(count)]]
    return _map(inputs, rows)


def is_sequence_input(value) -> bool:
    """A 2-D integer input (token ids, an attention mask): its axis 1 is a sequence."""
    dtype = str(value.dtype)
    return len(value.shape) == 2 and ("int" in dtype) and value.shape[1] > 1


def shorten(inputs):
    """Every sequence input one step shorter along axis 1."""
    return _map(inputs, lambda value: value[:, :-1] if is_sequence_input(value) else value)


def has_sequence_inputs(inputs) -> bool:
    values = inputs.values() if isinstance(inputs, Mapping) else \
        inputs if isinstance(inputs, (tuple, list)) else [inputs]
    return any(is_sequence_input(value) for value in values)


def _shapes(predict: Callable, inputs) -> list[tuple]:
    outputs = flat_outputs(predict(inputs))
    if not all(hasattr(output, "shape") for output in outputs):
        kinds = sorted({type(output).__name__ for output in outputs})
        raise ExportError(f"the model returns {', '.join(kinds)} among its outputs; edgeslim exports models that "
                          "return a tensor, or a tuple, namedtuple or dict of tensors")
    return [tuple(output.shape) for output in outputs]


def batch_axes(predict: Callable, inputs, names: list[str] | None = None) -> list[int]:
    """The batch axis of each output of `predict`, or an ExportError naming the output that has none."""
    try:
        small, large = (_shapes(predict, take_rows(inputs, count)) for count in PROBE_BATCHES)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"the model cannot run on batches of {PROBE_BATCHES[0]} and {PROBE_BATCHES[1]} "
                          f"({type(exc).__name__}: {exc}), which edgeslim needs to find each output's batch axis; "
                          "make the model accept any batch size") from None
    names = names or [f"output_{index}" for index in range(len(small))]
    axes = []
    for name, a, b in zip(names, small, large):
        varying = [axis for axis, (x, y) in enumerate(zip(a, b)) if x != y]
        if len(a) != len(b) or varying == [] or len(varying) > 1 or (a[varying[0]], b[varying[0]]) != PROBE_BATCHES:
            raise ExportError(f"output '{name}' has no batch axis: its shape is {a} for a batch of "
                              f"{PROBE_BATCHES[0]} and {b} for a batch of {PROBE_BATCHES[1]}; edgeslim needs "
                              "one output axis whose size is the batch size")
        axes.append(varying[0])
    return axes


def sequence_axes(predict: Callable, inputs, batch: list[int]) -> list[list[int]] | None:
    """Per output, the axes (other than the batch axis) whose size follows the sequence inputs' length;
    None when the model has no sequence inputs or cannot run one step shorter."""
    if not has_sequence_inputs(inputs):
        return None
    try:
        full, short = _shapes(predict, inputs), _shapes(predict, shorten(inputs))
    except Exception:  # a model that needs its exact length: the sequence stays fixed
        return None
    return [[axis for axis, (x, y) in enumerate(zip(a, b)) if x != y and axis != skip]
            for a, b, skip in zip(full, short, batch)]


def output_batch_axes(predict: Callable, inputs) -> dict[str, int]:
    """Each output's batch axis by its name (as `named_outputs` names it), for joining outputs in evaluation;
    empty (every output joined on axis 0) where the axes cannot be found, as for a model with a fixed batch."""
    try:
        names = list(named_outputs(predict(take_rows(inputs, PROBE_BATCHES[0]))))
        return dict(zip(names, batch_axes(predict, inputs, names)))
    except Exception:  # a fixed batch, an output with no batch axis: axis 0, as outputs always were joined
        return {}


def output_batch_axis(predict: Callable, inputs) -> int:
    """The first output's batch axis, for joining outputs in evaluation; 0 where it cannot be found."""
    try:
        return batch_axes(predict, inputs)[0]
    except Exception:  # a model with a fixed batch: its outputs are joined on axis 0, as they always were
        return 0
