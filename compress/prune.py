"""Structured channel pruning with torch-pruning's dependency graph (DepGraph).

Coupled channels (residual additions, depthwise convolutions, attention projections, norms) are
removed together, so the pruned model is a smaller dense model, not a masked one.

Attention found by its attributes (a head count such as `num_attention_heads`, q/k/v Linear children, as
in Hugging Face's BERT family) loses whole heads, and its head count and sizes follow; nn.MultiheadAttention
is torch-pruning's own case. What cannot be pruned (recurrent layers, attention whose heads are not
recognisable) is kept whole with the layers feeding it, named with a reason in the step's `kept_whole`
record (manifest metrics, report) and a warning, while the rest of the model is pruned.
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar

from edgeslim.compress.registry import StepConfig, register_step, require
from edgeslim.core.progress import Timer, log, warn

IMPORTANCES = ("auto", "l1", "l2", "output")
MAX_LAYER_RATIO = 0.9   # ranked globally, no layer loses more than this fraction of its channels


@dataclass
class PruneConfig(StepConfig):
    name: ClassVar[str] = "prune"
    stage: ClassVar[str] = "torch"
    ratio: float = 0.5          # fraction of channels removed from each prunable layer
    round_to: int = 8           # channel counts stay multiples of this (suits SIMD kernels)
    # l1/l2: norm of each channel group's weights; output: the change of the model's outputs on the
    # train data when the group goes (compress.importance; data-aware, no labels needed); auto: output
    # for embeddings and features, l2 for class logits
    importance: str = "auto"
    importance_batches: int = 8     # train batches `output` importance runs backward passes on
    # One ranking over all layers (each then keeps what its channels are worth) or the same ratio in each;
    # None: global where the importance is `output`, whose scores are one unit (the outputs' change)
    # in every layer, per layer for weight norms, which are not comparable across layers.
    global_pruning: bool | None = None
    ignore: list[str] = field(default_factory=list)  # module names whose output channels stay whole

    def check(self) -> None:
        require(0.0 < self.ratio < 1.0, "prune.ratio", self.ratio, "a fraction in (0, 1), e.g. 0.5")
        require(self.round_to >= 1, "prune.round_to", self.round_to, "a positive integer")
        require(self.importance in IMPORTANCES, "prune.importance", self.importance,
                " or ".join(map(repr, IMPORTANCES)))
        require(self.importance_batches >= 1, "prune.importance_batches", self.importance_batches, "at least 1")


def recorded_run(model, example_inputs) -> tuple[list, list]:
    """Run the model once, recording (module, output) for each module with weights of its own, in order,
    and the model's outputs as a flat list; with autograd on, so that what reaches the outputs can be traced."""
    import torch

    from edgeslim.core.model_io import run_model

    produced = []
    hooks = [module.register_forward_hook(lambda mod, _inp, out: produced.append((mod, out)))
             for module in model.modules() if any(True for _ in module.parameters(recurse=False))]
    try:
        with torch.enable_grad():
            outputs = run_model(model, example_inputs)
    finally:
        for hook in hooks:
            hook.remove()
    flat = (list(outputs.values()) if isinstance(outputs, dict)
            else list(outputs) if isinstance(outputs, (tuple, list)) else [outputs])
    return produced, flat


def output_layers(run: tuple[list, list]) -> list:
    """The layers whose output is the model's output (`run` from recorded_run): their channels are the
    classes, kept whole. Found by running the model, so no model needs naming its classifier."""
    import torch

    produced, flat = run
    layers = [(mod, out) for mod, out in produced if isinstance(mod, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))]
    exact = [mod for mod, out in layers if any(out is result for result in flat)]
    return exact or ([layers[-1][0]] if layers else [])


# Attributes attention modules (Hugging Face's and others) use for their head count, head size, total
# width, and the names of their query/key/value projections: found by attribute, for any model.
HEAD_COUNT = ("num_attention_heads", "num_heads", "n_heads", "n_head")
HEAD_SIZE = ("attention_head_size", "head_dim", "head_size", "dim_per_head")
ALL_HEADS = ("all_head_size", "inner_dim")
QKV_NAMES = (("query", "key", "value"), ("q_proj", "k_proj", "v_proj"), ("q_lin", "k_lin", "v_lin"), ("q", "k", "v"))


@dataclass
class HeadedAttention:
    """An attention module whose width is split over heads: q/k/v projections whose outputs are heads."""

    module: object
    count_attr: str
    projections: list

    @property
    def heads(self) -> int:
        return getattr(self.module, self.count_attr)


def _head_count_attr(module) -> str | None:
    return next((attr for attr in HEAD_COUNT if isinstance(getattr(module, attr, None), int)), None)


