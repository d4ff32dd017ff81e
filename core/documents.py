"""Typed, versioned documents: dataclasses read from parsed JSON or YAML, every field checked
against its annotation, and JSON Schemas (draft 2020-12) generated from the same annotations.

    @dataclass
    class Tensor:
        name: str
        dtype: str
        shape: list[int | str | None]

    tensor = from_dict(Tensor, data, Reading("manifest x.json", BundleError, hint="rebuild the bundle"))
    json_schema(Tensor)

The rules: a bool is not a number and text is neither; an int is taken where a float is declared
(and becomes one), never a float where an int is; `X | None` takes null; `list[T]`, `dict[str, T]`,
`Literal[...]` and nested dataclasses are checked all the way down, and the first wrong value is
named in one sentence with its path, its value and the type expected. A key the class does not
declare is refused with the list of those it does, unless the class sets `OPEN = True` (a document
that newer writers may extend: a manifest, a report).

Field metadata says what annotations cannot, in JSON Schema's own words, checked and published
alike: `const` (a format or version this edgeslim reads), `minimum`, `exclusiveMinimum`,
`maximum`, `minLength`, `minItems`, `enum`, `description`. `parse` replaces the check of one
field by a function `(value, path, reading) -> value` and `schema` its schema (a dict, or a
function of the `$defs` being built): for a recipe's steps, whose shapes the step registry knows.
`options_of` (a function returning a dataclass) checks a mapping against that class's fields and
keeps it a mapping of the keys given.

Plain dataclasses and the standard library only: the SDK uses this where only numpy and
onnxruntime are installed.
"""
from __future__ import annotations

import dataclasses
import json
import math
import re
import reprlib
import types
import typing
from functools import cache
from typing import Any, Literal, Union

from edgeslim.core.errors import ConfigError

DRAFT = "https://json-schema.org/draft/2020-12/schema"
_NONE = type(None)
_BOUNDS = ("minimum", "exclusiveMinimum", "maximum", "minLength", "minItems", "enum", "pattern")
# A `pattern` for one-line text: a path, a spec, a name (no line breaks or other control characters).
ONE_LINE = {"pattern": "^[^\\x00-\\x1f\\x7f]*$"}


# -- quoting user values --------------------------------------------------------------------------

class _ShortRepr(reprlib.Repr):
    """reprlib with a guard for huge integers, whose repr is slow or refused (Python >= 3.11)."""

    def repr_int(self, x, level):
        if x.bit_length() > 128:
            return f"<an integer of {x.bit_length()} bits>"
        return super().repr_int(x, level)


_SHORT = _ShortRepr()
_SHORT.maxlevel, _SHORT.maxlist, _SHORT.maxdict, _SHORT.maxstring, _SHORT.maxother = 2, 5, 4, 60, 60


def clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def printable(text: str) -> str:
    """`text` with line breaks and other unprintable characters escaped, so that a message stays one line."""
    return text if text.isprintable() else "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def show(value, limit: int = 80) -> str:
    """A user value as messages quote it: never the whole of it, whatever its size or nesting, on one line."""
    return clip(_SHORT.repr(value), limit)


# -- who reads, for messages ----------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Reading:
    """How a document's problems are told: `where` names the document ("recipe r.yaml", "step
    'prune'"), `field_word` precedes a field's path ("option"), `error` is raised, `hint` ends
    every sentence ("rebuild the bundle")."""

    where: str
    error: type = ConfigError
    hint: str = ""
    field_word: str = ""

    def subject(self, path: str) -> str:
        if not path:
            return self.where
        path = clip(printable(path), 120)  # keys are user text too
        return f"{self.where} {self.field_word} '{path}'" if self.field_word else f"{self.where} '{path}'"

    def fail(self, path: str, problem: str):
        raise self.error(f"{self.subject(path)} {problem}" + (f"; {self.hint}" if self.hint else ""))


# -- reading --------------------------------------------------------------------------------------

def from_dict(cls, data, reading: Reading, path: str = ""):
    """An instance of the dataclass `cls` from a parsed mapping, each field checked (see the module)."""
    return cls(**_checked_fields(cls, data, reading, path))


