"""Step configs: typed, checked, serialisable, registered by one decorator."""
import pytest

from edgeslim.compress import check_order, make_step, step_names
from edgeslim.core.errors import ConfigError


def test_every_step_is_registered():
    assert step_names() == ["distill", "dynamic", "fp16", "int4", "int8", "optimize", "prune", "qat"]


def test_config_round_trips_through_dict():
    step = make_step("prune", {"ratio": 0.25, "round_to": 4})
    assert step.ratio == 0.25 and step.round_to == 4
    again = make_step("prune", step.to_dict())
    assert again == step and again.to_dict()["step"] == "prune" and again.to_dict()["version"] == 1


@pytest.mark.parametrize("name, params, message", [
    ("prune", {"ratio": 1.5}, "prune.ratio=1.5 is not allowed: it must be a fraction in (0, 1)"),
    ("prune", {"speed": 1}, "step 'prune' has an unknown option 'speed'; the options are version, ratio"),
    ("distill", {"epochs": "many"}, "step 'distill' option 'epochs' must be a whole number, got 'many'"),
    ("distill", {"epochs": 2.5}, "step 'distill' option 'epochs' must be a whole number, got 2.5"),
    ("int8", {"relative": "flase"}, "step 'int8' option 'relative' must be true or false, got 'flase'"),
    ("prune", {"ratio": True}, "step 'prune' option 'ratio' must be a number, got True"),
    ("prune", {"ratio": "0.25"}, "step 'prune' option 'ratio' must be a number, got '0.25'"),
    ("prune", {"ignore": "conv1"}, "step 'prune' option 'ignore' must be a list of text values, got 'conv1'"),
    ("prune", {"ignore": [1]}, "step 'prune' option 'ignore[0]' must be text, got 1"),
    ("prune", {"ratio": 0.5, "version": 2}, "step 'prune' version 2 is not one this edgeslim reads (it reads 1)"),
    ("prune", {"ratio": 0.5, "version": True}, "step 'prune' version True is not one this edgeslim reads"),
    ("prune", ["ratio"], "step 'prune' options must be a mapping, got ['ratio']"),
    ("int8", {"preset": "fast"}, "int8.preset='fast' is not allowed"),
    ("sparsify", {}, "unknown step 'sparsify'"),
])
def test_bad_configs_name_the_value_and_the_rule(name, params, message):
    with pytest.raises(ConfigError) as caught:
        make_step(name, params)
    assert message in str(caught.value)


def test_torch_steps_cannot_follow_onnx_steps():
    with pytest.raises(ConfigError, match="cannot follow 'int8'"):
        check_order([make_step("int8"), make_step("prune")])
    with pytest.raises(ConfigError, match="at most one quantization step"):
        check_order([make_step("int8"), make_step("fp16")])
