"""`--prior auto|normal|gmm` in `genvision sample`, `fid`, `stats`, `report` and the Python API, on tiny checkpoints
written in process (random weights, no training): a VAE storing its Gaussian mixture under the weights role "prior",
one of genvision 0.1.0 storing none (and no --prior in its config), and a GAN.

Checks: gmm samples are the decoder's images of `prior_latents` under the stored mixture, identical for every
--batch-size and unlike the N(0, I) samples; auto is the run's saved --prior; a mixture is fitted on the fly, with a
note, for a checkpoint that stores none, the same one every time; gmm on a GAN, gmm with --interpolate and a --prior
that does not apply are one line on stderr with exit code 2 and nothing written; sidecars and --json name the prior.
"""

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from helpers import assert_one_line_error, cli, snapshot

import genvision
from genvision.config import VAEConfig

VAE_LATENT, GAN_LATENT = 4, 8
OLD_VAE_FIELDS = ("prior", "prior_components", "prior_fit_images")  # what a genvision 0.1.0 config lacks


def write_checkpoint(run: Path, kind: str, config: dict, weights: dict) -> Path:
    """A committed checkpoint run/checkpoints/step-000001 and the run's config.json; returns the checkpoint folder."""
    from genvision.checkpoint import save_checkpoint

    folder = save_checkpoint(run / "checkpoints" / "step-000001", {"kind": kind, "step": 1, "config": config},
                             weights, {})
    (run / "config.json").write_text(json.dumps({"kind": kind, "genvision_version": genvision.__version__,
                                                 "config": config}))
    return folder


def vae_weights(seed: int) -> dict:
    from genvision.models.vae import ConvVAE

    torch.manual_seed(seed)
    return {"vae": ConvVAE(VAE_LATENT, 4, 1, 32).state_dict()}


def stored_mixture():
    """Three well separated components, far from N(0, I): their samples cannot pass for prior samples."""
    from genvision.models.prior import GaussianMixturePrior

    generator = torch.Generator().manual_seed(11)
    means = 3 * torch.randn(3, VAE_LATENT, generator=generator)
    factors = 0.3 * torch.randn(3, VAE_LATENT, VAE_LATENT, generator=generator)
    covariances = factors @ factors.transpose(1, 2) + 0.05 * torch.eye(VAE_LATENT)
    return GaussianMixturePrior(torch.tensor([0.2, 0.3, 0.5]), means, covariances)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """name -> run folder: "vae" (--prior gmm, mixture stored), "vae-normal" (--prior normal, mixture stored),
    "old-vae" (a 0.1.0 config: no --prior fields, no mixture stored), "gan"."""
    from genvision.config import GANConfig, VAEConfig
    from genvision.models.dcgan import Generator

    base = tmp_path_factory.mktemp("prior-runs")
    mixture = {"prior": stored_mixture().state_dict()}
    vae = dataclasses.asdict(VAEConfig(latent_dim=VAE_LATENT, base_channels=4, channels=1, prior="gmm",
                                       prior_components=3, seed=2, likelihood="bernoulli"))
    old = {key: value for key, value in vae.items() if key not in OLD_VAE_FIELDS}
    torch.manual_seed(0)
    gan = {"generator": Generator(GAN_LATENT, 4, 1, 32).state_dict()}
    write_checkpoint(base / "vae", "vae", vae, {**vae_weights(0), **mixture})
    write_checkpoint(base / "vae-normal", "vae", {**vae, "prior": "normal"}, {**vae_weights(0), **mixture})
    write_checkpoint(base / "old-vae", "vae", old, vae_weights(1))
    write_checkpoint(base / "gan", "gan", dataclasses.asdict(GANConfig(latent_dim=GAN_LATENT, base_channels=4,
                                                                       channels=1)), gan)
    return {name: base / name for name in ("vae", "vae-normal", "old-vae", "gan")}


def checkpoint(run: Path) -> Path:
    return run / "checkpoints" / "step-000001"


def ok(*argv) -> tuple[str, str]:
    code, stdout, stderr = cli(*argv)
    assert code == 0, stderr
    return stdout, stderr


def sidecar(grid: Path) -> dict:
    return json.loads(Path(f"{grid}.json").read_text())


