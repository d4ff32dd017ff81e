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
onnx.ModelProto. Configs are versioned, checked on construction, and round-trip through JSON, so
the exact config goes into every manifest and report.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from edgeslim.core.errors import ConfigError, require  # noqa: F401 (steps import require from here)

STAGES = ("torch", "onnx")
_CONFIGS: dict[str, type[StepConfig]] = {}
_HANDLERS: dict[type, Callable] = {}


@dataclass
class StepConfig:
    """Base of every step config: typed fields, a version, checks in `check()`."""

    name: ClassVar[str] = ""
    stage: ClassVar[str] = "torch"
    version: int = 1

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise ConfigError for a value outside its rule; subclasses override."""

    def to_dict(self) -> dict:
        return {"step": self.name, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, params: dict | None) -> StepConfig:
        params = dict(params or {})
        params.pop("step", None)
        fields = {field.name: field for field in dataclasses.fields(cls)}
        unknown = sorted(set(params) - set(fields))
        if unknown:
            raise ConfigError(f"step '{cls.name}' has no option {unknown[0]!r}; "
                              f"its options are {sorted(fields)}")
        return cls(**{key: _coerce(cls.name, fields[key], value) for key, value in params.items()})


def _coerce(step: str, field: dataclasses.Field, value: Any) -> Any:
    """YAML and the CLI hand us strings and ints; make them the field's declared type."""
    kind = field.type if isinstance(field.type, str) else getattr(field.type, "__name__", "")
    if value is None and "None" in kind:
        return None
    kind = kind.split("|")[0].strip()
    try:
        if kind == "float":
            return float(value)
        if kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if kind == "bool":
            if isinstance(value, str):
                return value.strip().lower() in ("1", "true", "yes", "on")
            return bool(value)
        if kind.startswith("list"):
            if isinstance(value, str):
                return [part.strip() for part in value.split(",") if part.strip()]
            if not isinstance(value, (list, tuple)):
                raise ValueError
            return list(value)
    except (TypeError, ValueError):
        raise ConfigError(f"step '{step}' option '{field.name}' must be {kind}, got {value!r}") from None
    return value


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


def make_step(name: str, params: dict | None = None) -> StepConfig:
    if name not in _CONFIGS:
        raise ConfigError(f"unknown step {name!r}; the steps are {step_names()}")
    return _CONFIGS[name].from_dict(params)


def apply_step(model, config: StepConfig, ctx) -> Any:
    return _HANDLERS[type(config)](model, config, ctx)


def check_order(steps: list[StepConfig]) -> None:
    """Torch steps act before export, ONNX steps after; a recipe must list them that way."""
    seen_onnx = None
    for step in steps:
        if step.stage == "onnx":
            seen_onnx = seen_onnx or step.name
        elif seen_onnx:
            raise ConfigError(f"step '{step.name}' acts on the torch model and cannot follow "
                              f"'{seen_onnx}', which acts on the exported ONNX model; list it first")
    onnx_steps = [step.name for step in steps if step.stage == "onnx"]
    if len(onnx_steps) > 1:
        raise ConfigError(f"a candidate takes at most one quantization step, got {onnx_steps}")
    names = [step.name for step in steps]
    if "qat" in names and onnx_steps:
        raise ConfigError(f"qat already quantizes the model; it cannot be followed by {onnx_steps[0]}: choose one")
    if "qat" in names and names.index("qat") != len(names) - 1 - len(onnx_steps):
        raise ConfigError("qat must be the last torch step: pruning or distilling after it would undo its quantizers")
