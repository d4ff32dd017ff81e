"""Reshape a QDQ graph into the node groups onnxruntime's CPU execution provider fuses.

NNCF places its quantizers for OpenVINO's CPU plugin, which fuses Conv+HardSwish, Conv+Add and
squeeze-excitation blocks by itself. onnxruntime instead fuses a QDQ *node group*: a Conv, Gemm or
MatMul whose every input comes straight from a DequantizeLinear and, for Conv, whose output goes
only to QuantizeLinear (qdq_selectors.cc, NodeGroupSelector::CheckQDQNodes and the Conv/Gemm/
MatMul selectors). Whatever misses a rule runs in float, weights dequantized on every run. On a
MobileNetV3-style model 4 of 37 convolutions were fused. `ortify` rewrites the graph, rule by rule:

1. ``axis``: a negative ``axis`` on the Q/DQ of a constant becomes non-negative; exact. Older
   onnxruntime releases (BiasQuantization) compared the weight's axis literally with 0 (Conv) or
   1 (Gemm, transB=0) and left the bias, hence the node, in float; 1.32's WeightBiasQuantization
   normalises the axis itself and rewrite 7 quantizes biases anyway, so there it only keeps the
   graph canonical (without it the coverage measured the same).
2. int8 activations become uint8 (zero point + 128, the same grid: exact). On x86 the Conv and
   MatMul selectors refuse int8 activations (``int8_allowed_``), and QDQS8ToU8Transformer, which
   would convert them, converts only a Q with a single DQ consumer.
3. per-channel activation quantizers (NNCF's, on depthwise inputs) become per-tensor over the
   union of the channel ranges: QLinearConv takes one input scale.
4. a Q/DQ before a shape op (Flatten, Reshape, ...) is repeated after it when a Conv/Gemm/MatMul
   reads the shape op: every input of the group must come *directly* from a DQ; exact.
5. Conv/Gemm left in float with constant weights (NNCF's squeeze-excitation ignored pattern)
   get per-channel symmetric int8 weights and a calibrated uint8 Q/DQ on their input.
6. a quantized Conv whose output is not quantized (NNCF quantizes after Conv+HardSwish or
   Conv+Add) gets a calibrated uint8 Q/DQ on its output: the Conv selector needs a Q on every
   output edge (after an optional Relu/Clip that the Q makes redundant).
7. a float bias of a quantized Conv/Gemm becomes int32 behind a DQ (scale = input scale x weight
   scale), as quantize_static writes it. The Gemm selector needs a DQ on all three inputs, and
   WeightBiasQuantization makes that DQ only when the output path leads to a Q, which a Gemm that
   produces the graph output (a classifier) never has.

Calibration (5, 6) runs the QDQ graph at its reference semantics over the calibration samples and
takes min/max, uint8 asymmetric, as onnxruntime's quantize_static (MinMax) does.
"""
from __future__ import annotations

import heapq
from collections import defaultdict

import numpy as np

from edgeslim.compress.registry import require
from edgeslim.core.progress import log

OVERFLOW_FIX_MODES = ("enable", "first_layer", "disable")
SHAPE_OPS = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Transpose"})
LINEAR_OPS = frozenset({"Conv", "Gemm", "MatMul"})
FLOAT_WEIGHT_OPS = frozenset({"Conv", "Gemm"})   # those whose float weights rewrite 5 quantizes
REDUNDANT_BEFORE_Q = frozenset({"Relu", "Clip"})  # onnxruntime drops these before a Q (GetQDQSelection)
# NNCF's overflow fix keeps weights in [-64, 64]: 2 x 255 x 64 fits the int16 pair sums of x86's
# vpmaddubsw (see compress/quantize.py, OVERFLOW_FIX).
SEVEN_BIT_LIMIT, EIGHT_BIT_LIMIT = 64, 127


