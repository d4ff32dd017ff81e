"""Facts read off an ONNX graph: tensor specs, parameter count, what onnxruntime can run."""
from __future__ import annotations

import numpy as np

from edgeslim.errors import ExportError

# Operator domains that stock onnxruntime runs; anything else is a custom op it cannot load.
RUNNABLE_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def _dims(value_info) -> list:
    dims = []
    for dim in value_info.type.tensor_type.shape.dim:
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or "?")
    return dims


def _dtype(value_info) -> str:
    import onnx

    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value_info.type.tensor_type.elem_type)).name


def tensor_specs(model, which: str) -> list[dict]:
    """name, dtype and shape (symbolic dims as strings) of each graph input or output."""
    initializers = {tensor.name for tensor in model.graph.initializer}
    values = model.graph.input if which == "inputs" else model.graph.output
    return [{"name": value.name, "dtype": _dtype(value), "shape": _dims(value)}
            for value in values if value.name not in initializers]


def count_params(model) -> int:
    """Elements of the weight initializers; quantization scales, zero points and shapes excluded."""
    import onnx

    side_inputs = set()
    for node in model.graph.node:
        if node.op_type in QDQ_OPS:
            side_inputs.update(node.input[1:])
        elif node.op_type in ("Reshape", "Expand", "Tile", "Slice", "Unsqueeze", "Squeeze", "ConstantOfShape"):
            side_inputs.update(node.input[1:])
    total = 0
    for tensor in model.graph.initializer:
        if tensor.name in side_inputs or tensor.data_type == onnx.TensorProto.INT64:
            continue
        total += int(np.prod(tensor.dims, dtype=np.int64))
    return total


def op_counts(model) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def lint(model) -> None:
    """Refuse a graph that stock onnxruntime cannot run: custom domains, OpenVINO's FakeQuantize."""
    for node in model.graph.node:
        if node.op_type == "FakeQuantize":
            raise ExportError(f"node '{node.name}' is OpenVINO's FakeQuantize, which onnxruntime cannot run; "
                              "quantize the exported ONNX model instead (edgeslim compress --quantize int8)")
        if node.domain not in RUNNABLE_DOMAINS:
            raise ExportError(f"node '{node.name}' ({node.op_type}) is in the custom domain '{node.domain}', "
                              "which stock onnxruntime cannot run")
