"""Zoo models exported and quantized with NNCF as edgeslim's INT8 step does (activations per-tensor),
shared by the QDQ-rewrite and kernel-coverage tests. Built once per test process: the functions
cache what they return, so callers must not modify it."""
from functools import cache

from helpers import ARCHITECTURES, spec

CALIBRATION_SAMPLES = 64


@cache
def digits():
    from edgeslim.core.specs import load_data

    return load_data(spec("digits"))


@cache
def exported(arch: str, weights_path) -> tuple:
    """(fp32 onnx.ModelProto, input names) of a zoo architecture with its trained weights."""
    from edgeslim.core.model_io import load_model
    from edgeslim.export.onnx_export import ExportConfig, export_onnx

    model = load_model(spec(ARCHITECTURES[arch][0]), str(weights_path))
    proto, names, _ = export_onnx(model, digits().sample_inputs(), ExportConfig())
    return proto, tuple(names)


def calibration(names, limit: int = CALIBRATION_SAMPLES) -> list[dict]:
    """Single-sample feeds from the train split, as edgeslim's INT8 step cuts them."""
    from edgeslim.core.data import feed_for

    samples = []
    for inputs, _ in digits().train:
        feed = feed_for(inputs, list(names))
        for row in range(next(iter(feed.values())).shape[0]):
            samples.append({name: value[row:row + 1] for name, value in feed.items()})
            if len(samples) == limit:
                return samples
    return samples


def nncf_int8(model, samples: list[dict], in_float=(), overflow_fix: str = "enable"):
    """edgeslim's NNCF call (compress/quantize.py nncf_ptq) with per-tensor activation quantizers."""
    import nncf
    from nncf.quantization.advanced_parameters import QuantizationParameters

    from edgeslim.compress.quantize import looks_like_transformer

    return nncf.quantize(
        model, nncf.Dataset(samples), preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=len(samples),
        fast_bias_correction=True, model_type=nncf.ModelType.TRANSFORMER if looks_like_transformer(model) else None,
        ignored_scope=nncf.IgnoredScope(names=list(in_float), validate=False) if in_float else None,
        advanced_parameters=nncf.AdvancedQuantizationParameters(
            overflow_fix=nncf.OverflowFix[overflow_fix.upper()],
            activations_quantization_params=QuantizationParameters(per_channel=False)))


@cache
def quantized(arch: str, weights_path):
    """NNCF's QDQ model of a zoo architecture (before any rewrite for onnxruntime)."""
    proto, names = exported(arch, weights_path)
    return nncf_int8(proto, calibration(names))
