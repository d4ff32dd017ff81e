"""Reading and verifying a bundle directory: model.onnx, its external data, manifest.json.

Torch-free: numpy, onnxruntime and the standard library only.

What is verified is what runs: each file is read once, without following symbolic links, and
hashed in memory; Model builds its onnxruntime session from those same bytes, so nothing is read
from disk again between the check and the use.
"""
from __future__ import annotations

import hashlib
import os
import posixpath
import stat
from dataclasses import dataclass
from pathlib import Path

from edgeslim.core.documents import Reading, from_dict, show
from edgeslim.core.errors import BundleError
from edgeslim.core.limits import MANIFEST_MAX_BYTES, read_bounded_json
from edgeslim.sdk.manifest import BUNDLE_FORMAT, Manifest
from edgeslim.sdk.protowire import WireError, external_data_references, has_graph

MANIFEST = "manifest.json"
MODEL_FILE = "model.onnx"

# Never follow a symbolic link out of the bundle; never block on a FIFO planted in place of a file.
_FILE_FLAGS = (os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
               | getattr(os, "O_CLOEXEC", 0))
_DIR_FLAGS = _FILE_FLAGS | getattr(os, "O_DIRECTORY", 0)
# Where the OS opens relative to a directory descriptor (Linux, macOS, BSD), each component of a
# bundle path is opened without following links, so none can turn into a link midway.
_OPEN_AT = os.open in os.supports_dir_fd and hasattr(os, "O_NOFOLLOW")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class TensorSpec:
    """One input or output: its name, numpy dtype name, shape (str for symbolic dims), batch axis and,
    where the manifest records it, the shape of the example it was exported with."""

    name: str
    dtype: str
    shape: tuple
    batch_axis: int = 0
    example_shape: tuple | None = None

    def to_dict(self) -> dict:
        example = {} if self.example_shape is None else {"example_shape": list(self.example_shape)}
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape), "batch_axis": self.batch_axis,
                **example}

    @classmethod
    def from_dict(cls, data: dict) -> TensorSpec:
        example = data.get("example_shape")
        return cls(data["name"], data["dtype"], tuple(data["shape"]), int(data.get("batch_axis", 0)),
                   None if example is None else tuple(example))


