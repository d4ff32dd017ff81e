"""A report's run record: when, where and from what it was made (time, host, commit, specs, digests).

Torch-free: `edgeslim validate` fills it on a device with numpy and onnxruntime alone. What cannot
be found (no git, no spec) is left null, never guessed.
"""
from __future__ import annotations

import hashlib
import importlib.util
import platform
import socket
import subprocess
import uuid
from datetime import datetime, timezone
from pathlib import Path

from edgeslim.core.data import data_digest

GIT_TIMEOUT_S = 5.0


def run_info(command: str, model: str | None = None, weights: str | None = None, weights_sha256: str | None = None,
             data: str | None = None, data_sha256: str | None = None) -> dict:
    """The `run` section of a report made now by `command` (run or validate)."""
    created = datetime.now(timezone.utc).replace(microsecond=0)
    commit, dirty = git_commit(source_folder(model))
    return {"id": f"{created:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}", "created": created.isoformat(),
            "command": command, "host": socket.gethostname() or None, "platform": platform.platform(),
            "python": platform.python_version(), "commit": commit, "commit_dirty": dirty, "model": model,
            "weights": weights, "weights_sha256": weights_sha256, "data": data, "data_sha256": data_sha256}


def source_folder(spec: str | None) -> Path:
    """The folder of a model spec's source (its commit is the model's), else the working directory."""
    target = spec.rpartition(":")[0] if spec and ":" in spec else None
    if target and target.endswith(".py"):
        return Path(target).resolve().parent
    if target:
        try:
            origin = getattr(importlib.util.find_spec(target), "origin", None)
        except (ImportError, ValueError):
            origin = None
        if origin and Path(origin).is_file():
            return Path(origin).resolve().parent
    return Path.cwd()


def git_commit(folder: Path) -> tuple[str | None, bool | None]:
    """(commit, whether tracked files differ from it) of the repository holding `folder`; (None, None) outside one."""
    def git(*args) -> str | None:
        try:
            done = subprocess.run(["git", "-C", str(folder), *args], capture_output=True, text=True,
                                  timeout=GIT_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if not commit:
        return None, None
    status = git("status", "--porcelain", "--untracked-files=no")
    return commit, (bool(status) if status is not None else None)


def file_sha256(path: str | Path) -> str | None:
    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_model(model, spec: str | None, weights: str | None, data_spec: str | None, val: list,
                 trained: bool = False) -> dict:
    """The manifest's `source_model` (edgeslim.sdk.manifest.SourceModel): what a bundle was built from.

    `model` is the torch module before any step (its parameters are counted, duck-typed: no torch
    import here); `val` the val split's batches, hashed whole (`data_digest`).
    """
    return {"model": spec, "weights": Path(weights).name if weights else None,
            "weights_sha256": file_sha256(weights) if weights else None, "trained": bool(trained),
            "params": int(sum(parameter.numel() for parameter in model.parameters())),
            "data": data_spec, "data_sha256": data_digest(val)}


def report_sources(candidates: list[dict]) -> dict | None:
    """The one source model all `candidates` were built from, for the report's run record; None where one
    records none or they differ (then each candidate's own `source_model` says which)."""
    sources = [entry.get("source_model") for entry in candidates]
    if not sources or not all(isinstance(source, dict) for source in sources):
        return None
    return sources[0] if all(source_key(source) == source_key(sources[0]) for source in sources) else None


def source_key(source: dict) -> tuple:
    """What makes two source models the same model: the spec (a file spec by file name and factory, as
    `same_model`), the weights file's sha256 (or none), trained by a recipe or not, the parameter count."""
    spec = source.get("model")
    return (_identity(spec) if isinstance(spec, str) else None, source.get("weights_sha256"),
            bool(source.get("trained")), source.get("params"))


def source_keys(report: dict) -> set[tuple] | None:
    """The source models of a report's candidates (as `source_key`s); None where none records one
    (bundles built before edgeslim recorded it)."""
    keys = {source_key(entry["source_model"]) for entry in report["candidates"]
            if isinstance(entry.get("source_model"), dict)}
    return keys or None


def weights_text(source: dict) -> str:
    """The weights of a source model in a few words: file name and short sha256, or the factory's own."""
    if source.get("weights"):
        digest = source.get("weights_sha256")
        text = f"{source['weights']}" + (f" · sha256 {digest[:12]}…" if isinstance(digest, str) and digest else "")
    else:
        text = "initial weights of the factory"
    return text + (", trained by the recipe" if source.get("trained") else "")


def describe_source(source: dict) -> str:
    """A source model as a message names it: spec, weights, parameters."""
    params = source.get("params")
    return (f"{source.get('model') or 'an unnamed model'} ({weights_text(source)}"
            + (f", {params:,} params" if isinstance(params, int) else "") + ")")


def model_name(report: dict) -> str | None:
    """The model spec a report was made from: its run record's, else its recipe's (reports made by `run`),
    else the source model its bundles record."""
    run = report.get("run") if isinstance(report.get("run"), dict) else {}
    for section in (run, report.get("recipe"), run.get("source_model"),
                    *(entry.get("source_model") for entry in report.get("candidates") or [])):
        if isinstance(section, dict) and isinstance(section.get("model"), str) and section["model"]:
            return section["model"]
    return None


def same_model(a: str, b: str) -> bool:
    """Whether two model specs name the same model: a file spec by its file name and factory, so that
    the same model checked out in two places (CI's and a laptop's) is the same."""
    return _identity(a) == _identity(b)


def _identity(spec: str) -> str:
    target, _, factory = spec.rpartition(":")
    return f"{Path(target).name}:{factory}" if target.endswith(".py") else spec
