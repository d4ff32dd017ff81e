"""Measure a bundle's latency on a device profile, in a child process."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict, dataclass

from edgeslim.core.errors import DeviceError, require
from edgeslim.devices.profiles import DeviceProfile
from edgeslim.devices.protocol import read_reply, worker_argv


@dataclass
class BenchConfig:
    runs: int = 200
    warmup: int = 20
    batch: int = 1
    io: str = "host"            # host: numpy in and out (what an app sees); device: GPU-resident I/O
    timeout_s: float = 600.0

    def __post_init__(self) -> None:
        # Checked here, so a recipe's `bench:` is refused when it is read, not after the builds.
        require(isinstance(self.runs, int) and self.runs >= 1, "bench.runs", self.runs, "a whole number >= 1")
        require(isinstance(self.warmup, int) and self.warmup >= 0, "bench.warmup", self.warmup, "a whole number >= 0")
        require(isinstance(self.batch, int) and self.batch >= 1, "bench.batch", self.batch, "a whole number >= 1")
        require(self.io in ("host", "device"), "bench.io", self.io, "host or device")
        require(self.timeout_s > 0, "bench.timeout_s", self.timeout_s, "a number of seconds > 0")

    def to_dict(self) -> dict:
        return asdict(self)


def measure_latency(bundle: str, profile: DeviceProfile, config: BenchConfig) -> dict:
    pinned = profile.cores if profile.provider == "cpu" and profile.mode() == "emulated" else 0
    command = worker_argv(sys.executable, bundle, [
        "--provider", profile.provider, "--threads", str((profile.threads or 0) if profile.provider == "cpu" else 0),
        "--cores", str(pinned or 0), "--runs", str(config.runs), "--warmup", str(config.warmup),
        "--batch", str(config.batch), "--io", config.io])
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=config.timeout_s)
    except subprocess.TimeoutExpired:
        raise DeviceError(f"benchmark of {bundle} on '{profile.name}' took over {config.timeout_s:.0f} s; "
                          "lower --runs or check the device") from None
    result = read_reply(done.stdout, done.stderr, done.returncode, f"the benchmark of {bundle} on '{profile.name}'")
    result["mode"] = profile.mode()
    return result