def read_manifest(bundle_dir: str | Path) -> dict:
    """Load manifest.json, raising BundleError for a missing dir, bad JSON, an unknown format or a
    field of the wrong type (see edgeslim.sdk.manifest); the fields read have the types declared there."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise BundleError(f"bundle '{bundle_dir}' is not a directory; "
                          "pass a directory written by edgeslim export/compress")
    path = bundle_dir / MANIFEST
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        raise BundleError(f"bundle '{bundle_dir}' has no {MANIFEST}; "
                          "it was not written by edgeslim or is incomplete") from None
    if stat.S_ISLNK(mode):
        raise BundleError(_link_message(path))
    if not stat.S_ISREG(mode):
        raise BundleError(f"{path} is not a regular file; rebuild the bundle")
    # Bounded in size and depth: a hostile manifest fails in one sentence, not by memory or recursion.
    manifest = read_bounded_json(path, "manifest", MANIFEST_MAX_BYTES, BundleError)
    found = manifest.get("format") if isinstance(manifest, dict) else None
    if found != BUNDLE_FORMAT:
        newer = isinstance(found, str) and found.startswith("edgeslim-bundle/")
        raise BundleError(f"bundle '{bundle_dir}' has format {show(found)}; this edgeslim reads {BUNDLE_FORMAT!r}"
                          + ("; it was written by another edgeslim version, so upgrade edgeslim or rebuild the bundle"
                             if newer else ""))
    reading = Reading(f"manifest {path}", BundleError, hint="rebuild the bundle")
    from_dict(Manifest, manifest, reading)
    for kind in ("inputs", "outputs"):
        for index, spec in enumerate(manifest[kind]):
            _check_tensor(spec, f"{kind}[{index}]", reading)
    return manifest


def _check_tensor(spec: dict, where: str, reading: Reading) -> None:
    """A dtype numpy knows and the SDK can feed (numbers and bools), dims that are sizes or names."""
    import numpy as np

    try:
        kind = np.dtype(spec["dtype"]).kind
    except (TypeError, ValueError):
        kind = None
    if kind not in ("b", "i", "u", "f") or np.dtype(spec["dtype"]).name != spec["dtype"]:
        reading.fail(f"{where}.dtype", f"is {show(spec['dtype'])}, which is not a numpy dtype name of numbers "
                     "or booleans (float32, int64, bool, ...)")
    for axis, dim in enumerate(spec["shape"]):
        if isinstance(dim, int) and not 0 <= dim < 1 << 31:
            reading.fail(f"{where}.shape[{axis}]", f"is {show(dim)}, which is not a dimension size")


@dataclass(frozen=True)
class BundleFiles:
    """The bytes a session is built from, as read (and checked) once."""

    model: bytes       # model.onnx
    external: dict     # manifest name -> bytes, for each external-data file the model reads


def verify_files(bundle_dir: str | Path, manifest: dict) -> None:
    """Check model.onnx and every file the manifest lists against its sha256, and that the
    manifest lists every file the model reads; raise BundleError otherwise."""
    read_verified(bundle_dir, manifest)


def read_verified(bundle_dir: str | Path, manifest: dict, check: bool = True) -> BundleFiles:
    """Read model.onnx and every file the manifest lists once, refusing symbolic links, files
    outside the bundle and external data the manifest does not list.

    With check=False the sha256 compare is skipped; every other rule still holds.
    """
    bundle_dir = Path(bundle_dir)
    checksums = manifest["sha256"]
    if MODEL_FILE not in checksums:
        raise BundleError(f"manifest of '{bundle_dir}' records no checksum for {MODEL_FILE}; rebuild the bundle")
    for name in checksums:
        if not _inside_bundle(name) or name != posixpath.normpath(name):
            raise BundleError(f"manifest of '{bundle_dir}' names a file outside the bundle: {name!r}; "
                              "a bundle lists only relative paths inside it, so rebuild the bundle")
    root = _open_root(bundle_dir)
    try:
        model = _read_checked(root, bundle_dir, MODEL_FILE, checksums[MODEL_FILE], check)
        needed = _external_files(bundle_dir, model, checksums)
        external = {MODEL_FILE: model} if MODEL_FILE in needed else {}
        for name, expected in checksums.items():
            if name != MODEL_FILE:
                data = _read_checked(root, bundle_dir, name, expected, check)
                if name in needed:
                    external[name] = data
    finally:
        if root is not None:
            os.close(root)
    return BundleFiles(model, external)


def _external_files(bundle_dir: Path, model: bytes, checksums: dict) -> set[str]:
    """The manifest names of the external-data files the model reads; each must be listed."""
    path = bundle_dir / MODEL_FILE
    try:
        references = external_data_references(model)
        if not has_graph(model):
            raise WireError("it holds no graph")
    except WireError as exc:
        raise BundleError(f"{path} is not a valid ONNX model ({exc}); rebuild the bundle") from None
    names = set()
    for location, in_main_graph in sorted(references.items()):
        if not _inside_bundle(location):
            raise BundleError(f"{path} reads external data from {location!r}, outside the bundle; "
                              "a bundle's model may read only files inside it, so rebuild the bundle")
        name = posixpath.normpath(location)  # onnxruntime resolves './w.data' to 'w.data' too
        if name not in checksums:
            raise BundleError(f"{path} reads external data from {location!r}, which the manifest's sha256 does "
                              "not list; rebuild the bundle so that its manifest covers every file the model reads")
        if not in_main_graph:
            # onnxruntime takes only main-graph tensors from the verified buffers; it would read
            # these from disk after the check, so they are refused rather than run unverified.
            raise BundleError(f"{path} keeps tensors of a subgraph, function or sparse initializer in the external "
                              f"file {location!r}, which onnxruntime would read from disk after the check; "
                              "rebuild the bundle with those tensors embedded in model.onnx")
        names.add(name)
    return names


def _inside_bundle(name) -> bool:
    """Whether `name` is a relative path that stays inside the bundle directory.

    Refused: absolute paths, '..', backslashes and drive letters (Windows separators), NUL, and
    '*', which marks onnxruntime's '*/_ORT_MEM_ADDR_/*' (external data read from a raw address).
    """
    if not isinstance(name, str) or not name or name.startswith("/") or any(c in name for c in "\\*\0"):
        return False
    if len(name) > 1 and name[1] == ":" and name[0].isalpha():
        return False
    return ".." not in name.split("/") and posixpath.normpath(name) != "."


def _open_root(bundle_dir: Path) -> int | None:
    """A descriptor of the bundle directory to open its files from, or None where the OS
    cannot open relative to one. The bundle directory itself may be a link."""
    if not bundle_dir.is_dir():
        raise BundleError(f"bundle '{bundle_dir}' is not a directory; "
                          "pass a directory written by edgeslim export/compress")
    if not _OPEN_AT:
        return None
    try:
        return os.open(bundle_dir, _DIR_FLAGS & ~os.O_NOFOLLOW)
    except OSError as exc:
        raise BundleError(f"cannot read bundle '{bundle_dir}' ({exc.strerror}); check its permissions") from None


def _read_checked(root: int | None, bundle_dir: Path, name: str, expected: str, check: bool) -> bytes:
    """The bytes of one bundle file, read once through a descriptor that followed no link."""
    path = bundle_dir / name
    fd = _open_no_follow(root, bundle_dir, name) if root is not None else _open_by_path(bundle_dir, name)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise BundleError(f"{path} is not a regular file; a bundle's files must be regular files, "
                              "so rebuild the bundle")
        data = handle.read()
    # The message names the file, never a digest: a digest would leak what an attacker's link points at.
    if check and hashlib.sha256(data).hexdigest() != expected:
        raise BundleError(f"{path} was changed after the bundle was written; rebuild the bundle or restore the file")
    return data


def _open_no_follow(root: int, bundle_dir: Path, name: str) -> int:
    """Open `name` below the directory descriptor `root` one component at a time, so that no
    component (the file or a directory above it) can be a link that leads out of the bundle."""
    parts = name.split("/")
    fd = root
    try:
        for depth, part in enumerate(parts):
            flags = _FILE_FLAGS if depth == len(parts) - 1 else _DIR_FLAGS
            parent, fd = fd, _open_at(fd, part, flags, bundle_dir, "/".join(parts[:depth + 1]), name)
            if parent != root:
                os.close(parent)
        opened, fd = fd, root  # the caller owns the final descriptor
        return opened
    finally:
        if fd != root:
            os.close(fd)


def _open_at(dir_fd: int, part: str, flags: int, bundle_dir: Path, shown: str, name: str) -> int:
    try:
        return os.open(part, flags, dir_fd=dir_fd)
    except FileNotFoundError:
        raise BundleError(f"bundle '{bundle_dir}' is missing {name}, which its manifest lists") from None
    except OSError as exc:
        # O_NOFOLLOW fails a link with ELOOP (Linux, macOS) or EMLINK (FreeBSD): look before saying so.
        if stat.S_ISLNK(os.stat(part, dir_fd=dir_fd, follow_symlinks=False).st_mode):
            raise BundleError(_link_message(bundle_dir / shown)) from None
        raise BundleError(f"cannot read {bundle_dir / shown} ({exc.strerror}); "
                          "check the bundle's files and permissions") from None


def _open_by_path(bundle_dir: Path, name: str) -> int:
    """Where the OS has no dir_fd (Windows): refuse a link or junction at any component, open by
    path, and check that the file opened is the one that was looked at."""
    path = bundle_dir
    for part in name.split("/"):
        path = path / part
        try:
            seen = os.lstat(path)
        except FileNotFoundError:
            raise BundleError(f"bundle '{bundle_dir}' is missing {name}, which its manifest lists") from None
        if stat.S_ISLNK(seen.st_mode) or getattr(os.path, "isjunction", lambda _: False)(path):
            raise BundleError(_link_message(path))
    try:
        fd = os.open(path, _FILE_FLAGS | getattr(os, "O_BINARY", 0))
    except OSError as exc:
        raise BundleError(f"cannot read {path} ({exc.strerror}); check the bundle's files and permissions") from None
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (seen.st_dev, seen.st_ino):
        os.close(fd)
        raise BundleError(f"{path} was replaced while it was being read; "
                          "load the bundle again once nothing writes to it")
    return fd


def _link_message(path: Path) -> str:
    return (f"{path} is a symbolic link, and a bundle holds its files itself; "
            "replace the link with a copy of the file or rebuild the bundle")


def bundle_size(bundle_dir: str | Path, manifest: dict) -> int:
    """Bytes of every file the model needs (model.onnx plus external data)."""
    return sum((Path(bundle_dir) / name).stat().st_size for name in manifest["sha256"])
