"""`--mlflow [URI]`: a run or validation logged to MLflow, and the bundle it ships registered.

Optional (`pip install 'edgeslim[mlflow]'`, which installs mlflow-skinny with SQLAlchemy and Alembic:
the tracking and registry client and its SQL store, without MLflow's server and UI). What is logged:

- params: the recipe (or validate's settings) flattened one level, and each candidate's steps,
  each value kept under 500 characters;
- metrics per candidate: `<candidate>.accuracy`, `.size_mb`, `.p50_ms.<device>`, `.int8_coverage`;
- artifacts: `report/` (report.json, .md and .html where written) and `bundles/<candidate>/`;
- the bundle the report's verdict ships (its baseline where none is better) as a version of the
  registered model `--mlflow-model` (default: the model's factory, e.g. `zoo.small_cnn`). A version
  is created only for a bundle whose files differ from every version's (tag `edgeslim.bundle_sha256`);
  a run that built the same bundle again is tagged with the existing version instead.

`--mlflow` alone uses $MLFLOW_TRACKING_URI, else `sqlite:///mlflow.db` in the working directory (a SQL
store: MLflow's file store is deprecated, and the registry needs one), with artifacts in `mlruns/`
beside the database file. MLflow's own log lines go to edgeslim's progress (stderr), never stdout,
and its usage telemetry is off unless MLFLOW_DISABLE_TELEMETRY is set.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import time
import warnings
from pathlib import Path

from edgeslim.core.errors import ConfigError
from edgeslim.core.progress import log, warn

DEFAULT_URI = "sqlite:///mlflow.db"
FROM_ENVIRONMENT = "default"        # the value of a bare --mlflow
EXPERIMENT = "edgeslim"
INSTALL_HINT = "pip install 'edgeslim[mlflow]'"
PARAM_CHARS = 500
_LOGGERS = ("mlflow", "alembic", "sqlalchemy.engine", "huey")


def resolve_uri(uri: str) -> str:
    """A bare --mlflow: $MLFLOW_TRACKING_URI, else the SQLite store in the working directory."""
    if uri != FROM_ENVIRONMENT:
        return uri
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def default_model_name(report_model: str | None, baseline: str) -> str:
    """The registered model's name: the model spec's file (or module) and factory, else the baseline's name."""
    if report_model and ":" in report_model:
        target, _, factory = report_model.rpartition(":")
        stem = Path(target).stem if target.endswith(".py") else target
        name = f"{stem}.{factory}"
    else:
        name = baseline
    return re.sub(r"[/:'\"\s]+", "_", name).strip("._") or "edgeslim-model"


def _metric_key(*parts: str) -> str:
    key = ".".join(re.sub(r"[^\w\-. ]", "_", part) for part in parts)
    return re.sub(r"\.{2,}", ".", key)[:250]


# -- MLflow, quietly ----------------------------------------------------------------------------