class _Graph:
    """A mutable view of an ONNX graph: who produces and who consumes each tensor."""

    def __init__(self, model):
        self.model, self.graph = model, model.graph
        self.initializers = {tensor.name: tensor for tensor in self.graph.initializer}
        self.refresh()

    def refresh(self) -> None:
        self.producer = {output: node for node in self.graph.node for output in node.output}
        self.consumers = defaultdict(list)
        for node in self.graph.node:
            for name in node.input:
                if name:
                    self.consumers[name].append(node)
        self.outputs = {value.name for value in self.graph.output}

    def constant(self, name: str):
        """The value of an initializer or a Constant node's output; None for anything computed."""
        from onnx import numpy_helper

        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer.get(name)
        if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def is_constant(self, name: str) -> bool:
        node = self.producer.get(name)
        return name in self.initializers or (node is not None and node.op_type == "Constant")

    def dequantizer(self, name: str):
        """The DequantizeLinear that produces `name`, or None."""
        node = self.producer.get(name)
        return node if node is not None and node.op_type == "DequantizeLinear" else None

    def unique(self, name: str) -> str:
        taken = set(self.initializers) | set(self.producer) | {value.name for value in self.graph.input} \
            | {node.name for node in self.graph.node}
        candidate, suffix = name, 0
        while candidate in taken:
            suffix += 1
            candidate = f"{name}_{suffix}"
        return candidate

    def add_initializer(self, array, name: str) -> str:
        from onnx import numpy_helper

        tensor = numpy_helper.from_array(np.asarray(array), self.unique(name))
        self.graph.initializer.append(tensor)
        self.initializers[tensor.name] = tensor
        return tensor.name

    def add_node(self, op_type: str, inputs: list[str], output: str, **attributes) -> str:
        """Append a node (the final topological sort puts it in place); return its output's name."""
        from onnx import helper

        output = self.unique(output)
        node = helper.make_node(op_type, inputs, [output], name=self.unique(output), **attributes)
        self.graph.node.append(node)
        self.producer[output] = node
        for name in inputs:
            if name:
                self.consumers[name].append(node)
        return output

    def redirect(self, tensor: str, replacement: str, consumers) -> None:
        for node in consumers:
            for index, name in enumerate(node.input):
                if name == tensor:
                    node.input[index] = replacement
        self.refresh()

    def insert_qdq(self, tensor: str, scale, zero_point, tag: str, consumers=None) -> str:
        """tensor -> Q -> DQ -> `consumers` (all current ones by default); return the DQ's output."""
        consumers = list(self.consumers[tensor]) if consumers is None else consumers
        scale_name = self.add_initializer(np.asarray(scale, np.float32), f"{tensor}_{tag}_scale")
        zero_name = self.add_initializer(np.asarray(zero_point), f"{tensor}_{tag}_zero_point")
        quantized = self.add_node("QuantizeLinear", [tensor, scale_name, zero_name], f"{tensor}_{tag}_quantized")
        dequantized = self.add_node("DequantizeLinear", [quantized, scale_name, zero_name],
                                    f"{tensor}_{tag}_dequantized")
        self.redirect(tensor, dequantized, consumers)
        return dequantized

    def finish(self) -> None:
        """Drop initializers nothing reads and sort the nodes topologically."""
        used = {name for node in self.graph.node for name in node.input} | self.outputs
        kept = [tensor for tensor in self.graph.initializer if tensor.name in used]
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept)
        self.initializers = {tensor.name: tensor for tensor in kept}
        self._sort_nodes()

    def _sort_nodes(self) -> None:
        """Kahn's algorithm, keeping the existing order wherever the dependencies allow."""
        self.refresh()
        nodes = list(self.graph.node)
        position = {id(node): index for index, node in enumerate(nodes)}
        waiting_on = {id(node): len({name for name in node.input if name in self.producer}) for node in nodes}
        ready = [index for index, node in enumerate(nodes) if waiting_on[id(node)] == 0]
        heapq.heapify(ready)
        ordered = []
        while ready:
            node = nodes[heapq.heappop(ready)]
            ordered.append(node)
            for output in node.output:
                # once per consumer, however many of its inputs read this output
                for consumer in {id(c): c for c in self.consumers.get(output, [])}.values():
                    waiting_on[id(consumer)] -= 1
                    if waiting_on[id(consumer)] == 0:
                        heapq.heappush(ready, position[id(consumer)])
        if len(ordered) != len(nodes):
            stuck = next(node for node in nodes if waiting_on[id(node)] > 0)
            raise RuntimeError(f"ortify left a cycle in the graph near node '{stuck.name}'")
        del self.graph.node[:]
        self.graph.node.extend(ordered)
        self.refresh()


