"""The package version, in a module of its own at the bottom of the layers.

Modules that record the version (checkpoints, statistics files, classifier files, run configs) import it from here,
never from the `genvision` package itself: the package's `__init__` re-exports the Python API (`genvision.api`,
above training), so an import of `genvision` from a lower layer would depend on every layer above it.
"""

__version__ = "0.2.0"
