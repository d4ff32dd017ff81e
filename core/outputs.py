"""Where edgeslim writes, and how: never over a user's files, never half a bundle.

The rules every command that takes an output path follows:

- A path is written only when it is absent, an empty folder, or holds an edgeslim bundle or
  document (a report, its Markdown or HTML) that edgeslim may replace. Anything else is refused
  with one sentence; with `force` the output is written beside the user's files, and still no
  file that edgeslim did not write is removed.
- A bundle is built in a staging folder beside its final path and swapped in with one atomic
  exchange (Linux renameat2), so that at every instant the path holds the old bundle or the new
  one, complete. Staging folders of killed runs are recognised by their names and removed by the
  next writer, which holds the path's lock.
- One writer per output path: a second process is told in one sentence, not raced.
- Files and folders get the permissions the umask allows, as any other tool's outputs do.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from contextlib import ExitStack, contextmanager
from glob import escape as glob_escape
from pathlib import Path

from edgeslim.core.errors import ConfigError

MARK = "<!-- written by edgeslim -->"      # first line of the Markdown and HTML files edgeslim writes
SUFFIXES = {"json": (".json",), "markdown": (".md", ".markdown"), "html": (".html", ".htm")}
_STAGING, _OLD, _LOCK = "edgeslim-staging", "edgeslim-old", "edgeslim-lock"
_PEEK_BYTES = 4 << 20                       # an edgeslim JSON document we may replace is smaller


# -- fault injection (tests kill a write at each of these points with SIGKILL) --------------------

def fault_point(name: str) -> None:
    """Die here, as a power cut or `kill -9` would, when EDGESLIM_FAULT_AT names this point."""
    if os.environ.get("EDGESLIM_FAULT_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)


# -- permissions ----------------------------------------------------------------------------------

def unwritable(path: Path, exc: OSError) -> ConfigError:
    """An output that the OS refuses (a read-only folder, a full disk) as one sentence."""
    reason = (exc.strerror or type(exc).__name__).lower()
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) != str(path) else ""
    return ConfigError(f"cannot write {path}: {reason}{where}; choose a path in a folder you can write to")


def _check_folder(path: Path) -> None:
    """The nearest existing folder above `path` must be a folder: else no file can go below it."""
    for parent in path.parents:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                raise ConfigError(f"cannot write {path}: {parent} is a file, not a folder; choose another path")
            return

def current_umask() -> int:
    """The process umask, read without changing it where /proc allows (threads may be writing)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _as_umask_allows(path: Path, is_dir: bool) -> None:
    """mkdtemp and mkstemp create 0700/0600 whatever the umask; give outputs the usual modes."""
    os.chmod(path, (0o777 if is_dir else 0o666) & ~current_umask())


# -- atomic files ---------------------------------------------------------------------------------