def attention_modules(model) -> tuple[list, dict]:
    """(attentions whose heads torch-pruning can prune, {name: reason} for those kept whole).

    nn.MultiheadAttention is torch-pruning's own case and is left to it.
    """
    import torch

    found, kept = [], {}
    for name, module in model.named_modules():
        count_attr = _head_count_attr(module)
        if count_attr is None or isinstance(module, torch.nn.MultiheadAttention):
            continue
        projections = next(([getattr(module, attr) for attr in names] for names in QKV_NAMES
                            if all(isinstance(getattr(module, attr, None), torch.nn.Linear) for attr in names)), None)
        heads = getattr(module, count_attr)
        if projections is None:
            if any(isinstance(child, torch.nn.Linear) for child in module.children()):
                kept[name] = (f"{type(module).__name__} has {heads} heads but no query/key/value projections "
                              "edgeslim recognises (Linear children named query/key/value or q_proj/k_proj/v_proj)")
            continue
        widths = [layer.out_features for layer in projections]
        if len(set(widths)) != 1 or widths[0] % heads:
            kept[name] = (f"{type(module).__name__}'s query/key/value widths {widths} are not one width split "
                          f"over {heads} heads (grouped-query attention)")
            continue
        found.append(HeadedAttention(module, count_attr, projections))
    return found, kept


def keep_heads_consistent(attentions: list, pruned_heads: dict) -> None:
    """torch-pruning removed whole heads: the module's head count, head size and width follow its q/k/v."""
    from edgeslim.core.errors import ConfigError

    for attention in attentions:
        query = attention.projections[0]
        heads = pruned_heads[query]
        width = query.out_features
        if heads < 1 or width % heads or any(layer.out_features != width for layer in attention.projections):
            raise ConfigError(f"pruning left {type(attention.module).__name__} with {heads} heads over query/key/value "
                              f"widths {[layer.out_features for layer in attention.projections]}; prune less")
        setattr(attention.module, attention.count_attr, heads)
        for attr in HEAD_SIZE:
            if isinstance(getattr(attention.module, attr, None), int):
                setattr(attention.module, attr, width // heads)
        for attr in ALL_HEADS:
            if isinstance(getattr(attention.module, attr, None), int):
                setattr(attention.module, attr, width)


def head_ratio(attentions: list, ratio: float) -> float:
    """The fraction of heads to remove; torch-pruning rounds the count up, so every attention keeps one head."""
    fewest = min((attention.heads for attention in attentions), default=0)
    return min(ratio, (fewest - 1) / fewest) if fewest > 1 else 0.0


def recurrent_modules(model) -> dict:
    """{name: reason} for recurrent layers: torch-pruning cannot resize their gates (its LSTM pruner handles
    one unidirectional layer and fails on real ones; GRU and RNN have none), so they stay whole."""
    import torch

    return {name: (f"{type(module).__name__} ({module.num_layers} layer{'s' * (module.num_layers > 1)}"
                   f"{', bidirectional' if module.bidirectional else ''}) is recurrent: torch-pruning cannot "
                   "resize its gates, so it and the layers feeding it keep their width")
            for name, module in model.named_modules() if isinstance(module, torch.nn.RNNBase)}


def recurrent_layer_pruner():
    """A torch-pruning layer handler for recurrent layers kept whole: the dependency graph sees their channels
    (so tracing stops there, as at a Linear) and `ignore_groups_reaching` keeps every group touching them."""
    import torch_pruning as tp

    class KeptWhole(tp.pruner.function.BasePruningFunc):
        def prune_out_channels(self, layer, idxs):
            raise ValueError(f"{type(layer).__name__} is kept whole and cannot lose channels")

        prune_in_channels = prune_out_channels

        def get_out_channels(self, layer):
            return layer.hidden_size * (2 if layer.bidirectional else 1)

        def get_in_channels(self, layer):
            return layer.input_size

    return KeptWhole()


@contextmanager
def traced_as_one_node(modules: list):
    """torch-pruning builds its graph from autograd nodes; a GRU on the CPU is dozens of them (gates, splits),
    which it cannot map. While the graph is built, each module kept whole runs as one node, like a Linear."""
    import torch

    class OneNode(torch.autograd.Function):
        @staticmethod
        def forward(ctx, module, *args):
            return type(module).forward(module, *args)

        @staticmethod
        def backward(ctx, *grads):
            raise RuntimeError("only traced, never trained")

    for module in modules:
        module.forward = lambda *args, module=module, **kwargs: OneNode.apply(module, *args, *kwargs.values())
    try:
        yield
    finally:
        for module in modules:
            del module.forward


def output_producer(run: tuple[list, list]):
    """The last layer with weights whose output reaches the model's output: its channels are the output's.

    For a classifier that is the head; for a sentence encoder that mean-pools, the last LayerNorm of the
    residual stream. Found from autograd's graph, so a branch the model computes but does not return (a
    BertModel's pooler) is not taken for it. `run` comes from recorded_run.
    """
    produced, flat = run
    reaching, pending = set(), [out.grad_fn for out in flat if getattr(out, "grad_fn", None) is not None]
    while pending:
        node = pending.pop()
        if node is not None and node not in reaching:
            reaching.add(node)
            pending.extend(next_node for next_node, _ in node.next_functions)
    for module, out in reversed(produced):
        if getattr(out, "grad_fn", None) in reaching:
            return module
    return None


def ignore_groups_pruning_outputs_of(pruner, module) -> None:
    """Leave unpruned every channel group that would prune `module`'s output channels (the model's output)."""
    if module is None:
        return
    for group in list(pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                               root_module_types=pruner.root_module_types)):
        if any(dep.target.module is module and pruner.DG.is_out_channel_pruning_fn(dep.handler) for dep, _ in group):
            pruner.ignored_layers.append(group[0][0].target.module)