def test_gmm_samples_are_batch_independent_and_unlike_normal_ones(runs, tmp_path):
    grids = {batch: tmp_path / f"gmm-{batch}.png" for batch in (1, 7, 64)}
    for batch, grid in grids.items():
        stdout, _ = ok("sample", runs["vae"], "--num", 12, "--seed", 3, "--batch-size", batch, "--prior", "gmm",
                       "--grid", grid)
        assert stdout.strip() == f"wrote {grid} (12 images, step 1, seed 3, prior gmm)"
        assert sidecar(grid)["prior"] == "gmm"
    assert grids[1].read_bytes() == grids[7].read_bytes() == grids[64].read_bytes()
    images = {batch: genvision.sample(runs["vae"], 12, seed=3, batch_size=batch, prior="gmm") for batch in (1, 7, 64)}
    assert torch.equal(images[1], images[7]) and torch.equal(images[1], images[64])
    normal = genvision.sample(runs["vae"], 12, seed=3, prior="normal")
    assert not torch.equal(images[1], normal)
    ok("sample", runs["vae"], "--num", 12, "--seed", 3, "--prior", "normal", "--grid", tmp_path / "normal.png")
    assert sidecar(tmp_path / "normal.png")["prior"] == "normal"
    assert (tmp_path / "normal.png").read_bytes() != grids[1].read_bytes()


def test_gmm_samples_decode_the_stored_mixtures_latents(runs):
    from genvision.imageconv import to_uint8
    from genvision.sampling import latent_noise, prior_latents

    generator = genvision.load_generator(runs["vae"], prior="gmm")
    assert generator.prior_name == "gmm" and torch.equal(generator.prior.means, stored_mixture().means)
    latents = prior_latents(generator.prior, 12, VAE_LATENT, seed=3)
    with torch.no_grad():
        assert torch.equal(to_uint8(generator(latents)), genvision.sample(runs["vae"], 12, seed=3, prior="gmm"))
        normal = genvision.load_generator(runs["vae"], prior="normal")
        assert normal.prior is None and normal.prior_name == "normal"
        assert torch.equal(to_uint8(normal(latent_noise(12, VAE_LATENT, seed=3))),
                           genvision.sample(runs["vae"], 12, seed=3, prior="normal"))


@pytest.mark.parametrize("name,resolved", [("vae", "gmm"), ("vae-normal", "normal"), ("old-vae", "normal"),
                                           ("gan", "normal")])
def test_auto_is_the_runs_saved_prior(runs, tmp_path, name, resolved):
    auto, explicit = tmp_path / "auto.png", tmp_path / "explicit.png"
    _, stderr = ok("sample", runs[name], "--num", 6, "--seed", 1, "--grid", auto)
    ok("sample", runs[name], "--num", 6, "--seed", 1, "--prior", resolved, "--grid", explicit)
    assert auto.read_bytes() == explicit.read_bytes() and sidecar(auto)["prior"] == resolved
    assert "stores no mixture prior" not in stderr  # auto never fits a mixture for a checkpoint of 0.1.0


def test_a_checkpoint_without_a_mixture_gets_one_fitted_the_same_every_time(runs, tmp_path):
    grids = [tmp_path / "first.png", tmp_path / "second.png"]
    for grid in grids:
        _, stderr = ok("sample", runs["old-vae"], "--num", 10, "--seed", 4, "--prior", "gmm", "--grid", grid)
        assert "note: checkpoint" in stderr and "stores no mixture prior" in stderr, stderr
        assert str(checkpoint(runs["old-vae"])) in stderr and "mnist5k:train" in stderr
    assert grids[0].read_bytes() == grids[1].read_bytes() and sidecar(grids[0])["prior"] == "gmm"
    ok("sample", runs["old-vae"], "--num", 10, "--seed", 4, "--prior", "normal", "--grid", tmp_path / "normal.png")
    assert (tmp_path / "normal.png").read_bytes() != grids[0].read_bytes()
    fitted = genvision.load_generator(runs["old-vae"], prior="gmm").prior
    again = genvision.load_generator(runs["old-vae"], prior="gmm").prior
    assert fitted.num_components == VAEConfig().prior_components and torch.equal(fitted.means, again.means)
    assert torch.equal(fitted.covariances, again.covariances)


