"""The Python API against its CLI twins on the same inputs: `genvision.train_gan` / `train_vae` return summary.json and
train the checkpoints `genvision train-gan` / `train-vae` train, `fid` returns the dict `genvision fid --json` prints,
`stats` the statistics `genvision stats` writes, `sample` the images of the PNGs `genvision sample --out-dir` writes,
and `load_generator` the module those images are decoded with; bad values raise the CLI's one-line messages, and
`import genvision` loads no torch.

The two tiny runs (60 steps) are trained in process by the API itself and are the checkpoints every other test samples;
the CLI twins run in process through `genvision.cli.main` (helpers.cli).
"""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import genvision
from genvision.errors import UsageError
from helpers import (ROOT, assert_one_line_error, assert_same_checkpoints, cli, noise_images, run_python, snapshot,
                     tiny_flags, write_pngs)

LATENT_DIMS = {"gan": 8, "vae": 4}  # helpers.TINY_GAN and TINY_VAE
# 60 steps (about 1 s more than 2): fewer leave the BatchNorm running statistics so close to their initial values
# that eval-mode samples are nearly one flat gray image, and any two sets of samples would agree trivially.
STEPS = ["--num-steps", "60"]
CHECKPOINT = "checkpoints/step-000060"


def keywords(flags: list[str]) -> dict:
    """["--base-channels", "4", ...] -> {"base_channels": 4, ...} (the tiny flags are all integers)."""
    return {flag[2:].replace("-", "_"): int(value) for flag, value in zip(flags[::2], flags[1::2])}


def tiny(kind: str) -> list[str]:
    return [*tiny_flags(LATENT_DIMS[kind]), *STEPS]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, tuple[Path, dict]]:
    """kind -> (run folder, the summary `genvision.train_KIND` returned) of a 2-step tiny run trained in process."""
    base = tmp_path_factory.mktemp("api-runs")
    return {kind: (base / kind, getattr(genvision, f"train_{kind}")(out_dir=base / kind, **keywords(tiny(kind))))
            for kind in LATENT_DIMS}


def cli_error(*argv) -> str:
    """The message of the one-line error of `genvision ARGV...` (after ``genvision COMMAND: error: ``)."""
    code, stdout, stderr = cli(*argv)
    assert stdout == ""
    return assert_one_line_error(code, stderr).split(": error: ", 1)[1]


def png_pixels(folder: Path) -> torch.Tensor:
    """uint8 (N, C, H, W) of a folder of numbered PNGs, in name order."""
    from PIL import Image

    arrays = []
    for path in sorted(folder.glob("*.png")):
        with Image.open(path) as image:
            array = np.asarray(image)
        arrays.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
    return torch.from_numpy(np.stack(arrays))


@pytest.mark.parametrize("kind", list(LATENT_DIMS))
def test_train_returns_summary_json_and_trains_what_the_cli_trains(runs, tmp_path, kind):
    run, summary = runs[kind]
    assert summary == json.loads((run / "summary.json").read_text())
    assert summary["run_dir"] == str(run) and summary["step"] == 60
    code, _, stderr = cli(f"train-{kind}", "--out-dir", tmp_path / "cli", *tiny(kind))
    assert code == 0, stderr
    cli_summary = json.loads((tmp_path / "cli" / "summary.json").read_text())
    for key in ("run_dir", "wall_time_s"):
        del summary[key], cli_summary[key]
    assert summary == cli_summary
    assert_same_checkpoints(run / CHECKPOINT, tmp_path / "cli" / CHECKPOINT)
    api_config, cli_config = (json.loads((folder / "config.json").read_text())["config"]
                              for folder in (run, tmp_path / "cli"))
    assert {**api_config, "out_dir": ""} == {**cli_config, "out_dir": ""}


@pytest.mark.parametrize("kind,options,flags", [
    ("gan", {}, []),
    ("gan", {"batch_size": 4, "truncation": 0.8}, ["--batch-size", 4, "--truncation", 0.8]),
    ("gan", {"ema": False}, ["--no-ema"]),
    ("vae", {"batch_size": 5, "truncation": 1.5}, ["--batch-size", 5, "--truncation", 1.5]),
])
def test_sample_is_the_pngs_of_sample_out_dir(runs, tmp_path, kind, options, flags):
    run = runs[kind][0]
    images = genvision.sample(run, 7, seed=3, **options)
    code, _, stderr = cli("sample", run, "--num", 7, "--seed", 3, *flags, "--out-dir", tmp_path / "pngs")
    assert code == 0, stderr
    assert images.dtype == torch.uint8 and images.shape == (7, 1, 32, 32)
    assert torch.equal(images, png_pixels(tmp_path / "pngs"))
    assert not torch.equal(images, genvision.sample(run, 7, seed=4, **options))  # the seed matters: not vacuous
    if options:  # truncation and ema change the images (batch_size alone would not)
        assert not torch.equal(images, genvision.sample(run, 7, seed=3))


