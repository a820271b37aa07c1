"""`genvision fid` with trained generators as SOURCE: GAN and VAE run folders and checkpoints give prior samples whose
FID equals the FID logged during training (same seed and sample count), and `--reconstructions SPLIT` scores a VAE by
its posterior-mean reconstructions of a dataset split (reconstruction FID).

One tiny GAN run and one tiny VAE run (30 steps, FID of 200 samples at step 30) train at once in subprocesses; the
`genvision fid` calls run in process through `genvision.cli.main` (same parser and code path, without another
start-up; tests/test_cli_fid.py runs the CLI as a subprocess).
"""

import json
import math
from pathlib import Path

import pytest
import torch

from helpers import assert_one_line_error, cli, finish, metrics_records, tiny_flags

# 30 steps: fewer leave the BatchNorm running statistics so close to their initial values that every eval-mode
# sample is the same flat gray image, and any two FIDs would agree trivially (see test_samples_depend_on_the_seed).
STEPS = 30
TINY = [*tiny_flags(latent_dim=4, fid_every=STEPS), "--num-steps", str(STEPS), "--num-fid-samples", "200",
        "--log-every", "10", "--sample-every", "0"]
CHECKPOINT = f"checkpoints/step-{STEPS:06d}"
SEEDS = {"gan": 3, "vae": 5}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, start_process):
    """kind -> run folder of a finished run with one FID evaluation, at its last step."""
    from genvision.data import load_dataset
    from genvision.metrics.extractors import ClassifierExtractor
    from genvision.metrics.sources import source_statistics

    base = tmp_path_factory.mktemp("fid-runs")
    for spec in ("mnist5k:train", "mnist5k:test"):  # decoded once here, not by every process at once
        load_dataset(spec, 32, 0)
    # the reference statistics every run and every `fid` below reads from the shared cache
    source_statistics("mnist5k:train", ClassifierExtractor.shipped("mnist5k:train", torch.device("cpu")))
    # The VAE samples N(0, I): after 30 steps its posterior means sit in one tight clump, so a mixture fitted to
    # them would give near-identical samples (tests/training/test_vae_prior.py covers --prior gmm).
    # The GAN trains with 0.2.0's gentler Adam: the default 1.2e-3 with beta1 0 saturates this tiny generator within
    # 30 steps, every sample then the same flat image.
    prior = {"gan": ["--lr", "2e-4", "--beta1", "0.5"], "vae": ["--prior", "normal", "--likelihood", "bernoulli"]}
    procs = {kind: start_process([f"train_{kind}.py", "--out-dir", str(base / kind), *TINY, "--seed",
                                  str(SEEDS[kind]), *prior[kind]]) for kind in SEEDS}
    for kind, proc in procs.items():
        finish(proc, f"train-{kind}")
    return {kind: base / kind for kind in SEEDS}


def _training_fid(run: Path) -> tuple[float, float]:
    """(FID logged in metrics.jsonl at the last step (5 decimals), FID in that step's checkpoint metadata)."""
    records = metrics_records(run)
    logged = [r["fid"] for r in records if "fid" in r]
    assert len(logged) == 1 and [r["step"] for r in records if "fid" in r] == [STEPS]
    meta = json.loads((run / CHECKPOINT / "checkpoint.json").read_text())
    return logged[0], meta["fid"]


def _fid_json(*argv: str) -> dict:
    code, stdout, stderr = cli("fid", *argv, "--json")
    assert code == 0, stderr
    return json.loads(stdout)


def _assert_equals_training_fid(fid: float, run: Path) -> None:
    logged, in_checkpoint = _training_fid(run)
    assert round(fid, 5) == logged, (fid, logged)
    assert fid == in_checkpoint, (fid, in_checkpoint)  # checkpoint.json keeps the full float64 value


@pytest.mark.parametrize("kind", list(SEEDS))
def test_samples_depend_on_the_seed(runs, kind):
    """The FID equalities below mean something only if the samples are not all one image."""
    from genvision.sampling import generate_images

    a, b = (generate_images(str(runs[kind]), 200, seed) for seed in (SEEDS[kind], SEEDS[kind] + 1))
    assert a.float().std(0).mean() > 0.05 and (a != b).float().mean() > 0.05


