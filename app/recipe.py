"""Recipes: a model, its data, and an ordered list of step configs per candidate.

    model: path/to/model.py:factory
    data: path/to/data.py:factory
    train: {epochs: 15}            # optional: train the model first (cached)
    devices: [cpu]
    candidates:
      - name: fp32
      - name: pruned-kd-int8
        steps: [{prune: {ratio: 0.6}}, {distill: {epochs: 12}}, int8]

A recipe is read within bounds (see edgeslim.core.limits and _RecipeLoader) and every value is checked
for its type here, so a wrong or hostile recipe fails with one sentence, never a hang or a traceback.
Its JSON Schema, for editors, comes from the same typed fields: recipe_schema(), kept in
schemas/recipe.schema.json.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import yaml

from edgeslim.compress.registry import StepConfig, make_step, require, step_names, step_schema
from edgeslim.core.documents import ONE_LINE, Reading, check_keys, from_dict, json_schema
from edgeslim.core.documents import clip as _clip
from edgeslim.core.documents import show as _show
from edgeslim.core.errors import ConfigError
from edgeslim.core.limits import MAX_DEPTH, RECIPE_MAX_BYTES, read_bounded_text
from edgeslim.plan import QUANTIZE_MODES, PlanOptions, plan_steps

RECIPE_VERSION = 1
MAX_ALIASES = 32            # a hand-written recipe reuses a block a few times, never more
MAX_NODES = 100_000         # values once aliases are expanded; a real recipe has a few hundred
MAX_INT_CHARS = 64          # longer integer literals cost quadratic time to build (base-60 ones)
MAX_CANDIDATES = 1000       # each candidate is a build; a sweep grid beyond this is a mistake
MAX_NAME_CHARS = 200        # a candidate name is a directory name
MAX_OPTION_TEXT = 4096      # a step option is a number, a name, or a short list of names
MAX_OPTION_LIST = 1000
SWEEP_MODES = (*QUANTIZE_MODES, "qat")


# A recipe is a typed document (edgeslim.core.documents): each field below is checked against its
# annotation when read, and the recipe's JSON Schema (`recipe_schema`) comes from the same fields.
# A null in a recipe means the field's default, as YAML writes an empty value as null.

def _candidate_name(value, path: str, reading: Reading) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        reading.fail(path, f"must be text, got {_show(value)}")
    return str(value)


def _steps(value, path: str, reading: Reading) -> list[StepConfig]:
    if value is None:
        return []
    if not isinstance(value, list):
        reading.fail(path, f"must be a list like [int8], got {_show(value)}")
    return [_parse_step(entry) for entry in value]


def _devices(value, path: str, reading: Reading) -> list[str]:
    devices = [value] if isinstance(value, str) else value
    if not isinstance(devices, list) or not all(isinstance(d, str) and d and d.isprintable() for d in devices):
        reading.fail(path, f"must be a list of device names like [cpu], got {_show(value)}")
    return devices


def _bench_config():
    from edgeslim.devices.runner import BenchConfig

    return BenchConfig


def _export_config():
    from edgeslim.export.onnx_export import ExportConfig

    return ExportConfig


def _gate_config():
    from edgeslim.report.gates import GateConfig

    return GateConfig


_TEXT = {"minLength": 1, **ONE_LINE}
_DEVICES_SCHEMA = {"anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string", "minLength": 1}}]}


@dataclass
class TrainConfig:
    """Train the model before compressing it (the embedded demo starts from an untrained CNN)."""

    NULL_IS_DEFAULT: ClassVar[bool] = True
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
    """One bundle to build: a name (its folder) and its steps, in order."""

    NULL_IS_DEFAULT: ClassVar[bool] = True
    name: str = field(metadata={"parse": _candidate_name, "schema": {"type": ["string", "number"]}})
    steps: list[StepConfig] = field(default_factory=list, metadata={
        "parse": _steps, "schema": lambda defs: {"type": "array", "items": step_schema(defs)},
        "description": "Steps in order: torch steps (prune, distill, qat), then the ONNX steps: optimize "
                       "(transformer fusions) before one quantization (int8, dynamic, fp16, int4)."})

    def to_dict(self) -> dict:
        return {"name": self.name, "steps": [step.to_dict() for step in self.steps]}


@dataclass
class Recipe:
    """An edgeslim recipe: a model, its data, and the candidates to build from it, validate and gate."""

    NULL_IS_DEFAULT: ClassVar[bool] = True
    SCHEMA_EXTRA: ClassVar[dict] = {"anyOf": [{"required": ["candidates"]}, {"required": ["sweep"]}]}
    model: str = field(metadata={**_TEXT, "description": "path/to/file.py:factory or package.module:factory"})
    data: str = field(metadata={**_TEXT, "description": "A data factory spec returning {'val', 'train', ...}."})
    candidates: list[Candidate] = field(default_factory=list)
    weights: str | None = field(default=None, metadata=ONE_LINE)
    metric: str = field(default="top1", metadata={**_TEXT, "description": "top1, or a spec of fn(outputs, labels)."})
    train: TrainConfig | None = None
    devices: list[str] = field(default_factory=lambda: ["cpu"], metadata={"parse": _devices, "schema": _DEVICES_SCHEMA})
    baseline: str | None = field(default=None, metadata=ONE_LINE)
    bench: dict = field(default_factory=dict, metadata={"options_of": _bench_config})
    gates: dict = field(default_factory=dict, metadata={"options_of": _gate_config})
    export: dict = field(default_factory=dict, metadata={"options_of": _export_config})
    sweep: dict = field(default_factory=dict, metadata={
        "description": "A grid of candidates: {prune: [0, 0.5], quantize: [none, int8], distill: {...}, round_to: 8}."})
    version: int = field(default=RECIPE_VERSION, metadata={"const": RECIPE_VERSION})

    def __post_init__(self):
        # type() rather than isinstance(): True is an int, and no recipe means version True.
        if type(self.version) is not int or self.version != RECIPE_VERSION:
            raise ConfigError(f"recipe version {_show(self.version)} is not one this edgeslim reads; "
                              f"write version: {RECIPE_VERSION} or leave it out")
        names = [c.name for c in self.candidates]
        if not names:
            raise ConfigError("a recipe needs at least one candidate under 'candidates'")
        if len(set(names)) != len(names):
            raise ConfigError(f"candidate names repeat: {_show(names)}; give each its own name")
        for name in names:
            if not name or "/" in name or "\\" in name or "\0" in name or name.startswith(".") \
                    or len(name) > MAX_NAME_CHARS:
                raise ConfigError(f"candidate name {_show(name)} must be a plain directory name "
                                  f"of at most {MAX_NAME_CHARS} characters")
        if self.baseline is not None and self.baseline not in names:
            raise ConfigError(f"baseline {_show(self.baseline)} names no candidate; the candidates are {_show(names)}")

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["candidates"] = [c.to_dict() for c in self.candidates]
        return data


# -- from a parsed mapping -----------------------------------------------------------------------

def _step_name(name) -> str:
    if not isinstance(name, str) or name not in step_names():
        raise ConfigError(f"unknown step {_show(name)}; the steps are {step_names()}")
    return name


def _plain(value) -> bool:
    """A step option small enough to quote: a number, a name, or a short list of them."""
    if isinstance(value, list):
        return len(value) <= MAX_OPTION_LIST and all(not isinstance(v, list) and _plain(v) for v in value)
    return value is None or isinstance(value, (bool, int, float)) or \
        (isinstance(value, str) and len(value) <= MAX_OPTION_TEXT)


def _step_options(name: str, params) -> dict | None:
    if params is None:
        return None
    if not isinstance(params, dict):
        raise ConfigError(f"step '{name}' options must be a mapping, got {_show(params)}")
    for key, value in params.items():
        if not isinstance(key, str) or len(key) > 64:
            raise ConfigError(f"step '{name}' has no option {_show(key)}")
        if not _plain(value):
            raise ConfigError(f"step '{name}' option {_show(key)} must be a number, a name or a list of names, "
                              f"got {_show(value)}")
    return params


def _parse_step(entry) -> StepConfig:
    if isinstance(entry, str):
        return make_step(_step_name(entry))
    if isinstance(entry, dict) and len(entry) == 1:
        (name, params), = entry.items()
        return make_step(_step_name(name), _step_options(name, params))
    if isinstance(entry, dict) and "step" in entry:
        return make_step(_step_name(entry["step"]), _step_options(entry["step"], entry))
    raise ConfigError(f"a step must be a name or {{name: {{options}}}}, got {_show(entry)}")


def _candidate_entries(data: dict) -> list:
    listed = data.get("candidates") or []
    if not isinstance(listed, list):
        raise ConfigError(f"recipe 'candidates' must be a list of {{name, steps}}, got {_show(listed)}")
    if len(listed) > MAX_CANDIDATES:
        raise ConfigError(f"recipe has {len(listed):,} candidates, over the limit of {MAX_CANDIDATES:,}")
    entries = listed + sweep_candidates(data.get("sweep") or {})
    if len(entries) > MAX_CANDIDATES:
        raise ConfigError(f"recipe makes {len(entries):,} candidates, over the limit of {MAX_CANDIDATES:,}")
    return entries


def recipe_from_dict(data: dict, where: str = "recipe") -> Recipe:
    """The recipe in a parsed mapping, every field checked for its type; `where` names it in messages."""
    if not isinstance(data, dict):
        raise ConfigError("a recipe must be a YAML mapping with 'model', 'data' and 'candidates'")
    reading = Reading(where)
    check_keys(Recipe, data, reading)
    if "candidates" not in data and "sweep" not in data:
        raise ConfigError(f"{where} lacks 'candidates' (or a 'sweep' that makes them)")
    return from_dict(Recipe, {**data, "candidates": _candidate_entries(data)}, reading)


def recipe_schema() -> dict:
    """The JSON Schema of a recipe file, its steps a oneOf over the registered step configs."""
    import edgeslim.compress  # noqa: F401  (registers the steps)

    return json_schema(Recipe, title="edgeslim recipe")


def _sweep_lists(sweep: dict) -> tuple[list, list]:
    ratios = sweep.get("prune", [0])
    modes = sweep.get("quantize", ["none"])
    if not isinstance(ratios, list) or not isinstance(modes, list):
        raise ConfigError("recipe 'sweep' prune and quantize must be lists")
    if not all(isinstance(r, (int, float)) and not isinstance(r, bool) for r in ratios):
        raise ConfigError(f"recipe 'sweep' prune must be a list of ratios like [0, 0.5], got {_show(ratios)}")
    if not all(m is None or isinstance(m, str) for m in modes):
        raise ConfigError(f"recipe 'sweep' quantize must be a list of modes like [none, int8], got {_show(modes)}")
    for mode in modes:
        if mode is not None and mode not in SWEEP_MODES:
            _step_name(mode)  # an unknown step is named as such
            raise ConfigError(f"recipe 'sweep' quantize {_show(mode)} is not a quantization mode; "
                              f"the modes are {', '.join(SWEEP_MODES)}")
    if len(ratios) * len(modes) > MAX_CANDIDATES:
        raise ConfigError(f"recipe 'sweep' makes {len(ratios) * len(modes):,} candidates, "
                          f"over the limit of {MAX_CANDIDATES:,}")
    return ratios, modes


def sweep_candidates(sweep: dict) -> list[dict]:
    """A grid of pruning ratios and quantization modes, as candidates.

        sweep: {prune: [0, 0.5, 0.7], quantize: [none, int8], distill: {epochs: 8}, round_to: 8}

    Ratio 0 is the unpruned model; every pruned one is distilled with the `distill` options.
    """
    if not sweep:
        return []
    if not isinstance(sweep, dict):
        raise ConfigError("recipe 'sweep' must be a mapping like {prune: [0, 0.5], quantize: [none, int8]}")
    unknown = [key for key in sweep if key not in ("prune", "quantize", "distill", "round_to")]
    if unknown:
        raise ConfigError(f"recipe 'sweep' has an unknown key {_show(unknown[0])}; "
                          "the keys are distill, prune, quantize, round_to")
    ratios, modes = _sweep_lists(sweep)
    distill = sweep.get("distill") or {}
    if not isinstance(distill, dict):
        raise ConfigError(f"recipe 'sweep' distill must be a mapping of options, got {_show(distill)}")
    _step_options("distill", distill)
    round_to = sweep.get("round_to", 8)
    if not isinstance(round_to, int) or isinstance(round_to, bool):
        raise ConfigError(f"recipe 'sweep' round_to must be a whole number like 8, got {_show(round_to)}")
    candidates = []
    for ratio in ratios:
        for mode in modes:
            steps = plan_steps(_sweep_options(ratio, mode, round_to, distill))
            name = ("fp32" if not ratio else f"p{ratio:g}-kd") + ("" if mode in ("none", None) else f"-{mode}")
            candidates.append({"name": name, "steps": [step.to_dict() for step in steps]})
    return candidates


def _sweep_options(ratio: float, mode: str | None, round_to: int, distill: dict) -> PlanOptions:
    """A grid point as the planner's options: `qat` is quantization-aware training with its default epochs."""
    qat_epochs = make_step("qat").epochs if mode == "qat" else None
    quantize = "none" if mode in (None, "qat") else mode
    return PlanOptions(prune=ratio, round_to=round_to, distill_options=dict(distill), quantize=quantize,
                       qat_epochs=qat_epochs)


