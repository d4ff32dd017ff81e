"""Latency estimates for boards this host cannot emulate, calibrated on this host.

Per node, FLOPs (or int8 ops) and bytes moved come from the ONNX graph with shapes inferred at
the benchmark's batch size; a roofline gives each node's time on a device from its clock, per-core
peak rates and memory bandwidth. On this host the bundle is measured with one pinned thread and
with all cores: the first gives one factor `a` (measured / roofline time; it absorbs kernel
efficiency and per-operator overhead), the pair gives the parallel fraction `f` (Amdahl). Then

    board, 1 thread:   t1 = a * sum(roofline_board(node))
    board, M threads:  tM = t1 * ((1 - f) + f / M)

Figures made so are labelled "estimated" everywhere they appear.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

COMPUTE_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
MAX_PARALLEL_FRACTION = 0.9


@dataclass
class NodeCost:
    op: str
    flops: float
    bytes: float
    int8: bool


def _fixed_batch(model, batch: int):
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    for value in list(model.graph.input) + list(model.graph.output):
        for dim in value.type.tensor_type.shape.dim[:1]:
            if not dim.HasField("dim_value"):
                dim.dim_value = batch
    return onnx.shape_inference.infer_shapes(model)


def node_costs(model, batch: int = 1) -> list[NodeCost]:
    import onnx

    model = _fixed_batch(model, batch)
    shapes, sizes = {}, {}
    for value in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in value.type.tensor_type.shape.dim]
        shapes[value.name] = dims
        sizes[value.name] = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)).itemsize
    for tensor in model.graph.initializer:
        shapes[tensor.name] = list(tensor.dims)
        sizes[tensor.name] = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    dequantized = {node.output[0]: node.input[0] for node in model.graph.node if node.op_type == "DequantizeLinear"}
    elements = lambda name: float(np.prod(shapes.get(name, [0]), dtype=np.float64))  # noqa: E731
    byte_size = lambda name: elements(dequantized.get(name, name)) * (  # noqa: E731
        1 if name in dequantized else sizes.get(name, 4))
    costs = []
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue  # fused into integer kernels by onnxruntime
        int8 = node.op_type in COMPUTE_OPS and any(name in dequantized for name in node.input[:2])
        out = elements(node.output[0]) if node.output else 0.0
        if node.op_type in ("Conv", "ConvTranspose") and len(node.input) > 1:
            weight = shapes.get(dequantized.get(node.input[1], node.input[1]), [1])
            flops = 2.0 * out * float(np.prod(weight[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            flops = 2.0 * out * float(shapes.get(node.input[0], [1])[-1])
        else:
            flops = out
        moved = sum(byte_size(name) for name in node.input if name) + sum(
            elements(name) * sizes.get(name, 4) for name in node.output if name)
        costs.append(NodeCost(node.op_type, flops, moved, int8))
    return costs


def roofline_seconds(costs: list[NodeCost], profile, threads: int = 1) -> float:
    """Each node limited by compute or by memory, on `threads` cores of `profile`."""
    hz = profile.ghz * 1e9
    fp32_peak = hz * profile.fp32_flops_per_cycle * threads
    int8_peak = hz * profile.int8_ops_per_cycle * threads
    bandwidth = profile.memory_gbps * 1e9
    total = 0.0
    for cost in costs:
        peak = int8_peak if cost.int8 else fp32_peak
        total += max(cost.flops / peak, cost.bytes / bandwidth)
    return total


def host_bandwidth_gbps() -> float:
    """Sustained copy bandwidth of this host, measured with numpy (bytes read + written)."""
    import time

    source = np.ones(32 * 1024 * 1024 // 8)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - started)
    return 2 * source.nbytes / best / 1e9


def calibrate(costs: list[NodeCost], host_profile, one_thread_ms: float, all_cores_ms: float,
              all_cores: int) -> dict:
    from dataclasses import replace

    host = replace(host_profile, memory_gbps=host_profile.memory_gbps or host_bandwidth_gbps())
    model_ms = roofline_seconds(costs, host, 1) * 1000.0
    factor = one_thread_ms / model_ms if model_ms > 0 else 1.0
    speedup = one_thread_ms / all_cores_ms if all_cores_ms > 0 else 1.0
    if all_cores > 1 and speedup > 1.0:
        # Capped at 0.9: a super-linear speed-up measured on two cores (caches, noise) would
        # otherwise promise perfect scaling to a board's four or six.
        fraction = min(max((1.0 - 1.0 / speedup) / (1.0 - 1.0 / all_cores), 0.0), MAX_PARALLEL_FRACTION)
    else:
        fraction = 0.0
    return {"factor": factor, "parallel_fraction": fraction, "host_roofline_ms": model_ms,
            "host_one_thread_ms": one_thread_ms, "host_all_cores_ms": all_cores_ms, "host_cores": all_cores,
            "host_memory_gbps": host.memory_gbps}


def estimate_ms(costs: list[NodeCost], board, calibration: dict) -> float:
    one_thread = calibration["factor"] * roofline_seconds(costs, board, 1) * 1000.0
    threads = board.thread_count()
    fraction = calibration["parallel_fraction"]
    return one_thread * ((1.0 - fraction) + fraction / threads)
