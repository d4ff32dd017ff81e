"""Embedding tables in dynamic INT8: a scale per block of each row, not one for the whole table."""
from types import SimpleNamespace

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgeslim.compress.int8_forms import _dynamic

CONFIG = SimpleNamespace(overflow_fix="disable", in_float=())


def _embedding(width: int, rows: int = 300):
    """ids -> Gather(table) -> Add(bias) -> MatMul, as BERT sums its embeddings before the layers; the rows
    of very different ranges, as a vocabulary's are."""
    rng = np.random.default_rng(0)
    table = (rng.standard_normal((rows, width)) * np.geomspace(0.01, 10, rows)[:, None]).astype(np.float32)
    weight = rng.standard_normal((width, 8)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], name="embed"),
         helper.make_node("Add", ["rows", "bias"], ["summed"]),
         helper.make_node("MatMul", ["summed", "weight"], ["out"], name="project")], "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, ["batch", "sequence", 8])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(weight, "weight"),
         numpy_helper.from_array(np.ones(width, np.float32), "bias")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), table


def _gathered(model, ids):
    """The model's Gather output (the rows it looked up), as a graph output."""
    produced = [node for node in model.graph.node if node.op_type in ("GatherBlockQuantized", "DequantizeLinear")
                or node.name == "embed"]
    model.graph.output.append(helper.make_tensor_value_info(produced[-1].output[0], TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run([produced[-1].output[0]], {"ids": ids})[0]


def test_each_row_keeps_its_own_range():
    model, table = _embedding(width=256)
    quantized = _dynamic(model, None, CONFIG, None)
    ops = [node.op_type for node in quantized.graph.node]
    assert "GatherBlockQuantized" in ops and "Gather" not in ops
    assert "table" not in {t.name for t in quantized.graph.initializer}  # the float table is not kept beside
    ids = np.array([[0, 1, 2, 150, 299]], dtype=np.int64)
    rows = _gathered(quantized, ids)
    row_error = np.abs(rows - table[ids]).max(-1) / np.abs(table[ids]).max(-1)
    assert row_error.max() < 1.0 / 255  # half a step of each 128-wide block's range at most
    per_tensor_step = (table.max() - min(table.min(), 0)) / 255
    assert np.abs(table[0]).max() < per_tensor_step  # one scale for the table would round row 0 to nothing


def test_a_row_no_block_divides_keeps_onnxruntimes_table():
    model, _ = _embedding(width=20)
    quantized = _dynamic(model, None, CONFIG, None)
    ops = [node.op_type for node in quantized.graph.node]
    assert "GatherBlockQuantized" not in ops and "Gather" in ops and "DequantizeLinear" in ops
