"""Distillation's loss fits the output: KL for class logits, per-step KL for sequence logits, cosine for
embeddings; chosen from the output's shape and the labels, or named; unlabelled data distills."""
import copy

import numpy as np
import pytest
import torch
from torch import nn

from edgeslim.compress.distill_losses import LOSS_CHOICES, choose_loss, cosine_loss, kl_loss, mse_loss, sequence_kl_loss
from edgeslim.core.errors import ConfigError
from helpers import assert_one_sentence

CLASS_LABELS = [np.array([0, 3, 9, 1])]
FLOAT_TARGETS = [np.zeros((4, 16), np.float32)]


def cosine_similarity(student, teacher):
    return 1.0 - cosine_loss(student, teacher).item()


@pytest.mark.parametrize("asked, shape, labels, metric, chosen", [
    ("auto", (4, 10), CLASS_LABELS, None, "kl"),
    ("auto", (4, 10), [None], None, "cosine"),                          # no labels: an embedding
    ("auto", (4, 16), FLOAT_TARGETS, None, "cosine"),                   # float targets: not class indices
    ("auto", (4, 8), CLASS_LABELS, None, "cosine"),                     # 9 is no class of 8
    ("auto", (4, 10), CLASS_LABELS, "cosine_to_fp32", "cosine"),        # the metric is a similarity
    ("auto", (20, 4, 11), [np.array([[1, 2, 3], [4, 5, 0]])], None, "sequence_kl"),  # (T, N, C) with CTC targets
    ("auto", (20, 4, 11), CLASS_LABELS, None, "sequence_kl"),
    ("auto", (4, 10), [np.array([[1, 2], [3, 4]])], None, "cosine"),    # several indices a sample: no class logits
    ("auto", (4, 20, 32), [None], None, "cosine"),                      # token features, unlabelled
    ("auto", (4,), [None], None, "mse"),
    ("auto", (4, 8, 6, 6), CLASS_LABELS, None, "mse"),                  # feature maps
    ("mse", (4, 10), CLASS_LABELS, None, "mse"),
    ("kl", (4, 10), [None], None, "kl"),                                # unlabelled logits: the teacher's only
])
def test_the_loss_is_chosen_from_the_output_shape_and_the_labels(asked, shape, labels, metric, chosen):
    def named(outputs, targets):
        return 0.0

    named.__name__ = metric or "top1"
    assert choose_loss(asked, shape, labels, named)[0] == chosen


@pytest.mark.parametrize("asked, shape, labels, fragment", [
    ("kl", (4, 16), FLOAT_TARGETS, "distill loss 'kl' compares class distributions"),
    ("kl", (20, 4, 11), [None], "has shape (20, 4, 11)"),
    ("kl", (4, 10), [np.array([[1, 2], [3, 4]])], "sequences of class-index labels"),
    ("sequence_kl", (20, 4, 11), [np.array([0.5, 1.0])], "float64 labels, not class indices"),
    ("sequence_kl", (4, 10), CLASS_LABELS, "distill loss 'sequence_kl'"),
    ("cosine", (4, 1), [None], "use loss 'mse'"),
])
def test_a_loss_that_does_not_fit_the_output_is_one_sentence(asked, shape, labels, fragment):
    with pytest.raises(ConfigError, match="^[^\n]*$") as caught:
        choose_loss(asked, shape, labels)
    assert fragment in str(caught.value)


def test_each_loss_is_zero_for_the_teacher_s_own_outputs_and_positive_otherwise():
    torch.manual_seed(0)
    logits, other = torch.randn(4, 10), torch.randn(4, 10)
    sequence, other_sequence = torch.randn(7, 4, 10), torch.randn(7, 4, 10)
    assert kl_loss(logits, logits, 4.0).item() == pytest.approx(0.0, abs=1e-6)
    assert kl_loss(other, logits, 4.0).item() > 0.01
    assert sequence_kl_loss(sequence, sequence, 2.0).item() == pytest.approx(0.0, abs=1e-6)
    assert sequence_kl_loss(other_sequence, sequence, 2.0).item() > 0.01
    assert cosine_loss(logits, logits).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_loss(2.0 * logits, logits).item() == pytest.approx(0.0, abs=1e-6)  # scale does not matter
    assert cosine_loss(-logits, logits).item() == pytest.approx(2.0)
    assert cosine_loss(other, logits).item() > 0.1
    assert mse_loss(logits, logits).item() == 0.0
    assert mse_loss(logits + 1.0, logits).item() == pytest.approx(1.0)


def test_sequence_kl_is_the_mean_of_each_step_s_kl():
    torch.manual_seed(1)
    student, teacher = torch.randn(5, 3, 6), torch.randn(5, 3, 6)
    steps = [kl_loss(student[t], teacher[t], 2.0).item() for t in range(5)]
    assert sequence_kl_loss(student, teacher, 2.0).item() == pytest.approx(np.mean(steps), rel=1e-5)


def test_the_cli_choices_are_the_config_s():
    from edgeslim.plan import DISTILL_LOSSES

    assert DISTILL_LOSSES == LOSS_CHOICES


