"""Reading and verifying a bundle directory: model.onnx + manifest.json.

Torch-free: numpy, onnxruntime and the standard library only.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from edgeslim.errors import BundleError

BUNDLE_FORMAT = "edgeslim-bundle/1"
MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, numpy dtype name and shape (str for symbolic dims)."""

    name: str
    dtype: str
    shape: tuple

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: dict) -> "TensorSpec":
        return cls(data["name"], data["dtype"], tuple(data["shape"]))


def read_manifest(bundle_dir: str | Path) -> dict:
    """Load manifest.json, raising BundleError for a missing dir, bad JSON or unknown format."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise BundleError(f"bundle '{bundle_dir}' is not a directory; pass a directory written by edgeslim export/compress")
    path = bundle_dir / MANIFEST
    if not path.is_file():
        raise BundleError(f"bundle '{bundle_dir}' has no {MANIFEST}; it was not written by edgeslim or is incomplete")
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path} is not valid JSON ({exc}); rebuild the bundle") from None
    found = manifest.get("format") if isinstance(manifest, dict) else None
    if found != BUNDLE_FORMAT:
        raise BundleError(f"bundle '{bundle_dir}' has format {found!r}; this edgeslim reads {BUNDLE_FORMAT!r}")
    for key in ("name", "inputs", "outputs", "sha256"):
        if key not in manifest:
            raise BundleError(f"{path} lacks the field '{key}'; rebuild the bundle")
    return manifest


def verify_files(bundle_dir: str | Path, manifest: dict) -> None:
    """Check that model.onnx and every file the manifest lists match their sha256."""
    bundle_dir = Path(bundle_dir)
    checksums = manifest["sha256"]
    if MODEL_FILE not in checksums:
        raise BundleError(f"manifest of '{bundle_dir}' records no checksum for {MODEL_FILE}; rebuild the bundle")
    for name, expected in checksums.items():
        path = bundle_dir / name
        if Path(name).is_absolute() or ".." in Path(name).parts:
            raise BundleError(f"manifest of '{bundle_dir}' names a file outside the bundle: {name!r}")
        if not path.is_file():
            raise BundleError(f"bundle '{bundle_dir}' is missing {name}, which its manifest lists")
        actual = sha256_of(path)
        if actual != expected:
            raise BundleError(
                f"{path} was changed after the bundle was written (sha256 {actual[:12]}… != {expected[:12]}…); "
                "rebuild the bundle or restore the file")


def bundle_size(bundle_dir: str | Path, manifest: dict) -> int:
    """Bytes of every file the model needs (model.onnx plus external data)."""
    return sum((Path(bundle_dir) / name).stat().st_size for name in manifest["sha256"])