def write_text(path: Path, text: str) -> None:
    """Write text through a temporary file beside `path` and one rename."""
    path = Path(path)
    _check_folder(path)
    _remove_stale_temporaries(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise unwritable(path, exc) from None
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        _as_umask_allows(Path(tmp), is_dir=False)
        fault_point(f"wrote-tmp:{path.name}")
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a quota
        Path(tmp).unlink(missing_ok=True)
        raise unwritable(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _remove_stale_temporaries(path: Path) -> None:
    """Temporary files of a writer killed before its rename. Only while this process holds the lock
    of the file or of its folder (a run's report): then no live writer can own one."""
    absolute = path.absolute()
    if absolute not in _HELD and absolute.parent not in _HELD:
        return
    for leftover in absolute.parent.glob(f".{glob_escape(path.name)}.*.tmp"):
        if leftover.is_file() and not leftover.is_symlink():
            leftover.unlink(missing_ok=True)


def write_json(path: Path, data) -> None:
    """Write JSON through a temporary file and a rename, so no reader sees half a file."""
    write_text(path, json.dumps(data, indent=2, default=jsonable) + "\n")


def jsonable(value):
    """What json.dumps writes for a value it does not know: numpy's as Python's, anything else as text."""
    if hasattr(value, "tolist"):  # numpy scalars and arrays alike
        return value.tolist()
    return str(value)


# -- what edgeslim may replace --------------------------------------------------------------------

def _edgeslim_document(path: Path) -> dict | None:
    """The edgeslim JSON document at `path` (its `format` starts with edgeslim-), or None for anything else."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > _PEEK_BYTES:
            return None
        document = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    found = document.get("format") if isinstance(document, dict) else None
    return document if isinstance(found, str) and found.startswith("edgeslim-") else None


def _is_marked(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return MARK.encode() in handle.read(len(MARK) + 64)
    except OSError:
        return False


def owned_file(path: Path, kind: str) -> bool:
    """Whether the file at `path` is an edgeslim document of `kind` that edgeslim may replace."""
    if path.is_symlink() or not path.is_file():
        return False
    return _edgeslim_document(path) is not None if kind == "json" else _is_marked(path)


def bundle_files(folder: Path) -> set[str] | None:
    """The names an edgeslim bundle at `folder` consists of, or None if it is no bundle."""
    manifest = _edgeslim_document(folder / "manifest.json")
    if manifest is None or not manifest["format"].startswith("edgeslim-bundle/"):
        return None
    listed = manifest.get("sha256") if isinstance(manifest.get("sha256"), dict) else {}
    return {"manifest.json", *(name for name in listed if isinstance(name, str) and "/" not in name)}


def _foreign_entries(folder: Path) -> list[str]:
    """Entries of an existing output folder that edgeslim did not write (empty for a bundle)."""
    owned = bundle_files(folder) or set()
    return sorted(entry.name for entry in folder.iterdir()
                  if entry.name not in owned and not _is_our_scratch(entry.name))


def _is_our_scratch(name: str) -> bool:
    return name.startswith(".") and (f".{_STAGING}-" in name or f".{_OLD}-" in name or name.endswith(f".{_LOCK}"))


def _refuse(path: Path, what: str, flag: str) -> None:
    raise ConfigError(f"{flag} {path} {what}; edgeslim writes only to a new path or over its own outputs: "
                      f"choose another path, or pass --force to write beside what is there")


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
    return f"holds files edgeslim did not write ({shown})"


def check_bundle_output(path: Path, force: bool = False, flag: str = "--out") -> bool:
    """Refuse a bundle path that holds anything but an edgeslim bundle; True where `force`
    lets the bundle be written beside the user's files (merge), False for a clean replace."""
    path = Path(path)
    if path.is_symlink():
        raise ConfigError(f"{flag} {path} is a symbolic link; give the folder itself, or a new path")
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag} {path} is a file, and a bundle is a folder; choose another path")
    if not path.exists():
        return False
    foreign = _foreign_entries(path)
    if foreign and not force:
        _refuse(path, _listing(foreign), flag)
    return bool(foreign)


def check_run_output(path: Path, force: bool = False, flag: str = "--out") -> None:
    """A run's folder holds bundles, report.json, report.md and report.html; refuse anything else."""
    path = Path(path)
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise ConfigError(f"{flag} {path} is not a folder; choose a new path for the run's bundles and report")
    if not path.exists() or force:
        return
    kinds = {"report.json": "json", "report.md": "markdown", "report.html": "html"}
    foreign = []
    for entry in sorted(path.iterdir()):
        if _is_our_scratch(entry.name):
            continue
        if entry.name in kinds:
            ours = owned_file(entry, kinds[entry.name])
        else:
            ours = entry.is_dir() and not entry.is_symlink() and bundle_files(entry) is not None \
                and not _foreign_entries(entry)
        if not ours:
            foreign.append(entry.name)
    if foreign:
        _refuse(path, _listing(foreign), flag)


def check_file_output(path: Path, kind: str, inputs=(), force: bool = False, flag: str = "--out") -> None:
    """A document path: its suffix says `kind`, it is none of the command's inputs, and it is
    absent or an edgeslim document of that kind (anything with `force`, but never a folder)."""
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES[kind]:
        raise ConfigError(f"{flag} {path} must end in {' or '.join(SUFFIXES[kind])}: edgeslim writes {kind} there")
    for source in inputs:
        if source and _same_file(path, Path(source)):
            raise ConfigError(f"{flag} {path} is also an input of this command; write to another path")
    if path.is_dir() and not path.is_symlink():
        raise ConfigError(f"{flag} {path} is a folder; give a file path ending in {SUFFIXES[kind][0]}")
    if (path.exists() or path.is_symlink()) and not force and not owned_file(path, kind):
        _refuse(path, "is a file edgeslim did not write", flag)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and os.path.samefile(a, b))
    except OSError:
        return False


def write_document(path: Path, content, kind: str, force: bool = False) -> None:
    """Write a report, its Markdown or HTML: checked again at the moment of writing, then atomic."""
    path = Path(path)
    check_file_output(path, kind, force=force)
    if kind == "json":
        write_json(path, content)
    else:
        write_text(path, f"{MARK}\n{content}")


# -- one writer per path --------------------------------------------------------------------------

_HELD: set[Path] = set()                   # paths whose lock this process holds


def _sibling(path: Path, tag: str) -> Path:
    return path.parent / f".{path.name}.{tag}"


