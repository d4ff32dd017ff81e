"""Quantization-aware training with NNCF's torch backend, exported as QDQ that onnxruntime runs.

NNCF inserts fake quantizers (initialised by calibration, as PTQ would), the model is fine-tuned
with them, by distillation from the original, then `nncf.strip(..., StripFormat.NATIVE)` turns them
into torch's quantize/dequantize ops, which torch.onnx (dynamo=False) writes as
QuantizeLinear/DequantizeLinear, not OpenVINO's FakeQuantize. Export then folds the weight
quantizers into int8 initializers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from edgeslim.compress.registry import StepConfig, register_step, require
from edgeslim.progress import log


@dataclass
class QatConfig(StepConfig):
    name: ClassVar[str] = "qat"
    stage: ClassVar[str] = "torch"
    epochs: int = 3
    lr: float = 1e-4
    subset_size: int = 300          # calibration samples that initialise the quantizers
    distill: bool = True            # learn from the original model's outputs as well as the labels
    temperature: float = 4.0
    alpha: float = 0.7
    seed: int = 0
    device: str = "auto"

    def check(self) -> None:
        require(self.epochs >= 1, "qat.epochs", self.epochs, "at least 1")
        require(self.lr > 0, "qat.lr", self.lr, "positive")
        require(self.subset_size >= 1, "qat.subset_size", self.subset_size, "at least 1")


class _Wrapped:
    """NNCF's hook module breaks a bare nn.Sequential at the top level: give it a parent."""

    @staticmethod
    def wrap(model):
        import torch

        if isinstance(model, torch.nn.Sequential):
            class Top(torch.nn.Module):
                def __init__(self, inner):
                    super().__init__()
                    self.inner = inner

                def forward(self, *args, **kwargs):
                    return self.inner(*args, **kwargs)

            return Top(model)
        return model


@register_step(QatConfig)
def qat(model, config: QatConfig, ctx):
    import nncf
    import torch

    from edgeslim.compress.model_io import to_args
    from edgeslim.compress.sensitivity import quiet_nncf
    from edgeslim.compress.train import FitOptions, evaluate_torch, fit

    quiet_nncf()
    try:
        import torchao  # noqa: F401  (nncf.strip to torch's native quantize ops needs it)
    except ImportError:
        from edgeslim.errors import ConfigError

        raise ConfigError("quantization-aware training needs torchao to export QDQ; "
                          "install it with `pip install 'edgeslim[compress]'` or `pip install torchao`") from None
    train = ctx.data.need("train", "quantization-aware training")
    # One sample per item: NNCF's subset_size counts items, as the ONNX path does.
    inputs = [row[None] for batch in ctx.data.calibration_inputs() for row in to_args(batch)[0][0]]
    inputs = inputs[:config.subset_size]
    model = _Wrapped.wrap(model).eval()
    log(f"{ctx.candidate}: qat: inserting quantizers (calibration on up to {config.subset_size} samples)")
    # As on the ONNX path: attention gets NNCF's transformer rules (its inner matmuls stay float).
    has_attention = any(isinstance(m, torch.nn.MultiheadAttention) for m in model.modules())
    quantized = nncf.quantize(model, nncf.Dataset(inputs), subset_size=config.subset_size,
                              model_type=nncf.ModelType.TRANSFORMER if has_attention else None)
    if ctx.data.val:
        ctx.record(qat_start_accuracy=evaluate_torch(quantized, ctx.data.val, ctx.metric))
    options = FitOptions(epochs=config.epochs, lr=config.lr, temperature=config.temperature, alpha=config.alpha,
                         seed=config.seed, device=config.device)
    fit(quantized, train, options, label=f"{ctx.candidate}: qat", teacher=ctx.teacher if config.distill else None,
        val=ctx.data.val, metric=ctx.metric)
    example = to_args(ctx.example_inputs)[0][0][:1]
    stripped = nncf.strip(quantized, do_copy=True, strip_format=nncf.StripFormat.NATIVE, example_input=example)
    with torch.no_grad():
        stripped.eval()
    return stripped
