"""Typed, versioned documents (edgeslim.core.documents): every field checked against its annotation with
one sentence naming the field, the value and the type; versions and formats checked; JSON Schemas
generated from the same annotations and kept under schemas/."""
import json
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pytest

from edgeslim.core.documents import DRAFT, ONE_LINE, Reading, from_dict, json_schema
from edgeslim.core.errors import BundleError, ConfigError
from edgeslim.recipe import recipe_from_dict
from edgeslim.schemas import KINDS, schema_for, schema_text
from helpers import REPO


@dataclass
class Inner:
    """A nested document."""

    size: int = field(metadata={"minimum": 0})
    label: str | None = None


@dataclass
class Sample:
    name: str = field(metadata={"minLength": 1, **ONE_LINE})
    ratio: float
    count: int = 3
    flag: bool = False
    tags: list[str] = field(default_factory=list)
    table: dict[str, int] = field(default_factory=dict)
    inner: Inner | None = None
    items: list[Inner] = field(default_factory=list)
    mode: Literal["fast", "slow"] = "fast"
    anything: Any = None
    version: int = field(default=1, metadata={"const": 1})


@dataclass
class Lenient:
    NULL_IS_DEFAULT: ClassVar[bool] = True
    count: int = 3


@dataclass
class Extensible:
    OPEN: ClassVar[bool] = True
    name: str


READ = Reading("sample s.json", BundleError, hint="rebuild it")


def _read(cls=Sample, **data):
    return from_dict(cls, {"name": "a", "ratio": 0.5, **data} if cls is Sample else data, READ)


def test_a_valid_document_reads_with_ints_taken_as_floats():
    sample = _read(ratio=1, tags=["x"], table={"a": 1}, inner={"size": 2}, items=[{"size": 0, "label": "z"}])
    assert sample.ratio == 1.0 and isinstance(sample.ratio, float)
    assert sample.inner == Inner(2) and sample.items == [Inner(0, "z")] and sample.count == 3


@pytest.mark.parametrize("data, message", [
    ({"count": True}, "'count' must be a whole number, got True"),
    ({"count": 2.0}, "'count' must be a whole number, got 2.0"),
    ({"count": "3"}, "'count' must be a whole number, got '3'"),
    ({"ratio": True}, "'ratio' must be a number, got True"),
    ({"ratio": "0.5"}, "'ratio' must be a number, got '0.5'"),
    ({"ratio": 10 ** 400}, "'ratio' must be a number, got <an integer of 1329 bits>"),
    ({"flag": "flase"}, "'flag' must be true or false, got 'flase'"),
    ({"flag": 1}, "'flag' must be true or false, got 1"),
    ({"name": True}, "'name' must be text, got True"),
    ({"name": ""}, "'name' must not be empty"),
    ({"name": "a\nb"}, "'name' must be one line of text, got 'a\\nb'"),
    ({"tags": "x"}, "'tags' must be a list of text values, got 'x'"),
    ({"tags": ["x", 2]}, "'tags[1]' must be text, got 2"),
    ({"table": {"a": "1"}}, "'table.a' must be a whole number, got '1'"),
    ({"table": {1: 1}}, "'table' has a key 1 that is not text"),
    ({"inner": {"size": -1}}, "'inner.size' must be at least 0, got -1"),
    ({"inner": {}}, "'inner' lacks 'size'"),
    ({"inner": [1]}, "'inner' must be a mapping or null, got [1]"),
    ({"items": [{"size": 1, "colour": "red"}]}, "'items[0]' has an unknown key 'colour'; the keys are size, label"),
    ({"mode": "medium"}, "'mode' must be 'fast' or 'slow', got 'medium'"),
    ({"version": 2}, "sample s.json version 2 is not one this edgeslim reads (it reads 1)"),
    ({"version": True}, "sample s.json version True is not one this edgeslim reads (it reads 1)"),
    ({"speed": 1}, "sample s.json has an unknown key 'speed'; the keys are name, ratio, count, flag"),
    ({"x" * 1000: 1}, "sample s.json has an unknown key 'xxxxxxxxxx"),
    ({"table": {"a\nb": "x"}}, "'table.a\\nb' must be a whole number, got 'x'"),
])
def test_a_wrong_field_is_one_sentence_naming_field_value_and_type(data, message):
    with pytest.raises(BundleError) as raised:
        _read(**data)
    text = str(raised.value)
    assert message in text and text.endswith("; rebuild it"), text
    assert "\n" not in text and len(text) < 400


