"""Structured channel pruning with torch-pruning's dependency graph (DepGraph).

Coupled channels (residual additions, depthwise convolutions, attention projections, norms) are
removed together, so the pruned model is a smaller dense model, not a masked one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

from edgeslim.compress.registry import StepConfig, register_step, require
from edgeslim.core.progress import log


@dataclass
class PruneConfig(StepConfig):
    name: ClassVar[str] = "prune"
    stage: ClassVar[str] = "torch"
    ratio: float = 0.5          # fraction of channels removed from each prunable layer
    round_to: int = 8           # channel counts stay multiples of this (suits SIMD kernels)
    importance: str = "l2"      # l1 or l2 norm of each channel group's weights
    global_pruning: bool = False
    ignore: list[str] = field(default_factory=list)  # module names whose output channels stay whole

    def check(self) -> None:
        require(0.0 < self.ratio < 1.0, "prune.ratio", self.ratio, "a fraction in (0, 1), e.g. 0.5")
        require(self.round_to >= 1, "prune.round_to", self.round_to, "a positive integer")
        require(self.importance in ("l1", "l2"), "prune.importance", self.importance, "'l1' or 'l2'")


def output_layers(model, example_inputs) -> list:
    """The layers whose output is the model's output: their channels are the classes, kept whole.

    Found by running the model once with hooks, so no model needs naming its classifier.
    """
    import torch

    from edgeslim.core.model_io import run_model

    prunable = (torch.nn.Linear, torch.nn.modules.conv._ConvNd)
    produced = []
    hooks = [module.register_forward_hook(lambda mod, _inp, out: produced.append((mod, out)))
             for module in model.modules() if isinstance(module, prunable)]
    try:
        with torch.no_grad():
            outputs = run_model(model, example_inputs)
    finally:
        for hook in hooks:
            hook.remove()
    flat = outputs if isinstance(outputs, (tuple, list)) else [outputs]
    exact = [mod for mod, out in produced if any(out is result for result in flat)]
    return exact or ([produced[-1][0]] if produced else [])


def _round_to(model, wanted: int) -> int:
    """Attention splits its width over heads: keep every width divisible by each head count."""
    import torch

    multiple = wanted
    for module in model.modules():
        if isinstance(module, torch.nn.MultiheadAttention):
            multiple = math.lcm(multiple, module.num_heads)
    return multiple


@register_step(PruneConfig)
def prune(model, config: PruneConfig, ctx):
    import torch
    import torch_pruning as tp

    from edgeslim.core.model_io import count_params, to_args

    example = ctx.example_inputs
    args, kwargs = to_args(example)
    before = count_params(model)
    importance = tp.importance.GroupMagnitudeImportance(p=2 if config.importance == "l2" else 1)
    modules = dict(model.named_modules())
    unknown = [name for name in config.ignore if name not in modules]
    if unknown:
        from edgeslim.core.errors import ConfigError

        raise ConfigError(f"prune.ignore names {unknown[0]!r}, which is not a module of the model; "
                          f"modules are named like {list(modules)[1:4]}")
    pruner = tp.pruner.MetaPruner(
        model,
        example_inputs=kwargs if kwargs else (args[0] if len(args) == 1 else args),
        importance=importance,
        pruning_ratio=config.ratio,
        global_pruning=config.global_pruning,
        ignored_layers=output_layers(model, example) + [modules[name] for name in config.ignore],
        round_to=_round_to(model, config.round_to),
    )
    try:
        with torch.no_grad():
            pruner.step()
    except (IndexError, RuntimeError, ValueError) as exc:
        from edgeslim.core.errors import ConfigError

        raise ConfigError(f"torch-pruning could not prune this model ({type(exc).__name__}: {exc}); a layer whose "
                          "output is flattened into a concatenation is a known case: keep it whole with "
                          "prune.ignore (--prune-ignore NAME), or prune less") from None
    for module in model.modules():  # torch-pruning resizes weights; keep the attention fields in step
        if isinstance(module, torch.nn.MultiheadAttention):
            module.head_dim = module.embed_dim // module.num_heads
    after = count_params(model)
    ctx.record(params_before=before, params_after=after)
    log(f"prune: {before:,} -> {after:,} parameters ({after / before:.1%} kept)")
    return model
