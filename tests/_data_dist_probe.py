"""Probe for test_data_distributed.py, started by torchrun: `_data_dist_probe.py OUT_DIR`.

Joins a gloo process group (as Accelerate does in training) and wraps `genvision.data.decode_all` and
`genvision.data.atomic_save` to record, per rank, every decode and every cache file written. The wrapped decode first
waits half a second, so that a rank not held back by `distributed.local_main_first` would surely find no cache yet and
decode too. Then, each phase under a fresh $GENVISION_CACHE and started by all ranks at once (a barrier):

- ``batches``: `data.make_batches` on mnist5k:test, as the GAN and VAE tasks call it;
- ``classifier-eval``: the classifier's `load_training_data` with another --eval-dataset (make_batches on
  mnist5k:test, then the evaluation split mnist5k:train);
- ``classifier-holdout``: `load_training_data` holding a share of mnist5k:test out of itself;
- ``vae-held-out``: the VAE run's held-out split (`training.vae.load_held_out`, mnist5k:test).

Each rank writes OUT_DIR/rank<R>.json: per phase its decodes, its cache writes, the cache folder as it saw it after
the phase (name -> inode, size, mtime) and SHA-256 digests of the images and labels it got.
"""

import hashlib
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

import genvision.data as data
from genvision.config import ClassifierConfig, DataConfig, VAEConfig
from genvision.training.classifier import load_training_data
from genvision.training.vae import load_held_out


def digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()


def listing(folder: Path) -> dict:
    return {path.name: [path.stat().st_ino, path.stat().st_size, path.stat().st_mtime_ns]
            for path in sorted(folder.iterdir())} if folder.is_dir() else {}


def main(out: Path) -> None:
    torch.distributed.init_process_group("gloo")
    rank, world_size = torch.distributed.get_rank(), torch.distributed.get_world_size()
    decodes, writes = [], []
    real_decode, real_save = data.decode_all, data.atomic_save

    def decode_all(num_items, load, resolution, channels, desc):
        decodes.append(desc)
        time.sleep(0.5)
        return real_decode(num_items, load, resolution, channels, desc)

    def atomic_save(path, write):
        writes.append(Path(path).name)
        return real_save(path, write)

    data.decode_all, data.atomic_save = decode_all, atomic_save
    accelerator = SimpleNamespace(process_index=rank, num_processes=world_size, device=torch.device("cpu"))
    phases = {
        "batches": lambda: data.make_batches(DataConfig(dataset="mnist5k:test"), 8, seed=0, rank=rank,
                                             world_size=world_size)[0].images,
        "classifier-eval": lambda: load_training_data(
            ClassifierConfig(dataset="mnist5k:test", eval_dataset="mnist5k:train"), accelerator),
        "classifier-holdout": lambda: load_training_data(
            ClassifierConfig(dataset="mnist5k:test", eval_dataset="mnist5k:test"), accelerator),
        "vae-held-out": lambda: load_held_out(VAEConfig(dataset="mnist5k:train", eval_dataset="mnist5k:test",
                                                        channels=1)),
    }
    report = {}
    for name, run in phases.items():
        cache = out / f"cache-{name}"
        os.environ["GENVISION_CACHE"] = str(cache)
        decodes.clear()
        writes.clear()
        torch.distributed.barrier()  # every rank starts the phase together
        result = run()
        torch.distributed.barrier()  # every rank has finished before the cache folder is listed
        if isinstance(result, torch.Tensor):
            tensors = {"images": result}
        else:
            batches, _, _, evaluation = result
            tensors = {"train_images": batches.images, "train_labels": batches.labels,
                       "eval_images": evaluation.data.images, "eval_labels": evaluation.data.labels}
        report[name] = {"decodes": list(decodes), "writes": list(writes), "cache": listing(cache),
                        "digests": {key: digest(value) for key, value in tensors.items()}}
    (out / f"rank{rank}.json").write_text(json.dumps({"rank": rank, "world_size": world_size, "phases": report}))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