@pytest.mark.parametrize("kind", list(LATENT_DIMS))
def test_load_generator_decodes_what_sample_gives(runs, kind):
    from genvision.imageconv import to_uint8
    from genvision.sampling import latent_noise, prior_latents

    run = runs[kind][0]
    generator = genvision.load_generator(run)
    assert isinstance(generator, torch.nn.Module) and not generator.training
    assert (generator.latent_dim, generator.kind, generator.step) == (LATENT_DIMS[kind], kind, 60)
    assert generator.checkpoint == run / CHECKPOINT
    assert generator.used_ema == (kind == "gan")
    assert generator.prior_name == ("gmm" if kind == "vae" else "normal")  # --prior auto: the run's saved --prior
    with torch.no_grad():  # the latents of the generator's prior (None: N(0, I), latent_noise)
        images = generator(prior_latents(generator.prior, 6, generator.latent_dim, seed=5))
    assert images.shape == (6, 1, 32, 32) and images.min() >= -1 and images.max() <= 1
    assert torch.equal(to_uint8(images), genvision.sample(run, 6, seed=5))
    if kind == "gan":  # the raw generator: what `sample --no-ema` gives, not the EMA's images
        raw = genvision.load_generator(run, ema=False)
        assert not raw.used_ema
        with torch.no_grad():
            raw_images = to_uint8(raw(latent_noise(6, raw.latent_dim, seed=5)))
        assert torch.equal(raw_images, genvision.sample(run, 6, seed=5, ema=False))


def test_fid_of_a_generator_is_the_dict_fid_json_prints(runs):
    run = runs["gan"][0]
    options = {"num_samples": 64, "seed": 2, "kid": True, "kid_subsets": 5, "kid_subset_size": 32,
               "precision_recall": True}
    report = genvision.fid(run, "mnist5k:test", **options)
    code, stdout, stderr = cli("fid", run, "mnist5k:test", "--num-samples", 64, "--seed", 2, "--kid", "--kid-subsets",
                               5, "--kid-subset-size", 32, "--precision-recall", "--json")
    assert code == 0, stderr
    printed = json.loads(stdout)
    assert abs(report["fid"] - printed["fid"]) < 1e-9 and report == printed
    assert {"kid", "precision", "recall", "classifier_score"} <= set(report) and report["n_a"] == 64


def test_fid_and_stats_of_folders_with_a_classifier_match_the_cli(tmp_path, classifier_file):
    for seed, name in ((0, "a"), (1, "b")):
        write_pngs(noise_images(40, seed=seed), tmp_path / name)
    report = genvision.fid(tmp_path / "a", tmp_path / "b", classifier=classifier_file)
    code, stdout, stderr = cli("fid", tmp_path / "a", tmp_path / "b", "--classifier", classifier_file, "--json")
    assert code == 0, stderr
    assert report == json.loads(stdout) and report["features"] == "classifier"

    from genvision.metrics.statsfile import load_stats

    written = genvision.stats(tmp_path / "a", tmp_path / "api.npz", classifier=classifier_file)
    code, _, stderr = cli("stats", tmp_path / "a", "--classifier", classifier_file, "--output", tmp_path / "cli.npz")
    assert code == 0, stderr
    mu, sigma, metadata = load_stats(tmp_path / "cli.npz")
    api_mu, api_sigma, api_metadata = load_stats(tmp_path / "api.npz")
    assert np.array_equal(api_mu, mu) and np.array_equal(api_sigma, sigma) and api_metadata == metadata
    assert np.array_equal(written["mu"], mu) and np.array_equal(written["sigma"], sigma)
    assert written["metadata"] == dataclasses.asdict(metadata) and written["count"] == 40 == metadata.num_samples
    assert written["path"] == str(tmp_path / "api.npz") and written["features"] == "classifier"

    before = snapshot(tmp_path)
    computed = genvision.stats(tmp_path / "a", classifier=classifier_file)  # written nowhere
    assert snapshot(tmp_path) == before and "path" not in computed
    assert np.array_equal(computed["mu"], mu) and np.array_equal(computed["sigma"], sigma)

    refused = cli_error("stats", tmp_path / "a", "--classifier", classifier_file, "--output", tmp_path / "api.npz")
    with pytest.raises(UsageError) as error:
        genvision.stats(tmp_path / "a", tmp_path / "api.npz", classifier=classifier_file)
    assert str(error.value) == refused and "--overwrite" in refused and snapshot(tmp_path) == before
    replaced = genvision.stats(tmp_path / "b", tmp_path / "api.npz", classifier=classifier_file, overwrite=True)
    assert np.array_equal(load_stats(tmp_path / "api.npz")[0], replaced["mu"])
    with pytest.raises(UsageError, match="overwrite= applies only with output="):
        genvision.stats(tmp_path / "a", classifier=classifier_file, overwrite=True)


