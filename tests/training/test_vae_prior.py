"""A VAE run with --prior gmm: every checkpoint stores the mixture fitted to that step's posterior means, and the FID
logged during training is `genvision fid CHECKPOINT --prior gmm` of that checkpoint. Under 2 processes rank 0 alone
encodes and fits, and every rank ends with its whole mixture."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from genvision.checkpoint import read_checkpoint
from genvision.generators import load_vae
from genvision.prior_fit import vae_latent_prior
from genvision.vae_data import prior_fit_images
from helpers import (TINY_VAE, cli, free_port, metrics_records, noise_images, run_python, subprocess_env,
                     train_to_completion, write_pngs)

PROBE = Path(__file__).resolve().parent / "_mixture_probe.py"


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


@pytest.mark.parametrize("conditional", [False, True])
def test_two_ranks_end_with_rank_0s_whole_mixture_and_only_rank_0_encodes(tmp_path, conditional):
    """Each rank's VAE has other weights (seeded by rank), as a rank whose codes differ slightly would: every buffer
    the mixture samples and scores with, the Cholesky factors `scale_tril` too (not in its state dict), is rank 0's
    on rank 1, and rank 1 encoded nothing. Conditional: the per-class mixture, its components' classes too."""
    if conditional:
        write_pngs(noise_images(12, seed=1), tmp_path / "images" / "a")
        write_pngs(noise_images(12, seed=2), tmp_path / "images" / "b")
    else:
        write_pngs(noise_images(24), tmp_path / "images")
    probe = tmp_path / "probe"
    probe.mkdir()
    proc = run_python(["-m", "torch.distributed.run", "--nproc_per_node", "2", "--master-addr", "127.0.0.1",
                       "--master-port", str(free_port()), str(PROBE), str(probe), str(tmp_path / "images"),
                       *(["conditional"] if conditional else [])],
                      env=subprocess_env(CUDA_VISIBLE_DEVICES=""), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, second = (load_file(str(probe / f"rank{rank}.safetensors")) for rank in (0, 1))
    names = {"weights", "means", "covariances", "scale_tril"} | ({"component_classes"} if conditional else set())
    assert set(first) == set(second) == names
    if conditional:
        assert first["component_classes"].tolist() == [0] * 4 + [1] * 4  # --prior-components 4 for each class
    for name, tensor in first.items():
        torch.testing.assert_close(second[name], tensor, rtol=0, atol=0, msg=f"rank 1's {name} is not rank 0's")
    torch.testing.assert_close(first["scale_tril"] @ first["scale_tril"].mT, first["covariances"])
    encoded = [json.loads((probe / f"rank{rank}.json").read_text())["encoded"] for rank in (0, 1)]
    assert encoded == [[16], []]
