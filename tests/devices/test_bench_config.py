"""A recipe's `bench:` settings are checked when the recipe is read, not after every candidate is built."""
import pytest

from edgeslim.core.errors import ConfigError
from edgeslim.devices.runner import BenchConfig
from edgeslim.recipe import recipe_from_dict


@pytest.mark.parametrize("field, value, rule", [
    ("runs", 0, ">= 1"), ("runs", -5, ">= 1"), ("warmup", -1, ">= 0"), ("batch", 0, ">= 1"),
    ("io", "gpu", "host or device"), ("timeout_s", 0, "> 0"),
])
def test_bench_settings_out_of_range_are_refused(field, value, rule):
    with pytest.raises(ConfigError, match=f"bench.{field}=.*{rule}"):
        BenchConfig(**{field: value})


def test_a_recipe_with_negative_runs_is_refused_before_any_build(cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("model: m.py:f\ndata: d.py:g\nbench: {runs: -5}\ncandidates: [{name: fp32}]\n")
    result = cli("run", recipe, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.strip() == "edgeslim: error: bench.runs=-5 is not allowed: it must be a whole number >= 1"
    assert not (tmp_path / "out").exists()


def test_the_defaults_hold():
    assert BenchConfig().to_dict() == {"runs": 200, "warmup": 20, "batch": 1, "io": "host", "timeout_s": 600.0}
    recipe = recipe_from_dict({"model": "m.py:f", "data": "d.py:g", "bench": {"runs": 7},
                               "candidates": [{"name": "a"}]})
    assert recipe.bench["runs"] == 7   # the BenchConfig built from it is checked (above)
