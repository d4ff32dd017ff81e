"""Where a bundle is measured: a local device profile (this host, a GPU) or a remote device."""
from __future__ import annotations

from edgeslim.devices.profiles import DeviceProfile, get_profile
from edgeslim.devices.runner import BenchConfig, measure_latency


class LocalTarget:
    """A profile run on this host: CPU with a thread count and affinity, or a GPU provider."""

    def __init__(self, profile: DeviceProfile):
        self.profile = profile
        self.name = profile.name

    def describe(self) -> dict:
        return self.profile.to_dict()

    def runtime_key(self) -> str:
        """Targets with the same key compute the same numbers; accuracy is measured once per key."""
        return f"local:{self.profile.provider}"

    def check_available(self) -> None:
        from edgeslim.sdk.providers import resolve_provider

        resolve_provider(self.profile.provider)

    def latency(self, bundle, config: BenchConfig) -> dict:
        if self.profile.mode() == "estimated":
            return estimate_latency(bundle, self.profile, config)
        return measure_latency(bundle, self.profile, config)

    def accuracy(self, bundle, data, metric) -> float:
        from edgeslim.devices.accuracy import evaluate
        from edgeslim.sdk import load

        return evaluate(load(bundle, device=self.profile.provider), data.val, metric)


def estimate_latency(bundle, board: DeviceProfile, config: BenchConfig) -> dict:
    """A board this host cannot emulate: measure here (1 thread and all cores), scale by the cost model."""
    from pathlib import Path

    import onnx

    from edgeslim.devices import costmodel
    from edgeslim.devices.profiles import profiles

    known = profiles()  # probes the host once
    host = known["cpu"]
    one = measure_latency(bundle, known["cpu-1t"], config)
    every = measure_latency(bundle, host, config)
    costs = costmodel.node_costs(onnx.load(Path(bundle) / "model.onnx"), config.batch)
    calibration = costmodel.calibrate(costs, host, one["p50_ms"], every["p50_ms"], host.thread_count())
    p50 = costmodel.estimate_ms(costs, board, calibration)
    scale = p50 / one["p50_ms"]
    stats = {key: one[key] * scale for key in ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "max_ms")}
    stats.update({"throughput": config.batch * 1000.0 / stats["mean_ms"], "batch": config.batch,
                  "threads": board.thread_count(), "mode": "estimated", "runs": one["runs"],
                  "warmup": one["warmup"], "peak_rss_mb": one["peak_rss_mb"], "load_ms": None,
                  "first_run_ms": None, "calibration": calibration,
                  "flops": sum(c.flops for c in costs), "bytes": sum(c.bytes for c in costs)})
    return stats


def get_target(name: str):
    """A device name from `edgeslim devices`, or ssh://[user@]host[:port] for a remote device."""
    from edgeslim.core.errors import DeviceError

    if not isinstance(name, str):
        raise DeviceError(f"a device must be a name such as 'cpu' or an ssh:// URL, got {type(name).__name__} "
                          f"{str(name)[:60]!r}; see `edgeslim devices`")
    if name.startswith("ssh://"):
        from edgeslim.devices.remote import RemoteTarget

        target = RemoteTarget(name)
        target.check_available()
        return target
    target = LocalTarget(get_profile(name))
    target.check_available()
    return target
