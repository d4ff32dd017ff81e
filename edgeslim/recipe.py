"""Recipes: a model, its data, and an ordered list of step configs per candidate.

    model: path/to/model.py:factory
    data: path/to/data.py:factory
    train: {epochs: 15}            # optional: train the model first (cached)
    devices: [cpu]
    candidates:
      - name: fp32
      - name: pruned-kd-int8
        steps: [{prune: {ratio: 0.6}}, {distill: {epochs: 12}}, int8]
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from edgeslim.compress.registry import StepConfig, make_step, require
from edgeslim.errors import ConfigError

RECIPE_VERSION = 1


@dataclass
class TrainConfig:
    """Train the model before compressing it (the embedded demo starts from an untrained CNN)."""

    epochs: int = 15
    lr: float = 2e-3
    weight_decay: float = 1e-4
    seed: int = 0
    device: str = "auto"            # cuda when torch sees a GPU, else cpu

    def __post_init__(self):
        require(self.epochs >= 1, "train.epochs", self.epochs, "at least 1")
        require(self.lr > 0, "train.lr", self.lr, "positive")


@dataclass
class Candidate:
    name: str
    steps: list[StepConfig] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"name": self.name, "steps": [step.to_dict() for step in self.steps]}


@dataclass
class Recipe:
    model: str
    data: str
    candidates: list[Candidate]
    weights: str | None = None
    metric: str = "top1"
    train: TrainConfig | None = None
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    baseline: str | None = None
    bench: dict = field(default_factory=dict)
    gates: dict = field(default_factory=dict)
    export: dict = field(default_factory=dict)
    sweep: dict = field(default_factory=dict)
    version: int = RECIPE_VERSION

    def __post_init__(self):
        names = [c.name for c in self.candidates]
        if not names:
            raise ConfigError("a recipe needs at least one candidate under 'candidates'")
        if len(set(names)) != len(names):
            raise ConfigError(f"candidate names repeat: {names}; give each its own name")
        for name in names:
            if not name or "/" in name or name.startswith("."):
                raise ConfigError(f"candidate name {name!r} must be a plain directory name")
        if self.baseline is not None and self.baseline not in names:
            raise ConfigError(f"baseline {self.baseline!r} names no candidate; the candidates are {names}")

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["candidates"] = [c.to_dict() for c in self.candidates]
        return data


def _parse_step(entry) -> StepConfig:
    if isinstance(entry, str):
        return make_step(entry)
    if isinstance(entry, dict) and len(entry) == 1:
        (name, params), = entry.items()
        if params is not None and not isinstance(params, dict):
            raise ConfigError(f"step '{name}' options must be a mapping, got {params!r}")
        return make_step(name, params)
    if isinstance(entry, dict) and "step" in entry:
        return make_step(entry["step"], entry)
    raise ConfigError(f"a step must be a name or {{name: {{options}}}}, got {entry!r}")


def recipe_from_dict(data: dict) -> Recipe:
    if not isinstance(data, dict):
        raise ConfigError("a recipe must be a YAML mapping with 'model', 'data' and 'candidates'")
    known = {f.name for f in dataclasses.fields(Recipe)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"recipe has an unknown key {unknown[0]!r}; the keys are {sorted(known)}")
    for key in ("model", "data"):
        if key not in data:
            raise ConfigError(f"recipe lacks '{key}'")
    if "candidates" not in data and "sweep" not in data:
        raise ConfigError("recipe lacks 'candidates' (or a 'sweep' that makes them)")
    data = dict(data)
    data.setdefault("candidates", [])
    if not isinstance(data["candidates"], list):
        raise ConfigError("recipe 'candidates' must be a list of {name, steps}")
    data["candidates"] = data["candidates"] + sweep_candidates(data.get("sweep") or {})
    candidates = []
    for entry in data["candidates"]:
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"each candidate needs a 'name', got {entry!r}")
        candidates.append(Candidate(str(entry["name"]), [_parse_step(s) for s in entry.get("steps") or []]))
    train = data.get("train")
    try:
        train = TrainConfig(**train) if isinstance(train, dict) else None
    except TypeError as exc:
        raise ConfigError(f"recipe 'train': {exc}") from None
    fields = {k: v for k, v in data.items() if k not in ("candidates", "train")}
    if isinstance(fields.get("devices"), str):
        fields["devices"] = [fields["devices"]]
    return Recipe(candidates=candidates, train=train, **fields)


def sweep_candidates(sweep: dict) -> list[dict]:
    """A grid of pruning ratios and quantization modes, as candidates.

        sweep: {prune: [0, 0.5, 0.7], quantize: [none, int8], distill: {epochs: 8}, round_to: 8}

    Ratio 0 is the unpruned model; every pruned one is distilled with the `distill` options.
    """
    if not sweep:
        return []
    if not isinstance(sweep, dict):
        raise ConfigError("recipe 'sweep' must be a mapping like {prune: [0, 0.5], quantize: [none, int8]}")
    unknown = sorted(set(sweep) - {"prune", "quantize", "distill", "round_to"})
    if unknown:
        raise ConfigError(f"recipe 'sweep' has an unknown key {unknown[0]!r}; the keys are distill, prune, quantize, round_to")
    ratios = sweep.get("prune", [0])
    modes = sweep.get("quantize", ["none"])
    if not isinstance(ratios, list) or not isinstance(modes, list):
        raise ConfigError("recipe 'sweep' prune and quantize must be lists")
    candidates = []
    for ratio in ratios:
        for mode in modes:
            steps = []
            if ratio:
                steps += [{"prune": {"ratio": ratio, "round_to": sweep.get("round_to", 8)}},
                          {"distill": dict(sweep.get("distill") or {})}]
            if mode not in ("none", None):
                steps.append(mode)
            name = ("fp32" if not ratio else f"p{ratio:g}-kd") + ("" if mode in ("none", None) else f"-{mode}")
            candidates.append({"name": name, "steps": steps})
    return candidates


def load_recipe(path: str | Path) -> Recipe:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    recipe = recipe_from_dict(data)
    return _relative_to(recipe, path.parent)


def _relative_to(recipe: Recipe, base: Path) -> Recipe:
    """File specs and weights in a recipe are relative to the recipe's folder."""
    def fix(spec):
        if spec and ".py:" in spec and not Path(spec.split(":")[0]).is_absolute():
            return str(base / spec)
        return spec

    recipe.model, recipe.data = fix(recipe.model), fix(recipe.data)
    if recipe.weights and not Path(recipe.weights).is_absolute():
        recipe.weights = str(base / recipe.weights)
    return recipe


def default_recipe() -> Recipe:
    """The embedded default: a CNN on scikit-learn's handwritten digits, four candidates."""
    prune = {"prune": {"ratio": 0.6, "round_to": 8}}
    distill = {"distill": {"epochs": 12, "lr": 1e-3}}
    return recipe_from_dict({
        "model": "edgeslim.demo:digits_cnn",
        "data": "edgeslim.demo:digits_data",
        "train": {"epochs": 15, "lr": 2e-3},
        "devices": ["cpu"],
        "baseline": "fp32",
        "candidates": [
            {"name": "fp32"},
            {"name": "int8", "steps": ["int8"]},
            {"name": "pruned-kd", "steps": [prune, distill]},
            {"name": "pruned-kd-int8", "steps": [prune, distill, "int8"]},
        ],
        "bench": {"runs": 500, "warmup": 50},
    })
