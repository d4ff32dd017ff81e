"""onnxruntime's INT8 kernels measured against the QDQ graph they were fused from.

x86 CPUs without VNNI multiply uint8 by int8 with vpmaddubsw, whose int16 pair sums saturate; a
7-bit weight range cannot. The check must see the first and pass the second.
"""
import platform
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgeslim.export.onnx_export import check_int8_kernels


def saturating_host() -> bool:
    if platform.machine() not in ("x86_64", "AMD64"):
        return False
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return "avx2" in flags and "vnni" not in flags


def qdq_matmul(weight_levels: int):
    """x (uint8 range) @ W, with W's int8 values drawn from [-weight_levels, weight_levels]."""
    rng = np.random.default_rng(0)
    weights = (rng.integers(-weight_levels, weight_levels + 1, size=(64, 32)) / 127).astype(np.float32)
    initializers = [numpy_helper.from_array(weights, "W"),
                    helper.make_tensor("x_scale", TensorProto.FLOAT, [], [1 / 255]),
                    helper.make_tensor("x_zero", TensorProto.UINT8, [], [0]),
                    helper.make_tensor("w_scale", TensorProto.FLOAT, [], [1 / 127]),
                    helper.make_tensor("w_zero", TensorProto.INT8, [], [0])]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"]),
             helper.make_node("QuantizeLinear", ["W", "w_scale", "w_zero"], ["wq"]),
             helper.make_node("DequantizeLinear", ["wq", "w_scale", "w_zero"], ["wd"]),
             helper.make_node("MatMul", ["xd", "wd"], ["y"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 32])], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


BRIGHT = [np.random.default_rng(1).uniform(0.9, 1.0, size=(16, 64)).astype(np.float32)]


@pytest.mark.skipif(not saturating_host(), reason="this CPU has VNNI or is not x86: its INT8 kernels do not saturate")
def test_full_range_weights_saturate_here():
    kernels = check_int8_kernels(qdq_matmul(127), BRIGHT, ["x"])
    assert kernels["max_rel_err"] > 0.05


def test_seven_bit_weights_compute_what_the_graph_says():
    kernels = check_int8_kernels(qdq_matmul(63), BRIGHT, ["x"])
    assert kernels["max_rel_err"] < 1e-5


def test_a_float_model_needs_no_kernel_check():
    model = qdq_matmul(63)
    del model.graph.node[:4]
    model.graph.node[0].input[:] = ["x", "W"]
    assert check_int8_kernels(model, BRIGHT, ["x"]) is None