def test_gan_run_fid_equals_training_fid(runs):
    run = runs["gan"]
    report = _fid_json(str(run), "mnist5k:train", "--num-samples", "200", "--seed", str(SEEDS["gan"]))
    assert (report["n_a"], report["n_b"], report["source_a"]) == (200, 4500, str(run))
    assert math.isfinite(report["fid"]) and report["fid"] > 0 and "reconstructions" not in report
    _assert_equals_training_fid(report["fid"], run)


def test_vae_run_and_checkpoint_fid_equal_training_fid(runs):
    run = runs["vae"]
    seed = ["--num-samples", "200", "--seed", str(SEEDS["vae"])]
    by_run = _fid_json(str(run), "mnist5k:train", *seed)
    by_checkpoint = _fid_json(str(run / CHECKPOINT), "mnist5k:train", *seed)
    assert (by_run["n_a"], by_run["n_b"]) == (200, 4500) and math.isfinite(by_run["fid"]) and by_run["fid"] > 0
    assert by_run["fid"] == by_checkpoint["fid"]  # the run folder resolves to its best (= last step) checkpoint
    _assert_equals_training_fid(by_run["fid"], run)
    other_seed = _fid_json(str(run), "mnist5k:train", "--num-samples", "200", "--seed", "0")
    assert math.isfinite(other_seed["fid"]) and other_seed["fid"] != by_run["fid"]  # the seed picks the latents


def test_vae_reconstruction_fid(runs):
    run = runs["vae"]
    report = _fid_json(str(run), "mnist5k:test", "--reconstructions", "mnist5k:test")
    assert (report["n_a"], report["n_b"], report["reconstructions"]) == (500, 500, "mnist5k:test")
    assert math.isfinite(report["fid"]) and report["fid"] > 0
    prior = _fid_json(str(run), "mnist5k:test", "--num-samples", "200")
    assert prior["n_a"] == 200 and prior["fid"] != report["fid"]
    # either side may be the VAE; the human-readable line says what was scored
    code, stdout, _ = cli("fid", "mnist5k:test", run, "--reconstructions", "mnist5k:test")
    assert code == 0
    line = stdout.strip()
    assert line.startswith(f"FID {report['fid']:.2f} (") and "VAE reconstructions of mnist5k:test" in line, line


def test_reconstruction_images_are_posterior_means_of_prepared_inputs(runs):
    from genvision.data import load_dataset
    from genvision.imageconv import to_model_range, to_uint8
    from genvision.generators import load_vae, reconstruction_images
    from genvision.vae_data import BINARIZATION_SEED, binarize

    run = runs["vae"]
    images = reconstruction_images(str(run), "mnist5k:test", batch_size=128)
    model, config, _ = load_vae(str(run))
    assert config.likelihood == "bernoulli"
    inputs = binarize(to_model_range(load_dataset("mnist5k:test", 32, 1).images),
                      torch.Generator().manual_seed(BINARIZATION_SEED))  # as in training
    with torch.no_grad():
        mu, _ = model.encode(inputs)
        expected = to_uint8(model.mean_image(model.decode(mu)))
    assert images.dtype == torch.uint8 and images.shape == (500, 1, 32, 32)
    assert torch.equal(images, expected)


@pytest.mark.parametrize("case", ["gan-source", "no-vae-source", "bad-split"])
def test_reconstructions_usage_errors(runs, case):
    vae, gan = str(runs["vae"]), str(runs["gan"])
    argv, words = {
        "gan-source": ([gan, "mnist5k:test"], ["--reconstructions", gan, "'gan'"]),
        "no-vae-source": (["mnist5k:test", "mnist5k:train"], ["--reconstructions", "VAE", "mnist5k:test (a dataset)"]),
        "bad-split": ([vae, "mnist5k:test"], ["--reconstructions", "'nope:test'"]),
    }[case]
    split = "nope:test" if case == "bad-split" else "mnist5k:test"
    code, stdout, stderr = cli("fid", *argv, "--reconstructions", split)
    assert stdout == ""
    assert_one_line_error(code, stderr, *words, command="fid")
