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
