"""Remote devices over SSH: `ssh://[user@]host[:port][?python=...&key=...&known_hosts=...&workdir=...&threads=...]`.

The bundle is copied to the device, which has the torch-free `edgeslim` installed; the benchmark
and the accuracy pass run there through the SDK (which verifies the bundle's checksums on load),
and the figures come back into the same report. The val inputs travel as one .npz and the outputs
come back the same way, so the metric (a custom one too) is computed here.

Every ssh call runs with BatchMode (no password prompts) and a connect timeout, so a device that
does not answer fails in bounded time with one sentence.

The URL is untrusted text (a recipe may come from anyone): every part of it is checked against a
strict rule before any argv is built, the destination goes after `--` so ssh and scp never read
it as an option, and no ssh option comes from the URL except the five documented query keys.
"""
from __future__ import annotations

import ipaddress
import re
import shlex
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeslim.core.errors import DeviceError
from edgeslim.devices.protocol import read_reply, remote_command, remote_status, worker_argv

CONNECT_TIMEOUT_S = 10
MAX_THREADS = 1024
QUERY_KEYS = ("python", "key", "known_hosts", "workdir", "threads")

# The rules are allow-lists, stricter than what ssh itself accepts (ssh.c's valid_hostname and
# valid_ruser refuse a leading '-', shell metacharacters and, in a host, blanks and control
# characters; older clients check nothing), so that a value can neither
# become an ssh option nor split into more words in ssh_config parsing or the remote shell.
# Nothing is percent-decoded: '%' is simply not in any list (ssh would also expand %-tokens).
_LABEL = r"[A-Za-z0-9_][A-Za-z0-9_-]*"                  # '_': ssh_config aliases such as my_pi
_HOST = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")           # a DNS name; IPv4 addresses match too
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+")                          # checked by ipaddress after this
_USER = re.compile(r"[A-Za-z0-9._][A-Za-z0-9._-]*")
_PORT = re.compile(r"[0-9]{1,5}")
_FILE = re.compile(r"[A-Za-z0-9._/~+][A-Za-z0-9._/~+-]*")      # -i KEY, -o UserKnownHostsFile=FILE
_PYTHON = re.compile(r"/[A-Za-z0-9._/+-]*|[A-Za-z0-9._+][A-Za-z0-9._+-]*")  # absolute, or a bare name
_WORKDIR = re.compile(r"/[A-Za-z0-9._/+-]*")
_THREADS = re.compile(r"[0-9]{1,4}")

_HOST_RULE = ("a host is a DNS name or ssh_config alias (letters, digits, '_', '-' and '.', no label starting "
              "with '-'), an IPv4 address or an IPv6 address in brackets")
_FILE_RULE = ("it must be a path of letters, digits, '.', '_', '/', '~', '+' and '-' that does not "
              "start with '-' (no spaces, quotes or '%')")


def _refused(part: str, value: str, rule: str, fix: str) -> DeviceError:
    """One sentence: the bad value, the rule, the fix (repr keeps it on one line)."""
    return DeviceError(f"remote device {part} {value!r} is refused: {rule}; {fix}")


@dataclass(frozen=True)
class SshUrl:
    user: str | None
    host: str                     # without brackets
    ipv6: bool
    port: int
    options: dict[str, str]       # the raw query values, each checked


def parse_ssh_url(url: str) -> SshUrl:
    """Split and check an ssh:// device URL; any part outside its rule raises DeviceError."""
    if not url.startswith("ssh://"):
        scheme = url.partition("://")[0] if "://" in url else ""  # never the rest: it may hold a password
        raise _refused("URL scheme", scheme, "a remote device URL starts with ssh://",
                       "write it as ssh://[user@]host[:port][?option=value&...]")
    rest, _, query = url[len("ssh://"):].partition("?")
    end = min([i for i in (rest.find("/"), rest.find("#")) if i >= 0], default=len(rest))
    netloc, after = rest[:end], rest[end:]
    userinfo, at, hostport = netloc.rpartition("@")
    user = _check_user(userinfo) if at else None  # user and host first: their messages say more
    host, ipv6, port = _split_host_port(hostport)
    if after not in ("", "/") or "#" in query:
        raise _refused("URL part", after or "#", "only ?options may follow the host", "remove it")
    return SshUrl(user, host, ipv6, port, _parse_query(query))


