"""Distillation options: intermediate features, early stopping, resuming an interrupted run."""
import copy

import pytest
import torch

from edgeslim.compress.train import FitOptions, evaluate_torch, fit
from edgeslim.core.errors import ConfigError
from edgeslim.core.metrics import top1
from edgeslim.core.model_io import load_model
from edgeslim.core.specs import load_data
from helpers import spec


@pytest.fixture(scope="module")
def data():
    return load_data(spec("digits"))


@pytest.fixture
def progress_on():
    """These tests read the progress lines; a CLI test run before with --quiet turns them off."""
    from edgeslim.core.progress import set_quiet

    set_quiet(False)
    yield
    set_quiet(False)


def _teacher_and_student(weights):
    teacher = load_model(spec("small_cnn"), weights["cnn"])
    student = load_model(spec("small_cnn"))
    student.body[3] = torch.nn.Conv2d(32, 64, 3, padding=1)  # same names, fresh weights
    return teacher, student


def test_feature_distillation_trains_adapters_to_the_teacher(weights, data):
    teacher, _ = _teacher_and_student(weights)
    from edgeslim.build import StepContext
    from edgeslim.compress import apply_step, make_step

    ctx = StepContext(data=data, teacher=teacher, metric=top1, example_inputs=data.sample_inputs(), candidate="f")
    pruned = apply_step(copy.deepcopy(teacher), make_step("prune", {"ratio": 0.5, "round_to": 4}), ctx)
    assert pruned.body[3].out_channels < teacher.body[3].out_channels  # widths differ: adapters needed
    student = apply_step(pruned, make_step("distill", {"epochs": 3, "features": ["body.5", "body.8"],
                                                       "resume": False}), ctx)
    assert evaluate_torch(student, data.val, top1) > 90.0
    with pytest.raises(ConfigError, match="not a module of the model"):
        apply_step(copy.deepcopy(pruned), make_step("distill", {"epochs": 1, "features": ["nope"]}), ctx)


def test_auto_features_are_the_blocks_whose_output_keeps_its_shape():
    from edgeslim.compress.distill import matching_blocks

    class Blocks(torch.nn.Module):
        def __init__(self, hidden):
            super().__init__()
            self.blocks = torch.nn.ModuleList([torch.nn.Linear(4, hidden), torch.nn.Linear(hidden, 4)])

        def forward(self, x):
            return self.blocks[1](self.blocks[0](x))

    # the first block's width was pruned (8 -> 6): only the second still gives the teacher's shape
    assert matching_blocks(Blocks(6), Blocks(8), torch.zeros(2, 4)) == ["blocks.1"]
    cnn = load_model(spec("small_cnn"))  # a Sequential, no ModuleList: nothing to match
    assert matching_blocks(cnn, copy.deepcopy(cnn), torch.zeros(1, 1, 8, 8)) == []


@pytest.mark.slow  # a pruned BertModel distilled for one epoch
def test_compress_distills_a_pruned_bert_layer_by_layer(cli, tmp_path):
    import json
    from pathlib import Path

    real = Path(__file__).resolve().parents[1] / "fixtures" / "real_arch.py"
    result = cli("compress", "--model", f"{real}:sentence_encoder", "--data", f"{real}:tokens", "--metric",
                 f"{real}:output_scale", "--prune", "0.5", "--epochs", "1", "--distill-features", "auto",
                 "--out", tmp_path / "b")
    assert result.exit_code == 0, result.stderr
    metrics = json.loads((tmp_path / "b" / "manifest.json").read_text())["metrics"]
    assert metrics["distill_features"] == ["bert.encoder.layer.0", "bert.encoder.layer.1"]
    assert metrics["distill_run"]["teacher"] == "live"  # the layers' outputs are not in the teacher cache


def test_early_stopping_keeps_the_best_epoch(weights, data, capsys, progress_on):
    teacher, student = _teacher_and_student(weights)
    history = []
    fit(student, data.train, FitOptions(epochs=30, lr=3e-3, patience=2), "es", teacher=teacher, val=data.val,
        metric=top1, history=history)
    err = capsys.readouterr().err
    assert "early stop after epoch" in err and "epoch 30/30" not in err
    best = max(float(line.split(", val ")[1].split(" ")[0]) for line in err.splitlines() if ", val " in line)
    assert evaluate_torch(student, data.val, top1) == pytest.approx(best, abs=0.005)  # the log rounds to 2 places
    assert [row["epoch"] for row in history] == list(range(1, len(history) + 1)) and 3 <= len(history) < 30
    assert max(row["val"] for row in history) == pytest.approx(best, abs=0.005)
    assert history[-1]["loss"] < history[0]["loss"] and all(row["seconds"] > 0 for row in history)


class Interrupting(torch.nn.Module):
    """Wraps a model and raises after a number of training calls, as a killed job would stop."""

    def __init__(self, inner, calls):
        super().__init__()
        self.inner, self.calls = inner, calls

    def forward(self, x):
        if self.training:
            self.calls -= 1
            if self.calls < 0:
                raise KeyboardInterrupt
        return self.inner(x)


def test_an_interrupted_run_resumes_from_its_last_checkpoint(weights, data, tmp_path, capsys, progress_on):
    teacher, student = _teacher_and_student(weights)
    start = copy.deepcopy(student.state_dict())
    options = FitOptions(epochs=4, lr=1e-3, checkpoint=tmp_path / "ckpt.pt")
    uninterrupted = copy.deepcopy(student)
    fit(uninterrupted, data.train, FitOptions(epochs=4, lr=1e-3), "full", teacher=teacher)

    flaky = Interrupting(student, calls=2 * len(data.train) + 3)  # dies inside epoch 3
    with pytest.raises(KeyboardInterrupt):
        fit(flaky, data.train, options, "cut", teacher=teacher)
    assert (tmp_path / "ckpt.pt").is_file()

    resumed = load_model(spec("small_cnn"))
    resumed.body[3] = torch.nn.Conv2d(32, 64, 3, padding=1)
    resumed.load_state_dict(start)  # the same starting weights: the checkpoint belongs to this run
    wrapped = Interrupting(resumed, calls=10**9)
    history = []
    fit(wrapped, data.train, options, "again", teacher=teacher, history=history)
    err = capsys.readouterr().err
    assert "again: resumed from" in err and "after epoch 2" in err and "again epoch 3/4" in err
    assert "again epoch 1/4" not in err
    assert [row["epoch"] for row in history] == [1, 2, 3, 4]  # the epochs before the cut came with the checkpoint
    assert history[-1]["lr"] < history[0]["lr"]  # one-cycle schedule: annealed by the end
    assert not (tmp_path / "ckpt.pt").exists()
    for name, value in uninterrupted.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[name], value, rtol=1e-4, atol=1e-5)