# -- from a file ---------------------------------------------------------------------------------

_INT_TAG = "tag:yaml.org,2002:int"


class _RecipeLoader(yaml.SafeLoader):
    """A SafeLoader that refuses what no hand-written recipe needs and a hostile one relies on.

    A YAML alias is a reference: ten short lines of anchors can stand for a billion values, which
    PyYAML builds cheaply (shared lists) but anything that copies, prints or serialises the recipe
    expands. So aliases are limited to MAX_ALIASES uses, nesting to MAX_DEPTH levels while
    composing, and the expanded size to MAX_NODES (counted by _check_expansion without expanding).
    """

    def __init__(self, text: str, what: str):
        super().__init__(text)
        self.what, self.aliases, self.depth, self.nodes = what, 0, 0, 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > MAX_ALIASES:
                raise ConfigError(f"{self.what} uses YAML aliases beyond {MAX_ALIASES}; "
                                  "write the values out or use fewer anchors")
            return super().compose_node(parent, index)
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ConfigError(f"{self.what} holds more than {MAX_NODES:,} values; it is not a recipe")
        self.depth += 1
        if self.depth > MAX_DEPTH:  # refused before the composer recurses any deeper
            raise ConfigError(f"{self.what} is nested deeper than {MAX_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


# YAML 1.1 reads 2e-3 (an exponent, no dot) as text; a recipe reads it as the number YAML 1.2 and JSON see,
# so that step options are typed strictly (text is never turned into a number after parsing).
_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def _children(node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value) if isinstance(node, yaml.SequenceNode) else []


def _check_expansion(root, what: str) -> None:
    """Refuse a node graph that expands past MAX_NODES values or MAX_DEPTH levels, or into itself.

    Walked without recursion, each node once: an anchored node's expanded (values, levels) is
    memoised, so the walk costs the document's size, not its expansion.
    """
    expanded: dict[int, tuple[int, int]] = {}
    open_nodes: set[int] = set()        # being walked: meeting one again means a cycle
    pending = [(root, False)]
    while pending:
        node, finished = pending.pop()
        if finished:
            sizes = [expanded[id(child)] for child in _children(node)]
            values = 1 + sum(size for size, _ in sizes)
            levels = 1 + max((depth for _, depth in sizes), default=0)
            if values > MAX_NODES or levels > MAX_DEPTH:
                raise ConfigError(f"{what} uses YAML aliases beyond {MAX_NODES:,} values or {MAX_DEPTH} levels "
                                  "once expanded; write the values out or use fewer anchors")
            expanded[id(node)] = (values, levels)
            open_nodes.discard(id(node))
        elif id(node) in open_nodes:
            raise ConfigError(f"{what} has a YAML alias inside its own anchor; write the values out")
        elif id(node) not in expanded:
            if node.tag == _INT_TAG and len(node.value) > MAX_INT_CHARS:
                raise ConfigError(f"{what} has an integer of {len(node.value):,} characters; "
                                  f"no recipe value needs more than {MAX_INT_CHARS}")
            open_nodes.add(id(node))
            pending.append((node, True))
            pending.extend((child, False) for child in _children(node))


def _yaml_problem(exc: yaml.YAMLError) -> str:
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return _clip(problem, 120) + (f" (line {mark.line + 1}, column {mark.column + 1})" if mark else "")


def parse_yaml(text: str, what: str):
    """The document in `text`, within the bounds of _RecipeLoader; `what` names it in messages."""
    loader = _RecipeLoader(text, what)
    try:
        root = loader.get_single_node()
        if root is None:
            return None
        _check_expansion(root, what)
        return loader.construct_document(root)
    except ConfigError:
        raise
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} is not valid YAML: {_yaml_problem(exc)}") from None
    except (ValueError, OverflowError) as exc:  # a constructor's: a date like 2024-13-45
        raise ConfigError(f"{what} has a value YAML cannot read: {_clip(str(exc), 120)}") from None
    finally:
        loader.dispose()


def load_recipe(path: str | Path) -> Recipe:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"recipe {path} does not exist")
    # Refused by size before any parsing: a recipe is written by hand.
    text = read_bounded_text(path, "recipe", RECIPE_MAX_BYTES, ConfigError)
    recipe = recipe_from_dict(parse_yaml(text, f"recipe {path}"))
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
