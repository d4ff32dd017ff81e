"""Measurements over several targets at once, each in its lane.

Targets that run on this host (its CPU profiles, a GPU in it) share one lane: they would disturb each
other's timings, so they take turns. Each remote device is a lane of its own and runs beside the
others and beside the host, since its work happens on its own hardware. A lane whose device stops
answering fails the rest of its jobs with the reason; the other lanes go on.
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from edgeslim.core.errors import DeviceError

HOST_LANE = "this host"
# What a device that dropped out raises (it does not answer, a copy fails, a timeout). A worker that
# crashes there (WorkerCrashed) is a bug, not a dropout: it stops the whole run with exit 3, as before.
DEVICE_FAILURES = (DeviceError,)


@dataclass
class Job:
    """One measurement: `run()` gives its result; `key` says where the result goes."""

    lane: str
    key: tuple
    run: Callable[[], Any]


@dataclass
class Failed:
    """A job whose device failed, with the sentence that says how."""

    reason: str


def lane_of(target) -> str:
    """A remote device's own address; the host's lane for everything measured here, a GPU in this host too
    (its runs keep a CPU core busy feeding it)."""
    key = target.runtime_key()
    return key if key.startswith("ssh:") else HOST_LANE


def run_lanes(jobs: list[Job]) -> tuple[dict, dict]:
    """Every job's result (or Failed) by key, and each lane's (start, end) seconds. Lanes run side by side;
    the jobs of one lane one after another, in the order given."""
    import time

    lanes: dict[str, list[Job]] = {}
    for job in jobs:
        lanes.setdefault(job.lane, []).append(job)
    results, spans, lock, started = {}, {}, threading.Lock(), time.perf_counter()

    def run_lane(name: str) -> None:
        begin, failure = time.perf_counter() - started, None
        for job in lanes[name]:
            if failure is not None:
                outcome = Failed(f"not measured: {failure}")
            else:
                try:
                    outcome = job.run()
                except DEVICE_FAILURES as error:
                    failure = str(error)
                    outcome = Failed(failure)
            with lock:
                results[job.key] = outcome
        spans[name] = (begin, time.perf_counter() - started)

    if len(lanes) <= 1:
        for name in lanes:
            run_lane(name)
        return results, spans
    with ThreadPoolExecutor(max_workers=len(lanes), thread_name_prefix="edgeslim-lane") as pool:
        for future in [pool.submit(run_lane, name) for name in lanes]:
            future.result()  # a bug in a lane (not a device failure) is raised here
    return results, spans


def ran_in_parallel(spans: dict) -> list[list[str]]:
    """Groups of lanes whose measurements overlapped in time (for the report: which ran side by side)."""
    names = sorted(spans, key=lambda name: spans[name][0])
    groups: list[list[str]] = []
    end = None
    for name in names:
        start, stop = spans[name]
        if groups and end is not None and start < end:
            groups[-1].append(name)
            end = max(end, stop)
        else:
            groups.append([name])
            end = stop
    return [group for group in groups if len(group) > 1]
