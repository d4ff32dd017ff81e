"""A recipe is read within bounds and checked for types: a hostile or wrong one fails in one sentence."""
import json
import os
import subprocess
import sys
import time
import tracemalloc

import pytest

from edgeslim.core.errors import ConfigError
from edgeslim.core.limits import RECIPE_MAX_BYTES
from edgeslim.recipe import load_recipe, recipe_from_dict

HEAD = "model: m.py:f\ndata: d.py:g\n"

# Nine levels of nine: 460 bytes that stand for 9**9 (387 million) values once expanded.
BOMB_LINES = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [
    f"{level}: &{level} [" + ", ".join([f"*{previous}"] * 9) + "]"
    for previous, level in zip("abcdefgh", "bcdefghi")]
BOMB = "\n".join(BOMB_LINES) + "\n"

# Runs a command as its only child and reports the child's peak RSS and wall time.
MEASURE = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
done = subprocess.run(sys.argv[1:], capture_output=True, text=True, timeout=120)
print(json.dumps({"rc": done.returncode, "stderr": done.stderr, "wall_s": time.perf_counter() - started,
                  "peak_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def _measure(*args):
    done = subprocess.run([sys.executable, "-c", MEASURE, sys.executable, "-m", "edgeslim", *map(str, args)],
                          capture_output=True, text=True, timeout=180, check=True)
    return json.loads(done.stdout)


def _nested(key):
    """The bomb indented under `key` of an otherwise valid recipe."""
    rest = "" if key == "candidates" else "candidates: [{name: a}]\n"
    return HEAD + rest + f"{key}:\n" + "".join(f"  {line}\n" for line in BOMB_LINES)


def test_the_alias_bomb_is_refused_fast_and_small(tmp_path):
    recipe, out = tmp_path / "bomb.yaml", tmp_path / "out"
    recipe.write_text(BOMB)
    refused = _measure("run", recipe, "--out", out)
    baseline = _measure("--version")
    assert refused["rc"] == 2
    lines = refused["stderr"].strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refused["stderr"]
    assert "uses YAML aliases beyond 32; write the values out or use fewer anchors" in lines[0]
    assert not out.exists()
    # The child's peak memory, beyond what the CLI needs to start at all (the issue: 5.5 GB).
    assert refused["peak_kb"] - baseline["peak_kb"] < 100 * 1024, (refused, baseline)


@pytest.mark.parametrize("key", ["top", "version", "candidates"])
def test_the_alias_bomb_is_refused_wherever_it_is(tmp_path, key):
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(BOMB if key == "top" else _nested(key))
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="uses YAML aliases beyond 32"):
        load_recipe(recipe)
    elapsed = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert elapsed < 1.0 and peak < 100 << 20, (elapsed, peak)


def test_the_alias_bomb_under_version_fails_cleanly_in_the_cli(cli, tmp_path):
    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(_nested("version"))
    result = cli("run", recipe, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "aliases beyond" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, words", [
    # A few aliases, each of a wide list: few uses, but 200,000 values once expanded.
    (HEAD + "candidates: [{name: a}]\nbench:\n  runs: 3\nsweep:\n  distill: {}\n"
     "export: {names: {a: &w [" + ", ".join(["1"] * 20_000) + "], b: [" + ", ".join(["*w"] * 10) + "]}}\n",
     "beyond 100,000 values or 64 levels once expanded"),
    (HEAD + "candidates: &c [{name: a, steps: *c}]\n", "alias inside its own anchor"),
    (HEAD + "candidates: " + "[" * 100_000 + "]" * 100_000 + "\n", "nested deeper than 64 levels"),
    (HEAD + "candidates: [" + ", ".join(["x"] * 100_001) + "]\n", "more than 100,000 values"),
    (HEAD + "candidates: [{name: a}]\nversion: " + ":".join(["1"] * 200_000) + "\n",
     "an integer of 399,999 characters"),
    (HEAD + "candidates: [{name: a}]\nversion: 0x" + "f" * 200_000 + "\n", "an integer of 200,002 characters"),
    (HEAD + "candidates: [{name: a}]\nweights: 2024-13-45\n", "a value YAML cannot read: month must be in 1..12"),
    (HEAD + "candidates: [{name: *" + "n" * 200_000 + "}]\n", "not valid YAML: found undefined alias"),
])
def test_bounds_on_what_a_recipe_holds(tmp_path, text, words):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=words) as raised:
        load_recipe(recipe)
    assert len(str(raised.value)) < 300
    assert time.perf_counter() - started < 10  # generous: pure-Python YAML on a loaded host


