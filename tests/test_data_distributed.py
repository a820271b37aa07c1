"""Two processes under torchrun on the CPU (gloo): the dataset is decoded and its cache written once, by local rank
0, and the other rank reads that cache; both get the same images (`data.make_batches` and the classifier's
`load_training_data`, the VAE's `load_held_out`, through `distributed.local_main_first`).

`_data_dist_probe.py` records every rank's decodes and cache writes (see its docstring).
"""

import json
from pathlib import Path

import pytest

from helpers import free_port, wait

PROBE = Path(__file__).resolve().parent / "_data_dist_probe.py"
# phase -> the datasets local rank 0 decodes in it, in order (the cache files are named after them)
DECODED = {"batches": ["mnist5k:test"], "classifier-eval": ["mnist5k:test", "mnist5k:train"],
           "classifier-holdout": ["mnist5k:test"], "vae-held-out": ["mnist5k:test"]}


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, start_process) -> list[dict]:
    out = tmp_path_factory.mktemp("data-dist")
    proc = start_process(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master-addr", "127.0.0.1",
                          "--master-port", str(free_port()), str(PROBE), str(out)])
    code, _, stderr = wait(proc, timeout=180)
    assert code == 0, stderr[-4000:]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def test_two_ranks_really_ran(ranks):
    assert [(info["rank"], info["world_size"]) for info in ranks] == [(0, 2), (1, 2)]


@pytest.mark.parametrize("phase", list(DECODED))
def test_local_rank_zero_decodes_and_writes_the_cache_once(ranks, phase):
    first, other = ranks[0]["phases"][phase], ranks[1]["phases"][phase]
    assert first["decodes"] == DECODED[phase]
    assert other["decodes"] == [] and other["writes"] == []  # it read what rank 0 wrote
    assert len(first["writes"]) == len(DECODED[phase]) == len(first["cache"])
    assert sorted(first["writes"]) == sorted(first["cache"])  # one file per dataset, no temp files left
    assert first["cache"] == other["cache"]  # the same files (inode, size, mtime) seen by both ranks


@pytest.mark.parametrize("phase", list(DECODED))
def test_ranks_get_identical_data(ranks, phase):
    assert ranks[0]["phases"][phase]["digests"] == ranks[1]["phases"][phase]["digests"]
