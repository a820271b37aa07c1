"""benchmarks/bench_recipe.py end to end in --quick mode: each candidate trains with its flags, its numbers are the
library's own (`genvision fid` of its final checkpoint; the LeNet-5 FID of its `genvision sample` images), and
--runs scores finished run folders the same way."""

import importlib.util
import json
import sys

import pytest

import genvision
from genvision.data import load_dataset
from genvision.metrics.sources import extract
from genvision.metrics.stats import frechet_distance
from helpers import ROOT, run_genvision, run_python, saved_config, subprocess_env

SCRIPT = ROOT / "benchmarks" / "bench_recipe.py"


@pytest.fixture(scope="module")
def agreement():
    """benchmarks/extractor_agreement.py as a module: the LeNet-5 the search scores with."""
    spec = importlib.util.spec_from_file_location("extractor_agreement", ROOT / "benchmarks" / "extractor_agreement.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks its module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def test_quick_search_trains_each_candidate_with_its_flags_and_scores_it_as_the_library_does(tmp_path, agreement):
    env = subprocess_env(tmp_path / "cache")
    work, lenet_dir = tmp_path / "recipe", tmp_path / "lenet"
    argv = [str(SCRIPT), "--quick", "--only", "0.2.0-default", "lr4e-4", "--jobs", "2", "--work-dir", str(work),
            "--lenet-dir", str(lenet_dir), "--json", str(tmp_path / "recipe.json")]
    proc = run_python(argv, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads((tmp_path / "recipe.json").read_text())
    rows = {row["name"]: row for row in figures["rows"]}
    assert set(rows) == {"0.2.0-default", "lr4e-4"} and figures["threads_per_run"] >= 1
    # A candidate sets its differences from 0.2.0's default; 0.2.0's Adam fills in what it leaves unset.
    assert (saved_config(work / "lr4e-4", "gan")["lr"], saved_config(work / "lr4e-4", "gan")["beta1"]) == (4e-4, 0.5)
    assert (saved_config(work / "0.2.0-default", "gan")["lr"], saved_config(work / "0.2.0-default", "gan")["beta1"]) \
        == (2e-4, 0.5)
    assert [saved_config(work / name, "gan")["ema_bn_batches"] for name in ("lr4e-4", "0.2.0-default")] == [0, 0]
    assert "| lr4e-4 | `--lr 4e-4` |" in proc.stdout and proc.stdout.startswith("CPU: ")

    checkpoint = work / "0.2.0-default" / "checkpoints" / f"step-{rows['0.2.0-default']['steps']:06d}"
    scored = run_genvision("fid", checkpoint, "mnist5k:train", "--num-samples", "64", "--seed", "0", "--json",
                           "--precision-recall", env=env)
    assert scored.returncode == 0, scored.stderr[-3000:]
    fid = json.loads(scored.stdout)
    for key in ("fid", "precision", "recall", "density", "coverage", "classes_covered"):
        assert rows["0.2.0-default"][key] == pytest.approx(fid[key], rel=1e-9), key

    # The LeNet-5 FID: the cached extractor on the checkpoint's `genvision.sample` images.
    reference = load_dataset("mnist5k:train")
    lenet, _, trained = agreement.independent_extractor(lenet_dir, reference, load_dataset("mnist5k:test"), 1, 1)
    assert not trained  # the script's cached LeNet-5 is what it scored with
    mu, sigma = extract(genvision.sample(checkpoint, 64, seed=0), lenet)[0].mean_and_covariance()
    ref_mu, ref_sigma = extract(reference.images, lenet)[0].mean_and_covariance()
    lenet_fid = frechet_distance(mu, sigma, ref_mu, ref_sigma)
    assert rows["0.2.0-default"]["fid_lenet"] == pytest.approx(lenet_fid, rel=1e-6)

    # --runs scores finished run folders (as bench_revisions.py --keep leaves them) with the same numbers.
    scored_runs = run_python([str(SCRIPT), "--quick", "--runs", str(work / "0.2.0-default"), str(work / "lr4e-4"),
                              "--lenet-dir", str(lenet_dir), "--json", str(tmp_path / "runs.json")], env=env,
                             timeout=600)
    assert scored_runs.returncode == 0, scored_runs.stderr[-3000:]
    by_run = json.loads((tmp_path / "runs.json").read_text())["rows"]
    assert [row["name"] for row in by_run] == [str(work / "0.2.0-default"), str(work / "lr4e-4")]
    for row, name in zip(by_run, ("0.2.0-default", "lr4e-4")):
        for key in ("fid", "fid_lenet", "precision", "recall", "classes_covered", "steps", "lr"):
            assert row[key] == rows[name][key], key
    assert "(its defaults: --lr 0.0002, --beta1 0.5, --ema-bn-batches 0)" in scored_runs.stdout and "| 1.00x |" in scored_runs.stdout
    missing = run_python([str(SCRIPT), "--runs", str(tmp_path)], env=env, timeout=60)
    assert missing.returncode == 2 and "no finished run" in missing.stderr.strip().splitlines()[-1]


def test_model_vae_trains_its_candidates_with_train_vae_and_divides_by_its_default(tmp_path):
    env = subprocess_env(tmp_path / "cache")
    work = tmp_path / "recipe"
    argv = [str(SCRIPT), "--model", "vae", "--quick", "--only", "vae-0.2.0-default", "vae-lr4e-3", "--work-dir", str(work),
            "--lenet-dir", str(tmp_path / "lenet"), "--json", str(tmp_path / "vae.json")]
    proc = run_python(argv, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {row["name"]: row for row in json.loads((tmp_path / "vae.json").read_text())["rows"]}
    assert set(rows) == {"vae-0.2.0-default", "vae-lr4e-3"}
    config = saved_config(work / "vae-lr4e-3", "vae")
    assert config["lr"] == 4e-3 and "beta1" not in config  # a VAE run, with no GAN flag added (OLD_RECIPE)
    baseline = saved_config(work / "vae-0.2.0-default", "vae")
    assert baseline["lr"] == 2e-3 and baseline["prior_components"] == 20  # 0.2.0's mixture, pinned (OLD_VAE_RECIPE)
    assert config["prior_components"] == 20
    assert "| vae-0.2.0-default | `(0.2.0's default)` |" in proc.stdout and "vs vae-0.2.0-default" in proc.stdout
    # A finished VAE run scored with --runs names its learning rate and mixture (no GAN flag).
    scored = run_python([str(SCRIPT), "--model", "vae", "--quick", "--runs", str(work / "vae-lr4e-3"), "--lenet-dir",
                         str(tmp_path / "lenet")], env=env, timeout=300)
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert "`(its defaults: --lr 0.004, --prior-components 20)`" in scored.stdout


def test_a_candidate_of_the_other_model_is_one_line(tmp_path):
    proc = run_python([str(SCRIPT), "--model", "vae", "--only", "lr4e-4", "--work-dir", str(tmp_path)], timeout=60)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert "lr4e-4" in last and "--model vae" in last and "vae-0.2.0-default" in last