def test_a_missing_field_is_named():
    with pytest.raises(BundleError, match="sample s.json lacks 'ratio'; rebuild it"):
        from_dict(Sample, {"name": "a"}, READ)
    with pytest.raises(BundleError, match=r"sample s.json must be a mapping, got \[1, 2\]"):
        from_dict(Sample, [1, 2], READ)


def test_null_means_the_default_only_where_a_class_says_so():
    assert from_dict(Lenient, {"count": None}, READ).count == 3
    with pytest.raises(BundleError, match="'count' must be a whole number, got None"):
        _read(count=None)


def test_an_open_document_reads_past_keys_it_does_not_know():
    assert from_dict(Extensible, {"name": "a", "added_later": [1]}, READ).name == "a"


def test_nan_passes_bounds_for_a_gate_to_refuse_with_its_reason():
    assert math.isnan(_read(inner={"size": 1}, ratio=math.nan).ratio)


def test_the_schema_comes_from_the_same_annotations():
    schema = json_schema(Sample, title="sample")
    assert schema["$schema"] == DRAFT == "https://json-schema.org/draft/2020-12/schema"
    props = schema["properties"]
    assert schema["required"] == ["name", "ratio"] and schema["additionalProperties"] is False
    assert props["name"] == {"type": "string", "minLength": 1, **ONE_LINE}
    assert props["ratio"] == {"type": "number"} and props["count"] == {"type": "integer", "default": 3}
    assert props["flag"] == {"type": "boolean", "default": False}
    assert props["tags"] == {"type": "array", "items": {"type": "string"}, "default": []}
    assert props["table"] == {"type": "object", "additionalProperties": {"type": "integer"}, "default": {}}
    assert props["inner"] == {"anyOf": [{"$ref": "#/$defs/Inner"}, {"type": "null"}], "default": None}
    assert props["mode"] == {"enum": ["fast", "slow"], "default": "fast"}
    assert props["version"] == {"const": 1, "default": 1} and props["anything"] == {"default": None}
    assert schema["$defs"]["Inner"] == {
        "type": "object", "description": "A nested document.",
        "properties": {"size": {"type": "integer", "minimum": 0},
                       "label": {"type": ["string", "null"], "default": None}},
        "required": ["size"], "additionalProperties": False}
    assert json_schema(Extensible)["additionalProperties"] is True
    assert json_schema(Lenient)["properties"]["count"] == {"type": ["integer", "null"], "default": 3}


# -- the published schemas ----------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_the_committed_schema_is_what_the_code_generates(kind):
    """After changing a document's fields: `python -m edgeslim.schemas schemas/`, and commit."""
    committed = REPO / "schemas" / f"{kind}.schema.json"
    assert committed.read_text() == schema_text(kind), f"{committed} is stale: run python -m edgeslim.schemas schemas/"
    assert json.loads(committed.read_text())["$schema"] == DRAFT


def test_the_recipe_schema_offers_each_registered_step_in_each_form():
    from edgeslim.compress import step_names

    schema = schema_for("recipe")
    steps = schema["$defs"]["Candidate"]["properties"]["steps"]
    assert steps["type"] == ["array", "null"]  # null: no steps, as YAML writes `steps:`
    forms = steps["items"]["oneOf"]
    assert forms[0]["enum"] == step_names()
    keyed = {next(iter(form["properties"])) for form in forms[1:] if "step" not in form["properties"]}
    flat = {form["properties"]["step"]["const"] for form in forms if "step" in form.get("properties", {})}
    assert keyed == flat == set(step_names())
    assert schema["$defs"]["PruneConfig"]["properties"]["ratio"] == {"type": "number", "default": 0.5}
    assert schema["$defs"]["Int8Config"]["properties"]["max_accuracy_drop"]["type"] == ["number", "null"]
    assert schema["properties"]["version"] == {"const": 1, "default": 1}


def test_the_manifest_and_report_schemas_name_their_format():
    assert schema_for("manifest")["properties"]["format"]["const"] == "edgeslim-bundle/1"
    assert schema_for("report")["properties"]["format"]["const"] == "edgeslim-report/1"
    assert schema_for("report")["$defs"]["CandidateResult"]["properties"]["passed"]["type"] == ["boolean", "null"]
    with pytest.raises(ConfigError, match="there is no schema 'bundle'; the schemas are recipe, manifest, report"):
        schema_for("bundle")


