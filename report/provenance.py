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
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path

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


def data_digest(batches: list) -> str | None:
    """sha256 of (inputs, labels) batches: each array's dtype, shape and bytes, inputs by name where named."""
    import numpy as np

    from edgeslim.core.data import to_numpy

    if not batches:
        return None
    digest = hashlib.sha256()

    def add(value) -> None:
        if isinstance(value, Mapping):
            for key in sorted(value, key=str):
                digest.update(str(key).encode())
                add(value[key])
        elif isinstance(value, (tuple, list)):
            for item in value:
                add(item)
        elif value is not None:
            array = np.ascontiguousarray(to_numpy(value))
            digest.update(f"{array.dtype.str}{array.shape}".encode())
            digest.update(array.tobytes())

    for batch in batches:
        add(batch)
    return digest.hexdigest()


def model_name(report: dict) -> str | None:
    """The model spec a report was made from: its run record's, else its recipe's (reports made by `run`)."""
    for section in (report.get("run"), report.get("recipe")):
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
