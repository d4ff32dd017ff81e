"""Distillation losses that fit the model's output, and the choice of one.

Softened KL for class logits `(N, C)`, KL per time step for sequence logits (`(T, N, C)` or
`(N, T, C)`, classes last), cosine for embeddings `(N, D)`, mean squared error for other features.
With `loss: auto` the output's shape and the train labels decide: labels that are class indices
below the output's last size make it logits; no labels, or labels that are not class indices (float
targets), or a similarity metric make it an embedding. The teacher's outputs are always the targets,
so unlabelled data distills; labels only add the cross-entropy term of `kl`.
"""
from __future__ import annotations

import numpy as np

from edgeslim.core.errors import ConfigError
from edgeslim.core.metrics import metric_name

LOSSES = ("kl", "sequence_kl", "cosine", "mse")
LOSS_CHOICES = ("auto", *LOSSES)
SIMILARITY_WORDS = ("cos", "similar")


def kl_loss(student, teacher, temperature: float):
    """Hinton's KD: KL between the softened class distributions (last axis), scaled by T^2."""
    import torch.nn.functional as F

    t = temperature
    return F.kl_div(F.log_softmax(student / t, dim=-1), F.softmax(teacher / t, dim=-1),
                    reduction="batchmean") * (t * t)


def sequence_kl_loss(student, teacher, temperature: float):
    """KL of each time step's softened class distribution (classes last), averaged over steps and samples."""
    classes = student.shape[-1]
    return kl_loss(student.reshape(-1, classes), teacher.reshape(-1, classes), temperature)


def cosine_loss(student, teacher, temperature: float = 1.0):
    """1 - cosine similarity along the last axis, averaged: 0 where the embeddings point the same way."""
    import torch.nn.functional as F

    return (1.0 - F.cosine_similarity(student, teacher, dim=-1)).mean()


def mse_loss(student, teacher, temperature: float = 1.0):
    import torch.nn.functional as F

    return F.mse_loss(student, teacher)


LOSS_FUNCTIONS = {"kl": kl_loss, "sequence_kl": sequence_kl_loss, "cosine": cosine_loss, "mse": mse_loss}


def describe_labels(labels: list, classes: int) -> tuple[str, str]:
    """What the train labels are, as (kind, words): kind 'none', 'classes' (one integer index in
    [0, classes) per sample), 'sequences' (several per sample, as CTC targets) or 'other'; `labels`
    holds each batch's labels (None for an unlabelled batch)."""
    try:
        given = [np.asarray(label.detach().cpu() if hasattr(label, "detach") else label)
                 for label in labels if label is not None]
    except ValueError:  # ragged: not one array per batch
        return "other", "labels that are not arrays"
    given = [array for array in given if array.size]
    if not given:
        return "none", "no labels"
    if not {array.dtype.kind for array in given} <= {"i", "u"}:
        return "other", f"{given[0].dtype} labels, not class indices"
    low, high = min(int(array.min()) for array in given), max(int(array.max()) for array in given)
    if low < 0 or high >= classes:
        return "other", f"integer labels from {low} to {high}, not class indices below {classes}"
    if any(array.ndim != 1 for array in given):
        return "sequences", f"sequences of class-index labels below {classes}"
    return "classes", f"class-index labels below {classes}"


def is_similarity(metric) -> bool:
    name = metric_name(metric).lower() if metric is not None else ""
    return any(word in name for word in SIMILARITY_WORDS)


def choose_loss(asked: str, shape: tuple, labels: list, metric=None) -> tuple[str, str]:
    """The loss for an output of `shape` (one batch's) and these train labels, with the reason:
    `asked` unless it is 'auto'. A loss that does not fit the output is a ConfigError."""
    shape = tuple(int(size) for size in shape)
    kind, words = describe_labels(labels, shape[-1] if shape else 0)
    if asked == "auto":
        loss, reason = _auto(shape, kind, words, metric)
    else:
        loss, reason = asked, "named in the config"
    _check_fits(loss, shape, kind, words)
    return loss, reason


def _auto(shape: tuple, kind: str, words: str, metric) -> tuple[str, str]:
    dims = len(shape)
    if dims in (2, 3) and shape[-1] > 1 and is_similarity(metric):
        return "cosine", f"output {shape}, and the metric {metric_name(metric)!r} is a similarity"
    if dims == 2 and kind == "classes":
        return "kl", f"output {shape} with {words}: class logits"
    if dims == 3 and kind in ("classes", "sequences"):
        return "sequence_kl", f"output {shape} with {words}: sequence logits"
    if dims in (2, 3) and shape[-1] > 1:
        return "cosine", f"output {shape} with {words}: embeddings"
    return "mse", f"output {shape}: features"


def _check_fits(loss: str, shape: tuple, kind: str, words: str) -> None:
    dims = len(shape)
    if loss == "kl" and (dims != 2 or kind not in ("none", "classes")):
        raise ConfigError(f"distill loss 'kl' compares class distributions of (batch, classes) logits, but the "
                          f"model's output has shape {shape} and the train data has {words}; use loss 'cosine' or "
                          "'mse' for embeddings and features, 'sequence_kl' for sequence logits, or 'auto'")
    if loss == "sequence_kl" and (dims != 3 or kind == "other"):
        raise ConfigError(f"distill loss 'sequence_kl' compares class distributions at each time step of 3-D "
                          f"logits, but the model's output has shape {shape} and the train data has {words}; "
                          "use loss 'kl' for (batch, classes) logits, 'cosine' or 'mse' for embeddings, or 'auto'")
    if loss == "cosine" and (dims < 2 or shape[-1] < 2):
        raise ConfigError(f"distill loss 'cosine' compares vectors along the output's last axis, but the model's "
                          f"output has shape {shape}; use loss 'mse' or 'auto'")
