"""The exception hierarchy. Every message names the bad value, the rule and the fix.

The CLI turns an EdgeslimError into one sentence on stderr and exit code 2; GateFailed is exit 1;
WorkerCrashed (a crash, not bad input) is exit 3, as is any other exception (a bug).
"""


class EdgeslimError(Exception):
    """Base of every error that edgeslim raises on purpose."""


class BundleError(EdgeslimError, ValueError):
    """A bundle that is missing, corrupt, tampered with or of an unknown format."""


class InputError(EdgeslimError, ValueError):
    """Inputs whose names, shapes or dtypes do not match what the model expects."""


class SpecError(EdgeslimError, ValueError):
    """A model, data or metric spec that does not resolve, or resolves to the wrong thing."""


class ConfigError(EdgeslimError, ValueError):
    """A step config, recipe or command-line option with a value outside its rule."""


class ExportError(EdgeslimError):
    """An export whose ONNX model does not agree with the torch model."""


class DeviceError(EdgeslimError, ValueError):
    """A device or execution provider that is unknown or not available here."""


class GateFailed(EdgeslimError):
    """A report gate failed; the report says which."""


class Incomplete(EdgeslimError):
    """Some measurements failed (a device stopped answering mid-run); the report holds the others. Exit 1."""


class WorkerCrashed(EdgeslimError):
    """A measurement worker died without a protocol reply (a crash, a signal, output that is not the
    protocol): a bug in edgeslim or its runtime, not bad input, so the CLI exits 3 and asks for a report."""


class RankFailed(EdgeslimError):
    """Another rank of a torchrun job stopped (killed, crashed, out of memory) while this one waited for it:
    the CLI says so in one sentence and ends this rank at once (exit 3), so that the job does not hang."""


class MissingModule(ModuleNotFoundError):
    """A module that is not installed, with the command that installs it (an edgeslim extra, say): raised
    where the code that needs it knows better than the table below, as the embedded demo does."""

    def __init__(self, name: str, install: str):
        super().__init__(f"No module named {name!r}", name=name)
        self.install = install


# The modules that edgeslim's optional extras (pyproject.toml) bring, by extra.
EXTRA_MODULES = {"compress": ("torch", "nncf", "torch_pruning", "torchao", "safetensors", "onnx_ir"),
                 "report": ("matplotlib",), "mlflow": ("mlflow", "sqlalchemy", "alembic")}


def install_command(exc: ModuleNotFoundError) -> str | None:
    """How to install the module `exc` names, where edgeslim knows it (its own extras); else None."""
    if isinstance(exc, MissingModule):
        return exc.install
    # `import torch.nn` without torch names 'torch'; a name such as 'torch.foo' is a module torch lacks
    extra = next((extra for extra, modules in EXTRA_MODULES.items() if exc.name in modules), None)
    return f"pip install 'edgeslim[{extra}]'" if extra else None


def not_installed(exc: ModuleNotFoundError) -> str:
    """`the module 'x', which is not installed here: <how to install it>` (a sentence's end)."""
    how = install_command(exc) or "install the package that provides it"
    return f"the module {exc.name!r}, which is not installed here: {how}"


def require(condition: bool, field: str, value, rule: str) -> None:
    """Raise a ConfigError that names the field, its value and the rule, unless condition holds."""
    if not condition:
        raise ConfigError(f"{field}={value!r} is not allowed: it must be {rule}")