def uint8_parameters(low: float, high: float) -> tuple[np.float32, np.uint8]:
    """Asymmetric uint8 scale and zero point covering [low, high] and 0, as quantize_static's MinMax."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    scale = (high - low) / 255.0 if high > low else 1.0
    zero_point = int(np.clip(np.round(-low / scale), 0, 255))
    return np.float32(scale), np.uint8(zero_point)


def calibrate(model, tensors: list[str], samples: list[dict]) -> dict[str, tuple[float, float]]:
    """(min, max) of each of `tensors` over `samples`, running the QDQ graph at reference semantics."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    if not tensors:
        return {}
    if not samples:
        raise ValueError(f"ortify needs calibration samples to quantize {len(tensors)} tensors (first: "
                         f"'{tensors[0]}'); pass the samples NNCF calibrated on")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    already = {value.name for value in probe.graph.output}
    probe.graph.output.extend(helper.make_tensor_value_info(name, TensorProto.FLOAT, None)
                              for name in tensors if name not in already)
    options = ort.SessionOptions()
    # Unfused, so that the ranges are those of the graph's own arithmetic.
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    low, high = dict.fromkeys(tensors, np.inf), dict.fromkeys(tensors, -np.inf)
    for feed in samples:
        for name, value in zip(tensors, session.run(tensors, feed)):
            low[name], high[name] = min(low[name], float(value.min())), max(high[name], float(value.max()))
    return {name: (low[name], high[name]) for name in tensors}


# -- the rewrites: each takes the graph view and returns how many places it changed ---------------

def _normalize_constant_axes(g: _Graph) -> int:
    """1. Q/DQ of a constant: axis -> axis + rank."""
    changed = 0
    for node in g.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for attribute in node.attribute:
            if attribute.name == "axis" and attribute.i < 0:
                value = g.constant(node.input[0])
                if value is not None:
                    attribute.i += value.ndim
                    changed += 1
    return changed


def _per_tensor_uint8(scale: np.ndarray, zero_point: np.ndarray):
    """uint8 parameters whose grid covers every channel's range of a per-channel quantizer."""
    info = np.iinfo(zero_point.dtype)
    zero = zero_point.astype(np.float64)
    low, high = ((info.min - zero) * scale).min(), ((info.max - zero) * scale).max()
    return uint8_parameters(low, high)


def _drop_axis(nodes) -> None:
    for node in nodes:
        kept = [attribute for attribute in node.attribute if attribute.name != "axis"]
        del node.attribute[:]
        node.attribute.extend(kept)


