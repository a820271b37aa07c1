"""A VAE run with --prior gmm: every checkpoint stores the mixture fitted to that step's posterior means, and the FID
logged during training is `genvision fid CHECKPOINT --prior gmm` of that checkpoint."""

import json

import pytest
import torch

from genvision.checkpoint import read_checkpoint
from genvision.generators import load_vae
from genvision.prior_fit import vae_latent_prior
from genvision.vae_data import prior_fit_images
from helpers import TINY_VAE, cli, metrics_records, train_to_completion


def test_training_fid_and_stored_prior_match_the_commands(tmp_path):
    out = tmp_path / "run"
    train_to_completion("train_vae.py", out, *TINY_VAE, "--num-steps", "4", "--fid-every", "4",
                        "--num-fid-samples", "40", "--prior", "gmm", "--prior-components", "3")
    logged = [r["fid"] for r in metrics_records(out) if "fid" in r]
    folder = out / "checkpoints" / "step-000004"
    checkpoint = read_checkpoint(folder)
    model, config, _ = load_vae(folder)
    refit = vae_latent_prior(model, config, prior_fit_images(config))  # deterministic: the same mixture again
    for name, tensor in refit.state_dict().items():
        torch.testing.assert_close(checkpoint.weights("prior")[name], tensor, rtol=1e-6, atol=1e-9)
    code, stdout, stderr = cli("fid", folder, "mnist5k:train", "--num-samples", "40", "--json")  # auto: the run's
    assert code == 0, stderr
    assert json.loads(stdout)["fid"] == pytest.approx(logged[-1], rel=1e-6)


def test_resume_keeps_the_prior_the_run_scored_with(tmp_path):
    from helpers import assert_one_line_error

    out = tmp_path / "run"
    train_to_completion("train_vae.py", out, *TINY_VAE, "--num-steps", "2", "--fid-every", "2",
                        "--num-fid-samples", "20", "--prior", "gmm", "--prior-components", "3")
    resume = ("train-vae", "--out-dir", out, "--resume", "auto", "--num-steps", "4", "--dry-run")
    code, _, stderr = cli(*resume, "--prior", "normal")
    assert_one_line_error(code, stderr, "scored FID with --prior gmm --prior-components 3",
                          "asks for --prior normal", "--fid-every 0")
    code, _, stderr = cli(*resume, "--prior-components", "5")
    assert_one_line_error(code, stderr, "asks for --prior gmm --prior-components 5")
    assert cli(*resume)[0] == 0  # the saved --prior and --prior-components
    assert cli(*resume, "--prior", "normal", "--fid-every", "0")[0] == 0  # no FID: nothing to compare