class _Forward(logging.Handler):
    """MLflow's log records as edgeslim's lines: progress below ERROR, warnings (shown with --quiet too) above."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            (warn if record.levelno >= logging.ERROR else log)(f"mlflow: {record.getMessage()}")
        except Exception:
            self.handleError(record)


# Python warnings raised inside MLflow, SQLAlchemy and Alembic are about their own internals ("The ``noload``
# loader strategy is deprecated"), nothing a user can act on: they go to the logger Python's own
# logging.captureWarnings uses, which has no level of its own, so edgeslim.core.noise decides by the root
# logger's level: shown on stderr with --debug, hidden without it.
_LIBRARY_WARNINGS = logging.getLogger("py.warnings")


@contextlib.contextmanager
def _quiet():
    """MLflow's log lines as edgeslim progress lines (its errors as warnings), the warnings raised inside it
    for --debug only; anything it prints, to stderr."""
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers = [_Forward()]
        logger.propagate = False
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("always")
        try:
            yield
        finally:
            for warning in caught:
                _LIBRARY_WARNINGS.warning("mlflow: %s: %s", warning.category.__name__, warning.message)


def _mlflow():
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    try:
        with _quiet():
            import mlflow
            from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise ConfigError(f"--mlflow needs MLflow, which is not installed ({exc}): {INSTALL_HINT}") from None
    return mlflow, MlflowClient


def _failed(uri: str, exc: Exception) -> ConfigError:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return ConfigError(f"--mlflow {uri}: MLflow refused it: {message.strip().splitlines()[0][:300]}")


# -- the tracker --------------------------------------------------------------------------------

class Tracker:
    """An MLflow store opened before the work (so that a bad URI fails at once), logged to after it."""

    def __init__(self, uri: str, model_name: str | None = None):
        self.uri = resolve_uri(uri)
        if "://" not in self.uri and self.uri.lower().endswith((".yaml", ".yml")):
            raise ConfigError(f"--mlflow took {self.uri} as its URI, and it looks like a recipe: put --mlflow after "
                              "the recipe, or give the tracking URI (e.g. sqlite:///mlflow.db)")
        if model_name is not None and (not model_name.strip() or re.search(r"[/:'\"]", model_name)):
            raise ConfigError(f"--mlflow-model {model_name!r} is not a name MLflow registers; "
                              "use letters, digits, dots, dashes and underscores")
        self.model_name = model_name
        self.mlflow, client_class = _mlflow()
        sqlite_folder = self._sqlite_folder()
        try:
            with _quiet():
                self.client = client_class(tracking_uri=self.uri, registry_uri=self.uri)
                self.experiment_id = self._experiment(sqlite_folder)
        except ConfigError:
            raise
        except Exception as exc:  # MlflowException, SQLAlchemy's errors, an unreachable server
            raise _failed(self.uri, exc) from None

    def _sqlite_folder(self) -> Path | None:
        """The folder of a SQLite store's file, created where missing (as --out folders are)."""
        if not self.uri.startswith("sqlite:///") or self.uri.endswith(":memory:"):
            return None
        folder = Path(self.uri[len("sqlite:///"):]).absolute().parent
        if folder.exists() and not folder.is_dir():
            raise ConfigError(f"--mlflow {self.uri}: {folder} is a file, not a folder; choose another path")
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--mlflow {self.uri}: cannot create {folder}: {exc.strerror}") from None
        return folder

    def _experiment(self, sqlite_folder: Path | None) -> str:
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        # Artifacts beside a SQLite file, not in whatever folder the first run happened to start in.
        location = (sqlite_folder / "mlruns" / re.sub(r"[^\w.-]+", "_", name)).as_uri() if sqlite_folder else None
        try:
            return self.client.create_experiment(name, artifact_location=location)
        except self.mlflow.exceptions.MlflowException:  # created by a concurrent run since
            found = self.client.get_experiment_by_name(name)
            if found is None:
                raise
            return found.experiment_id

    def log(self, report: dict, report_files: list[Path]) -> dict:
        """Log the report's run; returns {run_id, experiment_id, model, version, new_version}."""
        try:
            with _quiet():
                return self._log(report, report_files)
        except ConfigError:
            raise
        except Exception as exc:
            raise _failed(self.uri, exc) from None

    def _log(self, report: dict, report_files: list[Path]) -> dict:
        from mlflow.entities import Metric, Param, RunTag

        from edgeslim.report.summary import verdict

        info = report.get("run") or {}
        shipped = verdict(report)["best"] or report["baseline"]
        tags = {"edgeslim.run_id": info.get("id"), "edgeslim.command": info.get("command"),
                "edgeslim.shipped": shipped, "edgeslim.passed": str(report.get("passed")).lower(),
                "mlflow.source.git.commit": info.get("commit"), "mlflow.source.name": f"edgeslim {info.get('command')}"}
        run = self.client.create_run(self.experiment_id, run_name=info.get("id"),
                                     tags={key: str(value) for key, value in tags.items() if value is not None})
        run_id = run.info.run_id
        try:
            now = int(time.time() * 1000)
            params = [Param(key, value) for key, value in flat_params(report).items()]
            metrics = [Metric(key, value, now, 0) for key, value in candidate_metrics(report).items()]
            for start in range(0, max(len(params), len(metrics)), 100):
                self.client.log_batch(run_id, metrics=metrics[start:start + 100], params=params[start:start + 100])
            for path in report_files:
                if Path(path).is_file():
                    self.client.log_artifact(run_id, str(path), "report")
            for entry in report["candidates"]:
                if entry.get("bundle") and Path(entry["bundle"]).is_dir():
                    self.client.log_artifacts(run_id, entry["bundle"], f"bundles/{entry['name']}")
            registered = self._register(report, shipped, run)
            self.client.log_batch(run_id, tags=[RunTag("edgeslim.model_version", registered["version"])])
        except BaseException:
            self.client.set_terminated(run_id, "FAILED")
            raise
        self.client.set_terminated(run_id, "FINISHED")
        return {"run_id": run_id, "experiment_id": self.experiment_id, **registered}

    def _register(self, report: dict, shipped: str, run) -> dict:
        """The shipped bundle as a model version, unless a version of the same files exists."""
        from mlflow.exceptions import MlflowException

        from edgeslim.history import bundle_digest
        from edgeslim.report.provenance import model_name

        entry = next(e for e in report["candidates"] if e["name"] == shipped)
        name = self.model_name or default_model_name(model_name(report), report["baseline"])
        digest = bundle_digest(entry.get("sha256")) or "unknown"
        try:
            self.client.create_registered_model(name, description="Bundles registered by edgeslim.")
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        for version in self.client.search_model_versions(f"name='{name}'"):
            if digest != "unknown" and version.tags.get("edgeslim.bundle_sha256") == digest:
                log(f"mlflow: {shipped} is the bundle of {name} version {version.version} already; "
                    "no new version registered")
                return {"model": name, "version": str(version.version), "new_version": False}
        version = self.client.create_model_version(
            name, f"{run.info.artifact_uri}/bundles/{shipped}", run.info.run_id,
            tags={"edgeslim.bundle_sha256": digest, "edgeslim.candidate": shipped,
                  "edgeslim.run_id": str((report.get("run") or {}).get("id"))},
            description=f"edgeslim bundle {shipped}")
        return {"model": name, "version": str(version.version), "new_version": True}


