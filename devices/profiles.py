"""Device profiles: where a bundle runs, with how many threads, through which provider.

Edge boards are described by what a cost model needs (cores, clock, per-core peak rates, memory
bandwidth) and what a user needs (memory, instruction-set features, providers). On a host of the
same instruction set with enough cores, a board is *emulated*: its thread count, pinned with CPU
affinity to that many cores. Otherwise its latency is *estimated* by the cost model in
`edgeslim.devices.costmodel`, calibrated on this host; the report labels each figure.
"""
from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass, field

from edgeslim.core.errors import DeviceError


def host_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def host_arch() -> str:
    machine = platform.machine().lower()
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def host_features() -> tuple:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    flags = set(line.split(":", 1)[1].split())
                    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "asimd", "asimddp", "fphp")
                    return tuple(flag for flag in wanted if flag in flags)
    except OSError:
        pass
    return ()


def host_ghz() -> float:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("cpu MHz"):
                    return round(float(line.split(":")[1]) / 1000.0, 2)
    except (OSError, ValueError):
        pass
    return 2.0


def host_flops_per_cycle(features: tuple) -> tuple[float, float]:
    """Per-core fp32 FLOP and int8 op rates per cycle implied by the SIMD features."""
    if "avx512f" in features:
        return 64.0, 256.0 if "avx512_vnni" in features else 128.0
    if "avx2" in features and "fma" in features:
        return 32.0, 128.0 if "avx_vnni" in features else 64.0
    if "asimd" in features:
        return 16.0, 64.0 if "asimddp" in features else 32.0
    return 8.0, 16.0


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    provider: str = "cpu"           # a short provider name (see edgeslim.sdk.providers)
    threads: int | None = None      # None: all cores this process may use
    cores: int | None = None        # the board's cores; pinned to that many when emulated
    description: str = ""
    arch: str = "any"               # x86_64, aarch64, or any (a GPU)
    features: tuple = field(default_factory=tuple)
    memory_gb: float | None = None
    ghz: float | None = None
    fp32_flops_per_cycle: float | None = None   # per core
    int8_ops_per_cycle: float | None = None     # per core
    memory_gbps: float | None = None            # sustained, not the datasheet peak
    prefers: str = "fp32"           # the precision that suits the target best
    host: bool = False              # this machine itself (no emulation, no estimate)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["features"] = list(self.features)
        data["mode"] = self.mode()
        return data

    def channel_multiple(self) -> int:
        """Channel counts that fill the target's SIMD registers with fp32 lanes (8 for AVX2,
        16 for AVX-512, 4 for NEON); a GPU's tensor cores like multiples of 8."""
        if "avx512f" in self.features:
            return 16
        if "avx2" in self.features or self.provider != "cpu":
            return 8
        if "asimd" in self.features or "neon" in self.features:
            return 4
        return 8

    def thread_count(self) -> int:
        return self.threads or self.cores or host_cores()

    def mode(self) -> str:
        """measured (this host as it is), emulated (this host cut down), or estimated (cost model)."""
        if self.host or self.provider != "cpu":
            return "measured"
        if self.arch == host_arch() and (self.cores or 1) <= host_cores():
            return "emulated"
        return "estimated"


def _host_profiles() -> list[DeviceProfile]:
    cores, features = host_cores(), host_features()
    fp32, int8 = host_flops_per_cycle(features)
    common = dict(arch=host_arch(), features=features, ghz=host_ghz(), fp32_flops_per_cycle=fp32,
                  int8_ops_per_cycle=int8, host=True)
    return [
        DeviceProfile("cpu", "cpu", None, cores, f"this host, all {cores} cores", **common),
        DeviceProfile("cpu-1t", "cpu", 1, 1, "this host, one thread pinned to one core", **common),
        DeviceProfile("gpu", "cuda", None, None, "NVIDIA GPU through the CUDA execution provider",
                      arch="any", prefers="fp16"),
        DeviceProfile("tensorrt", "tensorrt", None, None, "NVIDIA GPU through TensorRT", arch="any", prefers="fp16"),
    ]


# Boards: clock, per-core peak rates and sustained memory bandwidth from their public specifications.
EDGE_BOARDS = [
    DeviceProfile("rpi4", "cpu", 4, 4, "Raspberry Pi 4 Model B: Broadcom BCM2711, 4x Cortex-A72 @ 1.5 GHz",
                  "aarch64", ("neon", "asimd"), 4.0, 1.5, 8.0, 16.0, 4.0),
    DeviceProfile("rpi5", "cpu", 4, 4, "Raspberry Pi 5: Broadcom BCM2712, 4x Cortex-A76 @ 2.4 GHz",
                  "aarch64", ("neon", "asimd", "asimddp", "fphp"), 8.0, 2.4, 16.0, 64.0, 10.0, "int8"),
    DeviceProfile("x86-edge", "cpu", 4, 4, "x86 edge box: Intel N100, 4x Gracemont @ 3.4 GHz",
                  "x86_64", ("avx2", "fma", "avx_vnni"), 16.0, 3.4, 16.0, 64.0, 20.0, "int8"),
    DeviceProfile("jetson-orin-nano-cpu", "cpu", 6, 6,
                  "NVIDIA Jetson Orin Nano 8GB, CPU only: 6x Cortex-A78AE @ 1.5 GHz",
                  "aarch64", ("neon", "asimd", "asimddp", "fphp"), 8.0, 1.5, 16.0, 64.0, 20.0, "int8"),
]


def profiles() -> dict[str, DeviceProfile]:
    return {profile.name: profile for profile in _host_profiles() + EDGE_BOARDS}


def get_profile(name: str) -> DeviceProfile:
    known = profiles()
    if name not in known:
        raise DeviceError(f"unknown device '{name}'; the devices are {', '.join(known)} "
                          "or ssh://[user@]host[:port] (see `edgeslim devices`)")
    return known[name]
