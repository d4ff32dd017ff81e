"""The fine-tuning loop shared by teacher training and distillation."""
from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from edgeslim.core.model_io import state_digest
from edgeslim.core.progress import Timer, log, progress


@dataclass
class FitOptions:
    epochs: int
    lr: float
    weight_decay: float = 1e-4
    temperature: float = 4.0
    alpha: float = 0.7          # weight of the distillation term against the label loss
    seed: int = 0
    device: str = "auto"        # cuda when a GPU is there; the model comes back on the CPU
    features: list = field(default_factory=list)  # module names whose outputs the student matches
    feature_weight: float = 1.0
    loss: str = "kl"            # the distillation loss (edgeslim.compress.distill_losses); labels only add to "kl"
    patience: int = 0           # early stopping: epochs without a better val metric (0: off)
    keep_start: bool = False    # with patience: the starting weights compete too (fine-tuning may not help)
    checkpoint: Path | None = None  # saved every epoch; a run that finds one resumes from it
    teacher_cache: str = "auto"  # run the teacher once and read its outputs from disk (edgeslim.compress.teacher_cache)
    precision: str = "auto"     # fp32, or bf16 autocast; auto: bf16 on a GPU that has it, fp32 on the CPU


def first_output(outputs):
    """A model's first output: the first value of a dict (a Hugging Face ModelOutput), the first item of a tuple."""
    from collections.abc import Mapping

    if isinstance(outputs, Mapping):
        return next(iter(outputs.values()))
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def distillation_loss(student_outputs, teacher_outputs, labels, options: FitOptions):
    """Without a teacher, cross-entropy on the labels; with one, `options.loss` against the teacher's
    outputs, blended (weight 1 - alpha) with cross-entropy where the loss is "kl" and labels are given."""
    import torch.nn.functional as F

    from edgeslim.compress.distill_losses import LOSS_FUNCTIONS

    if teacher_outputs is None:
        if labels is None:
            from edgeslim.core.errors import SpecError

            raise SpecError("training without a teacher needs labels, but a 'train' batch has none; "
                            "give (inputs, labels) batches")
        return F.cross_entropy(student_outputs, labels)
    soft = LOSS_FUNCTIONS[options.loss](student_outputs, teacher_outputs, options.temperature)
    if labels is None or options.loss != "kl":
        return soft
    return options.alpha * soft + (1.0 - options.alpha) * F.cross_entropy(student_outputs, labels)


def _labels(target, device, options: FitOptions, teacher):
    """The batch's labels as class indices where the loss uses them, else None (unlabelled data distills)."""
    import torch

    if target is None or (teacher is not None and options.loss != "kl"):
        return None
    return torch.as_tensor(target).long().to(device)


def evaluate_torch(model, batches, metric) -> float:
    """The metric of a torch model on (inputs, labels) batches, through the one evaluation loop: its outputs
    named as export names them, each joined along the batch axis found by running the model."""
    import torch

    from edgeslim.core.axes import output_batch_axes
    from edgeslim.core.evaluate import evaluate
    from edgeslim.core.model_io import run_model

    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        def predict(inputs):
            return run_model(model, inputs, device)

        axes = output_batch_axes(predict, batches[0][0]) if batches else {}
        return evaluate(predict, batches, metric, batch_axis=axes)


