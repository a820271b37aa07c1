"""`genvision fid` and `genvision stats` under torchrun (2 gloo processes on the CPU) equal one process.

Each rank scores its batch-aligned block of the generator's samples and of the reference images
(`genvision.distributed.shard_range`); float64 sums are added across ranks and raw features gathered in rank order,
so FID, KID and precision/recall are those of the one-process run (FID to 1e-6 relative; the only difference is the
order of the float64 additions). Only rank 0 prints and writes.
"""

import json

import numpy as np
import pytest

from genvision.distributed import shard_range
from helpers import TINY_GAN, cli, free_port, run_python, subprocess_env, train_to_completion

# 300 samples in batches of 64: 5 batches, ranks take 3 and 2 (the last one short), the classic uneven split.
EVAL = ["--num-samples", "300", "--batch-size", "64"]


def test_shard_range_covers_every_index_once_in_whole_batches():
    for count, batch, ranks in ((300, 64, 2), (10, 4, 3), (5, 8, 2), (0, 8, 2), (1000, 500, 8)):
        blocks = [shard_range(count, batch, rank_=r, world_size_=ranks) for r in range(ranks)]
        assert [i for block in blocks for i in block] == list(range(count)), (count, batch, ranks)
        for block in blocks:
            assert not block or (block.start % batch == 0 and (block.stop % batch == 0 or block.stop == count))
    assert shard_range(300, 64, rank_=0, world_size_=2) == range(0, 192)
    assert shard_range(300, 64) == range(300)  # one process: everything


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist-fid") / "run"
    train_to_completion("train_gan.py", out, *TINY_GAN, "--num-steps", "2", "--log-every", "0",
                        "--sample-every", "0")
    return out


def torchrun(*args, cache) -> tuple[int, str, str]:
    proc = run_python(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master-addr", "127.0.0.1",
                       "--master-port", str(free_port()), "-m", "genvision", *map(str, args)],
                      env=subprocess_env(cache, CUDA_VISIBLE_DEVICES=""), timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def test_fid_under_torchrun_equals_one_process(run, tmp_path, monkeypatch):
    flags = [run, "mnist5k:train", "--json", *EVAL, "--kid", "--kid-subsets", "5", "--kid-subset-size", "100",
             "--precision-recall"]
    # Two processes first, on a cold cache: the reference statistics are built sharded and written once, by rank 0.
    code, stdout, stderr = torchrun("fid", *flags, cache=tmp_path / "cache")
    assert code == 0, stderr[-3000:]
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, stdout  # one result, printed by rank 0 alone
    two = json.loads(lines[0])
    cached = sorted(p.name for p in (tmp_path / "cache" / "stats").iterdir())
    assert len([name for name in cached if name.endswith(".npz")]) == 1 and not any(".tmp" in n for n in cached)

    monkeypatch.setenv("GENVISION_CACHE", str(tmp_path / "other"))  # one process, in process, nothing cached
    code, stdout, stderr = cli("fid", *flags, "--no-cache")
    assert code == 0, stderr[-3000:]
    one = json.loads(stdout)
    assert two["n_a"] == one["n_a"] == 300 and two["n_b"] == one["n_b"] == 4500
    assert two["fid"] == pytest.approx(one["fid"], rel=1e-6)
    assert two["kid"] == pytest.approx(one["kid"], rel=1e-6, abs=1e-9)
    assert (two["precision"], two["recall"]) == (one["precision"], one["recall"])  # same features, same order
    assert two["classifier_score"] == pytest.approx(one["classifier_score"], rel=1e-6)

    # The statistics rank 0 cached (from two shards) give the one-process FID when read back by one process.
    monkeypatch.setenv("GENVISION_CACHE", str(tmp_path / "cache"))
    code, stdout, stderr = cli("fid", run, "mnist5k:train", "--json", *EVAL)
    assert code == 0, stderr[-3000:]
    assert json.loads(stdout)["fid"] == pytest.approx(one["fid"], rel=1e-6)


def test_stats_under_torchrun_writes_one_file_equal_to_one_process(run, tmp_path):
    code, stdout, stderr = torchrun("stats", run, "--output", tmp_path / "two.npz", *EVAL, cache=tmp_path / "c")
    assert code == 0, stderr[-3000:]
    assert stdout.count("wrote ") == 1, stdout
    code, _, stderr = cli("stats", run, "--output", tmp_path / "one.npz", *EVAL)  # one process, in process
    assert code == 0, stderr[-3000:]
    with np.load(tmp_path / "two.npz") as two_file, np.load(tmp_path / "one.npz") as one_file:
        np.testing.assert_allclose(two_file["mu"], one_file["mu"], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(two_file["sigma"], one_file["sigma"], rtol=1e-7, atol=1e-11)  # sum xxT - n mu muT
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix == ".npz") == ["one.npz", "two.npz"]
