"""genvision: train DCGANs and VAEs, sample image grids, and score generators with FID.

The Python API (`genvision.api`), for notebooks::

    import genvision
    genvision.fid("runs/dcgan", "mnist5k:train", kid=True)   # the dict `genvision fid --json` prints
    genvision.stats("mnist5k:train", "train.npz")             # mu, sigma, count, metadata (and the file)
    genvision.sample("runs/dcgan", 16, seed=0)                # uint8 (16, C, H, W), as `genvision sample` writes
    genvision.load_generator("runs/dcgan")                    # nn.Module: z (N, latent_dim) -> images in [-1, 1]
    genvision.train_gan(num_steps=500, out_dir="runs/try")    # the run summary (summary.json)

These names load `genvision.api` on first use (PEP 562 `__getattr__`), so `import genvision` loads no torch.
"""

from genvision.version import __version__

API = ("fid", "stats", "load_generator", "sample", "train_gan", "train_vae")
__all__ = ["__version__", *API]


def __getattr__(name: str):
    if name in API:
        from genvision import api

        value = getattr(api, name)
        globals()[name] = value  # found directly from now on
        return value
    raise AttributeError(f"module 'genvision' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *API})
