"""What the libraries edgeslim drives print that a user cannot act on, kept off the console.

The CLI calls `quiet_libraries` at start (through edgeslim.core.progress.configure); a program that
imports edgeslim as a library keeps its own logging and warnings settings. Unless --debug, these
never reach the user:

- Python warnings raised inside torch, torchao, torch-pruning, NNCF, onnx and onnxruntime (notices
  about their own internals and deprecations, e.g. torch-pruning's "Unwrapped parameters detected");
- records below ERROR on the root logger, which onnxruntime.quantization writes to with
  `logging.warning` ("WARNING:root:Please consider to run pre-processing before quantization",
  "Axis 1 is out-of-range for weight ..."), and on loggers that have no level of their own:
  torchao's "Failed to load .../torchao/_C_mxfp8...so" (its optional CUDA kernels, logged at import);
- torch's loggers below ERROR: torch.utils._pytree's "<enum 'KernelPreference'> is an Enum subclass
  ... register_constant() on Enum subclasses is deprecated", logged when torchao registers its enums;
- NNCF's logger below ERROR (INFO lines on ignored nodes) and its rich progress bars ("Statistics
  collection", "Applying Fast Bias correction"): edgeslim draws its own (core.progress.progress);
- onnxruntime's C++ log below ERROR ("Removing initializer ... It is not used by any node");
- transformers' log below ERROR and its "Loading weights" progress bar, drawn when a user's model
  factory calls from_pretrained.

NNCF logs to stdout, which holds results only: its records go to stderr, --debug or not. torch and
NNCF set their loggers up when imported, so settings made before would be undone: those are applied
once the library is imported (`_AfterImport`), or at once where it already is.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import logging
import sys
import warnings

LIBRARY_MODULES = r"(torch|torchao|torchvision|torch_pruning|nncf|onnx|onnxruntime|onnxscript|onnx_ir)(\.|$)"


class _LibraryLines(logging.Handler):
    """`WARNING:name:message`, as logging's default, on whatever sys.stderr is at the time."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter(logging.BASIC_FORMAT))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()
        except Exception:
            self.handleError(record)


def quiet_libraries(debug: bool = False, quiet: bool = False) -> None:
    """Silence the libraries' warnings, log records and progress bars (with `debug`: show them on stderr).
    Calling it again replaces the settings."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, _LibraryLines)]:
        root.removeHandler(handler)
    root.addHandler(_LibraryLines())  # also keeps logging.warning() from adding a handler of its own
    root.setLevel(logging.WARNING if debug else logging.ERROR)
    warnings.filterwarnings("default" if debug else "ignore", module=LIBRARY_MODULES)
    _rich_console(hidden=quiet or not debug)
    actions = {"torch": lambda: _torch(debug), "nncf": lambda: _nncf(debug), "onnxruntime": lambda: _onnxruntime(debug),
               "transformers": lambda: _transformers(debug)}
    sys.meta_path[:] = [finder for finder in sys.meta_path if not isinstance(finder, _AfterImport)]
    for name in [name for name in actions if name in sys.modules]:
        actions.pop(name)()
    sys.meta_path.insert(0, _AfterImport(actions))


def _rich_console(hidden: bool) -> None:
    """NNCF draws its bars on rich's shared console, which writes to stdout: to stderr, and hidden but with
    --debug (no rich on a torch-free device: nothing to do)."""
    try:
        import rich
    except ImportError:
        return
    rich.reconfigure(stderr=True, quiet=hidden)


# Each library's own level when shown (--debug), as it sets it at import.

def _torch(debug: bool) -> None:
    logging.getLogger("torch").setLevel(logging.WARNING if debug else logging.ERROR)


def _nncf(debug: bool) -> None:
    nncf = logging.getLogger("nncf")
    nncf.handlers = [_LibraryLines()]  # in place of its handler on stdout
    nncf.setLevel(logging.INFO if debug else logging.ERROR)


def _onnxruntime(debug: bool) -> None:
    import onnxruntime

    onnxruntime.set_default_logger_severity(2 if debug else 3)  # 2: warnings, 3: errors


def _transformers(debug: bool) -> None:
    from transformers.utils import logging as transformers_logging

    if debug:
        transformers_logging.set_verbosity_warning()
        transformers_logging.enable_progress_bar()
    else:
        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs `actions[name]()` once the top-level module `name` has been imported (and never again)."""

    def __init__(self, actions: dict):
        self.actions = actions

    def find_spec(self, fullname, path=None, target=None):
        action = self.actions.pop(fullname, None)  # popped first: the search below does not come back here
        if action is None:
            return None
        try:
            spec = importlib.util.find_spec(fullname)
        except (ImportError, ValueError):
            return None
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return None
        spec.loader = _Then(spec.loader, action)
        return spec


class _Then(importlib.abc.Loader):
    """A module's own loader, then an action; the module keeps its own loader as __loader__."""

    def __init__(self, loader, action):
        self.loader, self.action = loader, action

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        module.__spec__.loader = module.__loader__ = self.loader
        self.loader.exec_module(module)
        self.action()
