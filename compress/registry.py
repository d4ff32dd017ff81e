"""One mechanism for pipeline steps: a config dataclass, and a handler registered for its type.

Adding a step is one file::

    @dataclass
    class MyStepConfig(StepConfig):
        name: ClassVar[str] = "mystep"
        stage: ClassVar[str] = "torch"      # acts on the nn.Module, before export
        strength: float = 0.5

        def check(self):
            require(0 < self.strength <= 1, "strength", self.strength, "a number in (0, 1]")

    @register_step(MyStepConfig)
    def my_step(model, config: MyStepConfig, ctx: StepContext):
        ...
        return model

Torch-stage steps take and return a torch.nn.Module; ONNX-stage steps take and return an
onnx.ModelProto. An ONNX step that changes the precision of the graph sets `quantizes = True`: a
candidate takes at most one of those, and the ONNX steps that only rewrite the float graph (graph
optimization) come before it. Configs are versioned, checked on construction, and round-trip through JSON, so
the exact config goes into every manifest and report.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from edgeslim.core.documents import Reading, from_dict, object_schema, show, type_schema
from edgeslim.core.errors import ConfigError, require  # noqa: F401 (steps import require from here)

STAGES = ("torch", "onnx")
_CONFIGS: dict[str, type[StepConfig]] = {}
_HANDLERS: dict[type, Callable] = {}


@dataclass
class StepConfig:
    """Base of every step config: typed fields, a version, checks in `check()`."""

    name: ClassVar[str] = ""
    stage: ClassVar[str] = "torch"
    quantizes: ClassVar[bool] = False   # an ONNX step that changes the graph's precision (int8, fp16, ...)
    version: int = field(default=1, metadata={"const": 1})

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ConfigError for a value outside its rule; subclasses override."""

    def to_dict(self) -> dict:
        return {"step": self.name, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, params: dict | None) -> StepConfig:
        """The config from a mapping of options (a recipe's, a manifest's `compression` entry), each
        checked against its field's type: "flase" is not a bool, true is not a ratio."""
        params = {} if params is None else params
        if not isinstance(params, dict):
            raise ConfigError(f"step '{cls.name}' options must be a mapping, got {show(params)}")
        params = {key: value for key, value in params.items() if key != "step"}
        return from_dict(cls, params, step_reading(cls.name))


def step_reading(name: str) -> Reading:
    """How a step's options are named in messages: "step 'prune' option 'ratio' must be a number"."""
    return Reading(f"step '{name}'", ConfigError, field_word="option")


def register_step(config_cls: type[StepConfig]) -> Callable:
    """Register `handler(model, config, ctx) -> model` for configs of type `config_cls`."""
    if config_cls.stage not in STAGES:
        raise ValueError(f"{config_cls.__name__}.stage must be one of {STAGES}")

    def decorator(handler: Callable) -> Callable:
        _CONFIGS[config_cls.name] = config_cls
        _HANDLERS[config_cls] = handler
        return handler

    return decorator


def step_names() -> list[str]:
    return sorted(_CONFIGS)


def step_configs() -> dict[str, type[StepConfig]]:
    """Each registered step's name and config class, by name."""
    return {name: _CONFIGS[name] for name in step_names()}


def step_schema(defs: dict) -> dict:
    """One step of a recipe as JSON Schema: a oneOf over the registered configs, each in the three
    forms a recipe may write it: its name (default options), {name: {options}}, {step: name, options}."""
    forms: list[dict] = [{"enum": step_names(), "description": "A step with its default options."}]
    for name, config_cls in step_configs().items():
        options = type_schema(config_cls, defs)
        forms.append({"type": "object", "properties": {name: {"anyOf": [options, {"type": "null"}]}},
                      "required": [name], "additionalProperties": False})
    for name, config_cls in step_configs().items():
        flat = object_schema(config_cls, {})
        flat.pop("description", None)
        flat["properties"] = {"step": {"const": name}, **flat["properties"]}
        flat["required"] = ["step"]
        forms.append(flat)
    return {"oneOf": forms}


def make_step(name: str, params: dict | None = None) -> StepConfig:
    if name not in _CONFIGS:
        raise ConfigError(f"unknown step {name!r}; the steps are {step_names()}")
    return _CONFIGS[name].from_dict(params)


def apply_step(model, config: StepConfig, ctx) -> Any:
    return _HANDLERS[type(config)](model, config, ctx)


def check_order(steps: list[StepConfig]) -> None:
    """Torch steps act before export, ONNX steps after; a recipe must list them that way. Among the ONNX
    steps, at most one quantizes, and the float-graph rewrites (optimize) come before it, once each."""
    seen_onnx = None
    for step in steps:
        if step.stage == "onnx":
            seen_onnx = seen_onnx or step.name
        elif seen_onnx:
            raise ConfigError(f"step '{step.name}' acts on the torch model and cannot follow "
                              f"'{seen_onnx}', which acts on the exported ONNX model; list it first")
    onnx_steps = [step.name for step in steps if step.stage == "onnx"]
    quantizing = [step.name for step in steps if step.stage == "onnx" and step.quantizes]
    if len(quantizing) > 1:
        raise ConfigError(f"a candidate takes at most one quantization step, got {quantizing}")
    _check_graph_rewrites(steps)
    names = [step.name for step in steps]
    if "qat" in names and quantizing:
        raise ConfigError(f"qat already quantizes the model; it cannot be followed by {quantizing[0]}: choose one")
    if "qat" in names and names.index("qat") != len(names) - 1 - len(onnx_steps):
        raise ConfigError("qat must be the last torch step: pruning or distilling after it would undo its quantizers")


def _check_graph_rewrites(steps: list[StepConfig]) -> None:
    """A float-graph rewrite runs once, and before the quantization step (whose graph it cannot read)."""
    quantized_by = None
    seen = set()
    for step in (s for s in steps if s.stage == "onnx"):
        if step.quantizes:
            quantized_by = step.name
            continue
        if quantized_by:
            raise ConfigError(f"step '{step.name}' rewrites the float graph and cannot follow '{quantized_by}', "
                              f"which quantizes it; list '{step.name}' first")
        if step.name in seen:
            raise ConfigError(f"step '{step.name}' is listed twice; a candidate runs it once")
        seen.add(step.name)