def _check_user(user: str) -> str:
    if ":" in user:  # do not echo it: what follows ':' would be a password
        raise DeviceError("remote device URL is refused: it holds a password after the user name, and ssh:// "
                          "devices log in with a key only; remove ':' and what follows it, and pass "
                          "?key=/path/to/private_key")
    if not _USER.fullmatch(user):
        raise _refused("user", user, "a user is letters, digits, '.', '_' and '-', not starting with '-'",
                       "give the device's login name, e.g. ssh://pi@rpi.local")
    return user


def _split_host_port(hostport: str) -> tuple[str, bool, int]:
    """(host, whether it is IPv6, port) from `host[:port]` or `[v6]:port`."""
    if hostport.startswith("["):
        inside, bracket, after = hostport[1:].partition("]")
        if not bracket or not _IPV6.fullmatch(inside) or not _is_ipv6(inside) or after[:1] not in ("", ":"):
            raise _refused("host", hostport, _HOST_RULE, "write it like ssh://pi@[2001:db8::7]:22")
        return inside, True, _check_port(after[1:])
    host, _, port = hostport.partition(":")
    if not _HOST.fullmatch(host):
        raise _refused("host", host, _HOST_RULE, "write it like ssh://pi@rpi.local or ssh://pi@10.0.0.7")
    return host, False, _check_port(port)


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def _check_port(text: str) -> int:
    if text == "":
        return 22  # `host` and `host:` both mean the default, as in RFC 3986
    if not _PORT.fullmatch(text) or not 1 <= int(text) <= 65535:
        raise _refused("port", text, "a port is a number from 1 to 65535", "write it like ssh://pi@rpi.local:2222")
    return int(text)


def _parse_query(query: str) -> dict[str, str]:
    """The documented keys only, each once, each value checked as it is written (no decoding)."""
    options: dict[str, str] = {}
    for item in query.split("&"):
        if not item:
            continue  # a stray '&' or a bare '?' adds nothing
        key, _, value = item.partition("=")
        if key not in QUERY_KEYS:
            raise _refused("option", key, f"the options are {', '.join(QUERY_KEYS)}", "use one of those or drop it")
        if key in options:  # refusing beats silently taking one of the two
            raise _refused("option", key, "each option may be given once", "keep only the value you mean")
        _CHECKS[key](value)
        options[key] = value
    return options


def _check_file(key: str):
    def check(value: str) -> None:
        if not _FILE.fullmatch(value):
            raise _refused(f"option {key}", value, _FILE_RULE, "move or link the file to such a path")
    return check


def _check_python(value: str) -> None:
    if not _PYTHON.fullmatch(value):
        raise _refused("option python", value, "python is an absolute path or a bare command name of letters, "
                       "digits, '.', '_', '+' and '-' (and '/' in a path), not starting with '-'",
                       "pass e.g. ?python=/opt/edgeslim/bin/python or ?python=python3")


def _check_workdir(value: str) -> None:
    if not _WORKDIR.fullmatch(value):
        raise _refused("option workdir", value, "workdir is an absolute path of letters, digits, '.', '_', "
                       "'/', '+' and '-'", "pass e.g. ?workdir=/tmp/edgeslim-remote")


def _check_threads(value: str) -> None:
    if not _THREADS.fullmatch(value) or int(value) > MAX_THREADS:
        raise _refused("option threads", value, f"threads is a whole number from 0 (all cores) to {MAX_THREADS}",
                       "pass e.g. ?threads=4")


_CHECKS = {"python": _check_python, "key": _check_file("key"), "known_hosts": _check_file("known_hosts"),
           "workdir": _check_workdir, "threads": _check_threads}


