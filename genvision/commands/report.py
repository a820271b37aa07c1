"""`genvision report RUN_DIR`: write RUN_DIR/report.html (self-contained) and print its path.

Flags come from `config.ReportConfig`; the work is `report.report_command`.
"""

from __future__ import annotations

import argparse

from genvision.config import ProcessGroupConfig, ReportConfig, add_config_arguments, config_from_args


def run_report(args: argparse.Namespace) -> int:
    config = config_from_args(ReportConfig, args)
    group = config_from_args(ProcessGroupConfig, args)
    from genvision.commands.evaluate import process_group
    from genvision.report import report_command

    with process_group(group) as main:  # under torchrun every rank scores its share of the samples
        line = report_command(config)
    if main:
        print(line)
    return 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="write RUN_DIR/report.html: config, curves, grids, final metrics with a FID interval",
        description="Summarise a training run in one self-contained HTML page (images embedded): the config, loss "
                    "and FID curves, the latest and best sample grids, wall time and throughput, and FID (with a "
                    "bootstrap 95% interval), KID, precision/recall and class coverage of NUM_SAMPLES samples (latents of "
                    "--prior) of the best checkpoint (else the latest) with the run's classifier, against its "
                    "dataset.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("run_dir", metavar="RUN_DIR", help="training run folder (--out-dir of train_gan.py / "
                                                           "train_vae.py)")
    add_config_arguments(parser, ReportConfig, skip=("run_dir",))
    add_config_arguments(parser, ProcessGroupConfig)
    parser.set_defaults(run=run_report)
