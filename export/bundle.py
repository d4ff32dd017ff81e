"""Write a bundle directory atomically: a temporary sibling, renamed into place when complete."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from edgeslim import __version__
from edgeslim.export.graph import count_params, lint, op_counts, tensor_specs
from edgeslim.sdk.bundle import BUNDLE_FORMAT, MODEL_FILE, sha256_of

# Above this the protobuf limit (2 GiB) is near: weights go to an external data file.
EXTERNAL_DATA_BYTES = 1 << 30


def package_versions() -> dict:
    """Versions of the libraries that shaped a bundle, read without importing them."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"edgeslim": __version__}
    for name in ("torch", "onnx", "onnxruntime", "nncf", "torch-pruning"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


@contextmanager
def staged_dir(final: Path):
    """Yield a temporary directory beside `final`; on success it replaces `final` in one rename."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.rename(final, old)
    os.rename(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def write_json(path: Path, data: dict) -> None:
    """Write JSON through a temporary file and a rename, so no reader sees half a file."""
    write_text(path, json.dumps(data, indent=2, default=_jsonable) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write text through a temporary file beside `path` and one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _jsonable(value):
    if hasattr(value, "tolist"):  # numpy scalars and arrays alike
        return value.tolist()
    return str(value)


def save_model(model, directory: Path) -> list[str]:
    """Save model.onnx (with external data when large); return the file names it needs."""
    import onnx

    external = model.ByteSize() > EXTERNAL_DATA_BYTES
    onnx.save(model, directory / MODEL_FILE, save_as_external_data=external,
              all_tensors_to_one_file=True, location=f"{MODEL_FILE}.data")
    return [MODEL_FILE] + ([f"{MODEL_FILE}.data"] if external else [])


def manifest_for(model, name: str, files: list[str], directory: Path, compression: list[dict],
                 metrics: dict, extra: dict | None = None) -> dict:
    lint(model)
    manifest = {
        "format": BUNDLE_FORMAT,
        "name": name,
        "inputs": tensor_specs(model, "inputs"),
        "outputs": tensor_specs(model, "outputs"),
        "sha256": {file: sha256_of(directory / file) for file in files},
        "compression": compression,
        "metrics": {"size_bytes": sum((directory / f).stat().st_size for f in files),
                    "params": count_params(model), **metrics},
        "ops": op_counts(model),
        "created_with": package_versions(),
    }
    manifest.update(extra or {})
    return manifest