class FeatureMatcher:
    """Intermediate-feature distillation: the student's outputs at named modules, through a learned
    1x1 adapter (pruned widths differ from the teacher's), match the teacher's by mean squared error."""

    def __init__(self, student, teacher, names: list[str], device):
        from edgeslim.core.errors import ConfigError

        self.names, self.device = list(names), device
        self.student_out, self.teacher_out, self.adapters, self.hooks = {}, {}, {}, []
        student_modules, teacher_modules = dict(student.named_modules()), dict(teacher.named_modules())
        for name in self.names:
            if name not in student_modules or name not in teacher_modules:
                raise ConfigError(f"distill.features names {name!r}, which is not a module of the model; "
                                  f"modules are named like {list(student_modules)[1:4]}")
            self.hooks.append(student_modules[name].register_forward_hook(self._keep(self.student_out, name)))
            self.hooks.append(teacher_modules[name].register_forward_hook(self._keep(self.teacher_out, name)))

    @staticmethod
    def _keep(store, name):
        def hook(_module, _inputs, output):
            store[name] = first_output(output)
        return hook

    def _adapter(self, name, student, teacher):
        import torch

        if name not in self.adapters:
            cin, cout = student.shape[1 if student.dim() == 4 else -1], teacher.shape[1 if teacher.dim() == 4 else -1]
            conv = student.dim() == 4
            layer = torch.nn.Conv2d(cin, cout, 1, bias=False) if conv else torch.nn.Linear(cin, cout, bias=False)
            # A width pruning left whole holds the teacher's own features: match them as they are. A random
            # adapter would first have to learn the identity, and could hide a difference it learns to undo.
            self.adapters[name] = (torch.nn.Identity() if cin == cout else layer).to(self.device)
        return self.adapters[name]

    def parameters(self):
        return [p for adapter in self.adapters.values() for p in adapter.parameters()]

    def loss(self):
        import torch.nn.functional as F

        total = 0.0
        for name in self.names:
            student, teacher = self.student_out[name], self.teacher_out[name].detach()
            total = total + F.mse_loss(self._adapter(name, student, teacher)(student), teacher)
        return total

    def close(self):
        for hook in self.hooks:
            hook.remove()


PRECISIONS = ("auto", "fp32", "bf16")


def check_fit_options(step: str, teacher_cache: str, precision: str) -> None:
    """The options distill and qat hand to fit() as they are: the teacher cache and the training precision."""
    from edgeslim.compress.teacher_cache import CACHE_CHOICES
    from edgeslim.core.errors import require

    require(teacher_cache in CACHE_CHOICES, f"{step}.teacher_cache", teacher_cache,
            " or ".join(map(repr, CACHE_CHOICES)))
    require(precision in PRECISIONS, f"{step}.precision", precision, " or ".join(map(repr, PRECISIONS)))


