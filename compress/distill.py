"""Knowledge distillation: fine-tune the (pruned) model towards the original model's outputs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from edgeslim.compress.distill_losses import LOSS_CHOICES, choose_loss
from edgeslim.compress.registry import StepConfig, register_step, require
from edgeslim.compress.train import check_fit_options
from edgeslim.core.errors import ConfigError
from edgeslim.core.progress import log


@dataclass
class DistillConfig(StepConfig):
    name: ClassVar[str] = "distill"
    stage: ClassVar[str] = "torch"
    epochs: int = 10
    lr: float = 1e-3
    temperature: float = 4.0
    alpha: float = 0.7              # weight of the softened KL against cross-entropy on the labels ("kl" only)
    loss: Literal["auto", "kl", "sequence_kl", "cosine", "mse"] = field(default="auto", metadata={
        "description": "What the output matches the original's by: kl (class logits), sequence_kl (per time step), "
                       "cosine or mse (embeddings, features); auto: from the output's shape and the train labels."})
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"            # cuda when torch sees a GPU, else cpu
    features: list[str] = field(default_factory=list)  # module names for intermediate-feature distillation
    feature_weight: float = 1.0
    patience: int = 0               # early stopping on the val metric (0: off); keeps the best epoch
    resume: bool = True             # checkpoint each epoch; an interrupted run resumes
    teacher_cache: Literal["auto", "on", "off"] = field(default="auto", metadata={
        "description": "Run the original model once over the train batches and read its outputs back from disk "
                       "(memory-mapped) instead of running it every epoch; auto: from 2 epochs on, without features."})
    precision: Literal["auto", "fp32", "bf16"] = field(default="auto", metadata={
        "description": "bf16 autocast for training; auto: bf16 on a GPU that supports it, fp32 on the CPU."})

    def check(self) -> None:
        require(self.epochs >= 1, "distill.epochs", self.epochs, "at least 1")
        require(self.lr > 0, "distill.lr", self.lr, "positive")
        require(self.temperature > 0, "distill.temperature", self.temperature, "positive")
        require(0.0 <= self.alpha <= 1.0, "distill.alpha", self.alpha, "in [0, 1]")
        require(self.patience >= 0, "distill.patience", self.patience, "0 (off) or more epochs")
        require(self.loss in LOSS_CHOICES, "distill.loss", self.loss, " or ".join(map(repr, LOSS_CHOICES)))
        require(self.feature_weight >= 0, "distill.feature_weight", self.feature_weight, "0 or more")
        check_fit_options("distill", self.teacher_cache, self.precision)


def checkpoint_path(ctx, config: DistillConfig):
    """One file per candidate and config, in the cache; fit() also checks the starting weights."""
    import hashlib
    import json

    from edgeslim.core.outputs import cache_dir

    key = hashlib.sha256(json.dumps({"candidate": ctx.candidate, "config": config.to_dict()},
                                    sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "checkpoints" / f"distill-{key}.pt"


def fitting_loss(model, asked: str, ctx, train: list) -> tuple[str, str]:
    """The loss for this model's output and data (`asked`, or chosen where it is "auto"), with the reason;
    checked on the first train batch before training, so a loss that does not fit is one sentence."""
    import torch

    from edgeslim.compress.train import first_output
    from edgeslim.core.model_io import run_model

    teacher = ctx.teacher if ctx.teacher is not None else model
    with torch.no_grad():
        student_out = first_output(run_model(model.eval(), train[0][0], next(model.parameters()).device))
        teacher_out = first_output(run_model(teacher.eval(), train[0][0], next(teacher.parameters()).device))
    if tuple(student_out.shape) != tuple(teacher_out.shape):
        raise ConfigError(f"distillation matches the outputs of the compressed and the original model, but they "
                          f"have shapes {tuple(student_out.shape)} and {tuple(teacher_out.shape)}; keep the output "
                          "layer whole (prune ignore)")
    return choose_loss(asked, tuple(teacher_out.shape), [labels for _, labels in train], ctx.metric)


@register_step(DistillConfig)
def distill(model, config: DistillConfig, ctx):
    from edgeslim.compress.train import FitOptions, evaluate_torch, fit

    train = ctx.data.need("train", "distillation")
    loss, reason = fitting_loss(model, config.loss, ctx, train)
    log(f"{ctx.candidate}: distill with the {loss} loss ({reason})")
    ctx.record(distill_loss={"loss": loss, "asked": config.loss, "why": reason})
    options = FitOptions(epochs=config.epochs, lr=config.lr, weight_decay=config.weight_decay,
                         temperature=config.temperature, alpha=config.alpha, seed=config.seed, loss=loss,
                         device=config.device, features=config.features, feature_weight=config.feature_weight,
                         patience=config.patience, checkpoint=checkpoint_path(ctx, config) if config.resume else None,
                         teacher_cache=config.teacher_cache, precision=config.precision)
    history: list[dict] = []
    facts: dict = {}
    fit(model, train, options, label=f"{ctx.candidate}: distill", teacher=ctx.teacher,
        val=ctx.data.val, metric=ctx.metric, history=history, facts=facts)
    ctx.record(distill_history=history, distill_run=facts)
    if ctx.data.val:
        ctx.record(val_after_distill=evaluate_torch(model, ctx.data.val, ctx.metric))
    return model