class RemoteTarget:
    def __init__(self, url: str, run_timeout_s: float = 600.0):
        parsed = parse_ssh_url(url)  # before anything else: nothing runs for a URL that fails a rule
        self.url = url
        self.name = url.split("?")[0]
        self.user = parsed.user
        self.hostname = parsed.host
        self.ipv6 = parsed.ipv6
        self.host = f"{parsed.user}@{parsed.host}" if parsed.user else parsed.host  # ssh's destination
        self.port = parsed.port
        self.python = parsed.options.get("python", "python3")
        self.key = parsed.options.get("key")
        self.known_hosts = parsed.options.get("known_hosts")
        self.workdir = parsed.options.get("workdir", "/tmp/edgeslim-remote")
        self.threads = int(parsed.options.get("threads", 0))
        self.run_timeout_s = run_timeout_s

    # -- ssh plumbing -------------------------------------------------------------------------------
    def _options(self) -> list[str]:
        options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT_S}",
                   "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"]
        if self.key:
            options += ["-i", self.key, "-o", "IdentitiesOnly=yes"]
        if self.known_hosts:
            options += ["-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=accept-new"]
        return options

    def _remote(self, path: str) -> str:
        """scp's `[user@]host:path`; an IPv6 host needs brackets there (ssh takes it bare)."""
        host = f"[{self.hostname}]" if self.ipv6 else self.hostname
        return f"{self.user}@{host}:{path}" if self.user else f"{host}:{path}"

    def ssh_argv(self, remote_command: str) -> list[str]:
        # `--` ends the options: the destination can never be read as one, whatever it holds.
        return ["ssh", "-p", str(self.port), *self._options(), "--", self.host, remote_command]

    def scp_argv(self, source: str, destination: str, recursive: bool = False) -> list[str]:
        return ["scp", "-q", *(["-r"] if recursive else []), "-P", str(self.port), *self._options(),
                "--", source, destination]

    def _call(self, command: list[str], what: str, timeout: float) -> subprocess.CompletedProcess:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"remote {self.name} did not finish {what} within {timeout:.0f} s; "
                              "check that the device is up and not overloaded") from None
        except FileNotFoundError:
            raise DeviceError("the ssh client is not installed here; "
                              "install OpenSSH's client to use ssh:// devices") from None
        if done.returncode == 255:
            reason = (done.stderr.strip().splitlines() or ["no answer"])[-1]
            raise DeviceError(f"remote {self.name} does not answer ({reason}); check the host, port, key "
                              "and that sshd runs there")
        return done

    def ssh(self, remote_command: str, what: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        return self._call(self.ssh_argv(remote_command), what, timeout or self.run_timeout_s)

    def copy_to(self, local: Path, remote: str) -> None:
        # An absolute local path: scp would read a relative `a:b` as a remote host `a`.
        done = self._call(self.scp_argv(str(Path(local).absolute()), self._remote(remote), recursive=True),
                          "the copy", self.run_timeout_s)
        if done.returncode != 0:
            raise DeviceError(f"copying {local} to {self.name} failed: {done.stderr.strip()[-300:]}")

    def copy_from(self, remote: str, local: Path) -> None:
        done = self._call(self.scp_argv(self._remote(remote), str(Path(local).absolute())),
                          "the copy back", self.run_timeout_s)
        if done.returncode != 0:
            raise DeviceError(f"copying {remote} back from {self.name} failed: {done.stderr.strip()[-300:]}")

    # -- the target interface ---------------------------------------------------------------------
    def describe(self) -> dict:
        return {"name": self.name, "provider": "cpu", "mode": "measured", "remote": True,
                "python": self.python, "threads": self.threads or None}

    def runtime_key(self) -> str:
        return f"ssh:{self.host}:{self.port}"

    def check_available(self) -> None:
        """Reach the device and import the SDK there, before any work is started."""
        done = self.ssh(f"{shlex.quote(self.python)} -c 'import edgeslim.sdk'", "the first contact",
                        CONNECT_TIMEOUT_S * 3)
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise DeviceError(f"remote {self.name} cannot import edgeslim.sdk with {self.python} ({reason}); "
                              "install edgeslim there or pass ?python=/path/to/python")

    def _worker(self, remote_bundle: str, arguments: list[str], what: str) -> dict:
        """Run the worker on the device; its reply read as the local runner reads it (protocol.py)."""
        argv = worker_argv(self.python, remote_bundle, ["--threads", str(self.threads), *arguments])
        done = self.ssh(remote_command(argv), what)
        stdout, status = remote_status(done.stdout, done.returncode)
        return read_reply(stdout, done.stderr, status, f"{what} on {self.name}",
                          setup_fix=f"install edgeslim for {self.python} there with `pip install edgeslim` "
                                    "or pass ?python=/path/to/python")

    def _staged(self, bundle) -> tuple[str, str]:
        """Copy the bundle to a fresh folder on the device; return (folder, bundle path there)."""
        folder = f"{self.workdir}/{uuid.uuid4().hex[:12]}"
        self.ssh(f"mkdir -p {shlex.quote(folder)}", "creating a work folder", CONNECT_TIMEOUT_S * 3)
        self.copy_to(Path(bundle), folder)
        return folder, f"{folder}/{Path(bundle).name}"

    def _cleanup(self, folder: str) -> None:
        try:
            self.ssh(f"rm -rf {shlex.quote(folder)}", "cleaning up", CONNECT_TIMEOUT_S * 3)
        except DeviceError:
            pass  # the measurement stands; a stale folder in /tmp is harmless

    def latency(self, bundle, config) -> dict:
        folder, remote_bundle = self._staged(bundle)
        try:
            stats = self._worker(remote_bundle, ["--runs", str(config.runs), "--warmup", str(config.warmup),
                                                 "--batch", str(config.batch)], "the benchmark")
        finally:
            self._cleanup(folder)
        stats["mode"] = "measured"
        stats["remote"] = self.name
        return stats

    def accuracy(self, bundle, data, metric) -> float:
        """The device predicts every val batch; the outputs travel back (the first, or every one the metric
        names) and are scored here, so that a metric of the user's own needs nothing there."""
        from edgeslim.core.data import feed_for, to_numpy
        from edgeslim.core.evaluate import score
        from edgeslim.core.metrics import wanted_outputs
        from edgeslim.sdk import read_manifest

        manifest = read_manifest(bundle)
        names = [spec["name"] for spec in manifest["inputs"]]
        axes = {spec["name"]: spec.get("batch_axis", 0) for spec in manifest["outputs"]}
        wanted = wanted_outputs(metric, list(axes))   # a metric naming no output of the bundle fails here, first
        arrays, labels = {}, []
        for index, (inputs, target) in enumerate(data.val):
            for name, value in feed_for(inputs, names).items():
                arrays[f"{index}:{name}"] = value
            labels.append(to_numpy(target))
        asked = [f"--output={name}" for name in wanted or ()]
        folder, remote_bundle = self._staged(bundle)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                np.savez(Path(tmp) / "val.npz", **arrays)
                self.copy_to(Path(tmp) / "val.npz", f"{folder}/val.npz")
                self._worker(remote_bundle, ["--predict", f"{folder}/val.npz", "--save", f"{folder}/out.npz", *asked],
                             "the accuracy pass")
                self.copy_from(f"{folder}/out.npz", Path(tmp) / "out.npz")
                with np.load(Path(tmp) / "out.npz") as outputs:
                    predicted = [{name: outputs[f"{index}:{position}"] for position, name in enumerate(wanted)}
                                 if wanted else outputs[str(index)] for index in range(len(labels))]
        finally:
            self._cleanup(folder)
        first = next(iter(axes), None)
        return score(metric, predicted, labels, axes if wanted else axes.get(first, 0))