BAD_VALUES = {
    # name: (API call of (runs, tmp), the same input as `genvision ARGV`, with {tmp} and {gan})
    "num-steps": (lambda runs, tmp: genvision.train_gan(num_steps=-1, out_dir=tmp / "run"),
                  ["train-gan", "--num-steps", "-1", "--out-dir", "{tmp}/run"]),
    "beta": (lambda runs, tmp: genvision.train_vae(beta=-1.0, out_dir=tmp / "run"),
             ["train-vae", "--beta", "-1", "--out-dir", "{tmp}/run"]),
    "resolution": (lambda runs, tmp: genvision.train_vae(resolution=48, out_dir=tmp / "run"),
                   ["train-vae", "--resolution", "48", "--out-dir", "{tmp}/run"]),
    "fid-batch-size": (lambda runs, tmp: genvision.fid("mnist5k:test", "mnist5k:test", batch_size=0),
                       ["fid", "mnist5k:test", "mnist5k:test", "--batch-size", "0"]),
    "stats-output": (lambda runs, tmp: genvision.stats("mnist5k:test", tmp / "stats.txt"),
                     ["stats", "mnist5k:test", "--output", "{tmp}/stats.txt"]),
    "sample-num": (lambda runs, tmp: genvision.sample(runs["gan"][0], 0),
                   ["sample", "{gan}", "--num", "0", "--out-dir", "{tmp}/pngs"]),
    "sample-truncation": (lambda runs, tmp: genvision.sample(runs["gan"][0], 4, truncation=-1.0),
                          ["sample", "{gan}", "--num", "4", "--truncation", "-1", "--out-dir", "{tmp}/pngs"]),
    "sample-missing": (lambda runs, tmp: genvision.sample(tmp / "nothing", 4),
                       ["sample", "{tmp}/nothing", "--num", "4", "--out-dir", "{tmp}/pngs"]),
}


@pytest.mark.parametrize("name", list(BAD_VALUES))
def test_bad_values_raise_the_cli_message_and_write_nothing(runs, tmp_path, name):
    call, argv = BAD_VALUES[name]
    before = snapshot(tmp_path)
    expected = cli_error(*(arg.format(tmp=tmp_path, gan=runs["gan"][0]) for arg in argv))
    with pytest.raises(UsageError) as error:
        call(runs, tmp_path)
    assert str(error.value) == expected and snapshot(tmp_path) == before


@pytest.mark.parametrize("call,words", [
    (lambda run: genvision.train_gan(num_step=3), ["genvision.train_gan()", "'num_step'", "did you mean num_steps"]),
    (lambda run: genvision.train_vae(latent_dims=3, betta=2.0), ["'latent_dims', 'betta'", "latent_dim", "beta"]),
    (lambda run: genvision.fid(run, "mnist5k:test", json=True), ["genvision.fid()", "'json'"]),
    (lambda run: genvision.sample(run, 4, grid="g.png"), ["'grid'", "valid options: batch_size, ema, truncation"]),
    (lambda run: genvision.stats(run, overwrit=True), ["genvision.stats()", "'overwrit'"]),
])
def test_unknown_keywords_are_one_line_naming_them_and_the_valid_ones(runs, call, words):
    with pytest.raises(UsageError) as error:
        call(runs["gan"][0])
    message = str(error.value)
    assert "\n" not in message and all(word in message for word in words), message


@pytest.mark.parametrize("call,message", [
    (lambda run: genvision.train_gan(num_steps="5"), "--num-steps must be an integer, got '5'"),
    (lambda run: genvision.train_gan(loss="wasserstein"), "--loss must be one of nonsaturating, hinge, lsgan, wgan-gp, "
                                                         "got 'wasserstein'"),
    (lambda run: genvision.sample(run, 4, ema="no"), "--ema must be True or False, got 'no'"),
    (lambda run: genvision.load_generator(run, ema=1), "--ema must be True or False, got 1"),
    (lambda run: genvision.fid(run, run, kid_subsets=2.5), "--kid-subsets must be an integer, got 2.5"),
])
def test_values_of_the_wrong_type_are_refused_in_the_flags_words(runs, call, message):
    with pytest.raises(UsageError) as error:
        call(runs["gan"][0])
    assert str(error.value) == message


def test_import_genvision_loads_no_torch_and_finds_the_api_lazily():
    probe = ("import sys, genvision; assert 'torch' not in sys.modules; assert set(genvision.__all__) <= "
             "set(dir(genvision)); import genvision.api; assert 'torch' not in sys.modules; "
             "print(genvision.__file__, genvision.__version__, genvision.fid.__module__)")
    result = run_python(["-c", probe], cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(ROOT / "genvision" / "__init__.py"), genvision.__version__, "genvision.api"]
    assert genvision.sample is genvision.api.sample and genvision.__version__ == "0.2.0"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        genvision.nope  # noqa: B018
