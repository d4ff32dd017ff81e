"""Weight-only INT4: MatMul weights in 4-bit blocks, run by onnxruntime's MatMulNBits.

onnxruntime's MatMulNBitsQuantizer rewrites each MatMul whose weight is a constant 2-D matrix into
MatMulNBits (com.microsoft): the weights are stored as 4-bit integers with one scale per block of
`block_size` values along the reduction axis, and unpacked inside the kernel; activations stay
float (accuracy_level 4 lets the CPU kernel quantize them to int8 for its dot products). It does
not read Gemm, which torch writes for an nn.Linear on 2-D input: those are turned into MatMul (and
Add for the bias) first. Weights with fewer rows than one block stay float.

INT4 is a size mode: the model is timed against its float parent on the target, and where it runs
slower it is kept all the same (the user asked for it) with a `speed_note` in the manifest.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edgeslim.compress.registry import StepConfig, register_step, require
from edgeslim.core.errors import ConfigError
from edgeslim.core.progress import log, warn


@dataclass
class Int4Config(StepConfig):
    name: ClassVar[str] = "int4"
    stage: ClassVar[str] = "onnx"
    quantizes: ClassVar[bool] = True
    block_size: int = 32        # weights per scale, along the reduction axis
    symmetric: bool = True      # no zero points: smaller, and the faster kernel path
    # MatMulNBits' compute type: 0 the kernel's default, 1 fp32, 2 fp16, 3 bf16, 4 int8 (on CPU:
    # activations quantized per block to int8 for the dot products).
    accuracy_level: int = 4

    def check(self) -> None:
        size = self.block_size
        require(size >= 16 and size & (size - 1) == 0, "int4.block_size", size,
                "a power of two of at least 16 (16, 32, 64, 128, ...)")
        require(self.accuracy_level in range(5), "int4.accuracy_level", self.accuracy_level,
                "0 (default), 1 (fp32), 2 (fp16), 3 (bf16) or 4 (int8)")


@register_step(Int4Config)
def int4(model, config: Int4Config, ctx):
    from edgeslim.compress.quantize import timing_sample

    work = copy.deepcopy(model)  # rewritten in place here and by onnxruntime's quantizer; `model` stays the parent
    converted = gemms_as_matmuls(work, config.block_size)
    weights = quantizable_matmuls(work, config.block_size)
    if not weights:
        raise ConfigError("--quantize int4 quantizes MatMul weights, and this model has none with at least "
                          f"{config.block_size} rows; use int8")
    quantized = _quantized(work, weights, config)
    record = {"block_size": config.block_size, "symmetric": config.symmetric,
              "accuracy_level": config.accuracy_level, "matmuls": len(weights),
              "matmul_nbits": sum(node.op_type == "MatMulNBits" for node in quantized.graph.node),
              "gemms_as_matmuls": converted, "size_bytes": quantized.ByteSize(),
              "parent": {"size_bytes": model.ByteSize()}}
    _score(model, quantized, record, ctx)
    _time(model, quantized, record, ctx, timing_sample(ctx))
    ctx.record(int4=record, **({"speed_note": record["speed_note"]} if "speed_note" in record else {}))
    log(f"{ctx.candidate}: int4: {record['matmul_nbits']} of {record['matmuls']} MatMul weights as MatMulNBits "
        f"(block {config.block_size}, {'symmetric' if config.symmetric else 'asymmetric'}, accuracy_level "
        f"{config.accuracy_level}), {record['size_bytes'] / 1024:.0f} KB against "
        f"{record['parent']['size_bytes'] / 1024:.0f} KB" + _speed_words(record))
    return quantized


def quantizable_matmuls(model, block_size: int) -> list[str]:
    """Names of the MatMul nodes whose weight (input B) is a constant float 2-D matrix of at least one block of rows."""
    from onnx import TensorProto

    initializers = {tensor.name: tensor for tensor in model.graph.initializer}
    names = []
    for index, node in enumerate(model.graph.node):
        if node.op_type != "MatMul" or node.domain not in ("", "ai.onnx"):
            continue
        weight = initializers.get(node.input[1])
        if weight is not None and weight.data_type == TensorProto.FLOAT and len(weight.dims) == 2 \
                and weight.dims[0] >= block_size:
            node.name = node.name or f"matmul_{index}"  # the quantizer excludes nodes by name
            names.append(node.name)
    return names


def gemms_as_matmuls(model, block_size: int) -> int:
    """Rewrite in place each Gemm with a constant weight worth quantizing as MatMul (+ Add of the bias):
    the form MatMulNBits replaces. Returns how many were rewritten."""
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    nodes, rewritten = [], 0
    for index, node in enumerate(graph.node):
        parts = _gemm_parts(node, initializers, block_size)
        if parts is None:
            nodes.append(node)
            continue
        weight, bias = parts
        name = node.name or f"gemm_{index}"
        graph.initializer.append(numpy_helper.from_array(weight, f"{name}_weight_kn"))
        product = node.output[0] if bias is None else f"{name}_product"
        nodes.append(helper.make_node("MatMul", [node.input[0], f"{name}_weight_kn"], [product], name=f"{name}_matmul"))
        if bias is not None:
            graph.initializer.append(numpy_helper.from_array(bias, f"{name}_bias"))
            nodes.append(helper.make_node("Add", [product, f"{name}_bias"], [node.output[0]], name=f"{name}_bias_add"))
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten


def _gemm_parts(node, initializers: dict, block_size: int):
    """(weight as [K, N] with alpha folded in, bias times beta or None) of a Gemm MatMulNBits can take, else None."""
    from onnx import TensorProto, helper, numpy_helper

    if node.op_type != "Gemm" or node.domain not in ("", "ai.onnx"):
        return None
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    weight = initializers.get(node.input[1])
    bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    if attrs.get("transA", 0) or weight is None or weight.data_type != TensorProto.FLOAT or len(weight.dims) != 2:
        return None
    if bias_name is not None and bias_name not in initializers:
        return None
    matrix = numpy_helper.to_array(weight).astype(np.float32)
    matrix = (matrix.T if attrs.get("transB", 0) else matrix) * np.float32(attrs.get("alpha", 1.0))
    if matrix.shape[0] < block_size:
        return None
    bias = None
    if bias_name is not None:
        bias = (numpy_helper.to_array(initializers[bias_name]) * np.float32(attrs.get("beta", 1.0))).astype(np.float32)
    return np.ascontiguousarray(matrix), bias


def _quantized(model, weights: list[str], config: Int4Config):
    """onnxruntime's MatMulNBitsQuantizer on the listed MatMuls, inside a temporary working folder."""
    import tempfile
    from pathlib import Path

    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    from edgeslim.compress.int8_forms import _working_in, quiet_logging

    others = [node.name for node in model.graph.node if node.op_type == "MatMul" and node.name not in set(weights)]
    algo = DefaultWeightOnlyQuantConfig(block_size=config.block_size, is_symmetric=config.symmetric,
                                        accuracy_level=config.accuracy_level or None, bits=4,
                                        op_types_to_quantize=("MatMul",))
    with tempfile.TemporaryDirectory() as tmp, _working_in(Path(tmp)), quiet_logging():
        quantizer = MatMulNBitsQuantizer(model, block_size=config.block_size, is_symmetric=config.symmetric,
                                         accuracy_level=config.accuracy_level or None, nodes_to_exclude=others,
                                         algo_config=algo)
        quantizer.process()
    return quantizer.model.model


