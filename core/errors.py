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


class WorkerCrashed(EdgeslimError):
    """A measurement worker died without a protocol reply (a crash, a signal, output that is not the
    protocol): a bug in edgeslim or its runtime, not bad input, so the CLI exits 3 and asks for a report."""


class RankFailed(EdgeslimError):
    """Another rank of a torchrun job stopped (killed, crashed, out of memory) while this one waited for it:
    the CLI says so in one sentence and ends this rank at once (exit 3), so that the job does not hang."""


def require(condition: bool, field: str, value, rule: str) -> None:
    """Raise a ConfigError that names the field, its value and the rule, unless condition holds."""
    if not condition:
        raise ConfigError(f"{field}={value!r} is not allowed: it must be {rule}")