def check_keys(cls, data, reading: Reading, path: str = "") -> None:
    """Refuse a mapping that is not one, or holds a key `cls` does not declare (unless it is OPEN)."""
    if not isinstance(data, dict):
        reading.fail(path, f"must be {words(cls)}, got {show(data)}")
    if getattr(cls, "OPEN", False):
        return
    known = [field.name for field in _fields(cls)]
    unknown = [key for key in data if key not in known]
    if unknown:
        noun = reading.field_word or "key"
        reading.fail(path, f"has an unknown {noun} {show(unknown[0])}; the {noun}s are {', '.join(known)}")


def _checked_fields(cls, data, reading: Reading, path: str) -> dict:
    check_keys(cls, data, reading, path)
    hints = _hints(cls)
    null_is_default = getattr(cls, "NULL_IS_DEFAULT", False)
    values = {}
    for field in _fields(cls):
        where = f"{path}.{field.name}" if path else field.name
        if field.name not in data or (data[field.name] is None and null_is_default and _has_default(field)
                                      and not _accepts_none(hints[field.name])):
            if not _has_default(field):
                reading.fail(path, f"lacks '{field.name}'")
            continue
        values[field.name] = check_field(field, hints[field.name], data[field.name], reading, where)
    return values


def check_field(field: dataclasses.Field, annotation, value, reading: Reading, path: str):
    """One field's value: its const, its own parser, or its annotation; then its bounds."""
    meta = field.metadata
    if "const" in meta:
        const = meta["const"]
        if type(value) is not type(const) or value != const:
            name = path.rpartition(".")[2]
            raise reading.error(f"{reading.where} {name} {show(value)} is not one this edgeslim reads "
                                f"(it reads {const!r})" + (f"; {reading.hint}" if reading.hint else ""))
        return value
    if "parse" in meta:
        return meta["parse"](value, path, reading)
    if "options_of" in meta:
        options_cls = meta["options_of"]()
        if value is None and _has_default(field):
            return {}
        return _options(options_cls, value, reading, path)
    value = check_value(annotation, value, reading, path)
    _check_bounds(meta, value, reading, path)
    return value


def _options(cls, value, reading: Reading, path: str) -> dict:
    """A mapping of options for `cls`, each checked against its field, kept as the keys given."""
    options = _checked_fields(cls, value, reading, path)
    cls(**options)  # the class's own range checks, now rather than when the options are used
    return options


