"""`genvision stats` and `genvision fid`: flags -> config (`metrics.evaluate`) -> one library call -> output.

SOURCE is a folder of images, an .npz statistics file, a generator checkpoint or run folder, or a dataset spec
(see `genvision.metrics.sources`). Under `torchrun` / `accelerate launch` every rank takes its share of the images
(`genvision.distributed`) and rank 0 alone prints and writes the combined result. A generator gives prior samples
(latents of --prior: auto, normal or gmm); with `fid --reconstructions SPLIT` a VAE gives its reconstructions of the
dataset split SPLIT instead (reconstruction FID).
"""

from __future__ import annotations

import argparse
import json
from contextlib import contextmanager

from genvision.config import ProcessGroupConfig, add_config_arguments, config_from_args
from genvision.metrics.evaluate import DINOV2_MODELS, FidConfig, StatsConfig

SOURCE_HELP = ("a folder of images, an .npz statistics file, a generator checkpoint or run folder, or a dataset spec "
               "(mnist5k:train, cifar10:test, folder:PATH, hf:PATH[:SPLIT])")


@contextmanager
def process_group(group: ProcessGroupConfig):
    """Join the torchrun / accelerate launch process group for the command (nothing in one process), with its
    --process-group-timeout; yields whether this process is rank 0, the one that prints."""
    from genvision import distributed

    started = distributed.init_from_env(group.process_group_timeout)
    try:
        yield distributed.is_main()
    finally:
        distributed.shutdown(started)


def run_stats(args: argparse.Namespace) -> int:
    config = config_from_args(StatsConfig, args)
    group = config_from_args(ProcessGroupConfig, args)

    from genvision.metrics.evaluate import protocol_line, write_stats

    with process_group(group) as main:
        result = write_stats(args.source, config)
    if not main:
        return 0
    meta = result.metadata
    sampled = " sampled with --prior gmm" if result.prior == "gmm" else ""
    print(f"wrote {result.path}: {result.features} statistics of {result.count} images from {args.source}{sampled} "
          f"({meta.extractor}@{meta.extractor_hash[:12]}, {meta.image_size} px, {meta.image_channels} ch)")
    if result.protocol:
        print(protocol_line(result.protocol))
    return 0


def run_download_weights(args: argparse.Namespace) -> int:
    from genvision.metrics import dinov2, inception_weights, weights_fetch

    verified = True
    if args.network == "dinov2":
        spec = dinov2.weights_spec(args.dinov2_model)
        weights = weights_fetch.fetch(spec, args.url or None, replace=True)
        verified = bool(weights_fetch.hash_prefix(weights.path.name))
        checked = "its SHA-256 prefix checked" if verified else "SHA-256 not checked against an official digest"
        dinov2.check_readable(weights.path, f"{spec.label} {weights.path}")
        what = f"DINOv2 {dinov2.model_info(args.dinov2_model).title}, {checked}"
    else:
        spec = inception_weights.spec()
        weights = inception_weights.fetch(args.url or None, replace=True)
        what = "the official FID InceptionV3" if weights.official else "custom weights (not the official FID file)"
    verb = ("downloaded" if weights.origin == "download" else
            "already cached and verified:" if verified else "already cached:")
    print(f"{verb} {weights.path} ({weights.path.stat().st_size} bytes, SHA-256 {weights.sha256}, {what}); "
          f"offline machines find it under $TORCH_HOME/hub/checkpoints, or point ${spec.weights_env} at it")
    return 0


def run_fid(args: argparse.Namespace) -> int:
    config = config_from_args(FidConfig, args)
    group = config_from_args(ProcessGroupConfig, args)
    from genvision.metrics.evaluate import evaluate_fid

    with process_group(group) as main:
        report = evaluate_fid(args.source_a, args.source_b, config)
    if not main:
        return 0
    if config.json:
        print(json.dumps(report.to_dict()))
    else:
        print("\n".join(report.lines(config)))
    return 0


def register(subparsers) -> None:
    stats = subparsers.add_parser(
        "stats", help="write the FID statistics (mu, sigma) of a SOURCE to an .npz file",
        description="Compute FID feature statistics of SOURCE and write them, with the extractor's identity, to an "
                    ".npz file that pytorch-fid also reads.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    stats.add_argument("source", metavar="SOURCE", help=SOURCE_HELP)
    add_config_arguments(stats, StatsConfig)
    add_config_arguments(stats, ProcessGroupConfig)
    stats.set_defaults(run=run_stats)

    fid = subparsers.add_parser(
        "fid", help="FID (and optionally KID, precision/recall, classifier score) between two SOURCEs",
        description="Fréchet distance between the feature statistics of SOURCE_A (e.g. a generator) and SOURCE_B "
                    "(e.g. the training data or its .npz statistics). A generator SOURCE gives --num-samples prior "
                    "samples (latents of --prior); with --reconstructions SPLIT a VAE SOURCE gives its reconstructions of SPLIT instead "
                    "(e.g. `genvision fid VAE_RUN mnist5k:test --reconstructions mnist5k:test`).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    fid.add_argument("source_a", metavar="SOURCE_A", help=f"the images to evaluate: {SOURCE_HELP}")
    fid.add_argument("source_b", metavar="SOURCE_B", help="the reference: same kinds as SOURCE_A")
    add_config_arguments(fid, FidConfig)
    add_config_arguments(fid, ProcessGroupConfig)
    fid.set_defaults(run=run_fid)

    download = subparsers.add_parser(
        "download-weights", help="fetch and verify the InceptionV3 or DINOv2 weights into the torch hub cache, once",
        description="Download the FID InceptionV3 weights from $GENVISION_INCEPTION_URL (default: torch-fidelity's "
                    "release), or Meta's DINOv2 weights of --dinov2-model from $GENVISION_DINOV2_URL (default: "
                    "dl.fbaipublicfiles.com; {model} in it becomes vits14, vitb14 or vitl14), into "
                    "torch.hub.get_dir()/checkpoints ($TORCH_HOME), keeping them only if their SHA-256 matches the "
                    "prefix in the file name (Inception's names must carry one; Meta's DINOv2 names carry none, so "
                    "their digest is recorded, not checked). Run it where there is internet; machines without "
                    "it then find the file in the same cache (a shared $TORCH_HOME) or through "
                    "$GENVISION_INCEPTION_WEIGHTS / $GENVISION_DINOV2_WEIGHTS. An already cached, verified file is "
                    "not downloaded again.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    download.add_argument("network", choices=("inception", "dinov2"), help="the weights to fetch")
    download.add_argument("--url", default="", help="download from this URL instead of $GENVISION_INCEPTION_URL / "
                          "$GENVISION_DINOV2_URL or the default (an Inception file name must carry the SHA-256 "
                          "prefix, NAME-<hex>.pth)")
    download.add_argument("--dinov2-model", default="vitl14", choices=DINOV2_MODELS,
                          help="the DINOv2 size to fetch (dinov2 only)")
    download.set_defaults(run=run_download_weights)
