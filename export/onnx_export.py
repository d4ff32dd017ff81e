"""torch -> ONNX with dynamic batch (and sequence) axes found by running the model, checked against torch."""
from __future__ import annotations

import inspect
import io
import warnings
from dataclasses import dataclass, field

import numpy as np

from edgeslim.core.errors import ConfigError, ExportError, SpecError
from edgeslim.core.progress import log
from edgeslim.export.graph import is_quantized


@dataclass
class ExportConfig:
    opset: int = 17
    atol: float = 1e-4          # the export passes when max abs error <= atol or max rel <= rtol
    rtol: float = 1e-3
    parity_batches: int = 4
    dynamic_batch: bool = True
    names: dict = field(default_factory=dict)
    axes: dict = field(default_factory=dict)  # symbolic axes the user names: {tensor: {axis: name}}

    def to_dict(self) -> dict:
        return {"opset": self.opset, "atol": self.atol, "rtol": self.rtol,
                "parity_batches": self.parity_batches, "dynamic_batch": self.dynamic_batch,
                **({"axes": self.axes} if self.axes else {})}


def parse_dynamic_axis(text: str) -> tuple[str, int, str]:
    """`input_ids:1=sequence` as (tensor name, axis, symbolic name), or one ConfigError sentence."""
    name, _, rest = text.rpartition(":")
    axis, _, symbol = rest.partition("=")
    if not name or not axis.strip().isdigit() or not symbol.strip():
        raise ConfigError(f"--dynamic-axis {text!r} must have the form NAME:AXIS=SYMBOL, e.g. input_ids:1=sequence")
    return name, int(axis), symbol.strip()


def _add_user_axes(dynamic: dict | None, user: dict, ranks: dict[str, int]) -> dict | None:
    """The found axes with those the user named on top; a name or axis the model lacks is a ConfigError."""
    if not user:
        return dynamic
    dynamic = {name: dict(axes) for name, axes in (dynamic or {}).items()}
    for name, axes in user.items():
        if name not in ranks:
            raise ConfigError(f"--dynamic-axis names {name!r}, which the model has neither as an input nor an "
                              f"output; the tensors are {', '.join(ranks)}")
        for axis, symbol in axes.items():
            if not 0 <= int(axis) < ranks[name]:
                raise ConfigError(f"--dynamic-axis {name}:{axis}={symbol} is outside {name!r}, which has "
                                  f"{ranks[name]} axes (0 to {ranks[name] - 1})")
            dynamic.setdefault(name, {})[int(axis)] = str(symbol)
    return dynamic


def input_names(model, inputs) -> list[str]:
    """Dict keys; else the names of forward()'s parameters; 'input' for a lone tensor."""
    if isinstance(inputs, dict):
        return list(inputs)
    if not isinstance(inputs, (tuple, list)):
        return ["input"]
    params = [name for name, param in inspect.signature(model.forward).parameters.items()
              if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD)]
    return params[:len(inputs)] if len(params) >= len(inputs) else [f"input_{i}" for i in range(len(inputs))]


def _output_names(outputs) -> list[str]:
    """The dict keys, ModelOutput or namedtuple fields; else output_0, output_1, ...; 'output' for one tensor."""
    from edgeslim.core.axes import output_names

    named = output_names(outputs)
    if named is not None:
        return named
    if isinstance(outputs, (tuple, list)):
        return [f"output_{i}" for i in range(len(outputs))]
    return ["output"]


def _keyword_inputs_class():
    import torch

    class KeywordInputs(torch.nn.Module):
        """Calls the model with its inputs by name, so that the exporter never binds them to forward()'s
        parameters itself (it fills unnamed ones with defaults, which fails on `**kwargs` signatures)."""

        def __init__(self, model, names: list[str]):
            super().__init__()
            self.model, self.names = model, names

        def forward(self, *values):
            return self.model(**dict(zip(self.names, values)))

    return KeywordInputs


def _with_named_inputs(model, names: list[str]):
    return _keyword_inputs_class()(model, names).train(model.training)  # the exporter restores this mode after


def _ranks(sample_inputs, in_names: list[str], outputs, out_names: list[str]) -> dict[str, int]:
    from edgeslim.core.axes import flat_outputs
    from edgeslim.core.data import feed_for

    ranks = {name: value.ndim for name, value in feed_for(sample_inputs, in_names).items()}
    ranks.update({name: len(value.shape) for name, value in zip(out_names, flat_outputs(outputs))})
    return ranks


def dynamic_axes(model, sample_inputs, in_names: list[str], out_names: list[str]) -> dict:
    """Symbolic axes of every input and output, found by running the model at two batch sizes
    (and, for integer sequence inputs, two lengths): {name: {axis: "batch" | "sequence" | ...}}."""
    import torch

    from edgeslim.core.axes import batch_axes, is_sequence_input, sequence_axes
    from edgeslim.core.data import feed_for
    from edgeslim.core.model_io import run_model

    def predict(inputs):
        with torch.no_grad():
            return run_model(model, inputs)

    batch = batch_axes(predict, sample_inputs, out_names)
    sequence = sequence_axes(predict, sample_inputs, batch)
    axes = {name: {0: "batch"} for name in in_names}
    if sequence is not None:
        for name, value in feed_for(sample_inputs, in_names).items():
            if is_sequence_input(value):
                axes[name][1] = "sequence"
    for index, name in enumerate(out_names):
        axes[name] = {batch[index]: "batch"}
        for axis in (sequence[index] if sequence else []):
            axes[name][axis] = "sequence" if len(sequence[index]) == 1 else f"sequence_{axis}"
    return axes


