"""One planner: compression options become the ordered list of step configs here, and nowhere else.

`edgeslim compress`, a budget's probes and its final build, and a recipe's sweep all describe a
candidate with PlanOptions and call plan_steps, so that the same options give the same steps
whichever way they were asked for:

    >>> [step.name for step in plan_steps(PlanOptions(prune=0.5, quantize="int8"))]
    ['prune', 'distill', 'int8']
    >>> [step.name for step in plan_steps(PlanOptions(optimize_graph="bert", quantize="int4"))]
    ['optimize', 'int4']
"""
from __future__ import annotations

from dataclasses import dataclass, field

from edgeslim.core.errors import ConfigError

QUANTIZE_MODES = ("none", "int8", "dynamic", "fp16", "int4")
DISTILL_LOSSES = ("auto", "kl", "sequence_kl", "cosine", "mse")  # compress.distill_losses.LOSS_CHOICES, numpy-free
# compress.graph_optimize.MODEL_TYPES, without importing onnxruntime for the CLI's help.
GRAPH_MODEL_TYPES = ("bert", "bart", "clip", "gpt2", "swin", "t5", "vit")


class OptionConflict(ConfigError):
    """Two options that cannot go together; the CLI reports it as a usage error."""


@dataclass(frozen=True)
class PlanOptions:
    """What to do to a candidate, with the CLI's defaults; `distill` None means on when pruning."""

    prune: float = 0.0                  # fraction of channels removed; 0: no pruning
    round_to: int = 8
    prune_ignore: tuple[str, ...] = ()  # module names whose output channels stay whole
    distill: bool | None = None
    epochs: int = 10                    # distillation
    lr: float = 1e-3
    distill_loss: str = "auto"          # one of DISTILL_LOSSES; auto: from the output's shape and the labels
    distill_features: tuple[str, ...] = ()  # module names matched layer by layer, or ("auto",); (): the output only
    distill_options: dict = field(default_factory=dict)   # further DistillConfig options (a sweep's `distill`)
    qat_epochs: int | None = None       # quantization-aware training instead of PTQ; None: none
    qat_lr: float = 1e-4
    quantize: str = "none"              # one of QUANTIZE_MODES
    calibration_samples: int = 300
    max_accuracy_drop: float | None = None  # INT8 accuracy control (implies quantize int8)
    relative: bool = False
    overflow_fix: str | None = None     # None: each step's default
    int8_backend: str = "auto"
    int4_block_size: int | None = None  # INT4 weights per scale; None: the int4 step's default
    optimize_graph: str | None = None   # onnxruntime's transformer fusions for this model type; None: none

    def __post_init__(self):
        object.__setattr__(self, "prune_ignore", tuple(self.prune_ignore))
        object.__setattr__(self, "distill_features", tuple(self.distill_features))
        if self.quantize not in QUANTIZE_MODES:
            raise ConfigError(f"quantize {self.quantize!r} is not a mode; the modes are {', '.join(QUANTIZE_MODES)}")
        if self.max_accuracy_drop is not None and self.quantize not in ("none", "int8"):
            raise OptionConflict(f"--max-accuracy-drop controls INT8 quantization; it cannot go with "
                                 f"--quantize {self.quantize}")
        if self.int4_block_size is not None and self.quantize != "int4":
            raise OptionConflict(f"--int4-block-size sets INT4 quantization; it cannot go with "
                                 f"--quantize {self.quantize}")
        if self.optimize_graph is not None and self.optimize_graph not in GRAPH_MODEL_TYPES:
            raise ConfigError(f"--optimize-graph {self.optimize_graph!r} is not a model type; "
                              f"the types are {', '.join(GRAPH_MODEL_TYPES)}")

    @property
    def distills(self) -> bool:
        return self.distill if self.distill is not None else bool(self.prune)


def plan_steps(options: PlanOptions) -> list:
    """The ordered step configs for `options`: prune, distill, qat (torch), then graph optimization and one
    ONNX quantization."""
    from edgeslim.compress import check_order, make_step

    steps = []
    if options.prune:
        steps.append(make_step("prune", {"ratio": options.prune, "round_to": options.round_to,
                                         "ignore": list(options.prune_ignore)}))
    if options.distills:
        features = {"features": list(options.distill_features)} if options.distill_features else {}
        steps.append(make_step("distill", {"epochs": options.epochs, "lr": options.lr, "loss": options.distill_loss,
                                           **features, **options.distill_options}))
    if options.qat_epochs is not None:
        fix = {"overflow_fix": options.overflow_fix} if options.overflow_fix not in (None, "auto") else {}
        steps.append(make_step("qat", {"epochs": options.qat_epochs, "lr": options.qat_lr,
                                       "subset_size": options.calibration_samples, **fix}))
    if options.optimize_graph:
        steps.append(make_step("optimize", {"model_type": options.optimize_graph}))
    steps += _quantize_step(options)
    check_order(steps)
    return steps


def _quantize_step(options: PlanOptions) -> list:
    from edgeslim.compress import make_step

    if options.quantize == "int8" or options.max_accuracy_drop is not None:
        fix = {"overflow_fix": options.overflow_fix} if options.overflow_fix else {}
        return [make_step("int8", {"subset_size": options.calibration_samples,
                                   "max_accuracy_drop": options.max_accuracy_drop, "relative": options.relative,
                                   "backend": options.int8_backend, **fix})]
    if options.quantize == "int4" and options.int4_block_size is not None:
        return [make_step("int4", {"block_size": options.int4_block_size})]
    return [] if options.quantize == "none" else [make_step(options.quantize)]