def check_value(annotation, value, reading: Reading, path: str):
    """`value` checked against `annotation` (and made a float where one is declared)."""
    if annotation is Any or annotation is typing.Any:
        return value
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (Union, types.UnionType):
        return _check_union(annotation, args, value, reading, path)
    if origin is Literal:
        if not any(type(value) is type(arg) and value == arg for arg in args):
            reading.fail(path, f"must be {words(annotation)}, got {show(value)}")
        return value
    if origin in (list, tuple) or annotation in (list, tuple):
        if not isinstance(value, (list, tuple)):
            reading.fail(path, f"must be {words(annotation)}, got {show(value)}")
        item = args[0] if args else Any
        return [check_value(item, v, reading, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict or annotation is dict:
        return _check_mapping(annotation, args, value, reading, path)
    if dataclasses.is_dataclass(annotation):
        return from_dict(annotation, value, reading, path)
    if not _is_instance(annotation, value):
        reading.fail(path, f"must be {words(annotation)}, got {show(value)}")
    if annotation is float:
        try:
            return float(value)
        except OverflowError:
            reading.fail(path, f"must be {words(float)}, got {show(value)}")
    return value


def _is_instance(annotation, value) -> bool:
    if annotation is bool:
        return type(value) is bool
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is _NONE or annotation is None:
        return value is None
    return isinstance(value, annotation) if isinstance(annotation, type) else True


def _check_union(annotation, args, value, reading: Reading, path: str):
    if value is None and _NONE in args:
        return None
    choices = [arg for arg in args if arg is not _NONE]
    if len(choices) == 1 and _shape_fits(choices[0], value):  # X | None: X's own (deeper) message
        return check_value(choices[0], value, reading, path)
    for choice in choices:
        if _shape_fits(choice, value):
            try:
                return check_value(choice, value, reading, path)
            except reading.error:
                if sum(_shape_fits(c, value) for c in choices) == 1:
                    raise  # the one choice of this shape: its deeper message says more
    reading.fail(path, f"must be {words(annotation)}, got {show(value)}")


def _shape_fits(annotation, value) -> bool:
    """Whether `value` is of the outer kind of `annotation` (a list for list[T], a mapping for a class)."""
    origin = typing.get_origin(annotation)
    if origin in (list, tuple) or annotation in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict or annotation is dict or dataclasses.is_dataclass(annotation):
        return isinstance(value, dict)
    if origin is Literal or origin in (Union, types.UnionType) or annotation is Any:
        return True
    return _is_instance(annotation, value)


def _check_mapping(annotation, args, value, reading: Reading, path: str) -> dict:
    if not isinstance(value, dict):
        reading.fail(path, f"must be {words(annotation)}, got {show(value)}")
    key_type, item = (args[0], args[1]) if args else (Any, Any)
    checked = {}
    for key, item_value in value.items():
        if key_type is str and not isinstance(key, str):
            reading.fail(path, f"has a key {show(key)} that is not text")
        checked[key] = check_value(item, item_value, reading, f"{path}.{key}" if path else str(key))
    return checked


def _check_bounds(meta, value, reading: Reading, path: str) -> None:
    """JSON Schema's bounds; NaN passes (it compares false), for a gate to refuse with its reason."""
    if value is None:
        return
    if "minimum" in meta and value < meta["minimum"]:
        reading.fail(path, f"must be at least {meta['minimum']}, got {show(value)}")
    if "exclusiveMinimum" in meta and value <= meta["exclusiveMinimum"]:
        reading.fail(path, f"must be greater than {meta['exclusiveMinimum']}, got {show(value)}")
    if "maximum" in meta and value > meta["maximum"]:
        reading.fail(path, f"must be at most {meta['maximum']}, got {show(value)}")
    if "minLength" in meta and len(value) < meta["minLength"]:
        reading.fail(path, "must not be empty" if meta["minLength"] == 1 else
                     f"must have at least {meta['minLength']} characters, got {show(value)}")
    if "minItems" in meta and len(value) < meta["minItems"]:
        reading.fail(path, "must not be empty" if meta["minItems"] == 1 else
                     f"must have at least {meta['minItems']} items, got {len(value)}")
    if "pattern" in meta and not re.search(meta["pattern"], value):
        rule = "one line of text" if meta["pattern"] == ONE_LINE["pattern"] else f"text matching {meta['pattern']}"
        reading.fail(path, f"must be {rule}, got {show(value)}")
    if "enum" in meta and value not in meta["enum"]:
        reading.fail(path, f"must be one of {', '.join(map(repr, meta['enum']))}, got {show(value)}")


# -- what a type is called ------------------------------------------------------------------------

_WORDS = {bool: ("true or false", "true/false values"), int: ("a whole number", "whole numbers"),
          float: ("a number", "numbers"), str: ("text", "text values"), _NONE: ("null", "nulls"),
          dict: ("a mapping", "mappings"), list: ("a list", "lists"), tuple: ("a list", "lists")}


def words(annotation, plural: bool = False) -> str:
    """How a message names a type: 'a whole number', 'a list of text values', 'a number or null'."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return "values" if plural else "any value"
    if origin in (Union, types.UnionType):
        return " or ".join(words(arg, plural) for arg in sorted(args, key=lambda a: a is _NONE))
    if origin is Literal:
        return " or ".join(repr(arg) for arg in args)
    if origin in (list, tuple) and args:
        return f"{'lists' if plural else 'a list'} of {words(args[0], True)}"
    if origin is dict and args:
        return f"{'mappings' if plural else 'a mapping'} of names to {words(args[1], True)}"
    if dataclasses.is_dataclass(annotation):
        return "mappings" if plural else "a mapping"
    singular, many = _WORDS.get(annotation, (getattr(annotation, "__name__", str(annotation)),) * 2)
    return many if plural else singular


# -- JSON Schema ----------------------------------------------------------------------------------

def json_schema(cls, title: str | None = None, description: str | None = None) -> dict:
    """The JSON Schema (draft 2020-12) of the dataclass `cls`, nested classes under `$defs`."""
    defs: dict = {}
    body = object_schema(cls, defs)
    schema = {"$schema": DRAFT, **({"title": title} if title else {}), **body}
    if description:
        schema["description"] = description
    if defs:
        schema["$defs"] = dict(sorted(defs.items()))
    return schema


def object_schema(cls, defs: dict) -> dict:
    """The schema of one dataclass as an object: its fields' schemas, the required ones, openness."""
    hints = _hints(cls)
    properties, required = {}, []
    null_is_default = getattr(cls, "NULL_IS_DEFAULT", False)
    for field in _fields(cls):
        properties[field.name] = field_schema(field, hints[field.name], defs)
        if null_is_default and _has_default(field) and not _accepts_none(hints[field.name]) \
                and "const" not in field.metadata:
            properties[field.name] = _nullable(properties[field.name])
        if not _has_default(field):
            required.append(field.name)
    schema = {"type": "object"}
    doc = _doc(cls)
    if doc:
        schema["description"] = doc
    schema["properties"] = properties
    if required:
        schema["required"] = required
    schema["additionalProperties"] = bool(getattr(cls, "OPEN", False))
    schema.update(getattr(cls, "SCHEMA_EXTRA", {}))
    return schema


def _nullable(schema: dict) -> dict:
    """`schema` that also takes null (which reads as the field's default)."""
    kinds = schema.get("type")
    if isinstance(kinds, (str, list)) and "anyOf" not in schema and "oneOf" not in schema:
        kinds = [kinds] if isinstance(kinds, str) else kinds
        return {**schema, "type": [*kinds, "null"]}
    keep = {key: schema.pop(key) for key in ("description", "default") if key in schema}
    return {"anyOf": [schema, {"type": "null"}], **keep}


def field_schema(field: dataclasses.Field, annotation, defs: dict) -> dict:
    meta = field.metadata
    if "const" in meta:
        schema = {"const": meta["const"]}
    elif "schema" in meta:
        given = meta["schema"]
        schema = dict(given(defs) if callable(given) else given)
    elif "options_of" in meta:
        schema = type_schema(meta["options_of"](), defs)
    else:
        schema = type_schema(annotation, defs)
    schema.update({key: meta[key] for key in _BOUNDS if key in meta})
    if "description" in meta:
        schema["description"] = meta["description"]
    default = _default(field)
    if default is not dataclasses.MISSING and (default is not None or _accepts_none(annotation)):
        schema["default"] = default  # a None default of a field that takes no null means "absent"
    return schema


def type_schema(annotation, defs: dict) -> dict:
    """The schema of one annotation; dataclasses go to `defs` and are referred to."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return {}
    if origin in (Union, types.UnionType):
        parts = [type_schema(arg, defs) for arg in args]
        simple = [part["type"] for part in parts if list(part) == ["type"]]
        if len(simple) == len(parts):
            flat = [kind for kinds in simple for kind in ([kinds] if isinstance(kinds, str) else kinds)]
            return {"type": list(dict.fromkeys(flat))}
        return {"anyOf": parts}
    if origin is Literal:
        return {"const": args[0]} if len(args) == 1 else {"enum": list(args)}
    if origin in (list, tuple) or annotation in (list, tuple):
        return {"type": "array", **({"items": type_schema(args[0], defs)} if args and args[0] is not Any else {})}
    if origin is dict or annotation is dict:
        item = args[1] if args else Any
        return {"type": "object", **({"additionalProperties": type_schema(item, defs)} if item is not Any else {})}
    if dataclasses.is_dataclass(annotation):
        name = annotation.__name__
        if name not in defs:
            defs[name] = {}  # a placeholder: a class that refers to itself ends here
            defs[name] = object_schema(annotation, defs)
        return {"$ref": f"#/$defs/{name}"}
    kinds = {bool: "boolean", int: "integer", float: "number", str: "string", _NONE: "null"}
    return {"type": kinds[annotation]} if annotation in kinds else {}


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        value = field.default
    elif field.default_factory is not dataclasses.MISSING:
        value = field.default_factory()
    else:
        return dataclasses.MISSING
    if isinstance(value, float) and not math.isfinite(value):
        return dataclasses.MISSING
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return dataclasses.MISSING
    return value


# -- dataclass facts ------------------------------------------------------------------------------

@cache
def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _fields(cls) -> list[dataclasses.Field]:
    return [field for field in dataclasses.fields(cls) if field.init]


def _has_default(field: dataclasses.Field) -> bool:
    return field.default is not dataclasses.MISSING or field.default_factory is not dataclasses.MISSING


def _accepts_none(annotation) -> bool:
    return annotation is Any or (typing.get_origin(annotation) in (Union, types.UnionType)
                                 and _NONE in typing.get_args(annotation))


def _doc(cls) -> str:
    """The first paragraph of a class's own docstring (not dataclass's generated signature)."""
    doc = cls.__dict__.get("__doc__") or ""
    if doc.startswith(f"{cls.__name__}("):
        return ""
    return " ".join(doc.strip().split("\n\n")[0].split())
