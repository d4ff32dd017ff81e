"""Knowledge distillation: fine-tune the (pruned) model towards the original model's outputs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from edgeslim.compress.registry import StepConfig, register_step, require


@dataclass
class DistillConfig(StepConfig):
    name: ClassVar[str] = "distill"
    stage: ClassVar[str] = "torch"
    epochs: int = 10
    lr: float = 1e-3
    temperature: float = 4.0
    alpha: float = 0.7
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"            # cuda when torch sees a GPU, else cpu
    features: list[str] = field(default_factory=list)  # module names for intermediate-feature distillation
    feature_weight: float = 1.0
    patience: int = 0               # early stopping on the val metric (0: off); keeps the best epoch
    resume: bool = True             # checkpoint each epoch; an interrupted run resumes

    def check(self) -> None:
        require(self.epochs >= 1, "distill.epochs", self.epochs, "at least 1")
        require(self.lr > 0, "distill.lr", self.lr, "positive")
        require(self.temperature > 0, "distill.temperature", self.temperature, "positive")
        require(0.0 <= self.alpha <= 1.0, "distill.alpha", self.alpha, "in [0, 1]")
        require(self.patience >= 0, "distill.patience", self.patience, "0 (off) or more epochs")
        require(self.feature_weight >= 0, "distill.feature_weight", self.feature_weight, "0 or more")


def checkpoint_path(ctx, config: DistillConfig):
    """One file per candidate and config, in the cache; fit() also checks the starting weights."""
    import hashlib
    import json

    from edgeslim.core.outputs import cache_dir

    key = hashlib.sha256(json.dumps({"candidate": ctx.candidate, "config": config.to_dict()},
                                    sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "checkpoints" / f"distill-{key}.pt"


@register_step(DistillConfig)
def distill(model, config: DistillConfig, ctx):
    from edgeslim.compress.train import FitOptions, evaluate_torch, fit

    train = ctx.data.need("train", "distillation")
    options = FitOptions(epochs=config.epochs, lr=config.lr, weight_decay=config.weight_decay,
                         temperature=config.temperature, alpha=config.alpha, seed=config.seed,
                         device=config.device, features=config.features, feature_weight=config.feature_weight,
                         patience=config.patience, checkpoint=checkpoint_path(ctx, config) if config.resume else None)
    fit(model, train, options, label=f"{ctx.candidate}: distill", teacher=ctx.teacher,
        val=ctx.data.val, metric=ctx.metric)
    if ctx.data.val:
        ctx.record(val_after_distill=evaluate_torch(model, ctx.data.val, ctx.metric))
    return model