def test_documents_edgeslim_writes_match_their_schemas(tmp_path):
    """Where jsonschema is installed: the schema accepts what edgeslim writes and refuses a wrong type."""
    jsonschema = pytest.importorskip("jsonschema")
    from tiny import tiny_report, write_tiny_bundle

    manifest = json.loads((write_tiny_bundle(tmp_path / "b") / "manifest.json").read_text())
    recipe = {"model": "m.py:f", "data": "d.py:g", "candidates": [{"name": "a", "steps": ["int8"]},
              {"name": "b", "steps": [{"prune": {"ratio": 0.5}}, {"step": "distill", "epochs": 2}]}]}
    for kind, document in (("manifest", manifest), ("report", tiny_report()), ("recipe", recipe)):
        jsonschema.Draft202012Validator(schema_for(kind)).validate(document)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**recipe, "candidates": [{"name": "a", "steps": [{"int8": {"relative": "flase"}}]}]},
                            schema_for("recipe"))


# -- the recipe as a typed document -------------------------------------------------------------------

GOOD = {"model": "m.py:f", "data": "d.py:g", "candidates": [{"name": "a"}]}


def _steps(*steps):
    return {**GOOD, "candidates": [{"name": "a", "steps": list(steps)}]}


@pytest.mark.parametrize("recipe, message", [
    (_steps({"int8": {"relative": "flase"}}), "step 'int8' option 'relative' must be true or false, got 'flase'"),
    (_steps({"prune": {"ratio": True}}), "step 'prune' option 'ratio' must be a number, got True"),
    (_steps({"distill": {"epochs": True}}), "step 'distill' option 'epochs' must be a whole number, got True"),
    (_steps({"prune": {"ratio": 0.5, "version": 2}}), "step 'prune' version 2 is not one this edgeslim reads"),
    (_steps({"step": "prune", "ratio": 0.5, "version": "1"}), "step 'prune' version '1' is not one"),
    (_steps({"prune": {"ignore": "head"}}), "step 'prune' option 'ignore' must be a list of text values, got 'head'"),
    ({**GOOD, "version": 99}, "recipe version 99 is not one this edgeslim reads (it reads 1)"),
    ({**GOOD, "gates": {"max_accuracy_drop": "abc"}}, "recipe 'gates.max_accuracy_drop' must be a number or null, "
                                                      "got 'abc'"),
    ({**GOOD, "gates": "abc"}, "recipe 'gates' must be a mapping, got 'abc'"),
    ({**GOOD, "bench": {"batch": True}}, "recipe 'bench.batch' must be a whole number, got True"),
    ({**GOOD, "model": "m.py:f\nimport os"}, "recipe 'model' must be one line of text"),
    ({**GOOD, "candidates": ["a"]}, "recipe 'candidates[0]' must be a mapping, got 'a'"),
])
def test_a_recipe_of_wrong_types_is_one_sentence(recipe, message):
    with pytest.raises(ConfigError) as raised:
        recipe_from_dict(recipe)
    assert message in str(raised.value) and "\n" not in str(raised.value), str(raised.value)


def test_a_null_in_a_recipe_means_the_default(tmp_path):
    from edgeslim.recipe import load_recipe

    path = tmp_path / "r.yaml"
    path.write_text("model: m.py:f\ndata: d.py:g\nmetric:\ndevices:\nbench:\ncandidates:\n"
                    "  - name: a\n    steps:\n  - name: b\n    steps: [{prune: {ratio: 5e-1}}, {distill: }]\n")
    recipe = load_recipe(path)
    assert recipe.metric == "top1" and recipe.devices == ["cpu"] and recipe.bench == {}
    assert recipe.candidates[0].steps == [] and recipe.candidates[1].steps[0].ratio == 0.5  # 5e-1 is a number
    assert recipe.candidates[1].steps[1].epochs == 10


def test_the_embedded_default_and_its_record_read_back():
    from edgeslim.recipe import default_recipe

    recipe = default_recipe()
    again = recipe_from_dict({key: value for key, value in recipe.to_dict().items()})
    assert again.to_dict() == recipe.to_dict()
