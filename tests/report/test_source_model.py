"""Which model a bundle and a report come from: the manifest's source_model (spec, weights file and its
sha256, parameters, data digest), the report's header, and `report --against` refusing another model."""
import hashlib
import json

import pytest

from edgeslim.core.errors import ConfigError
from edgeslim.report.compare import check_same_model
from edgeslim.report.markdown import render_markdown
from edgeslim.report.provenance import data_digest
from edgeslim.report.summary import metadata_items
from helpers import assert_one_sentence, spec


@pytest.fixture(scope="module")
def weighted(cli, tmp_path_factory):
    """The small CNN with weights of its own (the factory's, scaled), exported with --weights."""
    import torch

    from edgeslim.core.model_io import load_model

    folder = tmp_path_factory.mktemp("weighted")
    model = load_model(spec("small_cnn"))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.mul_(0.5)
    torch.save(model.state_dict(), folder / "half.pt")
    result = cli("export", "--model", spec("small_cnn"), "--weights", folder / "half.pt", "--data", spec("digits"),
                 "--out", folder / "half")
    assert result.exit_code == 0, result.stderr
    params = sum(parameter.numel() for parameter in model.parameters())
    return folder / "half", folder / "half.pt", params


def _validate(cli, out, *bundles):
    result = cli("validate", *bundles, "--data", spec("digits"), "--runs", "5", "--warmup", "1", "--out", out)
    assert result.exit_code == 0, result.stderr
    return out


def test_the_manifest_names_the_model_its_weights_and_data(weighted, untrained):
    from edgeslim.core.specs import load_data

    bundle, weights, params = weighted
    digest = data_digest(load_data(spec("digits")).val)
    source = json.loads((bundle / "manifest.json").read_text())["source_model"]
    assert source == {"model": spec("small_cnn"), "weights": "half.pt",
                      "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(), "trained": False,
                      "params": params, "data": spec("digits"), "data_sha256": digest}
    assert params > 1000 and len(digest) == 64
    factory = json.loads((untrained / "manifest.json").read_text())["source_model"]
    assert factory == dict(source, weights=None, weights_sha256=None)  # same model, same data: the factory's weights


def test_the_report_header_says_which_model(cli, weighted, untrained, tmp_path):
    bundle, weights, params = weighted
    report = json.loads(_validate(cli, tmp_path / "half.json", bundle).read_text())
    source = report["candidates"][0]["source_model"]
    assert report["run"]["source_model"] == source and report["run"]["model"] is None  # validate names no model
    items = dict(metadata_items(report))
    assert items["model"] == f"{spec('small_cnn')} · {params:,} params"
    assert items["weights"] == f"half.pt · sha256 {hashlib.sha256(weights.read_bytes()).hexdigest()[:12]}…"
    assert items["data"] == f"{spec('digits')} · sha256 {source['data_sha256'][:12]}…"
    assert f"- weights: half.pt · sha256 {source['weights_sha256'][:12]}…\n" in render_markdown(report)

    both = json.loads(_validate(cli, tmp_path / "both.json", untrained, bundle).read_text())
    assert both["run"]["source_model"] is None   # they differ: each candidate says its own
    items = dict(metadata_items(both))
    assert items["weights (fp32)"] == "initial weights of the factory"
    assert items["weights (half)"] == f"half.pt · sha256 {source['weights_sha256'][:12]}…"
    assert items["model (fp32)"] == items["model (half)"] and "weights" not in items


def test_a_report_of_other_weights_is_refused(cli, weighted, untrained, tmp_path):
    bundle, weights, _ = weighted
    half = _validate(cli, tmp_path / "half.json", bundle)
    again = _validate(cli, tmp_path / "again.json", bundle)
    factory = _validate(cli, tmp_path / "factory.json", untrained)
    same = cli("report", again, "--against", half, "--json", tmp_path / "same.json")
    assert same.exit_code == 0, same.stderr
    # validate names no model spec: the bundles' source model tells that it is the same, so nothing is noted
    assert json.loads((tmp_path / "same.json").read_text())["against"]["notes"] == []
    sha = hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    line = assert_one_sentence(cli("report", half, "--against", factory), "pass --allow-different-model")
    assert line == (f"edgeslim: error: {factory} is a report of '{spec('small_cnn')} (initial weights of the "
                    f"factory, {_params(bundle):,} params)', this is '{spec('small_cnn')} (half.pt · sha256 "
                    f"{sha}…, {_params(bundle):,} params)'; pass --allow-different-model to compare anyway")
    allowed = cli("report", half, "--against", factory, "--allow-different-model")
    assert allowed.exit_code == 0 and "compared anyway (--allow-different-model)" in allowed.stderr


def _params(bundle) -> int:
    return json.loads((bundle / "manifest.json").read_text())["source_model"]["params"]


def _entry(name, source=None):
    stats = {"p50_ms": 1.0, "p90_ms": 1.0, "p99_ms": 1.0, "mean_ms": 1.0, "throughput": 1000.0}
    return {"name": name, "size_bytes": 4000, "accuracy": 98.0, "latency": {"cpu": stats},
            **({"source_model": source} if source else {})}


def _report(model, source):
    return {"format": "edgeslim-report/1", "baseline": "fp32", "candidates": [_entry("fp32", source)],
            "run": {"model": model}}


def test_the_source_model_decides_before_the_spec():
    source = {"model": "/ci/zoo.py:small_cnn", "weights": "w.pt", "weights_sha256": "a" * 64, "params": 1234}
    elsewhere = dict(source, model="/home/me/zoo.py:small_cnn")
    # The same weights of the same model checked out elsewhere: the same model, whatever the run records say.
    assert check_same_model(_report("x.py:f", source), _report("y.py:g", elsewhere), "OLD", allow=False) is None
    retrained = dict(source, weights_sha256="b" * 64)
    with pytest.raises(ConfigError, match=r"^OLD is a report of '/home/me/zoo.py:small_cnn \(w.pt · sha256 "
                                          r"bbbbbbbbbbbb…, 1,234 params\)', this is"):
        check_same_model(_report("zoo.py:small_cnn", source), _report("zoo.py:small_cnn",
                                                                      dict(retrained, model=elsewhere["model"])),
                         "OLD", allow=False)
    grown = dict(source, params=1235)   # the factory's code changed
    with pytest.raises(ConfigError, match="1,235 params"):
        check_same_model(_report("m", source), _report("m", grown), "OLD", allow=False)
    # One side without a source model (bundles built before it was recorded): the model specs decide.
    assert check_same_model(_report("a/zoo.py:small_cnn", source), _report("b/zoo.py:small_cnn", None), "OLD",
                            allow=False) is None
