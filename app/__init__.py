from edgeslim.core.version import __version__  # noqa: F401 (the package version, one place)
