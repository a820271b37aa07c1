"""`genvision sample`: a grid or a folder of PNGs from a GAN or VAE checkpoint; interpolations; reconstructions.

Flags come from `config.SampleConfig`; the work is `sampling.sample_command`.
"""

from __future__ import annotations

import argparse
import dataclasses

from genvision.config import SampleConfig, add_config_arguments, config_from_args

EXAMPLES = """examples:
  genvision sample runs/dcgan --num 64 --grid samples.png               # 8x8 grid (+ samples.png.json)
  genvision sample runs/dcgan --num 5000 --out-dir fakes/               # 000000.png ... 004999.png
  genvision sample runs/dcgan --num 64 --truncation 1.0 --grid trunc.png
  genvision sample runs/dcgan --interpolate 10 --num 8 --grid walk.png  # 8 rows of 10 (slerp)
  genvision sample runs/vae --num 64 --prior normal --grid normal.png # N(0, I) latents, not the run's --prior gmm
  genvision sample runs/vae --reconstruct mnist5k:test --num 32 --grid recon.png
  genvision sample runs/cdcgan --grid classes.png          # conditional run: one row per class, same noise per column
  genvision sample runs/cdcgan --class 7 --num 64 --out-dir sevens/  # sevens/7/000000.png ... (+ samples.json)
  genvision sample runs/cdcgan --class 3,5 --interpolate 10 --num 4 --grid walk.png  # rows of class 3, 5, 3, 5
"""


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in every flag's help, and the examples epilog kept as written."""


def run_sample(args: argparse.Namespace) -> int:
    args.classes = tuple(getattr(args, "classes", ()))  # --class given any number of times
    config = config_from_args(SampleConfig, args)
    from genvision.sampling import sample_command

    print(sample_command(config))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "sample", help="write a grid or numbered PNGs from a GAN/VAE checkpoint (also interpolations, "
                       "VAE reconstructions)",
        description="Sample a GAN or VAE checkpoint (or a run folder: its best checkpoint, else its latest). Sample "
                    "i depends only on (--seed, i), never on --batch-size.",
        epilog=EXAMPLES, formatter_class=HelpFormatter)
    parser.add_argument("source", metavar="CHECKPOINT_OR_RUN", help="checkpoint folder, or run folder")
    add_config_arguments(parser, SampleConfig, skip=("source", "classes"))
    classes = {f.name: f for f in dataclasses.fields(SampleConfig)}["classes"]
    parser.add_argument("--class", "--classes", dest="classes", action="append", metavar="CLASS",
                        default=argparse.SUPPRESS,
                        help=classes.metadata["help"])
    parser.set_defaults(run=run_sample)