def _score(parent, quantized, record: dict, ctx) -> None:
    from edgeslim.compress.sensitivity import evaluate_proto

    if ctx.data.val:
        record["parent"]["accuracy"] = evaluate_proto(parent, ctx.data.val, ctx.input_names, ctx.metric)
        record["accuracy"] = evaluate_proto(quantized, ctx.data.val, ctx.input_names, ctx.metric)


def _time(parent, quantized, record: dict, ctx, sample: dict) -> None:
    """The INT4 model's p50 against its parent's on the target; a speed note where it is slower."""
    from edgeslim.compress.int8_forms import SLOWER

    if ctx.measure is None:
        record["measured_on"] = f"{ctx.target.get('name')}: not measurable from this host"
        return
    timing = ctx.measure({"parent": parent, "int4": quantized}, sample)
    p50 = timing["p50_ms"]
    record.update(p50_ms=p50["int4"], x_parent=timing["x_parent"]["int4"], measured_on=timing.get("where"))
    record["parent"]["p50_ms"] = p50["parent"]
    if record["x_parent"] > SLOWER:
        record["speed_note"] = (f"int4 weight-only: {record['x_parent']:.2f}x slower than the float parent on "
                                f"{ctx.target.get('name')}; chosen for size")
        warn(f"{ctx.candidate}: {record['speed_note']}")


def _speed_words(record: dict) -> str:
    if "x_parent" in record:
        return f"; {record['x_parent']:.2f}x the float parent's time on {record['measured_on']}"
    return f"; not timed ({record['measured_on']})"
