"""Pareto fronts, the slower-than-baseline flag, and sweep grids, on known numbers."""
import pytest

from edgeslim.core.errors import ConfigError
from edgeslim.recipe import recipe_from_dict, sweep_candidates
from edgeslim.report.pareto import mark_fronts


def _entry(name, accuracy, size, p50):
    return {"name": name, "accuracy": accuracy, "size_bytes": size, "latency": {"cpu": {"p50_ms": p50}}}


def test_fronts_and_slowdowns():
    report = {"baseline": "fp32", "candidates": [
        _entry("fp32", 99.0, 4000, 1.0),
        _entry("int8", 99.0, 1000, 1.2),     # smaller than fp32 at equal accuracy, but slower
        _entry("pruned", 98.5, 800, 0.3),    # smallest so far, fastest
        _entry("worse", 98.0, 900, 0.5),     # dominated on both fronts by pruned
    ]}
    mark_fronts(report)
    by = {e["name"]: e for e in report["candidates"]}
    assert {n for n, e in by.items() if e["pareto"]["size"]} == {"int8", "pruned"}
    assert {n for n, e in by.items() if e["pareto"]["latency[cpu]"]} == {"fp32", "pruned"}
    assert by["int8"]["slower_than_baseline"] == {"cpu": True}
    assert by["pruned"]["slower_than_baseline"] == {"cpu": False}
    assert by["fp32"]["slower_than_baseline"] == {}


def test_sweep_makes_the_grid():
    names = [c["name"] for c in sweep_candidates({"prune": [0, 0.5], "quantize": ["none", "int8", "fp16"],
                                                  "distill": {"epochs": 3}})]
    assert names == ["fp32", "fp32-int8", "fp32-fp16", "p0.5-kd", "p0.5-kd-int8", "p0.5-kd-fp16"]
    recipe = recipe_from_dict({"model": "m.py:f", "data": "d.py:g", "sweep": {"prune": [0.5], "quantize": ["int8"],
                                                                               "distill": {"epochs": 3}}})
    assert [s.name for s in recipe.candidates[0].steps] == ["prune", "distill", "int8"]
    assert recipe.candidates[0].steps[1].epochs == 3
    with pytest.raises(ConfigError, match="unknown key 'ratios'"):
        sweep_candidates({"ratios": [0.5]})
