"""edgeslim's version, and the versions of the libraries that shaped a bundle."""
from __future__ import annotations

__version__ = "0.1.0"


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