def export_onnx(model, sample_inputs, config: ExportConfig):
    """Trace `model` on `sample_inputs` and return (onnx.ModelProto, input names, output names)."""
    import onnx
    import torch

    from edgeslim.core.model_io import run_model, to_args

    model.eval()
    args, kwargs = to_args(sample_inputs)
    try:
        with torch.no_grad():
            outputs = run_model(model, sample_inputs)
    except Exception as exc:
        raise SpecError(f"the model cannot run on the data's first batch ({type(exc).__name__}: {exc}); "
                        "check that the data factory's inputs match the model") from None
    in_names = input_names(model, sample_inputs)
    out_names = _output_names(outputs)
    dynamic = dynamic_axes(model, sample_inputs, in_names, out_names) if config.dynamic_batch else None
    dynamic = _add_user_axes(dynamic, config.axes, _ranks(sample_inputs, in_names, outputs, out_names))
    buffer = io.BytesIO()
    if kwargs:  # inputs by name (a Hugging Face model's input_ids, attention_mask): passed in the data's order
        model, args = _with_named_inputs(model, list(kwargs)), tuple(kwargs.values())
    with warnings.catch_warnings():
        # torch >= 2.9 deprecates this TorchScript exporter (dynamo=False). edgeslim keeps it: the
        # torch.export-based one needs onnxscript (not a dependency), and QAT (compress/qat.py) relies on
        # this one writing torch's quantize/dequantize ops as QDQ. Its notices, and torch's tracer warnings
        # about the user's model (the parity check below catches a trace that went wrong), are noise here.
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export",
                                category=DeprecationWarning)
        warnings.filterwarnings("ignore", module=r"torch(\.|$)")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        try:
            torch.onnx.export(model, args, buffer, input_names=in_names, output_names=out_names,
                              dynamic_axes=dynamic, opset_version=config.opset, dynamo=False)
        except Exception as exc:
            raise ExportError(f"torch.onnx.export failed: {type(exc).__name__}: {exc}") from None
    proto = onnx.load_from_string(buffer.getvalue())
    from edgeslim.export.graph import fold_weight_quantizers

    if fold_weight_quantizers(proto):  # a quantization-aware model: store its weights as int8
        log("export: weights behind QuantizeLinear folded into int8 initializers")
    onnx.checker.check_model(proto)
    return proto, in_names, out_names


def _max_errors(runs) -> tuple[float, float]:
    """Largest absolute and relative error over `runs`, pairs of (expected outputs, actual outputs)."""
    max_abs, max_ref = 0.0, 0.0
    for expected, actual in runs:
        for want, got in zip(expected, actual):
            max_abs = max(max_abs, float(np.max(np.abs(want.astype(np.float64) - got))))
            max_ref = max(max_ref, float(np.max(np.abs(want))))
    return max_abs, max_abs / max(max_ref, 1e-12)


def check_int8_kernels(proto, batches: list, names: list[str], batch_limit: int = 4) -> dict | None:
    """How far onnxruntime's fused INT8 kernels land from the QDQ graph's reference semantics.

    On x86 CPUs without VNNI the uint8 x int8 kernels sum pairs of products in int16 and saturate;
    weights with a 7-bit range (`overflow_fix`) avoid it. None for a model without QDQ.
    """
    import onnxruntime as ort

    from edgeslim.core.data import feed_for

    if not is_quantized(proto):
        return None
    reference_options = ort.SessionOptions()
    reference_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    serialized = proto.SerializeToString()
    reference = ort.InferenceSession(serialized, reference_options, providers=["CPUExecutionProvider"])
    fused = ort.InferenceSession(serialized, providers=["CPUExecutionProvider"])
    feeds = [feed_for(inputs, names) for inputs in batches[:batch_limit]]
    max_abs, max_rel = _max_errors((reference.run(None, feed), fused.run(None, feed)) for feed in feeds)
    log(f"int8 kernels against the QDQ reference: max abs err {max_abs:.3g}, max rel err {max_rel:.3g}")
    return {"max_abs_err": max_abs, "max_rel_err": max_rel}


def check_parity(model, proto, batches: list, names: list[str], config: ExportConfig) -> dict:
    """Run torch and onnxruntime on the same real inputs; raise ExportError outside tolerance."""
    import onnxruntime as ort
    import torch

    from edgeslim.core.axes import flat_outputs
    from edgeslim.core.data import feed_for, to_numpy
    from edgeslim.core.model_io import run_model

    # A QDQ export is checked at its reference semantics (QuantizeLinear, float op, Dequantize), not
    # through onnxruntime's fused integer kernels: this checks the exporter; check_int8_kernels
    # checks what the kernels of this CPU make of it.
    options = ort.SessionOptions()
    if is_quantized(proto):
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])

    def torch_outputs(inputs) -> list:
        with torch.no_grad():
            outputs = run_model(model, inputs)
        return [to_numpy(t) for t in flat_outputs(outputs)]

    max_abs, max_rel = _max_errors((torch_outputs(inputs), session.run(None, feed_for(inputs, names)))
                                   for inputs in batches[:config.parity_batches])
    result = {"max_abs_err": max_abs, "max_rel_err": max_rel, "atol": config.atol, "rtol": config.rtol}
    log(f"parity with torch: max abs err {max_abs:.3g}, max rel err {max_rel:.3g} "
        f"(tolerance: abs {config.atol:g} or rel {config.rtol:g})")
    if max_abs > config.atol and max_rel > config.rtol:
        raise ExportError(f"the ONNX model disagrees with torch: max abs err {max_abs:.3g} > {config.atol:g} and "
                          f"max rel err {max_rel:.3g} > {config.rtol:g}; the model may use an op the exporter "
                          "mistranslates, or loosen --atol/--rtol if the error is expected")
    return result
