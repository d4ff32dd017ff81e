"""Shared fixtures: trained test models (real torch on real digits), built bundles, a CLI runner."""
import os

import pytest
from click.testing import CliRunner

from helpers import ARCHITECTURES, spec


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory):
    os.environ["EDGESLIM_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ["EDGESLIM_HISTORY"] = str(tmp_path_factory.mktemp("history"))  # runs record here, not in the repo


@pytest.fixture(scope="session")
def weights(tmp_path_factory):
    """Trained weights of each test architecture, trained once per session."""
    import torch

    from edgeslim.compress.train import FitOptions, fit
    from edgeslim.core.model_io import load_model
    from edgeslim.core.specs import load_data

    folder = tmp_path_factory.mktemp("weights")
    data = load_data(spec("digits"))
    paths = {}
    for arch, (factory, epochs, lr) in ARCHITECTURES.items():
        # The initial weights come from torch's global generator, whose state here depends on every test that
        # ran before this fixture: seed it, or a run can draw a teacher that distils worse (87.8 against 96-99).
        torch.manual_seed(0)
        model = load_model(spec(factory))
        fit(model, data.train, FitOptions(epochs=epochs, lr=lr), label=f"train {arch}")
        paths[arch] = folder / f"{arch}.pt"
        torch.save(model.state_dict(), paths[arch])
    return paths


class Cli:
    """Runs `edgeslim` in-process; stdout and stderr kept apart."""

    def __init__(self):
        from edgeslim.cli import main

        self.main = main

    def __call__(self, *args):
        runner = CliRunner()
        return runner.invoke(self.main, ["--quiet", *[str(a) for a in args]])


@pytest.fixture(scope="session")
def cli():
    return Cli()


@pytest.fixture(scope="session")
def cnn_bundles(tmp_path_factory, weights, cli):
    """fp32 and int8 bundles of the small CNN, built through the CLI."""
    folder = tmp_path_factory.mktemp("cnn")
    common = ["--model", spec("small_cnn"), "--weights", weights["cnn"], "--data", spec("digits")]
    result = cli("export", *common, "--out", folder / "fp32")
    assert result.exit_code == 0, result.stderr
    # The nncf form pinned: tests here check its QDQ graph; the auto choice has tests of its own.
    result = cli("compress", *common, "--quantize", "int8", "--int8-backend", "nncf", "--out", folder / "int8")
    assert result.exit_code == 0, result.stderr
    return {"fp32": folder / "fp32", "int8": folder / "int8"}



@pytest.fixture(scope="session")
def demo_run(cli, tmp_path_factory):
    """`edgeslim run` on the embedded demo's four candidates (fp32, int8, pruned-kd, pruned-kd-int8), made
    quick: the small CNN trained as tests/test_run.py trains it (so the session's cache has it once), two
    epochs of distillation, 30 timed runs. Returns the output folder (report.json and the bundles)."""
    import yaml

    prune, distill = {"prune": {"ratio": 0.5, "round_to": 4}}, {"distill": {"epochs": 2}}
    recipe = {"model": spec("small_cnn"), "data": spec("digits_torch"), "train": {"epochs": 3, "lr": 0.003},
              "devices": ["cpu"], "baseline": "fp32", "bench": {"runs": 30, "warmup": 3},
              "candidates": [{"name": "fp32"}, {"name": "int8", "steps": ["int8"]},
                             {"name": "pruned-kd", "steps": [prune, distill]},
                             {"name": "pruned-kd-int8", "steps": [prune, distill, "int8"]}]}
    folder = tmp_path_factory.mktemp("demo-run")
    (folder / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    result = cli("run", folder / "recipe.yaml", "--out", folder / "out")
    assert result.exit_code == 0, result.stderr
    return folder / "out"


@pytest.fixture(scope="session")
def untrained(cli, tmp_path_factory):
    """A bundle of the small CNN as initialised: error paths need no trained weights."""
    out = tmp_path_factory.mktemp("untrained") / "fp32"
    result = cli("export", "--model", spec("small_cnn"), "--data", spec("digits"), "--out", out)
    assert result.exit_code == 0, result.stderr
    return out


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 (installed if missing), stopped after the session."""
    from sshd import LoopbackSshd, ensure_installed

    reason = ensure_installed()
    if reason:
        pytest.skip(reason)
    server = LoopbackSshd(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def torch_free_python(tmp_path_factory):
    """A Python that holds numpy, onnxruntime and the torch-free part of edgeslim, nothing else.

    Returned as a wrapper script, as a device would have `python3` with edgeslim installed.
    """
    import subprocess
    import sys

    from helpers import REPO, copy_checkout

    root = tmp_path_factory.mktemp("torch-free")
    subprocess.run([sys.executable, "-m", "venv", root / "venv"], check=True)
    install = subprocess.run([root / "venv" / "bin" / "python", "-m", "pip", "install", "-q", "-c",
                              REPO / "constraints.txt", "numpy", "onnxruntime"], capture_output=True, text=True)
    if install.returncode != 0:
        pytest.fail(f"could not install numpy and onnxruntime: {install.stderr[-500:]}")
    # edgeslim itself, installed from a wheel of this checkout as a device would install it,
    # without its dependencies: only numpy and onnxruntime are there beside it.
    wheels = root / "wheels"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                            "-w", wheels, copy_checkout(root / "tree")], capture_output=True, text=True)
    if built.returncode != 0:
        pytest.fail(f"could not build edgeslim's wheel: {built.stderr[-500:]}")
    install = subprocess.run([root / "venv" / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps",
                              *wheels.glob("edgeslim-*.whl")], capture_output=True, text=True)
    if install.returncode != 0:
        pytest.fail(f"could not install edgeslim's wheel: {install.stderr[-500:]}")
    wrapper = root / "python"
    wrapper.write_text(f"#!/bin/sh\nexec {root / 'venv' / 'bin' / 'python'} \"$@\"\n")
    wrapper.chmod(0o755)
    return wrapper


def pytest_collection_modifyitems(items):
    """Tests that need trained models or the loopback sshd are `slow`; `make test-fast` runs the rest."""
    for item in items:
        if {"weights", "sshd"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
