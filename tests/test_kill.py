"""`kill -9` of export, compress and validate, at the writers' fault points and at moments through the
run: the output is the old one whole or the new one whole (a bundle loads and verifies through the
SDK, a report reads), and the next run of the same command leaves no scratch file in the folder.

tests/test_outputs.py kills a bare bundle writer at every step; these kill the commands themselves.
"""
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import spec

pytestmark = pytest.mark.slow  # each test starts edgeslim six times

SMALL = ["--model", spec("small_cnn"), "--data", spec("digits")]
BUILDS = {"export": ["export", *SMALL],
          # A torch step and an ONNX step; distillation, whose checkpoints go to the cache and not to
          # the user's folder, is killed and resumed in tests/compress/test_distill.py.
          "compress": ["compress", *SMALL, "--prune", "0.5", "--round-to", "4", "--no-distill",
                       "--quantize", "dynamic"]}
# Where each command is killed: a fault point (core/outputs.py) with the run whose output must be
# there afterwards, or a moment as a fraction of the first, complete run's duration.
BUNDLE_FAULTS = [("staging-filled", "previous"), ("swapped", "this")]
REPORT_FAULTS = [("wrote-tmp:r.json", "previous"), ("wrote-tmp:r.md", "this")]
MOMENTS = [0.35, 0.8]


def _start(args, fault=None):
    env = dict(os.environ)
    env.pop("EDGESLIM_FAULT_AT", None)
    if fault:
        env["EDGESLIM_FAULT_AT"] = fault
    return subprocess.Popen([sys.executable, "-m", "edgeslim", "--quiet", *[str(a) for a in args]],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # its own group: workers it started are cleaned up below


def _finish(process, kill_after=None):
    """Wait for `process` (SIGKILL it after `kill_after` seconds); its exit code, its workers killed too."""
    try:
        process.wait(timeout=kill_after if kill_after is not None else 300)
    except subprocess.TimeoutExpired:
        process.send_signal(signal.SIGKILL)
        process.wait()
    try:  # workers a killed run leaves behind (they may hold its pipes open)
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return process.returncode, process.communicate()[1]


def _complete(args):
    started = time.monotonic()
    code, stderr = _finish(_start(args))
    assert code == 0, stderr
    return time.monotonic() - started


def _kills(faults, first_run_s):
    """(fault point, whose output must be there after, seconds to kill after) of each killed run."""
    return [(fault, expected, None) for fault, expected in faults] + \
        [(None, "either", fraction * first_run_s) for fraction in MOMENTS]


def _bundle_name(out):
    from edgeslim.sdk import load

    return load(out).name  # load verifies the manifest and every file's sha256


def _leftovers(folder, outputs):
    return sorted(entry.name for entry in folder.iterdir() if entry.name not in outputs)


@pytest.mark.parametrize("command", list(BUILDS))
def test_a_killed_build_leaves_the_old_bundle_or_the_new_one(tmp_path, command):
    out = tmp_path / "b"
    first_run_s = _complete([*BUILDS[command], "--name", "run0", "--out", out])
    previous = "run0"
    for index, (fault, expected, after) in enumerate(_kills(BUNDLE_FAULTS, first_run_s)):
        name = f"run{index + 1}"
        code, stderr = _finish(_start([*BUILDS[command], "--name", name, "--out", out], fault), after)
        # Killed; or, late in a run (which may be quicker than the first), done.
        late = after is not None and after > first_run_s / 2
        assert code == -signal.SIGKILL or (late and code == 0), (fault, after, code, stderr)
        found = _bundle_name(out)
        want = {"previous": {previous}, "this": {name}, "either": {previous, name}}[expected]
        assert found in want, (fault or f"killed after {after:.1f} s", found, want, code)
        previous = found
    _complete([*BUILDS[command], "--name", "last", "--out", out])
    assert _bundle_name(out) == "last"
    assert _leftovers(tmp_path, {"b"}) == []


@pytest.fixture(scope="module")
def two_bundles(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bundles")
    _complete([*BUILDS["export"], "--out", folder / "fp32"])
    _complete(["compress", *SMALL, "--quantize", "dynamic", "--out", folder / "dyn"])
    return folder / "fp32", folder / "dyn"


def _report_whole(tmp_path):
    """The candidates of the report at tmp_path/r.json, which must read whole, and its Markdown too."""
    from edgeslim.core.outputs import MARK
    from edgeslim.report.schema import read_report

    names = [entry["name"] for entry in read_report(tmp_path / "r.json")["candidates"]]
    markdown = (tmp_path / "r.md").read_text()
    assert markdown.startswith(MARK) and "## Latency" in markdown and markdown.endswith("\n"), markdown[-200:]
    return names


def test_a_killed_validate_leaves_the_old_report_or_the_new_one(tmp_path, two_bundles):
    fp32, dyn = two_bundles
    common = ["--data", spec("digits"), "--runs", "50", "--warmup", "5", "--out", tmp_path / "r.json"]
    first_run_s = _complete(["validate", fp32, *common])
    previous = ["fp32"]
    for fault, expected, after in _kills(REPORT_FAULTS, first_run_s):
        names = ["dyn"] if previous == ["fp32", "dyn"] else ["fp32", "dyn"]  # another report than the last
        bundles = [{"fp32": fp32, "dyn": dyn}[name] for name in names]
        code, stderr = _finish(_start(["validate", *bundles, *common], fault), after)
        # Killed; or, late in a run (which may be quicker than the first), done.
        late = after is not None and after > first_run_s / 2
        assert code == -signal.SIGKILL or (late and code == 0), (fault, after, code, stderr)
        found = _report_whole(tmp_path)
        want = {"previous": [previous], "this": [names], "either": [previous, names]}[expected]
        assert found in want, (fault or f"killed after {after:.1f} s", found, want, code)
        previous = found
    _complete(["validate", fp32, dyn, *common])
    assert _report_whole(tmp_path) == ["fp32", "dyn"]
    assert _leftovers(tmp_path, {"r.json", "r.md"}) == []
