"""`genvision train-gan`, `train-vae`, `train-classifier`, `evaluate-vae`: flags -> config -> training loop."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import json

from genvision.config import (ClassifierConfig, GANConfig, VAEConfig, add_config_arguments, config_from_args,
                              given_fields)


def add_dry_run(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true",
                        help="run every check that needs no data (dataset specs, run folder, --resume), print the "
                             "resolved config as JSON and exit")


def trainer(config_class: type, module: str):
    """A subcommand runner: flags -> validated config -> genvision.training.MODULE.train_MODULE(config, given), or
    with --dry-run plan_MODULE (the same checks, nothing loaded or written) and the resolved config printed as JSON.

    `given` holds the fields whose flags were on the command line: a resumed run keeps its saved config otherwise.
    """

    def run(args: argparse.Namespace) -> int:
        config = config_from_args(config_class, args)
        given = given_fields(config_class, args)
        training = importlib.import_module(f"genvision.training.{module}")
        if args.dry_run:
            print(json.dumps(dataclasses.asdict(getattr(training, f"plan_{module}")(config, given)), indent=2))
            return 0
        getattr(training, f"train_{module}")(config, given)
        return 0

    return run


def run_evaluate_vae(args: argparse.Namespace) -> int:
    from genvision.training.vae import evaluate_vae

    report = evaluate_vae(args.checkpoint, args.dataset, args.num_importance_samples, args.seed)
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{report['dataset']}: negative ELBO {report['negative_elbo_nats']:.2f} nats/image "
              f"({report['elbo_bits_per_dim']:.4f} bits/dim); importance-weighted NLL (k="
              f"{report['num_importance_samples']}) {report['iw_nll_nats']:.2f} nats/image "
              f"({report['iw_bits_per_dim']:.4f} bits/dim); {report['num_images']} images, step {report['step']}")
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser("train-gan", help="train a DCGAN (also: python train_gan.py)",
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_arguments(parser, GANConfig)
    add_dry_run(parser)
    parser.set_defaults(run=trainer(GANConfig, "gan"))

    parser = subparsers.add_parser("train-vae", help="train a convolutional VAE (also: python train_vae.py)",
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_arguments(parser, VAEConfig)
    add_dry_run(parser)
    parser.set_defaults(run=trainer(VAEConfig, "vae"))

    parser = subparsers.add_parser("evaluate-vae", help="held-out negative ELBO and importance-weighted NLL of a "
                                   "VAE checkpoint", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("checkpoint", metavar="CHECKPOINT_OR_RUN", help="VAE checkpoint folder or run folder")
    parser.add_argument("--dataset", default="", help="held-out dataset spec; empty = the run's held-out split")
    parser.add_argument("--num-importance-samples", type=int, default=100,
                        help="k of the importance-weighted bound (Burda et al. 2016)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the posterior samples")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(run=run_evaluate_vae)

    parser = subparsers.add_parser("train-classifier", help="train the baseline classifier / FID feature extractor",
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_config_arguments(parser, ClassifierConfig)
    add_dry_run(parser)
    parser.set_defaults(run=trainer(ClassifierConfig, "classifier"))
