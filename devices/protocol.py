"""The worker protocol, written and read in one place, for local and remote devices alike.

`python -m edgeslim.devices.worker` (worker.py) answers with JSON objects on stdout, one a line;
the last is its reply: the result, or `{"error": sentence, "kind": class name}` (exit status 2) for
an EdgeslimError it met (a bundle that fails verification, inputs that do not fit, a provider that
is not there). `read_reply` turns that error into the same EdgeslimError subclass wherever the
worker ran. Anything else (a non-zero exit without an error line, output that is not the
protocol, a worker killed by a signal) means the worker crashed, which is a bug and not the user's
input: WorkerCrashed, which the CLI reports as an internal error (exit 3).

Over ssh, a remote command killed by a signal makes ssh itself exit 255, as a lost connection does;
`remote_command` therefore has the device's shell print the worker's exit status on a line of its
own after it, and `remote_status` reads that line back.
"""
from __future__ import annotations

import json
import re
import shlex
import signal

from edgeslim.core.errors import BundleError, ConfigError, DeviceError, InputError, SpecError, WorkerCrashed

WORKER_MODULE = "edgeslim.devices.worker"
EXIT_MARK = "edgeslim-worker-exit"
KINDS = {kind.__name__: kind for kind in (BundleError, InputError, DeviceError, SpecError, ConfigError)}
_STATUS_LINE = re.compile(rf"^{EXIT_MARK} (\d+)$", re.MULTILINE)
_SHOWN_CHARS = 200


# -- the worker's side ----------------------------------------------------------------------------

def reply(result: dict) -> str:
    """The line a worker prints when it finished."""
    return json.dumps(result)


def error_reply(error: Exception) -> str:
    """The line a worker prints for an error the user can fix (it then exits with status 2)."""
    return json.dumps({"error": str(error), "kind": type(error).__name__})


# -- the caller's side ----------------------------------------------------------------------------

def worker_argv(python: str, bundle: str, arguments: list[str]) -> list[str]:
    return [python, "-m", WORKER_MODULE, str(bundle), *arguments]


def remote_command(argv: list[str]) -> str:
    """A command for the device's login shell: run `argv` under sh, then print its exit status."""
    worker = " ".join(shlex.quote(part) for part in argv)
    return "sh -c " + shlex.quote(f"{worker}; printf '\\n{EXIT_MARK} %d\\n' \"$?\"")


def remote_status(stdout: str, ssh_status: int) -> tuple[str, int]:
    """(the worker's own stdout, its exit status) from the output of `remote_command`.

    Without the status line (the shell itself was killed), ssh's exit status stands in for it.
    """
    found = list(_STATUS_LINE.finditer(stdout))
    if not found:
        return stdout, ssh_status
    return stdout[:found[-1].start()], int(found[-1].group(1))


def read_reply(stdout: str, stderr: str, status: int, where: str, setup_fix: str = "reinstall edgeslim") -> dict:
    """The worker's result; its reported error as its EdgeslimError subclass; a crash as WorkerCrashed.

    `where` names the work and the device, e.g. "the benchmark of out/int8 on 'cpu'"; `status` is
    the exit status (negative: killed by that signal, as subprocess reports it).
    """
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    replies = [line for line in lines if line.startswith("{")]
    answer = _parsed(replies[-1]) if replies else None
    if isinstance(answer, dict) and "error" in answer:
        raise KINDS.get(answer.get("kind"), DeviceError)(f"{where}: {answer['error']}")
    if status == 0 and isinstance(answer, dict):
        return answer
    reason = _last_line(stderr)
    if status != 0 and not replies and "No module named" in reason:  # the device's Python lacks a package
        raise DeviceError(f"{where} could not start the worker ({reason}); {setup_fix}")
    raise WorkerCrashed(f"{where}: the worker crashed ({_how(status, lines, replies)})"
                        + (f"; its stderr ends with: {reason}" if reason else ""))


def _parsed(line: str):
    try:
        return json.loads(line)
    except ValueError:
        return None


def _how(status: int, lines: list[str], replies: list[str]) -> str:
    if status < 0 or 128 < status < 128 + signal.NSIG:  # subprocess's -N, or a shell's 128+N
        number = -status if status < 0 else status - 128
        try:
            return f"killed by {signal.Signals(number).name}, exit status {status}"
        except ValueError:
            return f"killed by signal {number}, exit status {status}"
    if replies and isinstance(_parsed(replies[-1]), dict):
        return f"exit status {status} after its reply"
    if replies:
        return f"exit status {status}, reply {_clip(replies[-1])!r} is not the protocol's JSON object"
    if lines:
        return f"exit status {status}, printed {_clip(lines[-1])!r} instead of a reply"
    return f"exit status {status}, no reply"


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return _clip(lines[-1]) if lines else ""


def _clip(text: str) -> str:
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "..."