def _activations_to_uint8_per_tensor(g: _Graph) -> dict[str, int]:
    """2 and 3. Activation Q/DQ pairs: int8 -> uint8 (exact), per-channel -> per-tensor."""
    counts = {"int8_activations_to_uint8": 0, "per_channel_activations_to_per_tensor": 0}
    retyped = set()
    for quantize in [node for node in g.graph.node if node.op_type == "QuantizeLinear"]:
        if g.is_constant(quantize.input[0]) or len(quantize.input) < 3 or quantize.output[0] in g.outputs:
            continue
        scale, zero_point = g.constant(quantize.input[1]), g.constant(quantize.input[2])
        if scale is None or zero_point is None:
            continue
        dequantizers = g.consumers[quantize.output[0]]
        if not dequantizers or any(node.op_type != "DequantizeLinear" for node in dequantizers):
            continue  # a retyped Q output must feed DQs only
        if scale.size > 1:
            scale, zero_point = _per_tensor_uint8(scale, zero_point)
            _drop_axis([quantize, *dequantizers])
            counts["per_channel_activations_to_per_tensor"] += 1
        elif zero_point.dtype == np.int8:
            zero_point = (zero_point.astype(np.int16) + 128).astype(np.uint8)
            counts["int8_activations_to_uint8"] += 1
        else:
            continue
        # New initializers: the old ones may be shared with a quantizer left as it was.
        scale_name = g.add_initializer(np.asarray(scale, np.float32).reshape(()), quantize.input[1] + "_uint8")
        zero_name = g.add_initializer(np.asarray(zero_point, np.uint8).reshape(()), quantize.input[2] + "_uint8")
        for node in [quantize, *dequantizers]:
            node.input[1], node.input[2] = scale_name, zero_name
        retyped.add(quantize.output[0])
    _drop_value_info(g, retyped)  # their element type changed from int8 to uint8
    return counts


def _drop_value_info(g: _Graph, names: set[str]) -> None:
    kept = [value for value in g.graph.value_info if value.name not in names]
    del g.graph.value_info[:]
    g.graph.value_info.extend(kept)


def _quantized_or_quantizable(g: _Graph, node) -> bool:
    """A linear node whose weight is dequantized, or a Conv/Gemm whose weight rewrite 5 quantizes."""
    if len(node.input) < 2:
        return False
    if g.dequantizer(node.input[1]) is not None:
        return True
    return node.op_type in FLOAT_WEIGHT_OPS and g.is_constant(node.input[1])


def _requantize_after_shape_ops(g: _Graph, layers: list) -> int:
    """4. DQ -> Flatten -> Gemm becomes DQ -> Flatten -> Q -> DQ -> Gemm, same parameters (exact)."""
    changed = 0
    for node in layers:
        shape_op = g.producer.get(node.input[0])
        if shape_op is None or shape_op.op_type not in SHAPE_OPS:
            continue
        dequantize = g.dequantizer(shape_op.input[0])
        if dequantize is None or len(dequantize.input) < 3:
            continue
        scale, zero_point = g.constant(dequantize.input[1]), g.constant(dequantize.input[2])
        if scale is None or zero_point is None or scale.size != 1:
            continue
        g.insert_qdq(node.input[0], scale, zero_point, tag="requantized")
        changed += 1
    return changed


def _output_needs_quantizer(g: _Graph, node) -> bool:
    """A Conv whose output edges are not all QuantizeLinear, nor a lone Relu/Clip -> a lone Q."""
    if node.op_type != "Conv" or node.output[0] in g.outputs:
        return False
    after = g.consumers[node.output[0]]
    if len(after) == 1 and after[0].op_type in REDUNDANT_BEFORE_Q and after[0].output[0] not in g.outputs:
        past = g.consumers[after[0].output[0]]
        if len(past) == 1 and past[0].op_type == "QuantizeLinear":
            return False
    return not after or any(consumer.op_type != "QuantizeLinear" for consumer in after)


def _weight_axis(node, rank: int) -> int:
    """The output-channel axis of a weight: 0 for Conv, N of Gemm's B, the last for MatMul."""
    if node.op_type == "Conv":
        return 0
    if node.op_type == "Gemm":
        trans_b = next((attribute.i for attribute in node.attribute if attribute.name == "transB"), 0)
        return 0 if trans_b else 1
    return rank - 1


def _weight_limit(node, overflow_fix: str, first_conv: str | None) -> int:
    if overflow_fix == "enable" or (overflow_fix == "first_layer" and node.name == first_conv):
        return SEVEN_BIT_LIMIT
    return EIGHT_BIT_LIMIT


