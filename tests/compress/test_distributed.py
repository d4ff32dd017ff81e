"""Distillation under torchrun: 2 gloo ranks train what one process trains on the same effective batch;
the cached teacher gives the same student as the live one; a killed rank ends the job with one sentence."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from helpers import ZOO, spec, wait_for_text

FIT = Path(__file__).parents[1] / "fixtures" / "ddp_fit.py"


def _torchrun(*args, ranks=2, env=None, **popen):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", *args]
    return subprocess.Popen([str(a) for a in command], env={**os.environ, **(env or {})}, text=True, **popen)


def _fit_models():
    """tests/fixtures/ddp_fit_models.py, which the torchrun child imports beside itself."""
    sys.path.insert(0, str(FIT.parent))
    try:
        import ddp_fit_models
    finally:
        sys.path.pop(0)
    return ddp_fit_models


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from edgeslim.compress.train import FitOptions, fit
    from edgeslim.core.specs import load_data

    ddp_fit_models = _fit_models()
    model = ddp_fit_models.mlp(0)
    data = load_data(spec("digits"))
    fit(model, ddp_fit_models.rebatched(data.train, 64), FitOptions(epochs=10, lr=1e-2), "teacher")
    path = tmp_path_factory.mktemp("ddp") / "teacher.pt"
    torch.save(model.state_dict(), path)
    return path


def _student(tmp_path, teacher, name, rows, cache, ranks, env=None, fails=False):
    out = tmp_path / name
    if ranks == 1:
        done = subprocess.run([sys.executable, FIT, ZOO, teacher, out, str(rows), cache], capture_output=True,
                              text=True, timeout=300, env={**os.environ, **(env or {})})
    else:
        job = _torchrun(FIT, ZOO, teacher, out, rows, cache, ranks=ranks, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE, env=env)
        stdout, stderr = job.communicate(timeout=300)
        done = subprocess.CompletedProcess(job.args, job.returncode, stdout, stderr)
    if fails:
        assert done.returncode != 0
        return None, None
    assert done.returncode == 0, done.stderr[-2000:]
    return torch.load(f"{out}.pt"), json.loads(Path(f"{out}.json").read_text())["accuracy"]


@pytest.mark.slow
def test_two_gloo_ranks_train_what_one_process_trains_on_the_same_effective_batch(tmp_path, teacher):
    alone, alone_accuracy = _student(tmp_path, teacher, "alone", 128, "off", ranks=1)
    ranked, ranked_accuracy = _student(tmp_path, teacher, "ranked", 64, "off", ranks=2)
    for name, value in alone.items():
        torch.testing.assert_close(ranked[name], value, rtol=0, atol=1e-5)  # 8 epochs of 11 steps: the same
    assert abs(ranked_accuracy - alone_accuracy) <= 0.5
    assert alone_accuracy > 85.0  # it did learn


@pytest.mark.slow
def test_each_rank_caches_its_own_teacher_outputs_and_trains_the_same(tmp_path, teacher):
    live, _ = _student(tmp_path, teacher, "live", 64, "off", ranks=2)
    cached, _ = _student(tmp_path, teacher, "cached", 64, "on", ranks=2)
    for name, value in live.items():
        torch.testing.assert_close(cached[name], value, rtol=0, atol=1e-6)


@pytest.mark.slow
def test_a_job_cut_off_resumes_on_every_rank_from_rank_0s_checkpoint(tmp_path, teacher):
    whole, _ = _student(tmp_path, teacher, "whole", 64, "off", ranks=2)
    checkpoint = tmp_path / "ckpt.pt"
    _student(tmp_path, teacher, "cut", 64, "off", ranks=2, fails=True,
             env={"DDP_CHECKPOINT": str(checkpoint), "DDP_DIE_AFTER": str(11 * 3 + 5)})  # inside epoch 4
    assert checkpoint.is_file()
    assert torch.load(checkpoint, weights_only=False)["epoch"] == 3
    resumed, _ = _student(tmp_path, teacher, "resumed", 64, "off", ranks=2, env={"DDP_CHECKPOINT": str(checkpoint)})
    for name, value in whole.items():
        torch.testing.assert_close(resumed[name], value, rtol=0, atol=1e-5)
    assert not checkpoint.exists()  # finished: nothing left to resume


@pytest.mark.slow
def test_torchrun_compress_writes_one_bundle_and_a_killed_rank_stops_the_job(tmp_path, weights):
    common = ["-m", "edgeslim", "compress", "--model", spec("small_cnn"), "--weights", weights["cnn"],
              "--data", spec("digits"), "--prune", "0.5", "--distill"]
    job = _torchrun(*common, "--epochs", "3", "--out", tmp_path / "two", stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE)
    stdout, stderr = job.communicate(timeout=300)
    assert job.returncode == 0, stderr[-2000:]
    assert stdout.count("wrote ") == 1 and "2 ranks (gloo)" in stderr  # rank 0 alone writes and prints
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["metrics"]["distill_run"] == {"ranks": 2, "backend": "gloo", "precision": "fp32",
                                                  "teacher": "cached"}
    assert manifest["metrics"]["accuracy"] > 90.0

    log = tmp_path / "killed.log"
    with open(log, "w") as sink:
        job = _torchrun(*common, "--epochs", "2000", "--out", tmp_path / "killed", stdout=subprocess.DEVNULL,
                        stderr=sink)
        rank_one = _wait_for_rank(job.pid, 1)
        wait_for_text(log, "distill epoch 2/2000", 120.0)  # well into training
        os.kill(rank_one, signal.SIGKILL)
        killed = time.monotonic()
        job.wait(timeout=120)
    stderr = log.read_text()
    assert job.returncode != 0 and time.monotonic() - killed < 60
    sentences = [line for line in stderr.splitlines() if line.startswith("edgeslim: ")]
    assert len(sentences) == 1 and "another rank stopped during killed: distill epoch" in sentences[0], stderr[-3000:]
    assert not (tmp_path / "killed").exists()


def _wait_for_rank(launcher: int, rank: int, timeout: float = 120.0) -> int:
    """The pid of the torchrun worker with RANK=`rank` among the launcher's children."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for child in Path(f"/proc/{launcher}/task/{launcher}/children").read_text().split():
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            if f"RANK={rank}".encode() in environ:
                return int(child)
        time.sleep(0.2)
    raise AssertionError(f"no rank {rank} appeared")