def test_an_oversized_recipe_is_refused_before_parsing(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(HEAD)
    os.truncate(recipe, RECIPE_MAX_BYTES + 1)  # sparse; its NUL bytes are not YAML either
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="over the limit of 1,048,576"):
        load_recipe(recipe)
    assert time.perf_counter() - started < 1


def test_a_recipe_may_reuse_a_block_a_few_times(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(HEAD + "train: {epochs: 2, lr: 2e-3}\ncandidates:\n"
                      "  - {name: a, steps: [{prune: &p {ratio: 0.5}}, {distill: &d {epochs: 2}}]}\n"
                      "  - {name: b, steps: [{prune: *p}, {distill: *d}, int8]}\n")
    loaded = load_recipe(recipe)
    assert [c.name for c in loaded.candidates] == ["a", "b"]
    assert loaded.candidates[1].steps[0].ratio == 0.5
    assert loaded.train.lr == 0.002  # YAML 1.1 reads 2e-3 as text; the recipe reads a number


GOOD = {"model": "m.py:f", "data": "d.py:g", "candidates": [{"name": "a"}]}


@pytest.mark.parametrize("change, words", [
    ({"version": [1, 2]}, "recipe version [1, 2] is not one this edgeslim reads"),
    ({"version": 2}, "recipe version 2 is not one"),
    ({"version": True}, "recipe version True is not one"),
    ({"candidates": 5}, "'candidates' must be a list"),
    ({"candidates": [{"name": ["a", "b"]}]}, "recipe 'candidates[0].name' must be text, got ['a', 'b']"),
    ({"candidates": [{"name": "a", "steps": "int8"}]}, "'candidates[0].steps' must be a list like [int8]"),
    ({"candidates": [{"name": "a", "step": ["int8"]}]}, "unknown key 'step'"),
    ({"candidates": [{"name": "a", "steps": [{"step": ["prune"], "ratio": 0.5}]}]}, "unknown step ['prune']"),
    ({"candidates": [{"name": "a", "steps": [{"prune": {"ratio": {"x": 1}}}]}]}, "option 'ratio' must be a number"),
    ({"candidates": [{"name": "a", "steps": [{"prune": {1: 2, "a": 3}}]}]}, "step 'prune' has no option 1"),
    ({"candidates": [{"name": "x" * 500_000}]}, "must be a plain directory name"),
    ({"candidates": [{"name": "a"}, {"name": "a"}]}, "candidate names repeat"),
    ({"model": ["m.py:f"]}, "recipe 'model' must be text"),
    ({"metric": 5}, "recipe 'metric' must be text"),
    ({"devices": 5}, "'devices' must be a list of device names"),
    ({"devices": ["cpu", None]}, "'devices' must be a list of device names"),
    ({"baseline": ["a"]}, "recipe 'baseline' must be text"),
    ({"baseline": "b"}, "baseline 'b' names no candidate"),
    ({"train": {"epochs": "many"}}, "recipe 'train.epochs' must be a whole number, got 'many'"),
    ({"train": {"epochs": 1.5}}, "recipe 'train.epochs' must be a whole number"),
    ({"train": {"lr": "fast"}}, "recipe 'train.lr' must be a number"),
    ({"train": {"speed": 1}}, "recipe 'train' has an unknown key 'speed'; the keys are epochs, lr"),
    ({"train": [1]}, "recipe 'train' must be a mapping"),
    ({"bench": {"runs": "x"}}, "recipe 'bench.runs' must be a whole number"),
    ({"bench": {"turbo": True}}, "recipe 'bench' has an unknown key 'turbo'; the keys are runs"),
    ({"export": {"opset": [17]}}, "recipe 'export.opset' must be a whole number"),
    ({"gates": {"max_accuracy_drop": "lots"}}, "recipe 'gates.max_accuracy_drop' must be a number"),
    ({"gates": {"max_accuracy_drop": -1}}, "--max-accuracy-drop=-1.0 is not allowed"),
    ({"sweep": {"prune": ["half"]}}, "sweep' prune must be a list of ratios"),
    ({"sweep": {"prune": list(range(100)), "quantize": ["none"] * 100}}, "makes 10,000 candidates"),
    ({"sweep": {1: 2}}, "unknown key 1"),
    ({1: "x"}, "unknown key 1"),
])
def test_wrong_types_are_config_errors(change, words):
    with pytest.raises(ConfigError) as raised:
        recipe_from_dict({**GOOD, **change})
    message = str(raised.value)
    assert words in message and len(message) < 400 and "\n" not in message, message


def test_a_wrong_recipe_is_one_sentence_in_the_cli(cli, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(HEAD + "candidates: [{name: a}]\ntrain: {epochs: many}\n")
    result = cli("run", recipe, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert result.stderr.strip() == "edgeslim: error: recipe 'train.epochs' must be a whole number, got 'many'"
