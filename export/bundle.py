"""What goes into a bundle: model.onnx (and external data) and its manifest.

Writing the folder safely (staging, atomic swap, locks) is edgeslim.core.outputs' job."""
from __future__ import annotations

from pathlib import Path

from edgeslim.core.version import package_versions
from edgeslim.export.graph import count_params, lint, op_counts, tensor_specs
from edgeslim.sdk.bundle import BUNDLE_FORMAT, MODEL_FILE, sha256_of

# Above this the protobuf limit (2 GiB) is near: weights go to an external data file.
EXTERNAL_DATA_BYTES = 1 << 30


def save_model(model, directory: Path) -> list[str]:
    """Save model.onnx (with external data when large); return the file names it needs."""
    import onnx

    external = model.ByteSize() > EXTERNAL_DATA_BYTES
    onnx.save(model, directory / MODEL_FILE, save_as_external_data=external,
              all_tensors_to_one_file=True, location=f"{MODEL_FILE}.data")
    return [MODEL_FILE] + ([f"{MODEL_FILE}.data"] if external else [])


def write_unverified_bundle(model, folder: Path, name: str, compression: list = ()) -> Path:
    """model.onnx and a manifest in `folder`, with no accuracy pass: for probes and timing runs
    (a budget probe, an INT8 form timed on a remote device, a peer's model in the bench)."""
    from edgeslim.core.outputs import write_json

    folder.mkdir(parents=True, exist_ok=True)
    files = save_model(model, folder)
    write_json(folder / "manifest.json", manifest_for(model, name, files, folder, list(compression), {}))
    return folder


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
    check_written(manifest)
    return manifest


def check_written(manifest: dict) -> None:
    """The manifest as readers will see it (JSON) is of the types they check (edgeslim.sdk.manifest):
    a writer that drifts from the document fails here, at build time, not in every reader after."""
    import json

    from edgeslim.core.documents import Reading, from_dict
    from edgeslim.core.outputs import jsonable
    from edgeslim.sdk.manifest import Manifest

    as_read = json.loads(json.dumps(manifest, default=jsonable))
    from_dict(Manifest, as_read, Reading("the manifest edgeslim writes", RuntimeError,
                                         hint="this is a bug in edgeslim, please report it"))
