"""Remote devices over SSH: `ssh://[user@]host[:port][?python=...&key=...&known_hosts=...]`.

The bundle is copied to the device, which has the torch-free `edgeslim` installed; the benchmark
and the accuracy pass run there through the SDK (which verifies the bundle's checksums on load),
and the figures come back into the same report. The val inputs travel as one .npz and the outputs
come back the same way, so the metric (a custom one too) is computed here.

Every ssh call runs with BatchMode (no password prompts) and a connect timeout, so a device that
does not answer fails in bounded time with one sentence.
"""
from __future__ import annotations

import json
import shlex
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np

from edgeslim.errors import BundleError, DeviceError, InputError

CONNECT_TIMEOUT_S = 10
_ERRORS = {"BundleError": BundleError, "InputError": InputError, "DeviceError": DeviceError}


class RemoteTarget:
    def __init__(self, url: str, run_timeout_s: float = 600.0):
        parts = urlsplit(url)
        if parts.scheme != "ssh" or not parts.hostname:
            raise DeviceError(f"remote device {url!r} must look like ssh://[user@]host[:port]")
        try:
            port = parts.port
        except ValueError:
            raise DeviceError(f"remote device {url!r} has a port that is not a number") from None
        query = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        unknown = sorted(set(query) - {"python", "key", "known_hosts", "workdir", "threads"})
        if unknown:
            raise DeviceError(f"remote device {url!r} has an unknown option {unknown[0]!r}; "
                              "the options are python, key, known_hosts, workdir, threads")
        self.url = url
        self.name = url.split("?")[0]
        self.host = f"{parts.username}@{parts.hostname}" if parts.username else parts.hostname
        self.port = port or 22
        self.python = query.get("python", "python3")
        self.key = query.get("key")
        self.known_hosts = query.get("known_hosts")
        self.workdir = query.get("workdir", "/tmp/edgeslim-remote")
        self.threads = int(query.get("threads", 0) or 0)
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

    def _call(self, command: list[str], what: str, timeout: float) -> subprocess.CompletedProcess:
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            raise DeviceError(f"remote {self.name} did not finish {what} within {timeout:.0f} s; "
                              "check that the device is up and not overloaded") from None
        except FileNotFoundError:
            raise DeviceError("the ssh client is not installed here; install OpenSSH's client to use ssh:// devices") from None
        if done.returncode == 255:
            reason = (done.stderr.strip().splitlines() or ["no answer"])[-1]
            raise DeviceError(f"remote {self.name} does not answer ({reason}); check the host, port, key "
                              "and that sshd runs there")
        return done

    def ssh(self, remote_command: str, what: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        return self._call(["ssh", "-p", str(self.port), *self._options(), self.host, remote_command], what,
                          timeout or self.run_timeout_s)

    def copy_to(self, local: Path, remote: str) -> None:
        done = self._call(["scp", "-q", "-r", "-P", str(self.port), *self._options(), str(local),
                           f"{self.host}:{remote}"], "the copy", self.run_timeout_s)
        if done.returncode != 0:
            raise DeviceError(f"copying {local} to {self.name} failed: {done.stderr.strip()[-300:]}")

    def copy_from(self, remote: str, local: Path) -> None:
        done = self._call(["scp", "-q", "-P", str(self.port), *self._options(), f"{self.host}:{remote}",
                           str(local)], "the copy back", self.run_timeout_s)
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
        command = " ".join(shlex.quote(part) for part in
                           [self.python, "-m", "edgeslim.devices.worker", remote_bundle,
                            "--threads", str(self.threads), *arguments])
        done = self.ssh(command, what)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if not lines:
            reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
            if "No module named" in reason:
                raise DeviceError(f"remote {self.name} cannot run edgeslim with {self.python} ({reason}); "
                                  "install it there with `pip install edgeslim` or pass ?python=/path/to/python")
            raise DeviceError(f"{what} on {self.name} failed: {reason}")
        result = json.loads(lines[-1])
        if "error" in result:
            raise _ERRORS.get(result.get("kind"), DeviceError)(f"on {self.name}: {result['error']}")
        return result

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
        from edgeslim.data import feed_for, to_numpy
        from edgeslim.sdk import read_manifest

        names = [spec["name"] for spec in read_manifest(bundle)["inputs"]]
        arrays, labels = {}, []
        for index, (inputs, target) in enumerate(data.val):
            for name, value in feed_for(inputs, names).items():
                arrays[f"{index}:{name}"] = value
            labels.append(to_numpy(target))
        folder, remote_bundle = self._staged(bundle)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                np.savez(Path(tmp) / "val.npz", **arrays)
                self.copy_to(Path(tmp) / "val.npz", f"{folder}/val.npz")
                self._worker(remote_bundle, ["--predict", f"{folder}/val.npz", "--save", f"{folder}/out.npz"],
                             "the accuracy pass")
                self.copy_from(f"{folder}/out.npz", Path(tmp) / "out.npz")
                with np.load(Path(tmp) / "out.npz") as outputs:
                    predicted = [outputs[str(index)] for index in range(len(labels))]
        finally:
            self._cleanup(folder)
        return float(metric(np.concatenate(predicted), np.concatenate(labels)))
