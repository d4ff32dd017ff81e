"""Quantization of the exported ONNX model: INT8 PTQ (NNCF, QDQ), dynamic INT8 and fp16.

INT8 is applied to the ONNX model, not the torch one: NNCF's torch export writes OpenVINO's
FakeQuantize, which onnxruntime cannot load, while quantizing the ONNX model gives
QuantizeLinear/DequantizeLinear pairs that onnxruntime fuses into integer kernels.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from edgeslim.compress.registry import StepConfig, register_step, require
from edgeslim.core.progress import log, progress


@dataclass
class Int8Config(StepConfig):
    name: ClassVar[str] = "int8"
    stage: ClassVar[str] = "onnx"
    quantizes: ClassVar[bool] = True
    subset_size: int = 300          # calibration samples
    preset: str = "performance"     # performance: symmetric activations; mixed: asymmetric
    fast_bias_correction: bool = True
    max_accuracy_drop: float | None = None   # accuracy control: points (or a fraction, relative)
    relative: bool = False
    in_float: list[str] = field(default_factory=list)  # layer (node) names kept in float by hand
    # Which weights use a 7-bit range (see OVERFLOW_FIX). "auto": the target's instruction set
    # decides (7-bit on x86 without VNNI, the full range with VNNI or ARM dot products).
    overflow_fix: str = "auto"
    # Which INT8 form (see edgeslim.compress.int8_forms): auto builds each, measures them on the
    # target against the float parent, and keeps the fastest within the allowed accuracy drop.
    backend: str = "auto"

    def check(self) -> None:
        from edgeslim.compress.int8_forms import BACKENDS

        require(self.subset_size >= 1, "int8.subset_size", self.subset_size, "at least 1")
        require(self.preset in ("performance", "mixed"), "int8.preset", self.preset, "'performance' or 'mixed'")
        if self.overflow_fix != "auto":
            check_overflow_fix("int8", self.overflow_fix)
        require(self.backend in BACKENDS, "int8.backend", self.backend, " or ".join(repr(b) for b in BACKENDS))
        if self.max_accuracy_drop is not None:
            require(self.max_accuracy_drop >= 0, "int8.max_accuracy_drop", self.max_accuracy_drop,
                    "0 or more (points of the metric; a fraction with relative)")


# x86 CPUs without VNNI (AVX2, plain AVX-512) multiply uint8 activations by int8 weights with
# vpmaddubsw, which sums pairs of products into int16 and saturates: onnxruntime's integer kernels
# then compute something other than the QDQ graph says (measured here: logits 2.5 apart on the
# test transformer). Weights confined to 7 bits cannot saturate (2 * 255 * 64 < 32768). CPUs with
# VNNI, ARM and GPUs do not saturate, where the full 8 bits are a little more precise.
OVERFLOW_FIX = {"enable": "every convolution and matmul", "first_layer": "the first convolutions only",
                "disable": "none"}


def check_overflow_fix(step: str, value: str) -> None:
    require(value in OVERFLOW_FIX, f"{step}.overflow_fix", value, " or ".join(repr(v) for v in OVERFLOW_FIX))


@dataclass
class DynamicConfig(StepConfig):
    name: ClassVar[str] = "dynamic"
    stage: ClassVar[str] = "onnx"
    quantizes: ClassVar[bool] = True
    per_channel: bool = False

    def check(self) -> None:
        pass


@dataclass
class Fp16Config(StepConfig):
    name: ClassVar[str] = "fp16"
    stage: ClassVar[str] = "onnx"
    quantizes: ClassVar[bool] = True
    keep_io_types: bool = True      # float32 in and out, float16 inside

    def check(self) -> None:
        pass


def calibration_samples(ctx, limit: int) -> list[dict]:
    """Single-sample feeds cut from the calibration batches, at most `limit` of them."""
    from edgeslim.core.data import feed_for

    samples = []
    for inputs in ctx.data.calibration_inputs():
        feed = feed_for(inputs, ctx.input_names)
        rows = next(iter(feed.values())).shape[0]
        for row in range(rows):
            samples.append({name: value[row:row + 1] for name, value in feed.items()})
            if len(samples) >= limit:
                return samples
    return samples


def timing_sample(ctx) -> dict:
    """The one-sample feed a step times graphs on: the first row of the export example, the shape validate
    and the SDK's benchmark time the bundle at (its manifest's example shape).

    Not a calibration sample: where train batches are grouped by length and padded to their longest
    text, the first one may be far shorter than what the bundle is timed at, and a fusion that pays at
    64 tokens may not at 12 (measured 2026-11-24 on all-MiniLM-L6-v2 pruned 0.3: the optimize step, timed
    on a train sample, refused the fused graph that runs 0.94x the unfused one at 64 tokens)."""
    from edgeslim.core.data import feed_for

    feed = feed_for(ctx.example_inputs, ctx.input_names)
    return {name: value[:1] for name, value in feed.items()}


def looks_like_transformer(model) -> bool:
    """Attention shows as Softmax over MatMul; NNCF then keeps sensitive ops in float."""
    ops = {node.op_type for node in model.graph.node}
    return "Softmax" in ops and "MatMul" in ops


@register_step(Int8Config)
def int8(model, config: Int8Config, ctx):
    from edgeslim.compress.int8_forms import build_form, choose, forms_for, int8_settings, resolved
    from edgeslim.compress.mixed_precision import refine

    samples = calibration_samples(ctx, config.subset_size)
    settings = int8_settings(ctx.target, config.overflow_fix)
    config = resolved(config, settings)
    forms = forms_for(config.backend, model)
    log(f"{ctx.candidate}: int8 calibration on {len(samples)} samples"
        f"{' (transformer rules)' if looks_like_transformer(model) else ''}; forms {', '.join(forms)}; "
        f"weights {settings['weights']} ({settings['why']})")
    ctx.record(calibration_samples=len(samples), int8_settings=settings)
    built = {form: build_form(form, model, samples, config, ctx) for form in forms}
    chosen = choose(model, built, config, ctx, timing_sample(ctx))
    return refine(model, built, chosen, config, ctx, samples)


def accuracy_controlled_int8(model, samples: list[dict], config: Int8Config, ctx):
    """NNCF INT8 with layers returned to float, most sensitive first, until the drop is allowed."""
    from edgeslim.compress.sensitivity import Quantizer, accuracy_controlled, allowed_drop

    quantizer = Quantizer(model, samples, config, ctx)
    result, table = accuracy_controlled(quantizer, config.max_accuracy_drop, config.relative)
    total = len(quantizer.layers)
    ctx.record(accuracy_control={
        "met": result.met, "fp32_accuracy": quantizer.fp32_accuracy, "accuracy": result.accuracy,
        "drop": quantizer.fp32_accuracy - result.accuracy, "max_accuracy_drop": config.max_accuracy_drop,
        "relative": config.relative,
        "allowed_drop": allowed_drop(config.max_accuracy_drop, config.relative, quantizer.fp32_accuracy),
        "layers": total, "layers_int8": total - len(result.in_float), "in_float": result.in_float,
        "quantization_runs": quantizer.runs}, sensitivity=table)
    log(f"{ctx.candidate}: accuracy control {'met' if result.met else 'NOT met'}: {result.accuracy:.2f} "
        f"with {total - len(result.in_float)} of {total} layers INT8")
    return result.model


def nncf_ptq(model, samples: list[dict], config: Int8Config, in_float: list[str] = ()):
    """NNCF PTQ of an ONNX model, shaped for onnxruntime; the config's `in_float` layers and
    `in_float` stay in float.

    NNCF places quantizers for OpenVINO's fusions; ortify moves them to where onnxruntime's CPU
    selectors fuse each layer into an integer kernel (per-tensor activations are one of those).
    """
    from edgeslim.compress.ort_qdq import ortify

    keep = list(dict.fromkeys([*config.in_float, *in_float]))
    quantized = _nncf_quantize(model, samples, config, keep)
    return ortify(quantized, samples, keep_float=keep, overflow_fix=config.overflow_fix)


def _nncf_quantize(model, samples: list[dict], config: Int8Config, keep: list[str]):
    import nncf
    from nncf.quantization.advanced_parameters import QuantizationParameters

    overflow_fix = nncf.OverflowFix[config.overflow_fix.upper()]  # ENABLE, FIRST_LAYER, DISABLE
    with progress("NNCF calibration", total=len(samples), unit="samples") as advance:
        return nncf.quantize(
            model,
            nncf.Dataset(samples, counted(advance)),
            preset=nncf.QuantizationPreset.PERFORMANCE if config.preset == "performance"
            else nncf.QuantizationPreset.MIXED,
            subset_size=len(samples),
            fast_bias_correction=config.fast_bias_correction,
            model_type=nncf.ModelType.TRANSFORMER if looks_like_transformer(model) else None,
            ignored_scope=nncf.IgnoredScope(names=keep, validate=False) if keep else None,
            advanced_parameters=nncf.AdvancedQuantizationParameters(
                overflow_fix=overflow_fix, activations_quantization_params=QuantizationParameters(per_channel=False)),
        )


def counted(advance):
    """nncf.Dataset's transform: each item as it is, advancing a progress bar. NNCF goes over the samples once
    per statistics pass (two with SmoothQuant), so a bar's total counts one pass."""
    def transform(item):
        advance()
        return item

    return transform


@register_step(DynamicConfig)
def dynamic(model, config: DynamicConfig, ctx):
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgeslim.compress.int8_forms import FLOAT_BY_DEFAULT, through_files
    from edgeslim.compress.tables import blockwise_tables

    def quantize(source, target):
        quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=config.per_channel,
                         extra_options=FLOAT_BY_DEFAULT)

    return blockwise_tables(through_files(model, quantize, prepare=False), model)[0]


@register_step(Fp16Config)
def fp16(model, config: Fp16Config, ctx):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=config.keep_io_types)


def dtype_counts(model) -> dict:
    """How many initializer elements each dtype holds, for the manifest."""
    import onnx

    counts: dict[str, int] = {}
    for tensor in model.graph.initializer:
        name = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).name
        counts[name] = counts.get(name, 0) + int(np.prod(tensor.dims, dtype=np.int64))
    return counts