def test_the_cached_teacher_trains_the_same_student_as_the_live_one_and_cleans_up(tmp_path, monkeypatch):
    import copy

    from edgeslim.compress.train import FitOptions, fit
    from edgeslim.core.specs import load_data

    monkeypatch.setenv("EDGESLIM_CACHE", str(tmp_path))
    ddp_fit_models = _fit_models()
    data = load_data(spec("digits"))
    batches = ddp_fit_models.rebatched(data.train, 64)
    teacher, student = ddp_fit_models.mlp(0), ddp_fit_models.mlp(1)
    fit(teacher, batches, FitOptions(epochs=2, lr=1e-2), "teacher")
    runs = {}
    for cache in ("off", "on"):
        facts: dict = {}
        runs[cache] = fit(copy.deepcopy(student), batches, FitOptions(epochs=3, lr=5e-3, teacher_cache=cache),
                          cache, teacher=teacher, facts=facts)
        assert facts["teacher"] == {"off": "live", "on": "cached"}[cache] and facts["precision"] == "fp32"
    for name, value in runs["off"].state_dict().items():
        torch.testing.assert_close(runs["on"].state_dict()[name], value, rtol=0, atol=1e-6)
    assert not any((tmp_path / "teacher").iterdir())  # finished: the cache went with it


def test_auto_caches_from_two_epochs_and_never_with_feature_matching():
    from edgeslim.compress.teacher_cache import wanted

    assert [wanted("auto", epochs, False) for epochs in (1, 2, 10)] == [False, True, True]
    assert not wanted("on", 10, True) and not wanted("off", 10, False) and wanted("on", 1, False)
