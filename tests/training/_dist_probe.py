"""Probe for test_gan_distributed.py, started by torchrun: `_dist_probe.py PROBE_DIR [train-gan flags...]`.

Runs `genvision.training.gan.train_gan` with `GANTask.__init__` and `training.loop.finish` (the closing of `training.finish`, as the schedule calls it) wrapped so that every rank
saves its freshly built and its final generator / discriminator / generator_ema weights (safetensors) and what it knew
about the process group (JSON) into PROBE_DIR, then carries on as usual.
"""

import json
import sys
from pathlib import Path

from safetensors.torch import save_file

import genvision.training.gan as gan
import genvision.training.loop as loop
from genvision.cli import build_parser
from genvision.config import GANConfig, config_from_args

ROLES = ("generator", "discriminator", "generator_ema")


def dump(state, accelerator, name: str) -> None:
    models = {"generator": state.generator, "discriminator": state.discriminator,
              "generator_ema": state.generator_ema}
    tensors = {f"{role}.{key}": value.detach().cpu().clone().contiguous()
               for role, model in models.items() for key, value in model.state_dict().items()}
    save_file(tensors, str(probe_dir / f"{name}-rank{accelerator.process_index}.safetensors"))


def init(task, config, accelerator):
    original_init(task, config, accelerator)
    dump(task, accelerator, "init")


def finish(task, config, accelerator, run_dir, state, fid):
    dump(task, accelerator, "rank")
    info = {"process_index": accelerator.process_index, "num_processes": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type), "step": state.step,
            "is_main_process": accelerator.is_main_process,
            "aug_p": None if getattr(task, "adaptive", None) is None else task.adaptive.p.item()}  # --augment-target
    (probe_dir / f"rank{accelerator.process_index}.json").write_text(json.dumps(info))
    return original_finish(task, config, accelerator, run_dir, state, fid)


if __name__ == "__main__":
    probe_dir = Path(sys.argv[1])
    config = config_from_args(GANConfig, build_parser().parse_args(["train-gan", *sys.argv[2:]]))
    original_init, original_finish = gan.GANTask.__init__, loop.finish
    gan.GANTask.__init__, loop.finish = init, finish
    summary = gan.train_gan(config)
    print(json.dumps(summary), flush=True)
