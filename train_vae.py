"""Train a convolutional VAE: `python train_vae.py [flags]`, also under `accelerate launch` or `torchrun`.

Same flags as `genvision train-vae`; see `python train_vae.py --help`. The work is done by
genvision.training.vae.train_vae.
"""

import sys

from genvision.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("train-vae"))