def _quantize_weight(g: _Graph, node, limit: int) -> None:
    """Per-channel symmetric int8 weight behind a DequantizeLinear."""
    weight = g.constant(node.input[1]).astype(np.float32)
    axis = _weight_axis(node, weight.ndim)
    others = tuple(i for i in range(weight.ndim) if i != axis)
    scale = np.maximum(np.abs(weight).max(axis=others), 1e-12) / limit
    shape = [1] * weight.ndim
    shape[axis] = -1
    levels = np.clip(np.round(weight / scale.reshape(shape)), -limit, limit).astype(np.int8)
    inputs = [g.add_initializer(levels, node.input[1] + "_int8"),
              g.add_initializer(scale.astype(np.float32), node.input[1] + "_scale"),
              g.add_initializer(np.zeros(scale.shape, np.int8), node.input[1] + "_zero_point")]
    node.input[1] = g.add_node("DequantizeLinear", inputs, node.input[1] + "_dequantized", axis=axis)
    g.refresh()


def _calibrated(g: _Graph, layers: list, samples: list[dict]) -> tuple[list, list, dict]:
    """5 and 6: the layers needing an input / output quantizer, and the ranges of those tensors."""
    need_input = [node for node in layers if g.dequantizer(node.input[0]) is None]
    need_output = [node for node in layers if _output_needs_quantizer(g, node)]
    tensors = sorted({node.input[0] for node in need_input} | {node.output[0] for node in need_output})
    return need_input, need_output, calibrate(g.model, tensors, samples)


def _quantize_float_weights(g: _Graph, layers: list, overflow_fix: str) -> int:
    """5a. Conv/Gemm weights left in float -> per-channel int8."""
    first_conv = next((node.name for node in g.graph.node if node.op_type == "Conv"), None)
    float_weights = [node for node in layers if g.dequantizer(node.input[1]) is None]
    for node in float_weights:
        _quantize_weight(g, node, _weight_limit(node, overflow_fix, first_conv))
    return len(float_weights)


def _quantize_inputs(g: _Graph, need_input: list, ranges: dict) -> int:
    """5b. A calibrated Q/DQ on each layer input that has none."""
    added = 0
    for node in need_input:
        if g.dequantizer(node.input[0]) is None:  # a layer before may have quantized a shared input
            g.insert_qdq(node.input[0], *uint8_parameters(*ranges[node.input[0]]), tag="input")
            added += 1
    return added


def _quantize_conv_outputs(g: _Graph, need_output: list, ranges: dict) -> int:
    """6. A Q on every output edge of each quantized Conv."""
    added = 0
    for node in need_output:
        if not _output_needs_quantizer(g, node):  # rewrite 5 quantized the input of all its readers
            continue
        after = g.consumers[node.output[0]]
        existing = next((consumer for consumer in after if consumer.op_type == "QuantizeLinear"), None)
        if existing is None:
            g.insert_qdq(node.output[0], *uint8_parameters(*ranges[node.output[0]]), tag="output")
        else:  # a Q on one edge and float readers on others: those read a DQ of that Q instead
            shared = g.add_node("DequantizeLinear", [existing.output[0], *existing.input[1:]],
                                node.output[0] + "_shared_dequantized")
            g.redirect(node.output[0], shared, [consumer for consumer in after if consumer.op_type != "QuantizeLinear"])
        added += 1
    return added


def _bias_scale(g: _Graph, node, bias):
    """input scale x weight scale of a quantized Conv/Gemm, shaped for `bias`; None if it has none."""
    dequantize_input, dequantize_weight = g.dequantizer(node.input[0]), g.dequantizer(node.input[1])
    if dequantize_input is None or dequantize_weight is None:
        return None
    input_scale, weight_scale = g.constant(dequantize_input.input[1]), g.constant(dequantize_weight.input[1])
    if input_scale is None or weight_scale is None or input_scale.size != 1:
        return None  # a per-channel input scale has no int32 bias grid
    scale = (np.float64(input_scale.reshape(())) * weight_scale.astype(np.float64)).astype(np.float32)
    return scale if scale.size in (1, bias.size) else None


