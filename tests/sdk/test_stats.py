"""Timing statistics: the paired ratio that survives a host moving between a fast and a slow state."""
from edgeslim.sdk.stats import alternating, paired_ratios


def test_paired_ratio_compares_rounds_taken_in_one_state():
    # Rounds alternate between a fast host state (parent 8 ms, int8 3.5 ms) and a slow one (12 and 6);
    # the slow state holds more rounds, so a p50 over everything pairs a slow int8 with a fast parent.
    rounds = {"parent": [8.0] * 4 + [12.0] * 5, "int8": [3.5] * 4 + [6.0] * 5}
    ratio = paired_ratios(rounds, "parent")["int8"]
    assert ratio == 0.5                           # 6/12, the median of 3.5/8 (x4) and 6/12 (x5)
    assert paired_ratios(rounds, "parent")["parent"] == 1.0


def test_alternating_times_every_call_in_each_round():
    counts = {"a": 0, "b": 0}

    def call(name):
        counts[name] += 1

    timed = alternating({"a": lambda: call("a"), "b": lambda: call("b")}, rounds=4, runs=3, warmup=2)
    assert counts == {"a": 14, "b": 14}
    assert {name: len(values) for name, values in timed["round_p50_ms"].items()} == {"a": 4, "b": 4}
    assert set(timed["p50_ms"]) == {"a", "b"}
