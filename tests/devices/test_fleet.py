"""Lanes: remote devices measured side by side, the host's own targets one at a time, a dropped device's rows failed."""
import threading

import pytest

from edgeslim.core.errors import DeviceError
from edgeslim.devices.fleet import HOST_LANE, Failed, Job, lane_of, ran_in_parallel, run_lanes


def test_lanes_run_side_by_side_and_jobs_of_one_lane_in_turn():
    met = threading.Event()
    order = []

    def waits_for_the_other_lane():
        assert met.wait(timeout=10), "the other lane never ran beside this one"
        return "a"

    def lets_the_first_go():
        met.set()
        return "b"

    jobs = [Job("ssh:a", ("a", 1), waits_for_the_other_lane), Job("ssh:b", ("b", 1), lets_the_first_go),
            Job(HOST_LANE, ("h", 1), lambda: order.append(1) or 1),
            Job(HOST_LANE, ("h", 2), lambda: order.append(2) or 2)]
    results, spans = run_lanes(jobs)
    assert results == {("a", 1): "a", ("b", 1): "b", ("h", 1): 1, ("h", 2): 2}
    assert order == [1, 2]
    assert set(spans) == {"ssh:a", "ssh:b", HOST_LANE}
    assert any({"ssh:a", "ssh:b"} <= set(group) for group in ran_in_parallel(spans))


def test_a_device_that_drops_out_fails_its_own_rows_and_no_others():
    def drops():
        raise DeviceError("remote ssh://board does not answer (Connection refused)")

    jobs = [Job("ssh:board", ("board", 1), lambda: 5.0), Job("ssh:board", ("board", 2), drops),
            Job("ssh:board", ("board", 3), lambda: 7.0), Job(HOST_LANE, ("cpu", 1), lambda: 1.0)]
    results, _ = run_lanes(jobs)
    assert results[("board", 1)] == 5.0 and results[("cpu", 1)] == 1.0
    assert isinstance(results[("board", 2)], Failed) and "does not answer" in results[("board", 2)].reason
    assert isinstance(results[("board", 3)], Failed) and results[("board", 3)].reason.startswith("not measured:")


def test_a_bug_in_a_lane_is_not_taken_for_a_dropped_device():
    def bug():
        raise ZeroDivisionError("a bug")

    with pytest.raises(ZeroDivisionError):
        run_lanes([Job("ssh:x", ("x",), bug), Job(HOST_LANE, ("h",), lambda: 1)])


def test_targets_measured_here_share_the_host_lane():
    from edgeslim.devices.remote import RemoteTarget
    from edgeslim.devices.targets import get_target

    assert lane_of(get_target("cpu")) == lane_of(get_target("cpu-1t")) == HOST_LANE
    assert lane_of(RemoteTarget("ssh://pi@10.0.0.7:2222")) == "ssh:pi@10.0.0.7:2222"
