"""Latency statistics, stated the way Olive and onnxruntime's perf tool state them."""
from __future__ import annotations

import numpy as np


def summarize(times_ms: list[float], batch: int) -> dict:
    """Percentiles, mean and throughput (samples per second) of per-call times in milliseconds."""
    times = np.asarray(times_ms, dtype=np.float64)
    mean = float(times.mean())
    return {
        "p50_ms": float(np.percentile(times, 50)),
        "p90_ms": float(np.percentile(times, 90)),
        "p99_ms": float(np.percentile(times, 99)),
        "mean_ms": mean,
        "min_ms": float(times.min()),
        "max_ms": float(times.max()),
        "std_ms": float(times.std()),
        "throughput": batch * 1000.0 / mean if mean > 0 else float("inf"),
        "runs": int(times.size),
        "batch": int(batch),
    }


def alternating_p50(calls: dict, rounds: int = 30, runs: int = 10, warmup: int = 10) -> dict:
    """The median time in ms of each callable, timed in turns within one process.

    This host drifts by tens of percent between runs; timing A then B then A ... in a fresh order
    each round lets drift hit every candidate alike, so their ratio means something where absolute times do not.
    """
    import time

    names = list(calls)
    for name in names:
        for _ in range(warmup):
            calls[name]()
    times: dict = {name: [] for name in names}
    order = np.random.default_rng(0)
    for _ in range(rounds):
        # A fresh order each round, so that no candidate always runs after the same one (whose
        # threads may still be spinning on this small host).
        for name in order.permutation(names):
            call, bucket = calls[name], times[name]
            for _ in range(runs):
                started = time.perf_counter()
                call()
                bucket.append(time.perf_counter() - started)
    return {name: float(np.median(values)) * 1000.0 for name, values in times.items()}