class Encoder(nn.Module):
    """A sentence-encoder stand-in: features in, a (N, 16) embedding out."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(12, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 16))

    def forward(self, x):
        return self.body(x)


class TimeMajor(nn.Module):
    """A CTC-style head: (N, T, F) in, per-step class scores out, time-major (T, N, C)."""

    def __init__(self, classes=7):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Linear(32, classes))

    def forward(self, x):
        return self.body(x).permute(1, 0, 2)


def _context(teacher, train, metric=None):
    from edgeslim.build import StepContext
    from edgeslim.core.data import DataSplits

    data = DataSplits.from_mapping({"train": train})
    return StepContext(data=data, teacher=teacher, metric=metric, example_inputs=data.sample_inputs(),
                       candidate="t")


def _features(count, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((32, 12)).astype(np.float32) for _ in range(count)]


def test_an_unlabelled_embedding_model_distills_with_cosine_towards_its_teacher():
    from edgeslim.compress import apply_step, make_step

    torch.manual_seed(0)
    teacher = Encoder().eval()
    ctx = _context(teacher, [(x,) for x in _features(8, 0)])  # (inputs,) batches: no labels at all
    pruned = apply_step(copy.deepcopy(teacher), make_step("prune", {"ratio": 0.5, "round_to": 4}), ctx)
    assert pruned.body[2].out_features < 64
    held_out = torch.as_tensor(np.concatenate(_features(2, 1)))
    with torch.no_grad():
        before = cosine_similarity(pruned(held_out), teacher(held_out))
    student = apply_step(pruned, make_step("distill", {"epochs": 4, "lr": 3e-3, "resume": False}), ctx)
    with torch.no_grad():
        after = cosine_similarity(student(held_out), teacher(held_out))
    assert ctx.records["distill_loss"] == {"loss": "cosine", "asked": "auto", "why": ctx.records["distill_loss"]["why"]}
    assert "no labels" in ctx.records["distill_loss"]["why"]
    assert after > before + 0.05 and after > 0.9, (before, after)


def test_float_targets_distill_an_embedding_and_kl_on_it_fails_before_training():
    from edgeslim.compress import apply_step, make_step

    torch.manual_seed(0)
    teacher = Encoder().eval()
    targets = np.zeros((32, 16), np.float32)
    ctx = _context(teacher, [(x, targets) for x in _features(2, 0)])
    student = copy.deepcopy(teacher)
    apply_step(student, make_step("distill", {"epochs": 1, "resume": False}), ctx)
    assert ctx.records["distill_loss"]["loss"] == "cosine"
    start = copy.deepcopy(student.state_dict())
    with pytest.raises(ConfigError, match="distill loss 'kl'.*float32 labels, not class indices"):
        apply_step(student, make_step("distill", {"epochs": 1, "loss": "kl", "resume": False}), ctx)
    assert all(torch.equal(value, student.state_dict()[name]) for name, value in start.items())  # not trained


def test_a_time_major_output_distills_with_sequence_kl():
    from edgeslim.compress import apply_step, make_step

    torch.manual_seed(0)
    teacher = TimeMajor().eval()
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((4, 10, 6)).astype(np.float32) for _ in range(6)]
    ctx = _context(teacher, [(x, rng.integers(1, 7, (4, 5))) for x in inputs])  # padded CTC targets
    student = TimeMajor().eval()  # another start: far from the teacher
    probe = torch.as_tensor(inputs[0])
    with torch.no_grad():
        assert student(probe).shape == (10, 4, 7)
        before = sequence_kl_loss(student(probe), teacher(probe), 1.0).item()
    apply_step(student, make_step("distill", {"epochs": 3, "lr": 1e-2, "resume": False}), ctx)
    with torch.no_grad():
        after = sequence_kl_loss(student(probe), teacher(probe), 1.0).item()
    assert ctx.records["distill_loss"]["loss"] == "sequence_kl"
    assert after < 0.5 * before, (before, after)


def test_a_loss_that_does_not_fit_is_one_sentence_and_exit_2_through_the_cli(cli, tmp_path):
    result = cli("compress", "--model", "edgeslim.demo:digits_cnn", "--data", "edgeslim.demo:digits_data",
                 "--prune", "0.5", "--distill", "--distill-loss", "sequence_kl", "--epochs", "1",
                 "--out", tmp_path / "b")
    assert_one_sentence(result, "distill loss 'sequence_kl' compares class distributions at each time step")
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_a_recipe_names_the_loss_and_a_sweep_passes_it_on():
    from edgeslim.recipe import recipe_from_dict

    recipe = recipe_from_dict({"model": "m.py:f", "data": "d.py:f",
                               "candidates": [{"name": "kd", "steps": [{"prune": {"ratio": 0.5}},
                                                                       {"distill": {"loss": "cosine"}}]}]})
    assert recipe.candidates[0].steps[1].loss == "cosine"
    swept = recipe_from_dict({"model": "m.py:f", "data": "d.py:f",
                              "sweep": {"prune": [0.5], "distill": {"loss": "sequence_kl"}}})
    assert [step.loss for c in swept.candidates for step in c.steps if step.name == "distill"] == ["sequence_kl"]
    with pytest.raises(ConfigError, match="option 'loss' must be 'auto' or 'kl'"):
        recipe_from_dict({"model": "m.py:f", "data": "d.py:f",
                          "candidates": [{"name": "kd", "steps": [{"distill": {"loss": "hinge"}}]}]})