def ignore_groups_reaching(pruner, kept_modules: list) -> None:
    """Leave every channel group that touches a module kept whole unpruned, so its inputs keep their width."""
    kept = {part for module in kept_modules for part in module.modules()}
    for group in list(pruner.DG.get_all_groups(ignored_layers=pruner.ignored_layers,
                                               root_module_types=pruner.root_module_types)):
        if any(dep.target.module in kept for dep, _ in group):
            pruner.ignored_layers.append(group[0][0].target.module)


def _round_to(model, wanted: int) -> int:
    """Attention splits its width over heads: keep every width divisible by each head count."""
    import torch

    multiple = wanted
    for module in model.modules():
        if isinstance(module, torch.nn.MultiheadAttention):
            multiple = math.lcm(multiple, module.num_heads)
    return multiple


def _check_ignore(model, names: list) -> list:
    modules = dict(model.named_modules())
    unknown = [name for name in names if name not in modules]
    if unknown:
        from edgeslim.core.errors import ConfigError

        raise ConfigError(f"prune.ignore names {unknown[0]!r}, which is not a module of the model; "
                          f"modules are named like {list(modules)[1:4]}")
    return [modules[name] for name in names]


def _kept_whole(kept: dict) -> list:
    """Warn about, and return as manifest records, the modules left whole and why."""
    for name, reason in kept.items():
        warn(f"prune: {name} kept whole: {reason}")
    return [{"module": name, "reason": reason} for name, reason in kept.items()]


def _still_runs(model, example) -> None:
    import torch

    from edgeslim.core.errors import ConfigError
    from edgeslim.core.model_io import run_model

    try:
        with torch.no_grad():
            run_model(model, example)
    except Exception as exc:
        raise ConfigError(f"the pruned model no longer runs ({type(exc).__name__}: {exc}); keep the layer named "
                          "in the error whole with prune.ignore (--prune-ignore NAME), or prune less") from None


@contextmanager
def every_layer_traced(model):
    """Trace layers whose output the model computes but does not return (a BertModel's pooler under a
    user's mean pooling): torch-pruning follows only what reaches the outputs, so such a layer kept its
    input width and failed once the width feeding it was pruned. Yields an output_transform adding them."""
    import torch

    produced = []
    hooks = [module.register_forward_hook(lambda _mod, _inp, out: produced.append(out))
             for module in model.modules()
             if isinstance(module, (torch.nn.Linear, torch.nn.modules.conv._ConvNd))]
    try:
        yield lambda outputs: [outputs, *[out for out in produced if getattr(out, "grad_fn", None) is not None]]
    finally:
        for hook in hooks:
            hook.remove()


def _importance(model, config: PruneConfig, ctx, heads: dict, output_shape: tuple) -> tuple:
    """(the importance, {used, asked, why}): torch-pruning's weight norm, or edgeslim's output importance
    measured on train batches;
    `auto` takes output importance for embeddings and features (all-MiniLM-L6-v2 pruned by 0.3 kept a
    mean cosine of 0.85 with it against 0.68 by weight norm), weight norm for class logits, where the
    two measured alike."""
    import torch_pruning as tp

    batches = (ctx.data.train or ctx.data.val) if getattr(ctx, "data", None) else []
    logits = bool(batches) and _outputs_logits(output_shape, batches, ctx)
    used, why = config.importance, "named in the config"
    if used == "auto":
        used = "l2" if logits or not batches else "output"
        why = ("no data to measure on" if not batches else "the output is class logits" if logits
               else "the output is an embedding or features")
    chosen = {"used": used, "asked": config.importance, "why": why}
    if used != "output":
        return tp.importance.GroupMagnitudeImportance(p=2 if used == "l2" else 1), chosen
    from edgeslim.compress.importance import OutputImportance

    scorer = OutputImportance(heads, logits=logits)
    with Timer() as timer:
        scorer.collect(model, [inputs for inputs, _ in batches[:config.importance_batches]])
    log(f"prune: output importance from {min(len(batches), config.importance_batches)} batches "
        f"({timer.seconds:.1f} s)")
    return scorer, chosen