def _int32_biases(g: _Graph, keep_float: set[str]) -> int:
    """7. Float bias of a quantized Conv/Gemm -> int32 at scale input scale x weight scale."""
    changed = 0
    for node in list(g.graph.node):
        if node.op_type not in FLOAT_WEIGHT_OPS or len(node.input) < 3 or not node.input[2] or node.name in keep_float:
            continue
        bias = g.constant(node.input[2])
        scale = _bias_scale(g, node, bias) if bias is not None and bias.dtype == np.float32 else None
        if scale is None:
            continue
        levels = np.clip(np.round(bias / scale.astype(np.float64)), -2**31, 2**31 - 1).astype(np.int32)
        inputs = [g.add_initializer(levels, node.input[2] + "_int32"),
                  g.add_initializer(scale.reshape(-1) if scale.size > 1 else scale.reshape(()),
                                    node.input[2] + "_scale")]
        per_channel = {"axis": 0} if scale.size > 1 else {}
        node.input[2] = g.add_node("DequantizeLinear", inputs, node.input[2] + "_dequantized", **per_channel)
        changed += 1
    g.refresh()
    return changed


def ortify_with_counts(model, samples: list[dict], keep_float=(), overflow_fix: str = "enable"):
    """`ortify`, and how many places each rewrite changed ({} when the graph was left alone)."""
    import onnx

    require(overflow_fix in OVERFLOW_FIX_MODES, "overflow_fix", overflow_fix,
            " or ".join(repr(mode) for mode in OVERFLOW_FIX_MODES))
    if not any(node.op_type == "QuantizeLinear" for node in model.graph.node):
        return model, {}  # a float model: nothing here is for onnxruntime's QDQ fusions
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    g, keep_float = _Graph(fixed), set(keep_float)
    counts = {"axes_normalized": _normalize_constant_axes(g), **_activations_to_uint8_per_tensor(g)}
    layers = [node for node in g.graph.node if node.op_type in LINEAR_OPS and node.name not in keep_float
              and _quantized_or_quantizable(g, node)]
    counts["quantizers_repeated_after_shape_ops"] = _requantize_after_shape_ops(g, layers)
    need_input, need_output, ranges = _calibrated(g, layers, samples)
    counts["float_layers_quantized"] = _quantize_float_weights(g, layers, overflow_fix)
    counts["input_quantizers_added"] = _quantize_inputs(g, need_input, ranges)
    counts["output_quantizers_added"] = _quantize_conv_outputs(g, need_output, ranges)
    counts["biases_to_int32"] = _int32_biases(g, keep_float)
    counts = {name: count for name, count in counts.items() if count}
    if not counts:
        return model, {}
    g.finish()
    onnx.checker.check_model(fixed)
    return fixed, counts


def ortify(model, samples: list[dict], keep_float=(), overflow_fix: str = "enable"):
    """Rewrite a QDQ model (NNCF's, activations per-tensor) so that onnxruntime's CPU EP fuses its
    Conv/Gemm/MatMul into integer kernels; return the new onnx.ModelProto.

    `samples`: calibration feeds, {input name: array of batch 1}, for the quantizers it adds.
    `keep_float`: node names to leave in float (accuracy control's choice). `overflow_fix`, as
    NNCF's, for the weights this pass quantizes: "enable" 7-bit, "first_layer" 7-bit for the first
    convolution only, "disable" the full int8 range. A model without QDQ, or one onnxruntime
    already fuses throughout, comes back as it is (the same object).
    """
    fixed, counts = ortify_with_counts(model, samples, keep_float, overflow_fix)
    if counts:
        log("ortify: " + ", ".join(f"{name.replace('_', ' ')} {count}" for name, count in counts.items()))
    return fixed
