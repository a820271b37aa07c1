"""Probe for test_distributed.py, started by torchrun with two processes: `_process_group_probe.py OUT_DIR CLASSIFIER`.

Starts the process group as a training run does (`training.common.make_accelerator`, gloo on the CPU) with a
--process-group-timeout of TIMEOUT_MINUTES, recording the timeout that reaches `torch.distributed.init_process_group`.
Then, each phase started by both ranks at once (a barrier), under a fresh $GENVISION_CACHE:

- ``extractor``: `metrics.evaluate.make_extractor` with --download (the classifier CLASSIFIER), recording when each
  rank's `extractors.load_extractor` ran; on rank 0 it first waits SLOW_S, as a download would;
- ``reference``: the statistics of the dataset spec mnist5k:test (`metrics.sources.source_statistics`, as
  `genvision fid`, the training FID against --fid-reference and the end-of-run report read a reference) with
  --download, recording when each rank's `data.open_source` (where a dataset is downloaded) ran, on rank 0 after
  SLOW_S, and every `data.decode_all` (which waits SLOW_S first, so that a rank not held back would find no cache
  yet and decode too);
- ``timeout`` (last: it breaks the group): rank 0 spends longer than the timeout inside
  `distributed.local_main_first`; rank 1, waiting in its barrier, records what it raised and after how long.

Each rank writes OUT_DIR/rank<R>.json after every phase, and leaves with os._exit(0) once the group is broken.
"""

import json
import os
import sys
import time
from pathlib import Path

import torch

TIMEOUT_MINUTES = 0.1  # 6 s: the phases before the last wait at most a few tenths of a second in a barrier
SLOW_S = 0.5  # what a download or a decode takes on rank 0 here


def main(out: Path, classifier: str) -> None:
    real_init = torch.distributed.init_process_group
    timeouts = []

    def init_process_group(*args, **kwargs):
        timeout = kwargs.get("timeout")
        timeouts.append(None if timeout is None else timeout.total_seconds())
        return real_init(*args, **kwargs)

    torch.distributed.init_process_group = init_process_group
    from genvision.training.common import make_accelerator

    make_accelerator("no", process_group_timeout=TIMEOUT_MINUTES)
    rank = torch.distributed.get_rank()
    report = {"rank": rank, "world_size": torch.distributed.get_world_size(), "init_timeouts_s": timeouts,
              "phases": {}}

    def save() -> None:
        (out / f"rank{rank}.json").write_text(json.dumps(report))

    import genvision.data as data
    import genvision.metrics.extractors as extractors
    from genvision.distributed import local_main_first
    from genvision.metrics.evaluate import FeatureConfig, make_extractor
    from genvision.metrics.sources import SourceOptions, source_statistics

    calls, decodes = [], []

    def timed(function, what: str):
        def wrapper(*args, **kwargs):
            start = time.time()
            if rank == 0:
                time.sleep(SLOW_S)
            try:
                return function(*args, **kwargs)
            finally:
                calls.append({"what": what, "start": start, "end": time.time(),
                              "download": bool(kwargs.get("download", args[2] if len(args) > 2 else False))})
        return wrapper

    real_decode = data.decode_all

    def decode_all(num_items, load, resolution, channels, desc):
        decodes.append(desc)
        time.sleep(SLOW_S)
        return real_decode(num_items, load, resolution, channels, desc)

    extractors.load_extractor = timed(extractors.load_extractor, "load_extractor")
    data.open_source = timed(data.open_source, "open_source")
    data.decode_all = decode_all
    device = torch.device("cpu")
    holder = {}
    phases = {
        "extractor": lambda: holder.setdefault("extractor", make_extractor(
            FeatureConfig(classifier=classifier, download=True), device, "classifier")),
        "reference": lambda: holder.setdefault("mu", source_statistics(
            "mnist5k:test", holder["extractor"], SourceOptions(batch_size=100, device=device, download=True)).mu),
    }
    for name, run in phases.items():
        os.environ["GENVISION_CACHE"] = str(out / f"cache-{name}")
        calls.clear()
        decodes.clear()
        torch.distributed.barrier()  # both ranks start the phase together
        run()
        report["phases"][name] = {"calls": list(calls), "decodes": list(decodes)}
        save()
    report["reference_mu"] = holder["mu"].tolist()[:8]

    torch.distributed.barrier()
    start = time.time()
    try:
        with local_main_first():
            if rank == 0:
                time.sleep(TIMEOUT_MINUTES * 60 + 6)
        report["timeout"] = {"raised": "", "waited_s": time.time() - start}
    except Exception as error:  # rank 1: its barrier timed out (rank 0: the group broke under it)
        report["timeout"] = {"raised": f"{type(error).__name__}: {error}"[:300], "waited_s": time.time() - start}
    save()
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
