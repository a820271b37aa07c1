"""Probe for test_distributed_eval.py, started by torchrun: `_rank_stats_probe.py PROBE_DIR [train-gan flags...]`.

Runs `train_gan` with `GANTask.train_step` wrapped so that every rank appends its own step statistics (before any
averaging) to PROBE_DIR/stats-rank<R>.jsonl, then carries on as usual.
"""

import json
import sys
from pathlib import Path

import genvision.training.gan as gan
from genvision.cli import build_parser
from genvision.config import GANConfig, config_from_args


def train_step(task):
    stats = original_step(task)
    record = {"step": task.step, **{key: float(value) for key, value in stats.items()}}
    with open(probe_dir / f"stats-rank{task.accelerator.process_index}.jsonl", "a") as handle:
        handle.write(json.dumps(record) + "\n")
    return stats


if __name__ == "__main__":
    probe_dir = Path(sys.argv[1])
    config = config_from_args(GANConfig, build_parser().parse_args(["train-gan", *sys.argv[2:]]))
    original_step = gan.GANTask.train_step
    gan.GANTask.train_step = train_step
    gan.train_gan(config)
