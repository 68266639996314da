"""The package version: one place, read by pyproject.toml, the build script
(which bakes it into the compiled core) and ``alloc.__version__``."""

__version__ = "0.1.0"