# -- what is logged -----------------------------------------------------------------------------

def _short(value) -> str:
    if isinstance(value, dict):
        text = ", ".join(f"{k}={_short(v)}" for k, v in value.items() if v not in (None, [], {}))
    elif isinstance(value, (list, tuple)):
        text = ",".join(_short(v) for v in value)
    else:
        text = str(value)
    return text if len(text) <= PARAM_CHARS else text[:PARAM_CHARS - 1] + "…"


def steps_text(steps) -> str:
    """'prune(ratio=0.5, round_to=4) > distill(epochs=2) > int8(...)': each step with its set parameters."""
    if not steps:
        return "none"
    parts = []
    for step in steps:
        if not isinstance(step, dict):
            parts.append(str(step))
            continue
        options = {k: v for k, v in step.items() if k not in ("step", "version") and v not in (None, [], {}, "")}
        parts.append(f"{step.get('step', '?')}({_short(options)})")
    return _short(" > ".join(parts))


def flat_params(report: dict) -> dict[str, str]:
    """The recipe, or validate's settings, flattened one level; each candidate's steps."""
    params: dict[str, str] = {}
    recipe = report.get("recipe") if isinstance(report.get("recipe"), dict) else None
    if recipe:
        for key, value in recipe.items():
            if key == "candidates" or value in (None, [], {}):
                continue
            if isinstance(value, dict):
                params.update({f"{key}.{k}": _short(v) for k, v in value.items() if v not in (None, [], {})})
            else:
                params[key] = _short(value)
    else:
        settings = report.get("settings") or {}
        params["metric"] = _short(settings.get("metric"))
        params["devices"] = _short([d.get("name") for d in settings.get("devices") or [] if isinstance(d, dict)])
        params.update({f"bench.{k}": _short(v) for k, v in (settings.get("bench") or {}).items() if v is not None})
        if (report.get("run") or {}).get("data"):
            params["data"] = _short(report["run"]["data"])
    params["baseline"] = report["baseline"]
    for entry in report["candidates"]:
        params[_metric_key("candidate", entry["name"], "steps")] = steps_text(entry.get("compression"))
    return {key[:250]: value for key, value in params.items()}


def candidate_metrics(report: dict) -> dict[str, float]:
    """Per candidate: accuracy, size in MB, p50 per device, integer-kernel coverage (what is finite)."""
    import math

    from edgeslim.history import coverage_fraction

    def finite(value) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

    metrics = {}
    for entry in report["candidates"]:
        name = entry["name"]
        figures = {"accuracy": entry.get("accuracy"),
                   "size_mb": entry["size_bytes"] / 1e6 if finite(entry.get("size_bytes")) else None,
                   "int8_coverage": coverage_fraction(entry.get("int8_coverage"))}
        for device, stats in (entry.get("latency") or {}).items():
            figures[f"p50_ms.{device}"] = stats.get("p50_ms") if isinstance(stats, dict) else None
        metrics.update({_metric_key(name, key): float(value) for key, value in figures.items() if finite(value)})
    return metrics
