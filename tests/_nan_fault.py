"""A training run with one non-finite loss, for the divergence tests: the fault is injected from outside the library.

    python tests/_nan_fault.py STEP RANK COMMAND ARGS...   # e.g. 3 all train-gan --out-dir ... (RANK: all or an int)

Wraps `train_step` of the GAN and VAE tasks so that the first loss of step STEP (the task's step counter after the
step, as the schedule counts) is NaN on rank RANK (`all`: every rank), then runs `genvision COMMAND ARGS...` as the
console script does and exits with its code.
"""

import sys

from genvision import cli
from genvision.training.gan import GANTask
from genvision.training.vae import VAETask


def poison(task_class, step: int, rank: str) -> None:
    original = task_class.train_step

    def train_step(self):
        stats = original(self)
        if self.step == step and rank in ("all", str(self.accelerator.process_index)):
            key = self.loss_keys[0]
            stats[key] = stats[key] * float("nan")
        return stats

    task_class.train_step = train_step


if __name__ == "__main__":
    step, rank, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    for task_class in (GANTask, VAETask):
        poison(task_class, step, rank)
    sys.exit(cli.main(argv))
