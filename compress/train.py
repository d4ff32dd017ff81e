"""The fine-tuning loop shared by teacher training and distillation."""
from __future__ import annotations

import hashlib
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

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
            self.adapters[name] = layer.to(self.device)
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


def _state_digest(model) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def fit(model, train, options: FitOptions, label: str, teacher=None, val=None, metric=None, history=None):
    """Train `model` on (inputs, labels) batches; with a teacher, by knowledge distillation.

    With `patience`, stops when the val metric has not improved for that many epochs and keeps the
    best epoch's weights. With `checkpoint`, saves every epoch and resumes a run that was cut off.
    With a `history` list, appends one `epoch_record` per epoch (the report draws them as curves).
    """
    import copy

    import torch

    from edgeslim.core.model_io import run_model, training_device

    device = training_device(options.device)
    model.to(device)
    if teacher is not None:
        teacher.to(device).eval()
    torch.manual_seed(options.seed)
    order = random.Random(options.seed)
    matching = teacher is not None and options.features
    features = FeatureMatcher(model, teacher, options.features, device) if matching else None
    if features:  # one step through the model makes the adapters, so the optimizer can own them
        with torch.no_grad():
            run_model(model, train[0][0], device)
            run_model(teacher, train[0][0], device)
            features.loss()
    params = list(model.parameters()) + (features.parameters() if features else [])
    optimizer = torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=options.lr,
                                                   total_steps=max(options.epochs * len(train), 1))
    start, best, best_state, stale = 1, None, None, 0
    history = [] if history is None else history
    start_digest = _state_digest(model)
    resumed = _resume(options.checkpoint, start_digest, model, optimizer, schedule, features)
    if resumed:
        start, best, stale = resumed["epoch"] + 1, resumed["best"], resumed["stale"]
        best_state = resumed.get("best_state")
        history[:] = resumed.get("history", [])
        for _ in range(start - 1):
            order.sample(train, len(train))  # the same batch order as an uninterrupted run
        log(f"{label}: resumed from {options.checkpoint} after epoch {resumed['epoch']}")
    elif options.keep_start and options.patience and val and metric:
        best, best_state = evaluate_torch(model, val, metric), copy.deepcopy(model.state_dict())
        log(f"{label}: val {best:.2f} before fine-tuning")
    for epoch in range(start, options.epochs + 1):
        with Timer() as timer, progress(f"{label} epoch {epoch}/{options.epochs}", total=len(train)) as advance:
            model.train()
            total = 0.0
            for inputs, target in order.sample(train, len(train)):
                logits = first_output(run_model(model, inputs, device))
                teacher_logits = None
                if teacher is not None:
                    with torch.no_grad():
                        teacher_logits = first_output(run_model(teacher, inputs, device))
                labels = _labels(target, device, options, teacher)
                loss = distillation_loss(logits, teacher_logits, labels, options)
                if features:
                    loss = loss + options.feature_weight * features.loss()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item()
                advance()
        score = evaluate_torch(model, val, metric) if val and metric else None
        history.append(epoch_record(epoch, total / max(len(train), 1), score, schedule, timer.seconds))
        log(f"{label} epoch {epoch}/{options.epochs}: loss {total / max(len(train), 1):.4f}"
            f"{'' if score is None else f', val {score:.2f}'} ({timer.seconds:.1f} s, {device.type})")
        if score is not None and (best is None or score > best):
            best, stale = score, 0
            if options.patience:
                best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
        _save(options.checkpoint, start_digest, epoch, best, stale, best_state, model, optimizer, schedule, features,
              history)
        if options.patience and stale >= options.patience:
            log(f"{label}: early stop after epoch {epoch}: no better val score for {stale} epochs (best {best:.2f})")
            break
    if options.patience and best_state is not None:
        model.load_state_dict(best_state)
        log(f"{label}: kept the weights with the best val score ({best:.2f})")
    if features:
        features.close()
    if options.checkpoint and Path(options.checkpoint).exists():
        Path(options.checkpoint).unlink()  # finished: nothing to resume
    if teacher is not None:
        teacher.to("cpu")
    return model.to("cpu").eval()


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
