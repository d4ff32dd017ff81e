"""Device profiles: where a bundle runs, with how many threads, through which provider."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field

from edgeslim.errors import DeviceError


def host_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    provider: str = "cpu"           # a short provider name (see edgeslim.sdk.providers)
    threads: int | None = None      # None: all cores this process may use
    cores: int | None = None        # pinned to the first N cores when set (emulation)
    description: str = ""
    emulated: bool = False
    features: tuple = field(default_factory=tuple)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["features"] = list(self.features)
        return data

    def thread_count(self) -> int:
        return self.threads or self.cores or host_cores()


def profiles() -> dict[str, DeviceProfile]:
    cores = host_cores()
    found = [
        DeviceProfile("cpu", "cpu", None, None, f"this host, all {cores} cores"),
        DeviceProfile("cpu-1t", "cpu", 1, 1, "this host, one thread pinned to one core"),
        DeviceProfile("gpu", "cuda", None, None, "CUDA execution provider (NVIDIA GPU)"),
    ]
    return {profile.name: profile for profile in found}


def get_profile(name: str) -> DeviceProfile:
    known = profiles()
    if name not in known:
        raise DeviceError(f"unknown device '{name}'; the devices are {', '.join(known)} (see `edgeslim devices`)")
    return known[name]
