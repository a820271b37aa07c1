"""`genvision train-classifier` (and, as they arrive, train-gan / train-vae): flags -> config -> training loop."""

from __future__ import annotations

import argparse
import dataclasses
import json

from genvision.config import ClassifierConfig, GANConfig, add_config_arguments, config_from_args


def add_dry_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true", help="print the resolved config as JSON and exit")


def run_train_classifier(args: argparse.Namespace) -> int:
    config = config_from_args(ClassifierConfig, args)
    if args.dry_run:
        print(json.dumps(dataclasses.asdict(config), indent=2))
        return 0
    from genvision.training.classifier import train_classifier

    train_classifier(config)
    return 0


def run_train_gan(args: argparse.Namespace) -> int:
    config = config_from_args(GANConfig, args)
    if args.dry_run:
        print(json.dumps(dataclasses.asdict(config), indent=2))
        return 0
    from genvision.training.gan import train_gan

    train_gan(config)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("train-gan", help="train a DCGAN (also: python train_gan.py)",
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_arguments(parser, GANConfig)
    add_dry_run(parser)
    parser.set_defaults(run=run_train_gan)

    parser = subparsers.add_parser("train-classifier", help="train the baseline classifier / FID feature extractor",
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_arguments(parser, ClassifierConfig)
    add_dry_run(parser)
    parser.set_defaults(run=run_train_classifier)
