"""ortify: NNCF's QDQ graph reshaped into the node groups onnxruntime's CPU EP fuses.

Real NNCF on the trained zoo models, real onnxruntime; the counts come from the graph a default
session executes (edgeslim.export.kernels)."""
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from qdq_models import calibration, digits, exported, nncf_int8, quantized

from edgeslim.compress.ort_qdq import ortify, ortify_with_counts
from edgeslim.compress.sensitivity import evaluate_proto
from edgeslim.core.coverage import mostly_float
from edgeslim.core.errors import ConfigError
from edgeslim.core.metrics import top1
from edgeslim.export.kernels import int8_coverage
from edgeslim.export.onnx_export import check_int8_kernels

STEM, CLASSIFIER = "/stem/stem.0/Conv", "/fc/Gemm"
SQUEEZE_EXCITE = "/blocks/blocks.0/block/block.6/reduce/Conv"   # NNCF leaves SE blocks in float


def _cells(coverage: dict) -> dict:
    return {family: (entry["int8"], entry["int8"] + entry["float"]) for family, entry in coverage["families"].items()}


@pytest.fixture(scope="module")
def mobilenet(weights):
    proto, names = exported("mobilenet", weights["mobilenet"])
    nncf_model = quantized("mobilenet", weights["mobilenet"])
    fixed, counts = ortify_with_counts(nncf_model, calibration(names))
    return {"fp32": proto, "names": list(names), "nncf": nncf_model, "fixed": fixed, "counts": counts}


def test_mobilenet_runs_every_conv_and_the_gemm_as_integer_kernels(mobilenet):
    before, after = int8_coverage(mobilenet["nncf"]), int8_coverage(mobilenet["fixed"])
    print("mobilenet before:", _cells(before), "after:", _cells(after), "rewrites:", mobilenet["counts"])
    # NNCF's graph as it comes: most convolutions and the classifier run in float.
    assert mostly_float(before) and before["families"]["conv"]["int8"] < 0.5 * 21
    assert before["families"]["gemm"]["int8"] == 0 and before["weights_dequantized_per_run"] > 0
    assert _cells(after) == {"conv": (21, 21), "gemm": (1, 1)}
    assert after["weights_dequantized_per_run"] == 0
    # Every rewrite had work on this model (SE blocks, Conv+HardSwish, Flatten, int8, classifier bias).
    assert set(mobilenet["counts"]) >= {"int8_activations_to_uint8", "quantizers_repeated_after_shape_ops",
                                        "float_layers_quantized", "output_quantizers_added", "biases_to_int32"}


def test_ortify_keeps_accuracy_and_the_kernels_compute_the_graph(mobilenet):
    val = digits().val
    nncf_accuracy = evaluate_proto(mobilenet["nncf"], val, mobilenet["names"], top1)
    fixed_accuracy = evaluate_proto(mobilenet["fixed"], val, mobilenet["names"], top1)
    print(f"mobilenet top1: NNCF {nncf_accuracy:.2f}, ortified {fixed_accuracy:.2f}")
    assert fixed_accuracy > 90 and abs(fixed_accuracy - nncf_accuracy) <= 1.0
    kernels = check_int8_kernels(mobilenet["fixed"], [inputs for inputs, _ in val], mobilenet["names"])
    assert kernels["max_rel_err"] < 0.05


def test_transformer_gemms_and_matmuls(weights):
    proto, names = exported("transformer", weights["transformer"])
    before = int8_coverage(quantized("transformer", weights["transformer"]))
    after = int8_coverage(ortify(quantized("transformer", weights["transformer"]), calibration(names)))
    print("transformer before:", _cells(before), "after:", _cells(after))
    assert before["families"]["gemm"]["int8"] == 0
    assert _cells(after)["gemm"] == (2, 2)
    matmul_int8, matmul_total = _cells(after)["matmul"]
    assert matmul_total == 6 and matmul_int8 >= 5


def test_layers_kept_in_float_stay_float(weights):
    proto, names = exported("mobilenet", weights["mobilenet"])
    samples = calibration(names)
    kept = ["/blocks/blocks.1/block/block.3/Conv", SQUEEZE_EXCITE, CLASSIFIER]
    fixed = ortify(nncf_int8(proto, samples, in_float=kept), samples, keep_float=kept)
    coverage = int8_coverage(fixed)
    assert _cells(coverage) == {"conv": (19, 21), "gemm": (0, 1)}
    assert sorted(coverage["families"]["conv"]["float_nodes"] + coverage["families"]["gemm"]["float_nodes"]) \
        == sorted(kept)


def _new_weight_extents(before, after) -> dict:
    """The largest |level| of each int8 weight ortify added, by the node that reads it."""
    old = {tensor.name for tensor in before.graph.initializer}
    new = {tensor.name: numpy_helper.to_array(tensor) for tensor in after.graph.initializer
           if tensor.name not in old and tensor.data_type == onnx.TensorProto.INT8 and len(tensor.dims) >= 2}
    dequantized = {node.output[0]: node.input[0] for node in after.graph.node if node.op_type == "DequantizeLinear"}
    return {node.name: int(np.abs(new[dequantized[node.input[1]]].astype(np.int32)).max())
            for node in after.graph.node if node.input[1:2] and dequantized.get(node.input[1]) in new}


@pytest.fixture(scope="module")
def without_stem(weights):
    """NNCF with the stem ignored: ortify quantizes the stem and the SE convolutions itself."""
    proto, names = exported("mobilenet", weights["mobilenet"])
    samples = calibration(names)
    return nncf_int8(proto, samples, in_float=[STEM]), samples


@pytest.mark.parametrize("overflow_fix, stem_limit, others_limit",
                         [("enable", 64, 64), ("first_layer", 64, 127), ("disable", 127, 127)])
def test_overflow_fix_sets_the_range_of_the_weights_ortify_quantizes(without_stem, overflow_fix, stem_limit,
                                                                     others_limit):
    nncf_model, samples = without_stem
    extents = _new_weight_extents(nncf_model, ortify(nncf_model, samples, overflow_fix=overflow_fix))
    assert extents.pop(STEM) == stem_limit
    assert SQUEEZE_EXCITE in extents and set(extents.values()) == {others_limit}


def test_a_bad_overflow_fix_is_refused(mobilenet):
    with pytest.raises(ConfigError, match="overflow_fix='sometimes'.*'enable' or 'first_layer' or 'disable'"):
        ortify(mobilenet["nncf"], [], overflow_fix="sometimes")


def test_a_float_model_comes_back_as_it_is(mobilenet):
    assert ortify(mobilenet["fp32"], []) is mobilenet["fp32"]


def test_a_graph_onnxruntime_already_fuses_is_left_alone(mobilenet, tmp_path):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Feeds(CalibrationDataReader):
        def __init__(self, samples):
            self.samples = iter(samples)

        def get_next(self):
            return next(self.samples, None)

    samples = calibration(mobilenet["names"])
    onnx.save(mobilenet["fp32"], tmp_path / "fp32.onnx")
    quantize_static(str(tmp_path / "fp32.onnx"), str(tmp_path / "static.onnx"), Feeds(samples),
                    quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    static = onnx.load(tmp_path / "static.onnx")
    before = int8_coverage(static)
    fixed, counts = ortify_with_counts(static, samples)
    assert counts == {} and fixed is static
    assert int8_coverage(fixed) == before and before["int8"] == 22


def test_rewriting_twice_changes_nothing_more(mobilenet):
    fixed = mobilenet["fixed"]
    again, counts = ortify_with_counts(fixed, calibration(mobilenet["names"]))
    assert counts == {} and again is fixed