def fit(model, train, options: FitOptions, label: str, teacher=None, val=None, metric=None, history=None,
        facts=None):
    """Train `model` on (inputs, labels) batches; with a teacher, by knowledge distillation.

    With `patience`, stops when the val metric has not improved for that many epochs and keeps the
    best epoch's weights. With `checkpoint`, saves every epoch and resumes a run that was cut off.
    With a `history` list, appends one `epoch_record` per epoch (the report draws them as curves).
    Under torchrun each rank trains on its share of the batches (edgeslim.compress.distributed); with
    `teacher_cache` the teacher runs once over them and its outputs are read back from disk. A `facts` dict
    gets how it ran: ranks, backend, precision, teacher (cached or live).
    """
    import copy

    import torch

    from edgeslim.compress import distributed
    from edgeslim.core.model_io import run_model, training_device

    device = distributed.rank_device(training_device(options.device))
    distributed.ensure_group(device)
    distributed.check_same_model(model, label)
    steps = _my_batches(train, label)
    precision = _precision(options.precision, device)
    cached = _cached_teacher(teacher, steps, options, device, precision, label)
    if facts is not None:
        facts.update(ranks=distributed.world_size(), backend=distributed.backend(), precision=precision,
                     teacher=None if teacher is None else ("cached" if cached is not None else "live"))
    model.to(device)
    if teacher is not None and cached is None:
        teacher.to(device).eval()
    torch.manual_seed(options.seed)
    order = random.Random(options.seed)
    matching = teacher is not None and options.features
    features = FeatureMatcher(model, teacher, options.features, device) if matching else None
    if features:  # one step through the model makes the adapters, so the optimizer can own them
        with torch.no_grad():
            run_model(model, steps[0][0], device)
            run_model(teacher, steps[0][0], device)
            features.loss()
    several = distributed.is_distributed()
    trained = distributed.wrap(_with_adapters(model, features) if features and several else model, device)
    params = list(model.parameters()) + (features.parameters() if features else [])
    optimizer = torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=options.lr,
                                                   total_steps=max(options.epochs * len(steps), 1))
    start, best, best_state, stale = 1, None, None, 0
    history = [] if history is None else history
    start_digest = state_digest(model)
    resumed = _resume(options.checkpoint, start_digest, model, optimizer, schedule, features)
    if resumed:
        start, best, stale = resumed["epoch"] + 1, resumed["best"], resumed["stale"]
        best_state = resumed.get("best_state")
        history[:] = resumed.get("history", [])
        for _ in range(start - 1):
            order.sample(range(len(steps)), len(steps))  # the same batch order as an uninterrupted run
        log(f"{label}: resumed from {options.checkpoint} after epoch {resumed['epoch']}")
    elif options.keep_start and options.patience and val and metric:
        best, best_state = evaluate_torch(model, val, metric), copy.deepcopy(model.state_dict())
        log(f"{label}: val {best:.2f} before fine-tuning")
    epoch_run = _Epoch(trained, steps, teacher, cached, features, optimizer, schedule, options, device, precision)
    for epoch in range(start, options.epochs + 1):
        what = f"{label} epoch {epoch}/{options.epochs}"
        with Timer() as timer, progress(what, total=len(steps)) as advance, distributed.collective(what):
            trained.train()
            loss = distributed.mean_over_ranks(epoch_run(order.sample(range(len(steps)), len(steps)), advance), what)
        score = evaluate_torch(model, val, metric) if val and metric else None
        history.append(epoch_record(epoch, loss, score, schedule, timer.seconds))
        log(f"{what}: loss {loss:.4f}{'' if score is None else f', val {score:.2f}'} "
            f"({timer.seconds:.1f} s, {_where(device)})")
        if score is not None and (best is None or score > best):
            best, stale = score, 0
            if options.patience:
                best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        if distributed.is_writer():
            _save(options.checkpoint, start_digest, epoch, best, stale, best_state, model, optimizer, schedule,
                  features, history)
        if options.patience and stale >= options.patience:
            log(f"{label}: early stop after epoch {epoch}: no better val score for {stale} epochs (best {best:.2f})")
            break
    if options.patience and best_state is not None:
        model.load_state_dict(best_state)
        log(f"{label}: kept the weights with the best val score ({best:.2f})")
    if features:
        features.close()
    distributed.barrier(f"{label}: the end of training")
    if distributed.is_writer() and options.checkpoint and Path(options.checkpoint).exists():
        Path(options.checkpoint).unlink()  # finished: nothing to resume
    if cached is not None:
        cached.remove()
    if teacher is not None:
        teacher.to("cpu")
    return model.to("cpu").eval()


class _Epoch:
    """One pass over this rank's batches in a given order; returns the mean loss."""

    def __init__(self, trained, steps, teacher, cached, features, optimizer, schedule, options, device, precision):
        self.trained, self.steps, self.teacher, self.cached = trained, steps, teacher, cached
        self.features, self.optimizer, self.schedule = features, optimizer, schedule
        self.options, self.device, self.precision = options, device, precision

    def __call__(self, order: list[int], advance) -> float:
        total = 0.0
        for index in order:
            inputs, target = self.steps[index]
            with _autocast(self.precision, self.device):
                loss = self._loss(index, inputs, target)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            self.schedule.step()
            total += loss.item()
            advance()
        return total / max(len(order), 1)

    def _loss(self, index: int, inputs, target):
        import torch

        from edgeslim.core.model_io import run_model

        logits = first_output(run_model(self.trained, inputs, self.device))
        teacher_logits = None
        if self.cached is not None:
            teacher_logits = self.cached[index]
        elif self.teacher is not None:
            with torch.no_grad():
                teacher_logits = first_output(run_model(self.teacher, inputs, self.device))
        labels = _labels(target, self.device, self.options, self.teacher)
        loss = distillation_loss(logits, teacher_logits, labels, self.options)
        if self.features:
            loss = loss + self.options.feature_weight * self.features.loss()
        return loss