def _outputs_logits(output_shape: tuple, batches: list, ctx) -> bool:
    """Whether the model's first output (of `output_shape`) is class logits, as distillation would decide
    (its `auto` loss)."""
    from edgeslim.compress.distill_losses import choose_loss

    loss, _ = choose_loss("auto", output_shape, [labels for _, labels in batches], getattr(ctx, "metric", None))
    return loss in ("kl", "sequence_kl")


def _ranked_globally(config: PruneConfig, importance) -> bool:
    from edgeslim.compress.importance import OutputImportance

    if config.global_pruning is None:
        return isinstance(importance, OutputImportance)
    return config.global_pruning


def _pruner(model, config: PruneConfig, example, attentions: list, ignored: list, importance):
    """torch-pruning's MetaPruner: whole heads of the attentions found, recurrent layers traced as one node."""
    import torch
    import torch_pruning as tp

    from edgeslim.core.model_io import to_args

    args, kwargs = to_args(example)
    recurrent = [module for module in ignored if isinstance(module, torch.nn.RNNBase)]
    with traced_as_one_node(recurrent), every_layer_traced(model) as with_every_layer:
        return tp.pruner.MetaPruner(
            model,
            output_transform=with_every_layer,
            example_inputs=kwargs if kwargs else (args[0] if len(args) == 1 else args),
            importance=importance,
            pruning_ratio=config.ratio,
            global_pruning=_ranked_globally(config, importance),
            max_pruning_ratio=MAX_LAYER_RATIO,
            ignored_layers=ignored,
            round_to=_round_to(model, config.round_to),
            num_heads={layer: attention.heads for attention in attentions for layer in attention.projections},
            prune_num_heads=bool(attentions),
            prune_head_dims=False,          # whole heads go; each kept head keeps its size
            head_pruning_ratio=head_ratio(attentions, config.ratio),
            customized_pruners={type(module): recurrent_layer_pruner() for module in recurrent},
        )


@register_step(PruneConfig)
def prune(model, config: PruneConfig, ctx):
    import torch

    from edgeslim.core.model_io import count_params

    before = count_params(model)
    modules = dict(model.named_modules())
    attentions, kept = attention_modules(model)
    kept.update(recurrent_modules(model))
    whole = [modules[name] for name in kept]
    run = recorded_run(model, ctx.example_inputs)   # once: the output layers and what feeds the output
    ignored = output_layers(run) + _check_ignore(model, config.ignore) + whole
    heads = {layer: attention.heads for attention in attentions for layer in attention.projections}
    # the recorded run's first output tells logits from embeddings: no second run of the model
    importance, chosen = _importance(model, config, ctx, heads, tuple(run[1][0].shape))
    ctx.record(prune_importance={**chosen, "global": _ranked_globally(config, importance)})
    try:
        pruner = _pruner(model, config, ctx.example_inputs, attentions, ignored, importance)
        ignore_groups_reaching(pruner, whole)
        ignore_groups_pruning_outputs_of(pruner, output_producer(run))
        with torch.no_grad():
            pruner.step()
    except (AssertionError, IndexError, KeyError, RuntimeError, TypeError, ValueError) as exc:
        from edgeslim.core.errors import ConfigError

        raise ConfigError(f"torch-pruning could not prune this model ({type(exc).__name__}: {exc}); a layer whose "
                          "output is flattened into a concatenation is a known case: keep it whole with "
                          "prune.ignore (--prune-ignore NAME), or prune less") from None
    keep_heads_consistent(attentions, pruner.num_heads)
    for module in model.modules():  # torch-pruning resizes weights; keep the attention fields in step
        if isinstance(module, torch.nn.MultiheadAttention):
            module.head_dim = module.embed_dim // module.num_heads
    _still_runs(model, ctx.example_inputs)
    after = count_params(model)
    ctx.record(params_before=before, params_after=after, **({"kept_whole": _kept_whole(kept)} if kept else {}))
    log(f"prune: {before:,} -> {after:,} parameters ({after / before:.1%} kept)")
    return model
