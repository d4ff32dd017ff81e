"""A worker that crashes is edgeslim's fault, not the user's: exit 3 and a request to report it,
on this host and on an ssh:// device alike.

The crashes are real processes: the Python that runs the worker is replaced by a script that runs
the same Python on code that dies the way a worker can (a segfault in native code, the OOM killer's
SIGKILL, an unexpected exception, a reply cut short).
"""
import shlex
import sys

import pytest

from helpers import assert_one_sentence, spec

CRASHES = {
    "segfault": ("import ctypes; ctypes.string_at(0)", "the worker crashed (killed by SIGSEGV"),
    "sigkill": ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "the worker crashed (killed by SIGKILL"),
    "exception": ("raise RuntimeError('arena gone')",
                  "the worker crashed (exit status 1, no reply); its stderr ends with: RuntimeError: arena gone"),
    "cut_short": ("print('{\"p50_ms\": 1.2')", "reply '{\"p50_ms\": 1.2' is not the protocol's JSON object"),
}
REPORT_IT = "please report it"


def crashing_python(folder, python, code: str):
    """A stand-in for `python` that runs `code` instead of the worker, and anything else unchanged."""
    wrapper, python = folder / "python", shlex.quote(str(python))
    wrapper.write_text("#!/bin/sh\n"
                       f'case "$*" in *edgeslim.devices.worker*) exec {python} -c {shlex.quote(code)};; esac\n'
                       f'exec {python} "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@pytest.mark.parametrize("crash", CRASHES)
def test_a_local_worker_that_crashes(cli, untrained, tmp_path, monkeypatch, crash):
    code, fragment = CRASHES[crash]
    monkeypatch.setattr(sys, "executable", str(crashing_python(tmp_path, sys.executable, code)))
    result = cli("bench", untrained, "--runs", "3", "--warmup", "1")
    line = assert_one_sentence(result, fragment, code=3, kind="internal error")
    assert f"the benchmark of {untrained} on 'cpu'" in line and REPORT_IT in line


def test_the_same_bundle_benchmarks_with_a_sound_worker(cli, untrained):
    result = cli("bench", untrained, "--runs", "3", "--warmup", "1", "--json")
    assert result.exit_code == 0, result.stderr
    assert '"p50_ms"' in result.stdout


@pytest.mark.parametrize("crash", ["segfault", "cut_short"])
def test_a_remote_worker_that_crashes(cli, untrained, sshd, torch_free_python, tmp_path, crash):
    """ssh exits 255 for a command killed by a signal, as for a lost connection; the status line tells them apart."""
    code, fragment = CRASHES[crash]
    remote = sshd.url(crashing_python(tmp_path, torch_free_python, code))
    result = cli("validate", untrained, "--data", spec("digits"), "--device", remote,
                 "--runs", "3", "--warmup", "1", "--out", tmp_path / "r.json")
    line = assert_one_sentence(result, fragment.replace("SIGSEGV", "SIGSEGV, exit status 139"), code=3,
                               kind="internal error")
    assert f"the accuracy pass on {remote.split('?')[0]}" in line and REPORT_IT in line
    assert not (tmp_path / "r.json").exists()