def _my_batches(train: list, label: str) -> list:
    """This rank's batch of every step: all of them in one process; under torchrun, one of each group of N."""
    from edgeslim.compress import distributed

    if not distributed.is_distributed():
        return list(train)
    groups = distributed.groups_of_batches(train)
    if not groups:
        from edgeslim.core.errors import ConfigError

        raise ConfigError(f"{label}: {len(train)} train batches cannot be shared by {distributed.world_size()} ranks; "
                          "give at least one batch per rank")
    left_out = len(train) - len(groups) * distributed.world_size()
    log(f"{label}: {distributed.world_size()} ranks ({distributed.backend()}), {len(groups)} steps of "
        f"{distributed.world_size()} batches" + (f"; {left_out} batch(es) left out to keep the ranks in step"
                                                 if left_out else ""))
    return [group[distributed.rank()] for group in groups]


def _cached_teacher(teacher, steps: list, options: FitOptions, device, precision, label: str):
    """The teacher's outputs over this rank's batches, run once, where `teacher_cache` asks for it; else None."""
    from edgeslim.compress import teacher_cache
    from edgeslim.core.outputs import cache_dir

    if teacher is None or not teacher_cache.wanted(options.teacher_cache, options.epochs, bool(options.features)):
        return None
    with Timer() as timer, _autocast(precision, device):
        cached = teacher_cache.teacher_outputs(teacher, steps, device, cache_dir() / "teacher")
    teacher.to("cpu")  # the student trains without it beside
    log(f"{label}: teacher outputs for {len(cached)} batches cached on disk ({timer.seconds:.1f} s)")
    return cached


def _with_adapters(model, features):
    """The student and its feature adapters as one module, so that DDP averages the adapters' gradients too."""
    import torch

    class WithAdapters(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.adapters = torch.nn.ModuleList(features.adapters.values())

        def forward(self, *args, **kwargs):
            return self.model(*args, **kwargs)

    return WithAdapters()


def _precision(asked: str, device) -> str:
    """fp32 or bf16: bf16 autocast where asked, or with "auto" on a GPU that has it; the CPU stays fp32."""
    import torch

    if asked == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if asked == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        from edgeslim.core.errors import ConfigError

        raise ConfigError("precision 'bf16' asked for, but this GPU has no bfloat16; use 'fp32' or 'auto'")
    return asked


def _autocast(precision: str, device):
    import contextlib

    import torch

    if precision != "bf16":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def _where(device) -> str:
    from edgeslim.compress import distributed

    return device.type if not distributed.is_distributed() else f"{device.type} x{distributed.world_size()} ranks"


def epoch_record(epoch: int, loss: float, val: float | None, schedule, seconds: float) -> dict:
    """One epoch of training as the manifest keeps it: mean train loss, val metric (None without val data),
    learning rate at the epoch's end and wall seconds."""
    return {"epoch": epoch, "loss": round(float(loss), 6), "val": None if val is None else round(float(val), 4),
            "lr": float(schedule.get_last_lr()[0]), "seconds": round(seconds, 3)}


def _save(path, digest, epoch, best, stale, best_state, model, optimizer, schedule, features, history) -> None:
    import torch

    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"start_digest": digest, "epoch": epoch, "best": best, "stale": stale, "best_state": best_state,
             "model": model.state_dict(), "optimizer": optimizer.state_dict(), "schedule": schedule.state_dict(),
             "history": list(history),
             "adapters": {name: a.state_dict() for name, a in (features.adapters.items() if features else [])}}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _resume(path, digest, model, optimizer, schedule, features):
    """The checkpoint's state, loaded, if it belongs to this very run (same starting weights)."""
    import torch

    if not path or not Path(path).is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=False)
    if state.get("start_digest") != digest:
        return None
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    schedule.load_state_dict(state["schedule"])
    for name, adapter_state in state.get("adapters", {}).items():
        if features and name in features.adapters:
            features.adapters[name].load_state_dict(adapter_state)
    return state
