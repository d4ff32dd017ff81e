"""`--mlflow [URI]` against a real MLflow store (SQLite in tmp_path, read back with MlflowClient): params,
metrics per candidate, the report and bundles as artifacts, and one model version per distinct bundle."""
import json
import sys

import pytest
from click.testing import CliRunner
from tiny import write_tiny_bundle

from edgeslim.cli import main
from edgeslim.history import bundle_digest
from helpers import assert_one_sentence, spec

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed: pip install 'edgeslim[mlflow]'")

RECIPE = f"""
model: {spec("small_cnn")}
data: {spec("digits_torch")}
train: {{epochs: 3, lr: 0.003}}
devices: [cpu]
bench: {{runs: 10, warmup: 2}}
candidates:
  - name: fp32
  - name: fp16
    steps: [fp16]
"""


@pytest.fixture(autouse=True)
def _history(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGESLIM_HISTORY", str(tmp_path / "history"))


def _client(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _runs(client):
    experiment = client.get_experiment_by_name("edgeslim")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


@pytest.mark.slow  # trains the small CNN (once per session, shared with tests/test_run.py)
def test_two_runs_log_two_mlflow_runs_and_register_one_version(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE)
    reports = []
    for out in ("out1", "out2"):
        result = CliRunner().invoke(main, ["run", str(recipe), "--out", str(tmp_path / out), "--mlflow", uri])
        assert result.exit_code == 0, result.stderr
        assert result.stdout.startswith("# edgeslim report") and "mlflow" not in result.stdout.lower()
        # MLflow's own lines come through edgeslim's progress, never as its own console output
        assert all(line.startswith("[edgeslim] ") for line in result.stderr.splitlines()), result.stderr
        reports.append(json.loads((tmp_path / out / "report.json").read_text()))

    client = _client(uri)
    runs = _runs(client)
    assert len(runs) == 2 and [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    for run, report in zip(runs, reports):
        fp32, fp16 = report["candidates"]
        metrics = run.data.metrics
        assert metrics["fp32.accuracy"] == pytest.approx(fp32["accuracy"]) and metrics["fp32.accuracy"] > 90
        assert metrics["fp16.size_mb"] == pytest.approx(fp16["size_bytes"] / 1e6)
        assert metrics["fp16.size_mb"] < 0.6 * metrics["fp32.size_mb"]  # half-precision weights
        assert metrics["fp16.p50_ms.cpu"] == pytest.approx(fp16["latency"]["cpu"]["p50_ms"])
        assert run.data.params["train.epochs"] == "3" and run.data.params["bench.runs"] == "10"
        assert run.data.params["candidate.fp16.steps"].startswith("fp16(")
        assert run.data.tags["edgeslim.run_id"] == report["run"]["id"] and run.data.tags["edgeslim.shipped"] == "fp16"
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "bundles/fp16")}
        assert artifacts == {"bundles/fp16/manifest.json", "bundles/fp16/model.onnx"}
        assert {a.path for a in client.list_artifacts(run.info.run_id, "report")} == {"report/report.json",
                                                                                     "report/report.md"}
    # The fp16 bundle is byte for byte the same in both runs: one version, which both runs name.
    assert bundle_digest(reports[0]["candidates"][1]["sha256"]) == bundle_digest(reports[1]["candidates"][1]["sha256"])
    versions = client.search_model_versions("name='zoo.small_cnn'")
    assert len(versions) == 1
    version = versions[0]
    assert version.run_id == runs[0].info.run_id and version.source.endswith("/bundles/fp16")
    assert version.tags["edgeslim.bundle_sha256"] == bundle_digest(reports[0]["candidates"][1]["sha256"])
    assert [r.data.tags["edgeslim.model_version"] for r in runs] == [str(version.version)] * 2
    # artifacts beside the database, not in the working directory
    assert (tmp_path / "store" / "mlruns").is_dir()

    # A run that ships another bundle (no fp16: the baseline) is a second version.
    recipe.write_text(RECIPE.split("  - name: fp16")[0])
    result = CliRunner().invoke(main, ["--quiet", "run", str(recipe), "--out", str(tmp_path / "out3"), "--mlflow", uri,
                                       "--mlflow-model", "zoo.small_cnn"])
    assert result.exit_code == 0, result.stderr
    versions = client.search_model_versions("name='zoo.small_cnn'")
    assert sorted(v.tags["edgeslim.candidate"] for v in versions) == ["fp16", "fp32"]


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny-bundles")
    return [str(write_tiny_bundle(folder / name, name)) for name in ("fp32", "int8")]


def test_validate_logs_its_figures_and_registers_the_shipped_bundle(cli, bundles, tmp_path, monkeypatch):
    """A bare --mlflow: the SQLite store mlflow.db in the working directory, its artifacts in mlruns/ beside it."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    out = tmp_path / "r.json"
    result = cli("validate", *bundles, "--data", spec("digits"), "--runs", 5, "--warmup", 1, "--out", out,
                 "--mlflow", "--mlflow-model", "tiny")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "mlflow.db").is_file() and (tmp_path / "mlruns" / "edgeslim").is_dir()
    report = json.loads(out.read_text())
    client = _client(f"sqlite:///{tmp_path / 'mlflow.db'}")
    (run,) = _runs(client)
    for entry in report["candidates"]:
        assert run.data.metrics[f"{entry['name']}.accuracy"] == pytest.approx(entry["accuracy"])
        assert run.data.metrics[f"{entry['name']}.p50_ms.cpu"] == pytest.approx(entry["latency"]["cpu"]["p50_ms"])
    assert run.data.params["bench.runs"] == "5" and run.data.params["devices"] == "cpu"
    (version,) = client.search_model_versions("name='tiny'")
    assert version.tags["edgeslim.candidate"] == "int8" and version.run_id == run.info.run_id


def test_without_mlflow_installed_the_flag_is_one_sentence_before_any_work(cli, bundles, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)   # as where the extra is not installed: import fails
    out = tmp_path / "r.json"
    result = cli("validate", *bundles, "--data", spec("digits"), "--out", out, "--mlflow")
    assert_one_sentence(result, "--mlflow needs MLflow, which is not installed")
    assert "pip install 'edgeslim[mlflow]'" in result.stderr and not out.exists()


def test_bad_mlflow_options_are_one_sentence(cli, bundles, tmp_path):
    args = ["validate", *bundles, "--data", spec("digits"), "--out", tmp_path / "r.json"]
    assert_one_sentence(cli(*args, "--mlflow", f"sqlite:///{tmp_path}/db", "--mlflow-model", "a/b"),
                        "--mlflow-model 'a/b' is not a name MLflow registers")
    assert_one_sentence(cli(*args, "--mlflow-model", "tiny"), "--mlflow-model names the registered model of --mlflow")
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_one_sentence(cli(*args, "--mlflow", f"sqlite:///{blocker}/mlflow.db"), f"{blocker} is a file, not a folder")
    assert_one_sentence(cli("run", "--mlflow", "recipe.yaml", "--out", tmp_path / "o"), "it looks like a recipe")
    assert not (tmp_path / "r.json").exists()


def test_library_warnings_inside_mlflow_show_with_debug_only_and_its_errors_always(capsys):
    """SQLAlchemy's "The ``noload`` loader strategy is deprecated", raised on every --mlflow run, is nothing a
    user can act on: on stderr with --debug only. MLflow's progress lines and real errors stay."""
    import logging
    import warnings

    from edgeslim.core.progress import configure
    from edgeslim.tracking import _quiet

    def mlflow_at_work():
        with _quiet():
            warnings.warn("The ``noload`` loader strategy is deprecated", DeprecationWarning, stacklevel=1)
            logging.getLogger("mlflow").info("Creating initial MLflow database tables...")
            logging.getLogger("mlflow").error("API request to the store failed")
        return capsys.readouterr()

    try:
        configure()
        shown = mlflow_at_work()
        assert shown.err == ("[edgeslim] mlflow: Creating initial MLflow database tables...\n"
                             "[edgeslim] warning: mlflow: API request to the store failed\n") and not shown.out
        configure(quiet=True)
        assert mlflow_at_work().err == "[edgeslim] warning: mlflow: API request to the store failed\n"
        configure(debug=True)
        debug = mlflow_at_work().err
        assert "DeprecationWarning: The ``noload`` loader strategy is deprecated" in debug
        assert "API request to the store failed" in debug
    finally:
        configure()
