"""Runs tracked over time: `validate` (and `run`) record each run in the history store; `edgeslim history`
lists and draws them; `report --against last` compares with the run before. Real bundles (tests/tiny.py),
real validation through the SDK, a real store on disk."""
import json
import re

import pytest
from tiny import tiny_report, write_tiny_bundle

from edgeslim.core.outputs import MARK
from edgeslim.history import HISTORY_FORMAT, bundle_digest, coverage_fraction, read_records, record_run
from helpers import assert_one_sentence, spec


@pytest.fixture
def store(tmp_path, monkeypatch):
    folder = tmp_path / "history"
    monkeypatch.setenv("EDGESLIM_HISTORY", str(folder))
    return folder


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-bundles")
    return [write_tiny_bundle(folder / name, name) for name in ("fp32", "int8")]


def _validate(cli, bundles, out):
    result = cli("validate", *bundles, "--data", spec("digits"), "--runs", 5, "--warmup", 1, "--out", out)
    assert result.exit_code == 0, result.stderr
    return json.loads(out.read_text())


def test_each_validation_is_recorded_and_listed_oldest_first(cli, bundles, store, tmp_path):
    first = _validate(cli, bundles, tmp_path / "r1.json")
    second = _validate(cli, bundles, tmp_path / "r2.json")
    records = read_records()
    assert [r["id"] for r in records] == [first["run"]["id"], second["run"]["id"]]
    record = records[1]
    assert record["format"] == HISTORY_FORMAT and record["command"] == "validate"
    assert record["report"] == str((tmp_path / "r2.json").absolute())
    assert record["baseline"] == "fp32" and record["best"] == "int8"
    for figures, entry in zip(record["candidates"], second["candidates"]):
        assert figures["name"] == entry["name"]
        assert figures["accuracy"] == entry["accuracy"] and 0 <= figures["accuracy"] <= 100
        assert figures["size_bytes"] == entry["size_bytes"] > 2560  # 64 x 10 float32 weights at least
        assert figures["p50_ms"] == {"cpu": entry["latency"]["cpu"]["p50_ms"]}
        assert figures["bundle_sha256"] == bundle_digest(entry["sha256"])
    # both bundles are the same model: the same files, the same identity
    assert record["candidates"][0]["bundle_sha256"] == record["candidates"][1]["bundle_sha256"]
    # the store keeps a copy of each report, byte for byte what was written
    assert json.loads((store / record["report_copy"]).read_text()) == second

    listed = cli("history")
    assert listed.exit_code == 0, listed.stderr
    lines = listed.stdout.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith(first["run"]["id"]) and lines[1].startswith(second["run"]["id"])
    accuracy = second["candidates"][1]["accuracy"]
    assert f"ship int8: accuracy {accuracy:.2f}" in lines[1], lines[1]
    as_json = cli("history", store, "--json")
    assert [r["id"] for r in json.loads(as_json.stdout)] == [r["id"] for r in records]


def test_against_last_compares_with_the_run_before_even_once_its_report_is_overwritten(cli, bundles, store,
                                                                                          tmp_path):
    out = tmp_path / "report.json"
    first = _validate(cli, bundles, out)
    alone = cli("report", out, "--against", "last")
    assert_one_sentence(alone, "--against last: no earlier run of bundles with the baseline fp32")
    second = _validate(cli, bundles, out)   # the same path: the first report is gone from it
    compared = tmp_path / "compared.json"
    result = cli("report", out, "--against", "last", "--json", compared)
    assert result.exit_code == 0, result.stderr
    against = json.loads(compared.read_text())["against"]
    assert against["run"]["id"] == first["run"]["id"] != second["run"]["id"]
    assert [c["latency"]["cpu"]["p50_ms"] for c in against["candidates"]] == \
        [c["latency"]["cpu"]["p50_ms"] for c in first["candidates"]]


def test_the_plot_draws_one_series_per_candidate_in_each_panel(cli, store):
    for p50 in (1.0, 0.8, 0.9):
        report = tiny_report()
        report["run"] = {"id": f"run-{p50}", "command": "validate", "model": "zoo.py:small_cnn"}
        report["candidates"][1]["latency"]["cpu"]["p50_ms"] = p50
        record_run(report, "r.json")
    report = tiny_report()
    report["run"] = {"id": "other-model", "model": "zoo.py:tiny_transformer"}
    report["candidates"].append({**report["candidates"][1], "name": "pruned"})
    record_run(report, "r.json")
    svg = store.parent / "history.svg"
    result = cli("history", "--model", "zoo.py:small_cnn", "--plot", svg)
    assert result.exit_code == 0, result.stderr
    assert len(result.stdout.strip().splitlines()) == 3
    text = svg.read_text()
    assert text.startswith(MARK) and "<svg" in text
    series = re.findall(r'class="series candidate" data-panel="([^"]+)" data-candidate="([^"]+)"', text)
    assert sorted(series) == sorted((panel, name) for panel in ("accuracy", "size", "p50-1")
                                    for name in ("fp32", "int8"))
    # all four runs, three candidates; an HTML page too, rewritten in place (edgeslim wrote it)
    page = store.parent / "history.html"
    for _ in range(2):
        assert cli("history", "--plot", page).exit_code == 0
    assert page.read_text().startswith(MARK) and text.count("<svg") == 1
    assert len(re.findall(r'data-panel="accuracy" data-candidate=', page.read_text())) == 3


