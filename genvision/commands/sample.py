"""`genvision sample`: a grid or a folder of PNGs from a checkpoint."""

from __future__ import annotations

import argparse

from genvision.config import SampleConfig, add_config_arguments, config_from_args


def run_sample(args: argparse.Namespace) -> int:
    config = config_from_args(SampleConfig, args)
    from genvision.sampling import sample_command

    print(sample_command(config))
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("sample", help="write a grid or numbered PNGs from a GAN/VAE checkpoint",
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("source", metavar="CHECKPOINT_OR_RUN", help="checkpoint folder, or run folder")
    add_config_arguments(parser, SampleConfig, skip=("source",))
    parser.set_defaults(run=run_sample)
