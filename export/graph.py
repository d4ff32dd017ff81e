"""Facts read off an ONNX graph: tensor specs, parameter count, what onnxruntime can run."""
from __future__ import annotations

import numpy as np

from edgeslim.core.errors import ExportError

# Operator domains that stock onnxruntime runs; anything else is a custom op it cannot load.
RUNNABLE_DOMAINS = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}


def is_quantized(model) -> bool:
    """Whether the graph holds QDQ (static INT8, from PTQ or QAT)."""
    return any(node.op_type == "QuantizeLinear" for node in model.graph.node)


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
    """name, dtype, shape (symbolic dims as strings) and batch axis of each graph input or output.

    The batch axis is where export put the symbolic dim "batch" (axis 1 for a time-major output); 0 for
    a graph exported with a fixed batch.
    """
    initializers = {tensor.name for tensor in model.graph.initializer}
    values = model.graph.input if which == "inputs" else model.graph.output
    specs = []
    for value in values:
        if value.name not in initializers:
            shape = _dims(value)
            specs.append({"name": value.name, "dtype": _dtype(value), "shape": shape,
                          "batch_axis": shape.index("batch") if "batch" in shape else 0})
    return specs


# Inputs that are no weights, by operator: batch-norm running statistics, quantization scales and zero points
# (onnxruntime's com.microsoft ops included), shapes and indices.
_SIDE_INPUTS = {
    "BatchNormalization": (3, 4),                   # running mean and variance: buffers in torch
    "QuantizeLinear": (1, 2), "DequantizeLinear": (1, 2),
    "DynamicQuantizeMatMul": (2, 3),                # A, B, b_scale, b_zero_point, bias
    "MatMulIntegerToFloat": (2, 3, 4, 5),           # A, B, a_scale, b_scale, a_zero_point, b_zero_point, bias
    "MatMulInteger": (2, 3), "ConvInteger": (2, 3),
    "QLinearConv": (1, 2, 4, 5, 6, 7), "QLinearMatMul": (1, 2, 4, 5, 6, 7),
    "MatMulNBits": (2, 3, 4),                       # A, B, scales, zero_points, g_idx, bias
    **dict.fromkeys(("Reshape", "Expand", "Tile", "Slice", "Unsqueeze", "Squeeze", "Pad", "Resize", "Gather",
                     "Clip"), (1, 2, 3, 4)),
}
_INTEGER_TYPES = {2, 3, 4, 5, 6, 12, 13, 21, 22}   # onnx.TensorProto: (u)int8, (u)int16, int32, uint32/64, (u)int4


def count_params(model) -> int:
    """Elements of the weight initializers, as torch counts parameters: what is not a weight is excluded,
    namely BatchNorm running statistics, quantization scales and zero points (of QuantizeLinear and
    DequantizeLinear, MatMulNBits, onnxruntime's integer and dynamic-quantization ops, and the per-channel
    scales that expand int8 weights by Cast and Mul), and int64 shapes and indices. A MatMulNBits weight
    counts its K x N elements, not the bytes it packs them in, and an Identity of a weight (the exporter's
    de-duplication of equal tensors) counts as the parameter it stands for. BatchNorm that export folded
    into a convolution is no tensor of its own: its scale and shift live on in the convolution's weight and bias.
    """
    import onnx

    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    producers = {output: node for node in model.graph.node for output in node.output}
    side, counted = set(), {}
    for node in model.graph.node:
        side.update(node.input[i] for i in _SIDE_INPUTS.get(node.op_type, ()) if i < len(node.input))
        side.update(_scales_of_expansion(node, producers, initializers))
        if node.op_type == "MatMulNBits" and len(node.input) > 1:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            counted[node.input[1]] = int(attrs.get("K", 0)) * int(attrs.get("N", 0))
    sizes = {name: counted.get(name, int(np.prod(tensor.dims, dtype=np.int64))) for name, tensor in initializers.items()
             if name not in side and tensor.data_type != onnx.TensorProto.INT64}
    # The exporter keeps one of several equal tensors (biases and norms at their initial values) and feeds the
    # others' consumers through an Identity of it: each of those is a parameter of its own in torch.
    copies = sum(sizes.get(node.input[0], 0) for node in model.graph.node
                 if node.op_type == "Identity" and node.output[0] not in side)
    return sum(sizes.values()) + copies


def _scales_of_expansion(node, producers: dict, initializers: dict) -> list[str]:
    """The scale a Mul applies to an integer weight (`Cast(int8 W) * scale`, the int8 weights form) or to a
    dynamically quantized product (`x_scale * W_scale`, onnxruntime's quantize_dynamic): [its name], else []."""
    if node.op_type != "Mul" or len(node.input) != 2:
        return []
    for own, other in (node.input, node.input[::-1]):
        maker = producers.get(other)
        if own not in initializers or maker is None:
            continue
        cast_of_integer = (maker.op_type == "Cast" and maker.input and maker.input[0] in initializers
                           and initializers[maker.input[0]].data_type in _INTEGER_TYPES)
        dynamic_scale = maker.op_type == "DynamicQuantizeLinear" and list(maker.output).index(other) == 1
        if cast_of_integer or dynamic_scale:
            return [own]
    return []


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


def _constants(model) -> dict:
    """name -> numpy array for initializers and Constant nodes."""
    from onnx import numpy_helper

    found = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    for node in model.graph.node:  # in graph order, so an Identity of a Constant resolves too
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            found[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
        elif node.op_type == "Identity" and node.input[0] in found:  # the exporter's de-duplicated constants
            found[node.output[0]] = found[node.input[0]]
    return found


def fold_weight_quantizers(model) -> int:
    """Replace QuantizeLinear(constant weight) with the int8 tensor it computes; return how many.

    QAT exports keep fp32 weights behind QuantizeLinear, so the file is as large as fp32; NNCF's
    ONNX PTQ stores int8 weights. Folding makes both the same: int8 initializer -> DequantizeLinear.
    """
    from onnx import numpy_helper

    constants = _constants(model)
    folded, keep = 0, []
    for node in model.graph.node:
        inputs = list(node.input) + [""] * (3 - len(node.input))
        if node.op_type != "QuantizeLinear" or not all(name in constants for name in inputs[:2]) \
                or (inputs[2] and inputs[2] not in constants):
            keep.append(node)
            continue
        weight, scale = constants[inputs[0]].astype(np.float64), constants[inputs[1]].astype(np.float64)
        zero = constants[inputs[2]] if inputs[2] else np.zeros((), np.uint8)
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if scale.ndim == 1 and scale.size > 1:  # per-channel: broadcast along `axis`
            shape = [1] * weight.ndim
            shape[axis] = scale.size
            scale, zero_b = scale.reshape(shape), zero.astype(np.float64).reshape(shape)
        else:
            zero_b = zero.astype(np.float64)
        info = np.iinfo(zero.dtype)
        quantized = np.clip(np.rint(weight / scale) + zero_b, info.min, info.max).astype(zero.dtype)
        model.graph.initializer.append(numpy_helper.from_array(quantized, node.output[0]))
        folded += 1
    if folded:
        del model.graph.node[:]
        model.graph.node.extend(keep)
        _drop_unused_initializers(model)
    return folded


def _drop_unused_initializers(model) -> None:
    used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    unused = [tensor for tensor in model.graph.initializer if tensor.name not in used]
    for tensor in unused:
        model.graph.initializer.remove(tensor)
