"""Property: whatever a manifest, a report or a recipe holds, edgeslim answers with one sentence and exit 2,
or does its work (exit 0, or 1 for a failed gate); never an internal error (exit 3) or a traceback.

The documents are mutations of valid ones (wrong types, missing and extra keys, huge, negative and
NaN numbers, deep nesting, text where lists go, unicode), fed to the CLI in-process (`inspect`,
`report`, `run`) and to the SDK (`edgeslim.sdk.load`, which `validate` and `bench` call on every
bundle). One tiny bundle is built per module and only its manifest is rewritten per example.
"""
import copy
import json
import math
import traceback

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny import tiny_report, write_tiny_bundle

from edgeslim.core.errors import EdgeslimError
from edgeslim.sdk import load

# 200 examples each, 600 in all; a few seconds per test. No example database: runs are reproducible
# from the seed hypothesis prints on a failure.
SETTINGS = settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))

NAMES = st.sampled_from(["", "x", "name", "float32", "int64", "batch", "edgeslim-bundle/1", "edgeslim-report/1",
                         "cpu", "gpu", "int8", "prune", "model.onnx", "../x", "/etc/hostname", "p50_ms", "fp32",
                         "ünï©ødé ✓\u202e", "a|b\nc", "x" * 300])
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 70), 2 ** 70),
                    st.sampled_from([0, -1, 1, 2 ** 31, 10 ** 30, 0.0, -0.0, 1e-320, 1e308]),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), NAMES)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.one_of(st.text(max_size=6), NAMES), inner, max_size=3), max_leaves=6)
OPERATIONS = ("replace", "delete", "add", "wrap", "deep", "stringify", "listify", "numberify")


def _paths(document, path=()):
    """Every place in a document: the root, each value of each mapping and list."""
    yield path
    if isinstance(document, dict):
        items = document.items()
    else:
        items = enumerate(document) if isinstance(document, list) else ()
    for key, value in items:
        yield from _paths(value, (*path, key))


def _nested(depth: int, value):
    for level in range(depth):
        value = {"a": value} if level % 2 else [value]
    return value


def _changed(value, operation: str, draw):
    """`value` after one mutation; None from 'delete' is handled by the caller."""
    if operation == "replace":
        return draw(VALUES)
    if operation == "wrap":
        return draw(st.sampled_from([[value], {"value": value}]))
    if operation == "deep":
        return _nested(draw(st.sampled_from([3, 30, 62, 63, 64, 65, 200])), value)
    if operation == "stringify":
        return json.dumps(value, allow_nan=True)[:200]
    if operation == "listify":
        return list(value.values()) if isinstance(value, dict) else list(value) if isinstance(value, str) else [value]
    if operation == "numberify":
        return draw(st.sampled_from([0, -1, 1.5, math.nan, math.inf, -math.inf, 10 ** 40, True]))
    return value


def mutate(document, draw, max_changes: int = 3):
    """A copy of `document` with one to `max_changes` mutations at places drawn from it."""
    document = copy.deepcopy(document)
    for _ in range(draw(st.integers(1, max_changes))):
        path = draw(st.sampled_from(list(_paths(document))))
        operation = draw(st.sampled_from(OPERATIONS))
        if not path:
            document = draw(VALUES) if operation == "delete" else _changed(document, operation, draw)
            continue
        parent = document
        for key in path[:-1]:
            parent = parent[key]
        key = path[-1]
        if operation == "delete":
            del parent[key]
        elif operation == "add":
            target = parent[key]
            if isinstance(target, dict):
                target[draw(st.one_of(st.text(max_size=8), NAMES))] = draw(VALUES)
            elif isinstance(target, list):
                target.append(draw(VALUES))
            else:
                parent[draw(NAMES) if isinstance(parent, dict) else key] = draw(VALUES)
        else:
            parent[key] = _changed(parent[key], operation, draw)
    return document


def _answered_cleanly(result, *what) -> None:
    """Exit 0, 1 or 2; for 2, one line `edgeslim: error: ...`; never a traceback."""
    escaped = result.exception if not isinstance(result.exception, SystemExit) else None
    assert escaped is None, (what, "".join(traceback.format_exception(escaped))[-2000:])
    assert result.exit_code in (0, 1, 2), (what, result.exit_code, result.stderr[-1000:])
    assert "Traceback" not in result.stderr + result.stdout, (what, result.stderr[-1000:])
    if result.exit_code == 2:
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edgeslim: error: "), (what, result.stderr[-1000:])


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("properties")


@pytest.fixture(scope="module")
def bundle(folder):
    """The tiny bundle's folder and its valid manifest (the examples rewrite manifest.json)."""
    path = write_tiny_bundle(folder / "tiny")
    return path, json.loads((path / "manifest.json").read_text())


@SETTINGS
@given(data=st.data())
def test_a_mutated_manifest_is_refused_in_one_sentence_or_loads(cli, bundle, data):
    folder, manifest = bundle
    mutated = mutate(manifest, data.draw)
    (folder / "manifest.json").write_text(json.dumps(mutated, allow_nan=True))
    _answered_cleanly(cli("inspect", folder), "inspect", mutated)
    _answered_cleanly(cli("inspect", "--json", folder), "inspect --json", mutated)
    try:
        load(folder)
    except EdgeslimError as exc:  # what validate and bench say, through the same CLI handler
        assert "\n" not in str(exc) and len(str(exc)) < 1000, str(exc)[:2000]


@SETTINGS
@given(data=st.data())
def test_a_mutated_report_is_refused_in_one_sentence_or_renders(cli, folder, data):
    mutated = mutate(tiny_report(), data.draw)
    path = folder / "report.json"
    path.write_text(json.dumps(mutated, allow_nan=True))
    _answered_cleanly(cli("report", path), "report", mutated)
    gated = folder / "gated.json"
    _answered_cleanly(cli("report", path, "--max-accuracy-drop", "1", "--max-latency-increase", "0.5",
                          "--json", gated, "--html", folder / "gated.html", "--force"), "report --json", mutated)
    good = folder / "good.json"
    good.write_text(json.dumps(tiny_report()))
    _answered_cleanly(cli("report", good, "--against", path, "--max-accuracy-drop", "1"), "--against", mutated)


RECIPE = {"model": "nothing_here.py:model", "data": "nothing_here.py:data",
          "candidates": [{"name": "fp32"},
                         {"name": "small", "steps": [{"prune": {"ratio": 0.5, "ignore": ["head"]}},
                                                     {"distill": {"epochs": 2, "lr": 0.001}}, "int8"]},
                         {"name": "flat", "steps": [{"step": "int8", "max_accuracy_drop": 1.0, "relative": False}]}],
          "train": {"epochs": 2, "lr": 0.002}, "devices": ["cpu"], "baseline": "fp32",
          "bench": {"runs": 10, "warmup": 2}, "gates": {"max_accuracy_drop": 1.0},
          "sweep": {"prune": [0, 0.5], "quantize": ["none", "int8"]}, "version": 1}


@SETTINGS
@given(data=st.data())
def test_a_mutated_recipe_is_refused_in_one_sentence(cli, folder, data):
    mutated = mutate(RECIPE, data.draw)
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(mutated, allow_unicode=True))
    result = cli("run", path, "--out", folder / "run-out")
    _answered_cleanly(result, "run", mutated)
    # No recipe here names a model that exists: none gets past loading its data to build anything.
    assert result.exit_code == 2, (mutated, result.stdout[-500:])