def test_interpolation_under_the_normal_prior_still_works(runs, tmp_path):
    walk = tmp_path / "walk.png"
    stdout, _ = ok("sample", runs["vae"], "--interpolate", 4, "--num", 2, "--prior", "normal", "--grid", walk)
    assert "2 rows of 4 interpolated images" in stdout and "prior gmm" not in stdout
    assert sidecar(walk)["prior"] == "normal" and sidecar(walk)["interpolate"] == 4


BAD = {
    # name: (argv with {run}/{tmp} placeholders, words the one error line holds ({ckpt}: the checkpoint folder))
    "sample-gan-gmm": (["sample", "{gan}", "--num", "4", "--prior", "gmm", "--grid", "{tmp}/g.png"],
                       ["--prior gmm", "{gan_ckpt}", "'gan'", "--prior normal"]),
    "sample-gan-gmm-out-dir": (["sample", "{gan}", "--num", "4", "--prior", "gmm", "--out-dir", "{tmp}/pngs"],
                               ["--prior gmm", "{gan_ckpt}"]),
    "fid-gan-gmm": (["fid", "{gan}", "mnist5k:train", "--prior", "gmm"], ["--prior gmm", "{gan_ckpt}", "'gan'"]),
    "fid-gan-gmm-second": (["fid", "mnist5k:test", "{gan}", "--prior", "gmm", "--json"], ["--prior gmm",
                                                                                          "{gan_ckpt}"]),
    "stats-gan-gmm": (["stats", "{gan}", "--prior", "gmm", "--output", "{tmp}/s.npz"], ["--prior gmm", "{gan_ckpt}"]),
    "report-gan-gmm": (["report", "{gan}", "--prior", "gmm"], ["--prior gmm", "{gan}", "'gan' run"]),
    "interpolate-gmm": (["sample", "{vae}", "--interpolate", "4", "--num", "2", "--prior", "gmm", "--grid",
                         "{tmp}/g.png"], ["--interpolate", "N(0, I)", "slerp", "--prior gmm", "--prior normal"]),
    "interpolate-auto-gmm": (["sample", "{vae}", "--interpolate", "4", "--num", "2", "--grid", "{tmp}/g.png"],
                             ["--interpolate", "N(0, I)", "--prior auto", "--prior normal"]),
    "interpolate-old-gmm": (["sample", "{old}", "--interpolate", "4", "--num", "2", "--prior", "gmm", "--grid",
                             "{tmp}/g.png"], ["--interpolate", "N(0, I)", "--prior normal"]),
    "reconstruct-prior": (["sample", "{vae}", "--reconstruct", "mnist5k:test", "--num", "2", "--prior", "gmm",
                           "--grid", "{tmp}/g.png"], ["--prior gmm", "--reconstruct"]),
    "fid-reconstructions-prior": (["fid", "{vae}", "mnist5k:test", "--reconstructions", "mnist5k:test", "--prior",
                                   "normal"], ["--prior normal", "--reconstructions"]),
    "sample-bad-choice": (["sample", "{vae}", "--prior", "flow", "--grid", "{tmp}/g.png"], ["--prior", "flow"]),
}


@pytest.mark.parametrize("name", list(BAD))
def test_refused_priors_are_one_line_exit_2_and_write_nothing(runs, tmp_path, name, _private_cache):
    argv, words = BAD[name]
    copy = tmp_path / "runs"  # report writes into its run folder: refused ones must not
    for key in ("gan", "vae", "old-vae"):
        shutil.copytree(runs[key], copy / key)
    values = {"gan": copy / "gan", "vae": copy / "vae", "old": copy / "old-vae", "tmp": tmp_path,
              "gan_ckpt": checkpoint(copy / "gan")}
    before, cache_before = snapshot(tmp_path), snapshot(_private_cache)
    code, stdout, stderr = cli(*(arg.format(**values) for arg in argv))
    assert_one_line_error(code, stderr, *(word.format(**values) for word in words), command=argv[0])
    assert stdout == "" and snapshot(tmp_path) == before and snapshot(_private_cache) == cache_before
    assert "stores no mixture prior" not in stderr  # refused before a mixture is fitted


