"""The fine-tuning loop shared by teacher training and distillation."""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from edgeslim.progress import Timer, log


@dataclass
class FitOptions:
    epochs: int
    lr: float
    weight_decay: float = 1e-4
    temperature: float = 4.0
    alpha: float = 0.7          # weight of the distillation term against the label loss
    seed: int = 0
    device: str = "auto"        # cuda when a GPU is there; the model comes back on the CPU


def first_output(outputs):
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def distillation_loss(student_logits, teacher_logits, labels, options: FitOptions):
    """Hinton's KD: KL between softened distributions (scaled by T^2) blended with cross-entropy."""
    import torch.nn.functional as F

    hard = F.cross_entropy(student_logits, labels)
    if teacher_logits is None:
        return hard
    t = options.temperature
    soft = F.kl_div(F.log_softmax(student_logits / t, dim=1), F.softmax(teacher_logits / t, dim=1),
                    reduction="batchmean") * (t * t)
    return options.alpha * soft + (1.0 - options.alpha) * hard


def evaluate_torch(model, batches, metric) -> float:
    import torch

    from edgeslim.compress.model_io import run_model
    from edgeslim.data import to_numpy

    model.eval()
    device = next(model.parameters()).device
    outputs, labels = [], []
    with torch.no_grad():
        for inputs, target in batches:
            outputs.append(to_numpy(first_output(run_model(model, inputs, device))))
            labels.append(to_numpy(target))
    return float(metric(np.concatenate(outputs), np.concatenate(labels)))


def fit(model, train, options: FitOptions, label: str, teacher=None, val=None, metric=None):
    """Train `model` on (inputs, labels) batches; with a teacher, by knowledge distillation."""
    import torch

    from edgeslim.compress.model_io import run_model, training_device

    device = training_device(options.device)
    model.to(device)
    if teacher is not None:
        teacher.to(device)
    torch.manual_seed(options.seed)
    order = random.Random(options.seed)
    steps = options.epochs * len(train)
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.lr, weight_decay=options.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=options.lr, total_steps=max(steps, 1))
    if teacher is not None:
        teacher.eval()
    for epoch in range(1, options.epochs + 1):
        with Timer() as timer:
            model.train()
            total = 0.0
            for inputs, target in order.sample(train, len(train)):
                logits = first_output(run_model(model, inputs, device))
                teacher_logits = None
                if teacher is not None:
                    with torch.no_grad():
                        teacher_logits = first_output(run_model(teacher, inputs, device))
                labels = torch.as_tensor(target).long().to(device)
                loss = distillation_loss(logits, teacher_logits, labels, options)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                total += loss.item()
        score = f", val {evaluate_torch(model, val, metric):.2f}" if val and metric else ""
        log(f"{label} epoch {epoch}/{options.epochs}: loss {total / max(len(train), 1):.4f}{score} "
            f"({timer.seconds:.1f} s, {device.type})")
    if teacher is not None:
        teacher.to("cpu")
    return model.to("cpu").eval()