@contextmanager
def claimed(path: Path, flag: str = "--out"):
    """Hold the write lock of `path` (a lock file beside it) while the block runs.

    A second process is refused at once. The lock file is removed on release; a lock left by a
    killed process is free again, since the kernel drops a dead process's flock.
    """
    import fcntl

    path = Path(path).absolute()
    if path in _HELD:  # this process holds it already (the CLI claims early, the writer again)
        yield path
        return
    _check_folder(path)
    lock = _sibling(path, _LOCK)
    while True:
        try:  # the first write of every output: a read-only folder is told here, before any work
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o666)
        except OSError as exc:
            raise unwritable(path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(f"another edgeslim process is writing {flag} {path}; wait for it to finish "
                              "or choose another path") from None
        # The last holder unlinks the file on release; a lock taken on an unlinked file guards nothing.
        try:
            if os.fstat(fd).st_ino == os.stat(lock, follow_symlinks=False).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    _HELD.add(path)
    try:
        yield path
    finally:
        _HELD.discard(path)
        Path(lock).unlink(missing_ok=True)
        os.close(fd)


@contextmanager
def claimed_all(paths, flag: str = "--out"):
    """Locks on several paths (a report and its Markdown), taken in one order to avoid deadlock."""
    with ExitStack() as stack:
        for path in sorted({Path(p).absolute() for p in paths if p is not None}):
            stack.enter_context(claimed(path, flag))
        yield


# -- bundles --------------------------------------------------------------------------------------

@contextmanager
def staged_bundle(final: Path, force: bool = False):
    """Yield a staging folder beside `final`; when the block succeeds, the staged bundle replaces
    `final` in one atomic exchange (or is moved in beside the user's files, with `force`)."""
    final = Path(final)
    with claimed(final):
        merge = check_bundle_output(final, force)
        _remove_stale(final)
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.{_STAGING}-{os.getpid()}-", dir=final.parent))
        except OSError as exc:
            raise unwritable(final, exc) from None
        _as_umask_allows(staging, is_dir=True)
        fault_point("staging-created")
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        fault_point("staging-filled")
        # Checked again at the swap: the folder may have changed during a long build.
        merge = check_bundle_output(final, force)
        if merge:
            _move_in(staging, final)
        else:
            _swap_in(staging, final)


def _remove_stale(final: Path) -> None:
    """Staging and old folders of killed writers; we hold the lock, so no live writer owns one."""
    old = sorted(final.parent.glob(f".{final.name}.{_OLD}-*"))
    if old and not final.exists():
        os.rename(old[0], final)  # a writer without renameat2 died between its two renames
    for leftover in [*final.parent.glob(f".{final.name}.{_STAGING}-*"), *old]:
        if leftover.exists() and not leftover.is_symlink():
            shutil.rmtree(leftover, ignore_errors=True)


def _swap_in(staging: Path, final: Path) -> None:
    if not final.exists():
        _rename_noreplace(staging, final)
        fault_point("swapped")
        return
    if _exchange(staging, final):
        fault_point("swapped")
        _remove_old_bundle(staging, final)  # the old bundle now lies at the staging path
        return
    # No renameat2 here (not Linux, or a file system without it): two renames, and a writer killed
    # between them leaves the old bundle under a name that the next writer restores (_remove_stale).
    old = _sibling(final, f"{_OLD}-{os.getpid()}")
    os.rename(final, old)
    fault_point("moved-old-aside")
    os.rename(staging, final)
    fault_point("swapped")
    _remove_old_bundle(old, final)


def _remove_old_bundle(folder: Path, final: Path) -> None:
    """Remove a replaced bundle: its own files only, so a file put there since is never lost."""
    owned = bundle_files(folder) or set()
    for entry in folder.iterdir():
        if entry.name in owned and not entry.is_dir():
            entry.unlink()
            fault_point("removing-old")
    try:
        folder.rmdir()
    except OSError:  # someone put a file in the old bundle after the last check: keep it in sight
        kept = final.parent / f"{final.name}.replaced-{os.getpid()}"
        os.rename(folder, kept)
        from edgeslim.core.progress import warn

        warn(f"files added to the old bundle while it was replaced are kept in {kept}")


def _move_in(staging: Path, final: Path) -> None:
    """--force over a folder of the user's: the bundle's files move in beside theirs, the manifest
    last (and the stale one first) so that no manifest ever describes files that are not there."""
    (final / "manifest.json").unlink(missing_ok=True)
    names = sorted(p.name for p in staging.iterdir())
    for name in [n for n in names if n != "manifest.json"] + ["manifest.json"]:
        os.replace(staging / name, final / name)
    staging.rmdir()


_RENAME_NOREPLACE, _RENAME_EXCHANGE, _AT_FDCWD = 1, 2, -100


def _renameat2(src: Path, dst: Path, flags: int) -> bool:
    """renameat2(2) through libc; False where this system does not offer it."""
    import ctypes
    import errno

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        call = libc.renameat2
    except (OSError, AttributeError):
        return False
    if call(_AT_FDCWD, os.fsencode(src), _AT_FDCWD, os.fsencode(dst), flags) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(dst))


def _exchange(a: Path, b: Path) -> bool:
    return _renameat2(a, b, _RENAME_EXCHANGE)


def _rename_noreplace(src: Path, dst: Path) -> None:
    try:
        done = _renameat2(src, dst, _RENAME_NOREPLACE)
    except FileExistsError:
        raise ConfigError(f"--out {dst} was created by another program while edgeslim was writing it; "
                          "choose another path") from None
    if not done:
        os.rename(src, dst)


def cache_dir() -> Path:
    """Where trained models and distillation checkpoints are kept between runs."""
    return Path(os.environ.get("EDGESLIM_CACHE", Path.home() / ".cache" / "edgeslim"))