def test_api_refuses_gmm_on_a_gan_and_bad_prior_values(runs):
    from genvision.errors import UsageError

    with pytest.raises(UsageError, match=r"--prior gmm needs a VAE checkpoint"):
        genvision.sample(runs["gan"], 4, prior="gmm")
    with pytest.raises(UsageError, match=r"--prior gmm needs a VAE checkpoint"):
        genvision.load_generator(runs["gan"], prior="gmm")
    for call in (lambda: genvision.sample(runs["vae"], 4, prior="flow"),
                 lambda: genvision.load_generator(runs["vae"], prior="flow")):
        with pytest.raises(UsageError) as error:
            call()
        assert str(error.value) == "--prior must be one of auto, normal, gmm, got 'flow'"


def test_fid_json_and_stats_name_the_prior_of_generator_sources(runs, tmp_path):
    common = ["--num-samples", 40, "--seed", 2, "--json"]
    gmm = json.loads(ok("fid", runs["vae"], "mnist5k:test", "--prior", "gmm", *common)[0])
    normal = json.loads(ok("fid", runs["vae"], "mnist5k:test", "--prior", "normal", *common)[0])
    auto = json.loads(ok("fid", runs["vae"], "mnist5k:test", *common)[0])
    assert (gmm["prior_a"], normal["prior_a"], auto["prior_a"]) == ("gmm", "normal", "gmm")
    assert "prior_b" not in gmm and auto == gmm and gmm["fid"] != normal["fid"]
    assert genvision.fid(runs["vae"], "mnist5k:test", num_samples=40, seed=2, prior="gmm") == gmm
    both = json.loads(ok("fid", runs["vae"], runs["gan"], *common)[0])
    assert (both["prior_a"], both["prior_b"]) == ("gmm", "normal")
    lines, _ = ok("fid", runs["vae"], "mnist5k:test", "--num-samples", 40, "--seed", 2, "--prior", "gmm")
    assert f"{runs['vae']} sampled with --prior gmm" in lines.splitlines()[0]
    stats = genvision.stats(runs["vae"], num_samples=40, seed=2, prior="gmm")
    assert stats["prior"] == "gmm" and "prior" not in genvision.stats("mnist5k:test")
    stdout, _ = ok("stats", runs["vae"], "--num-samples", 40, "--seed", 2, "--prior", "gmm", "--output",
                   tmp_path / "s.npz")
    assert f"from {runs['vae']} sampled with --prior gmm" in stdout


def test_help_texts_are_one_line_per_flag():
    from genvision.config import ReportConfig, SampleConfig
    from genvision.metrics.evaluate import FeatureConfig

    for cls in (SampleConfig, ReportConfig, FeatureConfig):
        field = {f.name: f for f in dataclasses.fields(cls)}["prior"]
        assert field.default == "auto" and field.metadata["choices"] == ("auto", "normal", "gmm")
        assert "\n" not in field.metadata["help"] and "auto" in field.metadata["help"]
    for command in ("sample", "fid", "stats", "report"):
        code, stdout, _ = cli(command, "--help")
        assert code == 0 and "--prior {auto,normal,gmm}" in stdout


def test_report_samples_with_the_prior_it_is_given(runs, tmp_path):
    run = tmp_path / "vae"
    shutil.copytree(runs["vae"], run)
    captions = {}
    for prior in ("auto", "normal"):
        ok("report", run, "--num-samples", 20, "--bootstrap", 0, "--kid-subset-size", 10, "--prior", prior)
        page = (run / "report.html").read_text()
        captions[prior] = page.split("20 samples (seed 2) of ", 1)[1].split(" against ", 1)[0]
        fid = page.split("<td>FID</td><td>", 1)[1].split("<", 1)[0]
        captions[prior] += f" FID {fid}"
    assert captions["auto"].startswith(f"{checkpoint(run)} (step 1, prior gmm)")  # the run's saved --prior
    assert captions["normal"].startswith(f"{checkpoint(run)} (step 1, prior normal)")
    assert captions["auto"].split(" FID ")[1] != captions["normal"].split(" FID ")[1]
