"""Knowledge distillation: fine-tune the (pruned) model towards the original model's outputs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

from edgeslim.compress.distill_losses import LOSS_CHOICES, choose_loss
from edgeslim.compress.quant_sim import SimulatedInt8, check_simulation
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
    features: list[str] = field(default_factory=list, metadata={
        "description": "Intermediate-feature distillation: module names whose outputs match the original's (through "
                       "a learned adapter where pruning changed the width), or ['auto']: each block of the model's "
                       "ModuleLists (a transformer's layers) whose output keeps the original's shape."})
    feature_weight: float = 1.0
    patience: int = 0               # early stopping on the val metric (0: off); keeps the best epoch
    resume: bool = True             # checkpoint each epoch; an interrupted run resumes
    teacher_cache: Literal["auto", "on", "off"] = field(default="auto", metadata={
        "description": "Run the original model once over the train batches and read its outputs back from disk "
                       "(memory-mapped) instead of running it every epoch; auto: from 2 epochs on, without features."})
    precision: Literal["auto", "fp32", "bf16"] = field(default="auto", metadata={
        "description": "bf16 autocast for training; auto: bf16 on a GPU that supports it, fp32 on the CPU."})
    quantization: Literal["auto", "none", "dynamic_int8"] = field(default="auto", metadata={
        "description": "Quantization-aware distillation: dynamic_int8 ends with `quantization_epochs` more epochs, at "
                       "a quarter of the learning rate, through the INT8 rounding of every Linear layer's input that "
                       "the target's kernels apply (edgeslim.compress.quant_sim); auto: dynamic_int8 where a later "
                       "step (int8, dynamic) quantizes activations and Linear layers hold most of the weights, else "
                       "none."})
    quantization_epochs: int = 1

    def check(self) -> None:
        require(self.epochs >= 1, "distill.epochs", self.epochs, "at least 1")
        require(self.lr > 0, "distill.lr", self.lr, "positive")
        require(self.temperature > 0, "distill.temperature", self.temperature, "positive")
        require(0.0 <= self.alpha <= 1.0, "distill.alpha", self.alpha, "in [0, 1]")
        require(self.patience >= 0, "distill.patience", self.patience, "0 (off) or more epochs")
        require(self.loss in LOSS_CHOICES, "distill.loss", self.loss, " or ".join(map(repr, LOSS_CHOICES)))
        require(self.feature_weight >= 0, "distill.feature_weight", self.feature_weight, "0 or more")
        check_fit_options("distill", self.teacher_cache, self.precision)
        check_simulation(self.quantization)
        require(self.quantization_epochs >= 1, "distill.quantization_epochs", self.quantization_epochs, "at least 1")


def _simulation(config: DistillConfig) -> str:
    """The simulated quantization; a distill step run on its own (not through a build) settles "auto" to none."""
    return "none" if config.quantization == "auto" else config.quantization


def _quantization_aware(model, train, options, config: DistillConfig, ctx, history: list, facts: dict) -> None:
    """After the float epochs, `quantization_epochs` more through the simulated INT8 of the target, at a quarter
    of the learning rate, as QAT fine-tunes a converged model. Measured 2026-11-24 on all-MiniLM-L6-v2 pruned
    by 0.3, distilled 3 epochs at 2e-4: one more epoch at 5e-5 through dynamic INT8 raised the INT8 bundle's
    val cosine 96.70 -> 96.82 (float unchanged, 97.12); at 2e-4 it fell to 96.66; distilling all 3 epochs
    through it gave 96.73."""
    from dataclasses import replace

    from edgeslim.compress.train import evaluate_torch, fit

    with SimulatedInt8(model, _simulation(config)) as simulated:
        if not simulated.layers:
            return
        log(f"{ctx.candidate}: distill {config.quantization_epochs} more epoch(s) through the dynamic INT8 rounding "
            f"of {simulated.layers} Linear layers' inputs (quantization-aware; their val scores are the simulated "
            "INT8 model's)")
        phase = replace(options, epochs=config.quantization_epochs, lr=config.lr / 4,
                        checkpoint=options.checkpoint.with_name(options.checkpoint.stem + "-int8.pt")
                        if options.checkpoint else None)
        more: list[dict] = []
        fit(model, train, phase, label=f"{ctx.candidate}: distill (INT8-aware)", teacher=ctx.teacher,
            val=ctx.data.val, metric=ctx.metric, history=more, facts={})
        history += [{**epoch, "epoch": len(history) + index, "simulated": simulated.kind}
                    for index, epoch in enumerate(more, 1)]
        facts["quantization"] = {"simulated": simulated.kind, "linear_layers": simulated.layers, "lr": phase.lr,
                                 "epochs": [epoch["epoch"] for epoch in history[-len(more):]]}
        if ctx.data.val:
            facts["quantization"]["val_simulated"] = evaluate_torch(model, ctx.data.val, ctx.metric)


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


AUTO = "auto"


def matching_blocks(student, teacher, inputs) -> list[str]:
    """The elements of the teacher's ModuleLists (a transformer's layers, a network's repeated stages) whose
    first output has the same shape in the student: what layer-wise distillation matches without an adapter.

    Pruning a transformer narrows heads and feed-forward widths but keeps each layer's output width (the
    residual stream), so every layer of the pruned model still has the original's features to follow.
    Measured 2026-11-24 on all-MiniLM-L6-v2 pruned by 0.3, one epoch: val cosine 96.31 with its six layers
    matched, 95.86 with the output alone."""
    import torch

    names = [f"{name}.{index}" for name, module in teacher.named_modules()
             if isinstance(module, torch.nn.ModuleList) for index in range(len(module))]
    student_shapes, teacher_shapes = (_output_shapes(m, names, inputs) for m in (student, teacher))
    return [name for name in names if name in teacher_shapes and student_shapes.get(name) == teacher_shapes[name]]


def _output_shapes(model, names: list[str], inputs) -> dict:
    """{module name: shape of its first tensor output} for the named modules, from one run on `inputs`."""
    import torch

    from edgeslim.compress.train import first_output
    from edgeslim.core.model_io import run_model

    modules, shapes = dict(model.named_modules()), {}

    def keep(name):
        def hook(_module, _inputs, output):
            first = first_output(output)
            if torch.is_tensor(first):
                shapes[name] = tuple(first.shape)
        return hook

    hooks = [modules[name].register_forward_hook(keep(name)) for name in names if name in modules]
    try:
        with torch.no_grad():
            run_model(model.eval(), inputs, next(model.parameters()).device)
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


@register_step(DistillConfig)
def distill(model, config: DistillConfig, ctx):
    from edgeslim.compress.train import FitOptions, evaluate_torch, fit

    train = ctx.data.need("train", "distillation")
    loss, reason = fitting_loss(model, config.loss, ctx, train)
    log(f"{ctx.candidate}: distill with the {loss} loss ({reason})")
    ctx.record(distill_loss={"loss": loss, "asked": config.loss, "why": reason})
    features = config.features
    if features == [AUTO] and ctx.teacher is not None:
        features = matching_blocks(model, ctx.teacher, train[0][0])
        log(f"{ctx.candidate}: distill features: {', '.join(features) if features else 'none'} "
            "(blocks whose output keeps the original's shape)")
    ctx.record(distill_features=features)
    options = FitOptions(epochs=config.epochs, lr=config.lr, weight_decay=config.weight_decay,
                         temperature=config.temperature, alpha=config.alpha, seed=config.seed, loss=loss,
                         device=config.device, features=features, feature_weight=config.feature_weight,
                         patience=config.patience, checkpoint=checkpoint_path(ctx, config) if config.resume else None,
                         teacher_cache=config.teacher_cache, precision=config.precision)
    history: list[dict] = []
    facts: dict = {}
    fit(model, train, options, label=f"{ctx.candidate}: distill", teacher=ctx.teacher,
        val=ctx.data.val, metric=ctx.metric, history=history, facts=facts)
    _quantization_aware(model, train, options, config, ctx, history, facts)
    ctx.record(distill_history=history, distill_run=facts)
    if ctx.data.val:
        ctx.record(val_after_distill=evaluate_torch(model, ctx.data.val, ctx.metric))
    return model
