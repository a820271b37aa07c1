"""The process group's timeout and who waits for whom, with two processes under torchrun on the CPU (gloo).

`_process_group_probe.py` starts the group as training does, with --process-group-timeout 0.1 (see its docstring):
the timeout reaches `torch.distributed.init_process_group` and bounds the wait of `distributed.local_main_first`;
a reference dataset (`genvision fid`'s dataset SOURCE, a training run's --fid-reference) is downloaded and decoded
by local rank 0 alone, before the other rank opens it; --download's extractor weights are fetched by local rank 0
first.
"""

import json
from pathlib import Path

import pytest

from helpers import free_port, wait

PROBE = Path(__file__).resolve().parent / "_process_group_probe.py"
TIMEOUT_S = 6.0  # the probe's TIMEOUT_MINUTES


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, start_process, classifier_file) -> list[dict]:
    out = tmp_path_factory.mktemp("process-group")
    proc = start_process(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master-addr", "127.0.0.1",
                          "--master-port", str(free_port()), str(PROBE), str(out), str(classifier_file)])
    code, _, stderr = wait(proc, timeout=180)
    assert code == 0, stderr[-4000:]
    return [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]


def test_the_timeout_reaches_init_process_group(ranks):
    assert [(info["rank"], info["world_size"]) for info in ranks] == [(0, 2), (1, 2)]
    assert [info["init_timeouts_s"] for info in ranks] == [[TIMEOUT_S], [TIMEOUT_S]]


def test_the_timeout_bounds_the_wait_for_local_rank_zero(ranks):
    waited = ranks[1]["timeout"]
    assert waited["raised"], waited  # rank 0 stayed TIMEOUT_S + 6 s in the body: rank 1 gave up before it came
    assert 0.8 * TIMEOUT_S < waited["waited_s"] < TIMEOUT_S + 5, waited


def intervals(rank: dict, phase: str, what: str) -> list[tuple[float, float]]:
    return [(call["start"], call["end"]) for call in rank["phases"][phase]["calls"] if call["what"] == what]


def test_a_reference_dataset_is_decoded_by_local_rank_zero_alone(ranks):
    first, other = ranks[0]["phases"]["reference"], ranks[1]["phases"]["reference"]
    assert first["decodes"] == ["mnist5k:test"]
    assert other["decodes"] == []  # it read the decoded images rank 0 cached
    assert ranks[0]["reference_mu"] == ranks[1]["reference_mu"]


@pytest.mark.parametrize("phase, what", [("reference", "open_source"), ("extractor", "load_extractor")])
def test_with_download_local_rank_zero_fetches_first(ranks, phase, what):
    first, other = intervals(ranks[0], phase, what), intervals(ranks[1], phase, what)
    assert first and other
    assert all(call["download"] for rank in ranks for call in rank["phases"][phase]["calls"])
    assert min(start for start, _ in other) > max(end for _, end in first)  # rank 1 began once rank 0 was done
