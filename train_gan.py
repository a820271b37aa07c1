"""Train a DCGAN: `python train_gan.py [flags]`, also under `accelerate launch` or `torchrun`.

Same flags as `genvision train-gan`; see `python train_gan.py --help`. The work is done by
genvision.training.gan.train_gan.
"""

import sys

from genvision.cli import run_command

if __name__ == "__main__":
    sys.exit(run_command("train-gan"))
