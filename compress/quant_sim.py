"""Training that sees the INT8 the bundle will run: quantization-aware distillation.

Where a later step quantizes activations to INT8 (the int8 step, the dynamic step), distillation ends
with an epoch that trains the student through the rounding the target will apply, so that it learns to
tolerate it (compress.distill). The simulation is onnxruntime's DynamicQuantizeLinear on the input of
every nn.Linear: uint8, asymmetric, the range the tensor's own min and max (with zero inside), round half
to even; gradients pass straight through. The weights are left exact: their per-channel int8 rounding
costs little (measured 2026-11-24 on all-MiniLM-L6-v2 pruned by 0.3: val cosine 97.12 in float, 97.11
with int8 weights alone, 96.70 with dynamic INT8 activations too). Convolutions and recurrent layers are
not simulated.

Measured the same day: the simulated score on val was 96.78 where onnxruntime's dynamic INT8 bundle gave
96.70 (the rest is the embedding tables, quantized as well).
"""
from __future__ import annotations

from edgeslim.core.errors import ConfigError

SIMULATIONS = ("auto", "none", "dynamic_int8")
ACTIVATION_INT8_STEPS = ("int8", "dynamic")   # the steps whose graph quantizes activations to INT8


def settled(steps: list, model) -> list:
    """The steps with each distill step's `quantization: auto` made concrete: dynamic_int8 where a later step
    quantizes activations to INT8 and `model` computes mostly in Linear layers (what is simulated), else
    none. Settled before anything runs, so that the manifest records what was done and two candidates share
    trained weights only where they trained alike."""
    from dataclasses import replace

    out = []
    for index, step in enumerate(steps):
        if step.name == "distill" and step.quantization == "auto":
            later = [s.name for s in steps[index + 1:]]
            quantized = any(name in ACTIVATION_INT8_STEPS for name in later) and "qat" not in later
            step = replace(step, quantization="dynamic_int8" if quantized and mostly_linear(model) else "none")
        out.append(step)
    return out


def mostly_linear(model) -> bool:
    """Whether nn.Linear layers hold at least half the weights of the layers that compute (Linear, convolutions,
    recurrent): a transformer or an MLP, not a CNN, whose convolutions the simulation does not reach (and
    where the int8 step keeps static QDQ). Embedding tables are lookups and do not count."""
    import torch

    computing = (torch.nn.Linear, torch.nn.modules.conv._ConvNd, torch.nn.RNNBase)
    weights = {kind: 0 for kind in ("linear", "other")}
    for module in model.modules():
        if isinstance(module, computing):
            kind = "linear" if isinstance(module, torch.nn.Linear) else "other"
            weights[kind] += sum(p.numel() for p in module.parameters(recurse=False))
    return weights["linear"] > 0 and weights["linear"] >= weights["other"]


def check_simulation(value: str) -> None:
    if value not in SIMULATIONS:
        raise ConfigError(f"distill.quantization must be {' or '.join(map(repr, SIMULATIONS))}, got {value!r}")


class SimulatedInt8:
    """With `kind` "dynamic_int8", every nn.Linear of `model` sees its input as the target's dynamic INT8
    kernels will, while the context is open; "none" does nothing. `.layers` counts the layers it reached."""

    def __init__(self, model, kind: str):
        self.model, self.kind, self.hooks, self.layers = model, kind, [], 0

    def __enter__(self):
        import torch

        if self.kind == "dynamic_int8":
            linears = [m for m in self.model.modules() if isinstance(m, torch.nn.Linear)]
            self.hooks = [m.register_forward_pre_hook(_quantized_input) for m in linears]
            self.layers = len(linears)
        return self

    def __exit__(self, *exc):
        for hook in self.hooks:
            hook.remove()
        self.hooks = []
        return False


def _quantized_input(_module, args):
    return (dynamic_uint8(args[0]), *args[1:])


def dynamic_uint8(x):
    """`x` rounded as onnxruntime's DynamicQuantizeLinear and its dequantization round it (per tensor),
    with the gradient of the identity."""
    import torch

    exact = x.float()
    with torch.no_grad():
        low = torch.clamp(exact.min(), max=0.0)
        high = torch.clamp(exact.max(), min=0.0)
        scale = torch.clamp((high - low) / 255.0, min=torch.finfo(torch.float32).tiny)
        zero = torch.clamp(torch.round(-low / scale), 0.0, 255.0)
        rounded = (torch.clamp(torch.round(exact / scale) + zero, 0.0, 255.0) - zero) * scale
    return (exact + (rounded - exact).detach()).to(x.dtype)