def test_bad_store_and_plot_paths_are_one_sentence(cli, store, tmp_path):
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    assert_one_sentence(cli("history", file), f"history store {file} is a file, not a folder")
    assert_one_sentence(cli("history", tmp_path / "absent"), f"history store {tmp_path / 'absent'} does not exist")
    assert_one_sentence(cli("history", "--plot", tmp_path / "h.png"), "must end in .svg or .html")
    assert_one_sentence(cli("history", "--plot", tmp_path / "h.svg"), "the history holds no run to draw")
    record_run(tiny_report(), "r.json")
    theirs = tmp_path / "theirs.svg"
    theirs.write_text("<svg/>")
    assert_one_sentence(cli("history", "--plot", theirs), "is a file edgeslim did not write")
    assert theirs.read_text() == "<svg/>"


def test_a_store_that_cannot_be_written_warns_and_the_validation_still_succeeds(cli, bundles, tmp_path,
                                                                               monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("EDGESLIM_HISTORY", str(blocker))
    result = cli("validate", *bundles, "--data", spec("digits"), "--runs", 3, "--warmup", 0,
                 "--out", tmp_path / "r.json")
    assert result.exit_code == 0, result.stderr
    assert "the run is not recorded in the history" in result.stderr and blocker.read_text() == "not a folder"
    monkeypatch.setenv("EDGESLIM_HISTORY", "off")
    assert record_run(tiny_report(), "r.json") is None and read_records() == []


def test_an_unreadable_record_is_left_out_with_a_warning(cli, store):
    record_run(tiny_report(), "r.json")
    (store / "20990101T000000Z-broken.run.json").write_text('{"format": "edgeslim-history/1", "id": ')
    records = read_records()
    assert len(records) == 1
    result = cli("history")
    assert result.exit_code == 0 and len(result.stdout.strip().splitlines()) == 1
    assert "left out of the history" in result.stderr and "broken.run.json" in result.stderr


def test_a_record_never_names_a_report_copy_outside_the_store(store):
    path = record_run(tiny_report(), "r.json")
    record = json.loads(path.read_text())
    record["report_copy"] = "../../etc/passwd"
    path.write_text(json.dumps(record))
    assert read_records() == []


def test_coverage_is_integer_kernels_over_all_quantizable_nodes():
    coverage = {"families": {"conv": {"int8": 3, "float": 1}, "matmul": {"int8": 0, "float": 2, "int4": 4},
                             "gemm": {"int8": "x", "float": 1}}}
    assert coverage_fraction(coverage) == pytest.approx(7 / 10)
    assert coverage_fraction({"families": {}}) is None and coverage_fraction(None) is None


def _report_of(model: str | None, run: dict | None = None) -> dict:
    report = tiny_report()
    report["run"] = {"id": None, "command": "validate", "model": model, "weights": None, "weights_sha256": None,
                     **(run or {})}
    return report


def test_a_model_with_no_runs_names_the_models_the_store_holds(cli, store):
    record_run(_report_of("/ci/checkout/zoo.py:small_cnn"), "r1.json")
    record_run(_report_of("zoo.py:small_cnn"), "r2.json")
    record_run(_report_of("models.mobilenet:net"), "r3.json")
    result = loud("history", "--model", "nothere.py:x")  # a progress line: shown unless --quiet
    assert result.exit_code == 0 and result.stdout == "", result.stderr
    assert f"none of the 3 runs recorded in {store} is of the model nothere.py:x; it holds runs of " \
           "zoo.py:small_cnn, models.mobilenet:net; give one of those to --model" in result.stderr, result.stderr
    assert cli("history", "--model", "zoo.py:small_cnn").stdout.count("\n") == 2  # as the sentence names it
    empty = store.parent / "empty"
    empty.mkdir()
    assert f"no run is recorded in {empty}" in loud("history", empty, "--model", "nothere.py:x").stderr


def loud(*args):
    from click.testing import CliRunner

    from edgeslim.cli import main

    return CliRunner().invoke(main, [str(a) for a in args])


def test_a_validate_record_keeps_the_weights_of_the_bundles_source_model(cli, store):
    source = {"model": "zoo.py:small_cnn", "weights": "cnn.pt", "weights_sha256": "a" * 64, "trained": False,
              "params": 56714, "data": "zoo.py:digits", "data_sha256": "b" * 64}
    record_run(_report_of("zoo.py:small_cnn", {"source_model": source}), "validated.json")
    # `run` records the trained state's digest in its own run section: that one stays
    record_run(_report_of("zoo.py:small_cnn", {"command": "run", "weights_sha256": "c" * 64,
                                               "source_model": {**source, "weights": None, "weights_sha256": None,
                                                                "trained": True}}), "ran.json")
    validated, ran = json.loads(cli("history", "--json").stdout)
    assert (validated["weights"], validated["weights_sha256"]) == ("cnn.pt", "a" * 64)
    assert (ran["weights"], ran["weights_sha256"]) == (None, "c" * 64)
