"""Latency-aware mixed precision: onnxruntime's profile charged to layers, and a form rebuilt with some in float.

No timing is asserted (the benchmark's job): these check that every integer layer of a real QDQ model
is found in onnxruntime's profile of both graphs, that a layer sent back to float runs in float with
its weights still stored as int8, and that the manifest says what was measured.
"""
from types import SimpleNamespace

import onnx
import pytest

from edgeslim.build import build_profiler
from edgeslim.compress.int8_forms import build_form
from edgeslim.compress.mixed_precision import _rebuilt, layer_times, per_layer_times
from edgeslim.compress.quantize import Int8Config, calibration_samples
from edgeslim.export.kernels import int8_coverage
from helpers import spec


@pytest.fixture(scope="module")
def mobilenet(weights):
    """The fp32 ONNX MobileNet of the tests, onnxruntime's QDQ form of it, calibration samples and a context."""
    from edgeslim.core.model_io import load_model
    from edgeslim.core.specs import load_data
    from edgeslim.export.onnx_export import ExportConfig, export_onnx

    data = load_data(spec("digits"))
    parent, names, _ = export_onnx(load_model(spec("mobilenet"), str(weights["mobilenet"])), data.sample_inputs(),
                                   ExportConfig())
    ctx = SimpleNamespace(data=data, input_names=names, records={}, profile=build_profiler("cpu"),
                          target={"name": "cpu"})
    config = Int8Config(overflow_fix="enable")
    samples = calibration_samples(ctx, 64)
    return parent, build_form("ort", parent, samples, config, ctx), samples, config, ctx


def test_every_integer_layer_is_charged_its_kernels_in_both_graphs(mobilenet):
    parent, quantized, samples, _, ctx = mobilenet
    layers = per_layer_times(parent, quantized, ctx, samples[0])
    assert len(layers) == 22                                 # 21 convolutions and the classifier's Gemm
    assert all(row["int8_us"] is not None and row["float_us"] is not None for row in layers.values()), layers
    assert all(row["in_float"] == (row["int8_us"] > 1.1 * row["float_us"]) for row in layers.values())


def test_most_of_the_profile_is_charged_to_layers(mobilenet):
    """Kernels that belong to no layer (layout transposes, the input's quantize) are a small part."""
    parent, quantized, samples, _, ctx = mobilenet
    for model in (parent, quantized):
        kernels = ctx.profile(model, samples[0])
        charged = sum(layer_times(kernels, model.graph).values())
        assert charged >= 0.6 * sum(kernels.values()), kernels


def test_a_layer_sent_back_to_float_runs_in_float_with_int8_weights(mobilenet):
    parent, quantized, samples, config, ctx = mobilenet
    layer = next(node for node in parent.graph.node if node.op_type == "Conv")
    weight = layer.input[1]
    mixed = _rebuilt(parent, "ort", [layer.name], config, ctx, samples)
    stored = {tensor.name: tensor.data_type for tensor in mixed.graph.initializer}
    assert stored.get(f"{weight}_int8") == onnx.TensorProto.INT8 and weight not in stored
    convs = int8_coverage(mixed)["families"]["conv"]
    assert (convs["int8"], convs["float"]) == (20, 1)
    assert mixed.ByteSize() <= quantized.ByteSize() * 1.05
