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
    """The median time in ms of each callable, timed in turns within one process (see `alternating`)."""
    return alternating(calls, rounds, runs, warmup)["p50_ms"]


def alternating(calls: dict, rounds: int = 30, runs: int = 10, warmup: int = 10) -> dict:
    """Each callable timed in turns within one process: {"p50_ms": {name: ms}, "round_p50_ms": {name: [ms per
    round]}, "times_ms": {name: [ms per call]}}.

    This host drifts by tens of percent between runs, and within one process it moves between a fast
    and a slow state for seconds at a time (measured: all-MiniLM-L6-v2 dynamic INT8 3.55 ms in one state,
    6.0 ms in the other, fp32 8.3 and 11.8); timing A then B then A ... in a fresh order each round lets
    drift hit every candidate alike, so their ratio means something where absolute times do not. Use
    `paired_ratios` for that ratio: a p50 over all calls mixes rounds taken in either state.
    """
    import time

    names = list(calls)
    for name in names:
        for _ in range(warmup):
            calls[name]()
    times: dict = {name: [] for name in names}
    per_round: dict = {name: [] for name in names}
    order = np.random.default_rng(0)
    for _ in range(rounds):
        # A fresh order each round, so that no candidate always runs after the same one (whose
        # threads may still be spinning on this small host).
        for name in order.permutation(names):
            call, spent = calls[name], []
            for _ in range(runs):
                started = time.perf_counter()
                call()
                spent.append(time.perf_counter() - started)
            times[name] += spent
            per_round[name].append(float(np.median(spent)) * 1000.0)
    return {"p50_ms": {name: float(np.median(values)) * 1000.0 for name, values in times.items()},
            "round_p50_ms": per_round,
            "times_ms": {name: [value * 1000.0 for value in values] for name, values in times.items()}}


def paired_ratios(round_p50_ms: dict, reference: str) -> dict:
    """Each candidate's time over the reference's, as the median of their ratios round by round.

    The two were timed seconds apart in each round, so a round's ratio compares them in one state of
    the host; the median over rounds is robust to the rounds where the state changed between them.
    """
    base = np.asarray(round_p50_ms[reference], dtype=np.float64)
    return {name: float(np.median(np.asarray(values, dtype=np.float64) / base))
            for name, values in round_p50_ms.items()}
