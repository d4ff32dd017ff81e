"""The on-device runtime: load a bundle, verify it, predict, benchmark.

Imports neither torch nor nncf; runs where only numpy and onnxruntime are installed.

    from edgeslim.sdk import load
    model = load("out/pruned-kd-int8", device="cpu", threads=None)
    y = model.predict(x)
"""
from edgeslim.core.errors import BundleError, ConfigError, DeviceError, InputError
from edgeslim.sdk.bundle import BUNDLE_FORMAT, TensorSpec, read_manifest, verify_files
from edgeslim.sdk.model import Model


def load(path, device: str = "cpu", threads: int | None = None, verify: bool = True) -> Model:
    """Load the bundle at `path`, checking its manifest and every file's sha256 first.

    The session is built from the very bytes that were checked. `threads` is None (onnxruntime's
    default) or 1 to this host's cores; anything else raises ConfigError before any work.
    `verify=False` skips the sha256 compare only.
    """
    return Model(path, device=device, threads=threads, verify=verify)


__all__ = ["load", "Model", "BundleError", "InputError", "DeviceError", "ConfigError", "TensorSpec",
           "BUNDLE_FORMAT", "read_manifest", "verify_files"]
