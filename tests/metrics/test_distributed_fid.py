"""`genvision fid` and `genvision stats` under torchrun (2 gloo processes on the CPU) equal one process.

Each rank scores its batch-aligned block of the generator's samples and of the reference images
(`genvision.distributed.shard_range`); float64 sums are added across ranks and raw features gathered in rank order,
so FID, KID, precision/recall, density/coverage, FD-infinity, the memorization check and FD-DINOv2 are those of the
one-process run (FID to 1e-6 relative; the only difference is the order of the float64 additions; the scores of the
gathered features exactly). Only rank 0 prints and writes.
"""

import json

import numpy as np
import pytest

from genvision.distributed import shard_range
from helpers import TINY_GAN, cli, free_port, noise_images, run_python, subprocess_env, train_to_completion, write_pngs

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


def torchrun(*args, cache, **variables) -> tuple[int, str, str]:
    proc = run_python(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master-addr", "127.0.0.1",
                       "--master-port", str(free_port()), "-m", "genvision", *map(str, args)],
                      env=subprocess_env(cache, CUDA_VISIBLE_DEVICES="", **variables), timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def test_fid_under_torchrun_equals_one_process(run, tmp_path, monkeypatch):
    flags = [run, "mnist5k:train", "--json", *EVAL, "--kid", "--kid-subsets", "5", "--kid-subset-size", "100",
             "--precision-recall", "--fd-infinity", "--memorization"]
    # Two processes first, on a cold cache: the reference statistics are built sharded and written once, by rank 0.
    code, stdout, stderr = torchrun("fid", *flags, cache=tmp_path / "cache")
    assert code == 0, stderr[-3000:]
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, stdout  # one result, printed by rank 0 alone
    two = json.loads(lines[0])
    cached = sorted(p.name for p in (tmp_path / "cache" / "stats").iterdir())
    # Written once each, by rank 0: the reference (mnist5k:train) and the memorization check's held-out split.
    assert [name.split("-32px")[0] for name in cached if name.endswith(".npz")] == ["mnist5k-test", "mnist5k-train"]
    assert not any(".tmp" in n for n in cached)

    monkeypatch.setenv("GENVISION_CACHE", str(tmp_path / "other"))  # one process, in process, nothing cached
    code, stdout, stderr = cli("fid", *flags, "--no-cache")
    assert code == 0, stderr[-3000:]
    one = json.loads(stdout)
    assert two["n_a"] == one["n_a"] == 300 and two["n_b"] == one["n_b"] == 4500
    assert two["fid"] == pytest.approx(one["fid"], rel=1e-6)
    assert two["kid"] == pytest.approx(one["kid"], rel=1e-6, abs=1e-9)
    # The scores of the gathered features: same features, same order, so the same numbers.
    for key in ("precision", "recall", "density", "coverage", "copy_rate", "copy_threshold", "copy_percentile",
                "memorization_held_out", "memorization_num_held_out", "memorization_distance_ratio", "closest_pairs"):
        assert two[key] == one[key], key
    # FD-infinity: the same subsets of the same features against reference statistics summed in another order.
    assert two["fd_infinity"] == pytest.approx(one["fd_infinity"], rel=1e-6)
    assert [size for size, _ in two["fd_infinity_points"]] == [size for size, _ in one["fd_infinity_points"]]
    assert [fid for _, fid in two["fd_infinity_points"]] == pytest.approx([fid for _, fid in
                                                                           one["fd_infinity_points"]], rel=1e-6)
    assert len(one["fd_infinity_points"]) == 15 and one["fd_infinity_points"][0][0] == 128  # 2 x 64 features .. 300
    assert one["memorization_held_out"] == "mnist5k:test" and one["memorization_num_held_out"] == 500
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


def test_fd_dinov2_under_torchrun_equals_one_process(tmp_path, monkeypatch):
    """FD-DINOv2 (random ViT-S/14 weights in Meta's layout, found through $GENVISION_DINOV2_WEIGHTS): each rank
    extracts its share of two small folders; the statistics and the precision/density scores are the one-process
    ones."""
    pytest.importorskip("timm")
    from genvision.metrics import dinov2

    weights = tmp_path / "dinov2-random.pth"
    dinov2.save_random_weights(weights, "vits14", seed=0)
    write_pngs(noise_images(10, seed=0, size=28), tmp_path / "a")
    write_pngs(noise_images(10, seed=1, channels=3), tmp_path / "b")
    flags = [tmp_path / "a", tmp_path / "b", "--json", "--features", "dinov2", "--dinov2-model", "vits14",
             "--batch-size", "4", "--precision-recall"]
    code, stdout, stderr = torchrun("fid", *flags, cache=tmp_path / "cache", GENVISION_DINOV2_WEIGHTS=str(weights))
    assert code == 0, stderr[-3000:]
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, stdout
    two = json.loads(lines[0])
    monkeypatch.setenv("GENVISION_DINOV2_WEIGHTS", str(weights))
    code, stdout, stderr = cli("fid", *flags)
    assert code == 0, stderr[-3000:]
    one = json.loads(stdout)
    assert two["extractor"] == one["extractor"] == "dinov2-vits14" and two["n_a"] == one["n_a"] == 10
    assert two["fid"] == pytest.approx(one["fid"], rel=1e-6)
    assert (two["precision"], two["recall"], two["density"], two["coverage"]) == (
        one["precision"], one["recall"], one["density"], one["coverage"])
    assert two["protocol"] == one["protocol"]
