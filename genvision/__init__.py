"""genvision: train DCGANs and VAEs, sample image grids, and score generators with FID.

Import-light on purpose: submodules are imported where they are used, so `genvision --version` stays fast.
"""

from genvision.version import __version__

__all__ = ["__version__"]
