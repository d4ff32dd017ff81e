"""The worker protocol's one reader: replies, reported errors, crashes, and the remote status line."""
import json
import subprocess
import sys

import pytest

from edgeslim.core.errors import BundleError, ConfigError, DeviceError, InputError, SpecError, WorkerCrashed
from edgeslim.devices import protocol
from edgeslim.devices.protocol import EXIT_MARK, error_reply, read_reply, remote_command, remote_status, reply

WHERE = "the benchmark of out/int8 on 'cpu'"


def test_the_last_reply_line_is_the_result():
    stdout = "a warning on stdout\n" + reply({"p50_ms": 9.0}) + "\n" + reply({"p50_ms": 1.5, "runs": 3}) + "\n"
    assert read_reply(stdout, "", 0, WHERE) == {"p50_ms": 1.5, "runs": 3}


@pytest.mark.parametrize("kind", [BundleError, InputError, DeviceError, SpecError, ConfigError])
def test_a_reported_error_is_raised_as_its_own_class(kind):
    with pytest.raises(kind) as raised:
        read_reply(error_reply(kind("file model.onnx was changed")) + "\n", "", 2, WHERE)
    assert type(raised.value) is kind
    assert str(raised.value) == f"{WHERE}: file model.onnx was changed"


def test_an_error_kind_this_side_does_not_know_is_a_device_error():
    line = json.dumps({"error": "the NPU driver is too old", "kind": "DriverError"})
    with pytest.raises(DeviceError, match="the NPU driver is too old"):
        read_reply(line, "", 2, WHERE)


@pytest.mark.parametrize("stdout, stderr, status, how", [
    ("", "", -11, "killed by SIGSEGV, exit status -11"),           # subprocess: killed by a signal
    ("", "", 137, "killed by SIGKILL, exit status 137"),           # a shell's 128+N
    ("", "Traceback (most recent call last):\nMemoryError: oh\n", 1, "exit status 1, no reply); its stderr ends "
                                                                        "with: MemoryError: oh"),
    ("", "", 0, "exit status 0, no reply"),                        # finished, said nothing
    ("Illegal instruction\n", "", 0, "printed 'Illegal instruction' instead of a reply"),
    ('{"p50_ms": 1.2\n', "", 0, "reply '{\"p50_ms\": 1.2' is not the protocol's JSON object"),
    ('["p50_ms", 1.2]\n', "", 0, "exit status 0, printed"),      # JSON, but not an object
    (reply({"p50_ms": 1.2}), "", 1, "exit status 1 after its reply"),  # a result, then a failure on the way out
])
def test_anything_else_is_a_crash(stdout, stderr, status, how):
    with pytest.raises(WorkerCrashed) as raised:
        read_reply(stdout, stderr, status, WHERE)
    assert str(raised.value).startswith(f"{WHERE}: the worker crashed (")
    assert how in str(raised.value)


def test_a_crash_is_not_bad_input():
    from edgeslim.core.errors import EdgeslimError

    assert issubclass(WorkerCrashed, EdgeslimError) and not issubclass(WorkerCrashed, ValueError)


def test_a_python_without_edgeslim_is_a_setup_problem():
    stderr = "/usr/bin/python3: Error while finding module specification (No module named 'edgeslim')"
    with pytest.raises(DeviceError, match="could not start the worker .*pip install edgeslim"):
        read_reply("", stderr, 1, WHERE, setup_fix="run `pip install edgeslim` there")


@pytest.mark.parametrize("code, status", [("print('{}')", 0), ("import sys; sys.exit(2)", 2),
                                          ("import os; os.kill(os.getpid(), 9)", 137)])
def test_the_remote_command_reports_the_workers_own_status(code, status):
    """Run here through sh, as the device's shell runs it: the status line comes after the worker's output."""
    done = subprocess.run(["sh", "-c", remote_command([sys.executable, "-c", code])], capture_output=True, text=True)
    assert done.returncode == 0
    stdout, found = remote_status(done.stdout, 255)
    assert found == status
    assert EXIT_MARK not in stdout and stdout.strip() == ("{}" if status == 0 else "")


def test_without_a_status_line_sshs_own_status_stands():
    assert remote_status('{"p50_ms": 1.0}\n', 255) == ('{"p50_ms": 1.0}\n', 255)


def test_the_remote_command_keeps_each_argument_one_word():
    command = remote_command(protocol.worker_argv("/opt/my python", "/tmp/a b;rm -rf ~", ["--runs", "5"]))
    done = subprocess.run(["sh", "-c", command.replace("/opt/my python", "echo")], capture_output=True, text=True)
    # echo stands in for the device's Python: the bundle path arrives as one word, never as a command
    assert done.stdout.splitlines()[0] == "-m edgeslim.devices.worker /tmp/a b;rm -rf ~ --runs 5"
    assert remote_status(done.stdout, 255)[1] == 0
