"""Which convolutions, matmuls, gemms and attention nodes onnxruntime runs as integer kernels.

Weight-only MatMulNBits (INT4 weights unpacked inside the kernel) count apart, under `int4`: an
integer-weight matmul, not an int8 one.

A QDQ graph only says where values are quantized; onnxruntime decides what runs in integer
arithmetic by fusing DQ -> op -> Q groups, and leaves in float (weights dequantized on every run)
whatever misses its rules. This reads the graph a default session executes: ORT_ENABLE_ALL, saved
through SessionOptions.optimized_model_filepath, with the contrib ops, the NHWC QLinearConv and the
NCHWc float convolutions it contains.
"""
from __future__ import annotations

import os
import tempfile

from edgeslim.core.coverage import FAMILIES, LOW_BITS

# op type -> (family, integer kernel?) for the ops an optimized graph may hold.
KERNELS = {
    "Conv": ("conv", False), "FusedConv": ("conv", False), "NhwcConv": ("conv", False),
    "NhwcFusedConv": ("conv", False), "ConvTranspose": ("conv", False),
    "QLinearConv": ("conv", True), "ConvInteger": ("conv", True), "QLinearConvTranspose": ("conv", True),
    "MatMul": ("matmul", False), "FusedMatMul": ("matmul", False), "TransposeMatMul": ("matmul", False),
    "QLinearMatMul": ("matmul", True), "MatMulInteger": ("matmul", True), "MatMulIntegerToFloat": ("matmul", True),
    "DynamicQuantizeMatMul": ("matmul", True),
    "MatMulNBits": ("matmul", True),  # weight-only: 2/4/8-bit weights unpacked inside the kernel
    "Gemm": ("gemm", False), "FusedGemm": ("gemm", False), "QGemm": ("gemm", True),
    "Attention": ("attention", False), "MultiHeadAttention": ("attention", False),
    "GroupQueryAttention": ("attention", False), "QAttention": ("attention", True),
    "QOrderedAttention": ("attention", True),
}


def _model_bytes(model) -> bytes:
    return bytes(model) if isinstance(model, (bytes, bytearray)) else model.SerializeToString()


def optimized_graph(model_bytes: bytes, provider: str, level):
    """The onnx.GraphProto onnxruntime runs for `provider` at optimization `level`."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder:
        options = ort.SessionOptions()
        options.graph_optimization_level = level
        options.optimized_model_filepath = os.path.join(folder, "optimized.onnx")
        options.log_severity_level = 3  # silences the expected "NCHWc is hardware specific" warning
        ort.InferenceSession(model_bytes, options, providers=[provider])
        return onnx.load(options.optimized_model_filepath).graph


def _weight_bits(node) -> str:
    """'int4' for a 4-bit MatMulNBits (its default), 'int8' for an 8-bit one and every other integer kernel."""
    if node.op_type != "MatMulNBits":
        return "int8"
    bits = next((a.i for a in node.attribute if a.name == "bits"), 4)
    return "int8" if bits == 8 else f"int{bits}"


def _count_kernels(graph) -> dict[str, dict]:
    """Per family present: integer (int8, and int4 where weight-only) and float node counts, the float nodes by name."""
    counts: dict[str, dict] = {}
    for node in graph.node:
        if node.op_type not in KERNELS:
            continue
        family, integer = KERNELS[node.op_type]
        entry = counts.setdefault(family, {"int8": 0, "float": 0, "float_nodes": []})
        if integer:
            key = _weight_bits(node)
            entry[key] = entry.get(key, 0) + 1
        else:
            entry["float"] += 1
            entry["float_nodes"].append(node.name)
    return counts


def _weights_dequantized_per_run(graph) -> int:
    """DequantizeLinear nodes left on constants: weights an unfused op dequantizes on every run."""
    constants = {tensor.name for tensor in graph.initializer}
    return sum(1 for node in graph.node if node.op_type == "DequantizeLinear" and node.input[0] in constants)


def _check_provider(provider: str) -> None:
    import onnxruntime as ort

    from edgeslim.core.errors import DeviceError

    available = ort.get_available_providers()
    if provider not in available:
        raise DeviceError(f"provider {provider!r} is not available in this onnxruntime; "
                          f"pick one of {', '.join(available)}")


def int8_coverage(model, provider: str = "CPUExecutionProvider") -> dict:
    """How many conv / matmul / gemm / attention nodes onnxruntime runs as integer kernels.

    `model`: an onnx.ModelProto or its serialized bytes. Returns (JSON-serialisable)::

        {"provider": ..., "families": {"conv": {"int8": 37, "float": 0, "float_nodes": []}, ...},
         "int8": 37, "float": 0, "weights_dequantized_per_run": 0}

    Only the families present appear; a family with weight-only MatMulNBits has `int4` beside `int8`
    (and the document an `int4` total). The NCHWc layout pass renames the float convolutions it
    rewrites, so float nodes are named from the ORT_ENABLE_EXTENDED graph (the same QDQ fusions,
    no layout passes) wherever its counts agree with the executed graph's.
    """
    import onnxruntime as ort

    _check_provider(provider)
    data = _model_bytes(model)
    executed = optimized_graph(data, provider, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    families = _count_kernels(executed)
    named = _count_kernels(optimized_graph(data, provider, ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED))
    for family, entry in families.items():
        readable = named.get(family)
        if readable and _counts(readable) == _counts(entry):
            entry["float_nodes"] = readable["float_nodes"]
    ordered = {family: families[family] for family in FAMILIES if family in families}
    low_bits = {key: sum(entry.get(key, 0) for entry in ordered.values()) for key in LOW_BITS}
    return {"provider": provider, "families": ordered,
            "int8": sum(entry["int8"] for entry in ordered.values()),
            **{key: count for key, count in low_bits.items() if count},
            "float": sum(entry["float"] for entry in ordered.values()),
            "weights_dequantized_per_run": _weights_dequantized_per_run(executed)}


def _counts(entry: dict) -> tuple:
    return entry["int8"], entry["float"], *(entry.get(key, 0) for key in LOW_BITS)


def kernel_times(model, feed: dict, options, providers: list, runs: int = 40, warmup: int = 5) -> dict[str, float]:
    """Median microseconds of each kernel onnxruntime runs for `model`, from its own profiler.

    Keyed by the name the profile gives a kernel: the node's name for a node kept as it is, a fused
    node's name as onnxruntime makes it (`<node>_token_<n>` for a QDQ group, `<output>_nchwc` for a
    float convolution in the NCHWc layout). `options` is the SessionOptions the target is timed with
    (threads); profiling is switched on in it here.
    """
    import json
    from pathlib import Path

    import numpy as np
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as folder:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(folder, "kernels")
        session = ort.InferenceSession(_model_bytes(model), options, providers=providers)
        for _ in range(warmup + runs):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    durations: dict[str, list] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("cat") == "Node" and name.endswith("_kernel_time"):
            durations.setdefault(name[:-len("_kernel_time")], []).append(event["dur"])
    return {name: float(np.median(spent[warmup:] or spent)) for name, spent in durations.items()}
