"""Quantization-aware training with NNCF's torch backend, exported as QDQ that onnxruntime runs.

NNCF inserts fake quantizers (initialised by calibration, as PTQ would), the model is fine-tuned
with them, by distillation from the original, then `nncf.strip(..., StripFormat.NATIVE)` turns them
into torch's quantize/dequantize ops, which torch.onnx (dynamo=False) writes as
QuantizeLinear/DequantizeLinear, not OpenVINO's FakeQuantize. Export then folds the weight
quantizers into int8 initializers.

NNCF's torch backend has no overflow fix (its PTQ hard-codes the full weight range), so the 7-bit
weight range that keeps onnxruntime's x86 kernels from saturating (see quantize.OVERFLOW_FIX) is
set here, before fine-tuning, so that training sees the precision the target computes with.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from edgeslim.compress.quantize import check_overflow_fix
from edgeslim.compress.registry import StepConfig, register_step, require
from edgeslim.core.errors import EdgeslimError
from edgeslim.core.progress import log, progress

# NNCF compiles its CPU quantize kernels on first use (about a minute on 2 idle cores; torch rebuilds
# them for each new environment path) and by default gives up after 60 s, which a busy machine
# overruns: edgeslim waits this long unless the user set NNCF_EXTENSION_LOAD_TIMEOUT.
KERNEL_BUILD_TIMEOUT_SECONDS = 300
# A build lock older than this was left by a process killed mid-build.
STALE_BUILD_LOCK_SECONDS = 600


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
    # Keep the epoch with the best val score, the calibrated start included: as early stopping does,
    # and so that fine-tuning cannot hand back something worse than what it started from.
    keep_best: bool = True
    # 7-bit weights everywhere by default, as for PTQ: trained ranges must compute the same on every CPU.
    overflow_fix: str = "enable"
    teacher_cache: str = "auto"     # as distill's: the original model's outputs run once, read from disk
    precision: str = "auto"         # as distill's: bf16 autocast on a GPU that has it, fp32 on the CPU

    def check(self) -> None:
        from edgeslim.compress.train import check_fit_options

        check_overflow_fix("qat", self.overflow_fix)
        check_fit_options("qat", self.teacher_cache, self.precision)
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


def fold_batchnorm(model, candidate: str) -> int:
    """Fold each BatchNorm into the convolution before it, in place; returns how many were.

    Quantizing a convolution's weights before its BatchNorm leaves Conv -> BatchNormalization in the
    exported graph, which onnxruntime cannot fuse into an integer convolution: the bundle would be
    INT8 on disk but run float convolutions. Folding first (as torch's own QAT recipes fuse conv and
    bn) trains the weights the target runs. torch.fx finds the pairs; a pair is folded only where the
    convolution feeds nothing else and neither module is called twice. Module names stay as they were.
    """
    from collections import Counter

    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    convs = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
    norms = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
    modules = dict(model.named_modules())
    if not any(isinstance(m, norms) for m in modules.values()):
        return 0
    try:
        graph = torch.fx.symbolic_trace(model).graph
    except Exception as error:  # torch.fx cannot trace every model (data-dependent control flow)
        log(f"{candidate}: qat: BatchNorm left unfolded (torch.fx could not trace the model: "
            f"{type(error).__name__}); those convolutions will run in float")
        return 0
    calls = Counter(node.target for node in graph.nodes if node.op == "call_module")
    pairs = []
    for node in graph.nodes:
        source = node.args[0] if node.op == "call_module" and node.args else None
        if (isinstance(modules.get(node.target), norms) and isinstance(source, torch.fx.Node)
                and source.op == "call_module" and isinstance(modules[source.target], convs)
                and len(source.users) == 1 and calls[node.target] == calls[source.target] == 1):
            pairs.append((source.target, node.target))
    for conv_name, norm_name in pairs:
        model.set_submodule(conv_name, fuse_conv_bn_eval(modules[conv_name], modules[norm_name]))
        model.set_submodule(norm_name, torch.nn.Identity())
    return len(pairs)


def weight_quantizers(quantized, example) -> dict:
    """NNCF's weight quantizers, in the order the forward pass reaches them, with their weights.

    A weight quantizer is the one whose input is a parameter; NNCF's hook storage keeps no such
    label that is public.
    """
    import torch
    from nncf.torch.quantization.layers import BaseQuantizer

    found = {}

    def spot(module, args):
        if isinstance(args[0], torch.nn.Parameter):
            found.setdefault(module, args[0])

    handles = [m.register_forward_pre_hook(spot) for m in quantized.modules() if isinstance(m, BaseQuantizer)]
    try:
        with torch.no_grad():
            quantized(*example)
    finally:
        for handle in handles:
            handle.remove()
    return found


def narrow_weight_ranges(quantized, example, overflow_fix: str) -> int:
    """Give the chosen weight quantizers half the 8-bit range (7 bits); returns how many.

    The weights are clamped to their quantizer's range as well: training clamps them in the
    forward pass anyway, and the native quantize op that export writes does not, so an outlier
    would otherwise land outside the 7 bits on the target.
    """
    import torch

    found = weight_quantizers(quantized, example)
    chosen = {"enable": list(found), "first_layer": list(found)[:1], "disable": []}[overflow_fix]
    for quantizer in chosen:
        quantizer._half_range = True  # NNCF's own switch for this; its torch PTQ never sets it
        quantizer.set_levels()
        low, high = quantizer.get_input_low_input_high()
        weight = found[quantizer]
        with torch.no_grad():
            weight.copy_(torch.maximum(torch.minimum(weight, high), low))  # NNCF's scale shape broadcasts
    return len(chosen)


def clear_stale_build_lock(build_dir: Path, now: float | None = None) -> bool:
    """Remove torch's extension-build `lock` in `build_dir` when no build can still hold it; True if removed.

    torch's build lock is a bare file, no process id in it: a build killed mid-way leaves it behind,
    and every later load waits on it until NNCF's timeout, on every run after. Its age tells.
    """
    lock = build_dir / "lock"
    try:
        age = (time.time() if now is None else now) - lock.stat().st_mtime
    except FileNotFoundError:
        return False
    if age < STALE_BUILD_LOCK_SECONDS:
        return False
    log(f"removing {lock}: a build lock {age / 60:.0f} minutes old, left by a build that was stopped")
    lock.unlink(missing_ok=True)
    return True


@contextlib.contextmanager
def nncf_kernels():
    """Clear a stale build lock of NNCF's CPU kernels before they load, give their build time on a busy
    machine, and say in one sentence when they do not load in time (an environment matter, not a bug)."""
    import os

    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", str(KERNEL_BUILD_TIMEOUT_SECONDS))
    from nncf.torch.extensions import ExtensionLoaderTimeoutException
    from nncf.torch.quantization.extensions import QuantizedFunctionsCPULoader

    build_dir = Path(QuantizedFunctionsCPULoader.get_build_dir())
    clear_stale_build_lock(build_dir)
    try:
        yield
    except ExtensionLoaderTimeoutException:
        raise EdgeslimError(
            f"NNCF's CPU quantization kernels did not build and load within its time limit: another "
            f"build may hold {build_dir / 'lock'}; wait for it, remove that file if no build is running, "
            f"or set NNCF_EXTENSION_LOAD_TIMEOUT=0 to wait without limit") from None


@register_step(QatConfig)
def qat(model, config: QatConfig, ctx):
    with nncf_kernels():
        return quantize_and_train(model, config, ctx)


def quantize_and_train(model, config: QatConfig, ctx):
    """NNCF's quantizers, calibrated, fine-tuned with the 7-bit weight ranges, stripped to torch's native ops."""
    import nncf
    import torch

    from edgeslim.compress.distill import fitting_loss
    from edgeslim.compress.quantize import counted
    from edgeslim.compress.train import FitOptions, evaluate_torch, fit
    from edgeslim.core.model_io import to_args

    try:
        import torchao  # noqa: F401  (nncf.strip to torch's native quantize ops needs it)
    except ImportError:
        from edgeslim.core.errors import ConfigError

        raise ConfigError("quantization-aware training needs torchao to export QDQ; "
                          "install it with `pip install 'edgeslim[compress]'` or `pip install torchao`") from None
    train = ctx.data.need("train", "quantization-aware training")
    loss = fitting_loss(model, "auto", ctx, train)[0] if config.distill else "kl"  # before the model is wrapped
    ctx.record(qat_loss=loss if config.distill else "cross_entropy")
    # One sample per item: NNCF's subset_size counts items, as the ONNX path does.
    inputs = [row[None] for batch in ctx.data.calibration_inputs() for row in to_args(batch)[0][0]]
    inputs = inputs[:config.subset_size]
    folded = fold_batchnorm(model.eval(), ctx.candidate)
    model = _Wrapped.wrap(model).eval()
    log(f"{ctx.candidate}: qat: inserting quantizers (calibration on up to {config.subset_size} samples)")
    # As on the ONNX path: attention gets NNCF's transformer rules (its inner matmuls stay float).
    has_attention = any(isinstance(m, torch.nn.MultiheadAttention) for m in model.modules())
    with progress(f"{ctx.candidate}: qat calibration", total=len(inputs), unit="samples") as advance:
        quantized = nncf.quantize(model, nncf.Dataset(inputs, counted(advance)), subset_size=config.subset_size,
                                  model_type=nncf.ModelType.TRANSFORMER if has_attention else None)
    example = to_args(ctx.example_inputs)[0][0][:1]
    narrowed = narrow_weight_ranges(quantized, (example,), config.overflow_fix)
    ctx.record(qat_weights_7bit=narrowed, qat_batchnorm_folded=folded)
    if ctx.data.val:
        ctx.record(qat_start_accuracy=evaluate_torch(quantized, ctx.data.val, ctx.metric))
    options = FitOptions(epochs=config.epochs, lr=config.lr, temperature=config.temperature, alpha=config.alpha,
                         seed=config.seed, device=config.device, keep_start=config.keep_best, loss=loss,
                         patience=config.epochs if config.keep_best else 0, teacher_cache=config.teacher_cache,
                         precision=config.precision)
    history: list[dict] = []
    facts: dict = {}
    fit(quantized, train, options, label=f"{ctx.candidate}: qat", teacher=ctx.teacher if config.distill else None,
        val=ctx.data.val, metric=ctx.metric, history=history, facts=facts)
    ctx.record(qat_history=history, qat_run=facts)
    stripped = nncf.strip(quantized, do_copy=True, strip_format=nncf.StripFormat.NATIVE, example_input=example)
    with torch.no_grad():
        stripped.eval()
    return stripped
