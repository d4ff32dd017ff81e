"""Resolve `path/to/file.py:factory` and `package.module:factory` specs into user objects."""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

from edgeslim.core.errors import SpecError, not_installed

_FORM = "path/to/file.py:factory or package.module:factory"


def resolve(spec: str, what: str):
    """Return the callable that `spec` names, with one clear sentence when it does not resolve."""
    if not isinstance(spec, str) or ":" not in spec:
        raise SpecError(f"{what} spec {spec!r} must have the form {_FORM}")
    target, _, attr = spec.rpartition(":")
    if not target or not attr:
        raise SpecError(f"{what} spec {spec!r} must have the form {_FORM}")
    module = _import_file(target, what, spec) if target.endswith(".py") else _import_module(target, what, spec)
    factory = getattr(module, attr, None)
    if factory is None:
        raise SpecError(f"{what} spec {spec!r}: {target} has no attribute '{attr}'")
    if not callable(factory):
        raise SpecError(f"{what} spec {spec!r}: '{attr}' is a {type(factory).__name__}, not a callable factory")
    return factory


def _import_file(target: str, what: str, spec: str):
    path = Path(target).expanduser().resolve()
    if not path.is_file():
        raise SpecError(f"{what} spec {spec!r}: file {target} does not exist")
    module_name = f"_edgeslim_user_{abs(hash(str(path)))}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(loader_spec)
    # The user's file may import its neighbours, as `python file.py` would allow.
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    try:
        loader_spec.loader.exec_module(module)
    except ModuleNotFoundError as exc:  # a library the user's file imports
        raise SpecError(f"{what} spec {spec!r}: importing {target} needs {not_installed(exc)}") from None
    except Exception as exc:  # the user's code failed: say so in one sentence
        raise SpecError(f"{what} spec {spec!r}: importing {target} raised {type(exc).__name__}: {exc}") from None
    sys.modules[module_name] = module
    return module


def _import_module(target: str, what: str, spec: str):
    try:
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        if exc.name and not (target == exc.name or target.startswith(f"{exc.name}.")):  # one the module imports
            raise SpecError(f"{what} spec {spec!r}: importing {target} needs {not_installed(exc)}") from None
        raise SpecError(f"{what} spec {spec!r}: no module named {exc.name!r}; "
                        f"check the name or give a file path ending in .py") from None
    except Exception as exc:
        raise SpecError(f"{what} spec {spec!r}: importing {target} raised {type(exc).__name__}: {exc}") from None


def call_factory(spec: str, what: str):
    factory = resolve(spec, what)
    try:
        return factory()
    except ModuleNotFoundError as exc:  # a library the factory imports when called
        raise SpecError(f"{what} factory {spec!r} needs {not_installed(exc)}") from None
    except Exception as exc:
        raise SpecError(f"{what} factory {spec!r} raised {type(exc).__name__}: {exc}") from None


def load_data(spec: str):
    from edgeslim.core.data import DataSplits

    return DataSplits.from_mapping(call_factory(spec, "data"), spec)


def load_metric(spec: str | None):
    """'top1' (default) or a spec of fn(outputs, labels) -> float, higher is better; named by the spec.

    A metric whose parameters name the model's outputs, fn(boxes, scores, labels), gets each of them
    (edgeslim.core.metrics.wanted_outputs)."""
    from edgeslim.core.metrics import METRICS, Metric

    if spec is None or spec in METRICS:
        return Metric(spec or "top1", METRICS[spec or "top1"])
    return Metric(spec, resolve(spec, "metric"))
