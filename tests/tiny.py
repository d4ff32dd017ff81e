"""A tiny real bundle and report, built in milliseconds without torch or training: for the tests that
tamper with documents (tests/test_bad_input.py, tests/test_properties.py).

The model takes the digits data of tests/fixtures/zoo.py (float32 [batch, 1, 8, 8]) and gives ten
class scores, so `edgeslim validate --data zoo.py:digits` runs on it as on a built bundle.
"""
import copy
import json
from pathlib import Path

import numpy as np

from edgeslim.export.bundle import manifest_for, save_model


def tiny_model():
    """Flatten, then Gemm 64 -> 10 with fixed random weights."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((64, 10)).astype(np.float32), "W")
    bias = numpy_helper.from_array(np.zeros(10, np.float32), "B")
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"]), helper.make_node("Gemm", ["flat", "W", "B"], ["output"])],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 8, 8])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])], [weight, bias])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def write_tiny_bundle(folder: Path, name: str = "tiny") -> Path:
    """model.onnx and the manifest edgeslim's own bundle writer makes for it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model = tiny_model()
    files = save_model(model, folder)
    manifest = manifest_for(model, name, files, folder, [{"step": "prune", "version": 1, "ratio": 0.5}],
                            {"accuracy": 12.5})
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def _entry(name: str, accuracy: float, p50: float, size: int) -> dict:
    stats = {"p50_ms": p50, "p90_ms": p50 * 1.1, "p99_ms": p50 * 1.3, "mean_ms": p50, "throughput": 1000 / p50,
             "peak_rss_mb": 80.0, "load_ms": 5.0, "first_run_ms": 1.0, "threads": 2, "mode": "measured"}
    return {"name": name, "bundle": f"out/{name}", "size_bytes": size, "params": size // 4, "accuracy": accuracy,
            "accuracy_by_device": {"cpu": accuracy}, "latency": {"cpu": stats},
            "compression": [{"step": "prune", "version": 1, "ratio": 0.5}], "gates": {}, "passed": None,
            "pareto": {"size": True}, "slower_than_baseline": {"cpu": False}}


REPORT = {"format": "edgeslim-report/1", "baseline": "fp32",
          "candidates": [_entry("fp32", 98.0, 1.0, 4000), _entry("int8", 97.5, 0.6, 1000)],
          "settings": {"metric": "top1", "devices": [{"name": "cpu"}],
                       "bench": {"runs": 100, "warmup": 10, "batch": 1}},
          "created_with": {"edgeslim": "0.1.0", "torch": None}}


def tiny_report() -> dict:
    """A report of two candidates as `edgeslim validate` writes it."""
    return copy.deepcopy(REPORT)
