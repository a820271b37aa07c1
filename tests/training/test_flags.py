"""Training flags that no other test passes, each exercised end to end in a tiny in-process run and checked for its
effect, not only its exit code: train-gan --gp-weight (the logged penalty scales with it), --beta1/--beta2 (the
saved Adam state), --ema-decay (0: no generator_ema), --allow-tf32 (recorded, and handed to the backend set-up),
--report-to all (TensorBoard events with only tensorboard installed); train-vae --likelihood gaussian --sigma (the
logged reconstruction is the Gaussian NLL at that sigma), --prior-fit-images (the mixture is fitted on that many
images); train-classifier --weight-decay (the AdamW that trains), --calibration-images (the FID map's centre is the
mean over the first that many training images), --pooling (the saved architecture).

Runs go through `genvision.cli.main` in process (no torch start-up each), two per generator kind with different flag
values, so a flag's effect shows as a difference between them.
"""

import importlib.util
import json
import math

import pytest
import torch

from helpers import TINY_GAN, TINY_VAE, cli, load_state, load_weights, metrics_records, saved_config, write_pngs
from helpers import tensorboard_events as events

GAN_RUNS = {  # two wgan-gp runs: every flag below at a non-default value in "a", at its default in "b"
    "a": ["--gp-weight", "10", "--beta1", "0.3", "--beta2", "0.95", "--ema-decay", "0", "--no-allow-tf32",
          "--report-to", "none"],
    "b": ["--gp-weight", "5", "--report-to", "all"],
}
VAE_RUNS = {"a": ["--sigma", "0.1", "--prior-fit-images", "50"], "b": ["--sigma", "0.2", "--prior-fit-images", "64"]}


def only_tensorboard_installed(patch: pytest.MonkeyPatch) -> None:
    """`--report-to all` finds tensorboard alone, whatever else this environment holds."""
    real = importlib.util.find_spec
    patch.setattr(importlib.util, "find_spec",
                  lambda name, *args: None if name in ("wandb", "mlflow") else real(name, *args))


def train(command: str, out, *flags) -> None:
    code, _, stderr = cli(command, "--out-dir", out, *flags)
    assert code == 0, stderr[-3000:]


@pytest.fixture(scope="module")
def gan_runs(tmp_path_factory) -> dict:
    """name -> (run folder, the allow_tf32 values `configure_backends` received) of two 2-step wgan-gp runs."""
    import genvision.training.common as common

    root, runs = tmp_path_factory.mktemp("gan-flags"), {}
    for name, flags in GAN_RUNS.items():
        received = []
        real = common.configure_backends
        with pytest.MonkeyPatch.context() as patch:
            only_tensorboard_installed(patch)
            patch.setattr(common, "configure_backends",
                          lambda device, allow_tf32=True: (received.append(allow_tf32), real(device, allow_tf32)))
            train("train-gan", root / name, *TINY_GAN, "--num-steps", "2", "--log-every", "1", "--loss", "wgan-gp",
                  *flags)
        runs[name] = (root / name, received)
    return runs


def test_gp_weight_scales_the_logged_penalty(gan_runs):
    first = {name: metrics_records(run)[0] for name, (run, _) in gan_runs.items()}
    assert first["a"]["d_loss"] == first["b"]["d_loss"]  # step 1: the same weights, batch and noise
    assert first["b"]["penalty"] > 0
    assert first["a"]["penalty"] == pytest.approx(2 * first["b"]["penalty"], rel=1e-4)  # lambda 10 vs 5


def test_beta1_beta2_are_the_adam_betas(gan_runs):
    for name, betas in (("a", (0.3, 0.95)), ("b", (0.0, 0.999))):  # "b": the defaults
        run, _ = gan_runs[name]
        state = load_state(run / "checkpoints" / "step-000002")
        for optimizer in ("optimizer_g", "optimizer_d"):
            assert [tuple(group["betas"]) for group in state[optimizer]["param_groups"]] == [betas], (name, optimizer)


def test_ema_decay_zero_keeps_no_average(gan_runs):
    from genvision.checkpoint import read_checkpoint

    roles = {name: read_checkpoint(run / "checkpoints" / "step-000002").roles() for name, (run, _) in gan_runs.items()}
    assert roles == {"a": {"generator", "discriminator"}, "b": {"generator", "discriminator", "generator_ema"}}
    assert not any(key.startswith("generator_ema.") for key in load_weights(gan_runs["a"][0] / "checkpoints"
                                                                            / "step-000002"))
    weights = load_weights(gan_runs["b"][0] / "checkpoints" / "step-000002")
    averaged = [key for key in weights if key.startswith("generator_ema.") and weights[key].is_floating_point()]
    assert averaged and any(not torch.equal(weights[key], weights["generator." + key.split(".", 1)[1]])
                            for key in averaged)  # an average, not a copy
    assert [saved_config(run, "gan")["ema_decay"] for run, _ in gan_runs.values()] == [0.0, 0.999]


def test_allow_tf32_is_recorded_and_reaches_the_backends(gan_runs):
    assert [saved_config(run, "gan")["allow_tf32"] for run, _ in gan_runs.values()] == [False, True]
    assert [received for _, received in gan_runs.values()] == [[False], [True]]


def test_configure_backends_sets_tf32_on_cuda_only():
    """What --allow-tf32 does on a CUDA device (the flags alone: no GPU is needed to set them); nothing on the CPU."""
    from genvision.training.common import configure_backends

    flags = ((torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32"),
             (torch.backends.cudnn, "benchmark"))
    before = [getattr(owner, name) for owner, name in flags]
    try:
        for allow in (False, True):
            configure_backends(torch.device("cuda"), allow)
            assert [getattr(owner, name) for owner, name in flags] == [allow, allow, True]
        configure_backends(torch.device("cuda"), False)
        configure_backends(torch.device("cpu"), True)
        assert [getattr(owner, name) for owner, name in flags][:2] == [False, False]  # the CPU leaves them alone
    finally:
        for (owner, name), value in zip(flags, before):
            setattr(owner, name, value)


def test_report_to_all_writes_tensorboard_events_with_only_tensorboard_installed(gan_runs):
    run, _ = gan_runs["b"]
    assert saved_config(run, "gan")["report_to"] == "all"
    scalars, _ = events(run)
    assert [step for step, _ in scalars["d_loss"]] == [1, 2]
    assert scalars["penalty"][0][1] == pytest.approx(metrics_records(run)[0]["penalty"], rel=1e-4)
    assert not (gan_runs["a"][0] / "tensorboard").exists()  # --report-to none


# ---------------------------------------------------------------------------------------------------------------
# train-vae


@pytest.fixture(scope="module")
def vae_runs(tmp_path_factory) -> dict:
    """name -> (run folder, the number of images each mixture fit got) of two 2-step Gaussian-likelihood runs."""
    import genvision.prior_fit as prior_fit

    root, runs = tmp_path_factory.mktemp("vae-flags"), {}
    for name, flags in VAE_RUNS.items():
        fitted = []
        real = prior_fit.fit_latent_prior
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(prior_fit, "fit_latent_prior",
                          lambda codes, *args: (fitted.append(len(codes)), real(codes, *args))[1])
            train("train-vae", root / name, *TINY_VAE, "--num-steps", "2", "--log-every", "1", "--likelihood",
                  "gaussian", "--prior", "gmm", "--prior-components", "3", "--report-to", "none", *flags)
        runs[name] = (root / name, fitted)
    return runs


def test_gaussian_likelihood_uses_sigma(vae_runs):
    """Step 1 (the same weights and batch in both runs): reconstruction = SSE / (2 sigma^2) + D log sigma +
    D/2 log 2 pi per image, D = 32 x 32 pixels. The squared error solved from the sigma = 0.1 run predicts the
    sigma = 0.2 run's reconstruction."""
    pixels = 32 * 32
    first = {name: metrics_records(run)[0] for name, (run, _) in vae_runs.items()}
    assert first["a"]["kl"] == first["b"]["kl"]

    def constant(sigma):
        return pixels * math.log(sigma) + pixels / 2 * math.log(2 * math.pi)

    squared_error = (first["a"]["reconstruction"] - constant(0.1)) * 2 * 0.1**2
    assert squared_error > 0
    assert first["b"]["reconstruction"] == pytest.approx(squared_error / (2 * 0.2**2) + constant(0.2), rel=1e-4)
    for name, sigma in (("a", 0.1), ("b", 0.2)):
        run, _ = vae_runs[name]
        config = saved_config(run, "vae")
        assert (config["likelihood"], config["sigma"]) == ("gaussian", sigma)
        assert not any("log_sigma" in key for key in load_weights(run / "checkpoints" / "step-000002"))  # fixed
        assert json.loads((run / "summary.json").read_text())["test_negative_elbo_nats"] > 0


def test_prior_fit_images_is_the_number_of_images_the_mixture_is_fitted_on(vae_runs):
    for name, count in (("a", 50), ("b", 64)):
        run, fitted = vae_runs[name]
        assert fitted and set(fitted) == {count}, (name, fitted)  # of mnist5k:train's 4500 images
        assert saved_config(run, "vae")["prior_fit_images"] == count


# ---------------------------------------------------------------------------------------------------------------
# train-classifier


def test_classifier_weight_decay_calibration_images_and_pooling(tmp_path, monkeypatch):
    """One epoch on a 24-image folder (3 classes), held out on another folder: the AdamW that trains has
    --weight-decay, the FID map's centre is the mean of the first --calibration-images training images' features
    (not of all of them), and --pooling global-average is the saved architecture."""
    from genvision.data import load_dataset
    from genvision.imageconv import to_model_range
    from genvision.weights import load_classifier

    for split, seed in (("train", 1), ("eval", 2)):
        for label in range(3):
            images = torch.randint(0, 256, (8, 1, 32, 32), generator=torch.Generator().manual_seed(seed * 10 + label))
            images[:, :, 8 * label:8 * label + 8] = 255  # a class-dependent bright band
            write_pngs(images.to(torch.uint8), tmp_path / split / f"class{label}")
    decays = []
    real_adamw = torch.optim.AdamW

    class RecordingAdamW(real_adamw):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            decays.append(self.defaults["weight_decay"])

    monkeypatch.setattr(torch.optim, "AdamW", RecordingAdamW)
    out = tmp_path / "run"
    train("train-classifier", out, "--dataset", f"folder:{tmp_path / 'train'}", "--eval-dataset",
          f"folder:{tmp_path / 'eval'}", "--epochs", "1", "--base-channels", "4", "--num-features", "8",
          "--batch-size", "8", "--weight-decay", "0.25", "--calibration-images", "7", "--pooling", "global-average",
          "--report-to", "none")
    assert decays == [0.25]
    config = json.loads((out / "config.json").read_text())["config"]
    assert (config["weight_decay"], config["calibration_images"], config["pooling"]) == (0.25, 7, "global-average")

    model, _ = load_classifier(out / "classifier.safetensors")
    assert model.architecture.pooling == "global-average"
    assert model.feature_layer[0].in_features == 4 * 4  # 4w channels averaged; spatial would flatten 4w x 4 x 4
    training_images = load_dataset(f"folder:{tmp_path / 'train'}").images
    with torch.no_grad():
        blocks = model.eval().layer_and_low_level(to_model_range(training_images))
        features = torch.cat(blocks, dim=1).double()
    torch.testing.assert_close(model.feature_center.double(), features[:7].mean(0), rtol=1e-4, atol=1e-5)
    assert not torch.allclose(model.feature_center.double(), features.mean(0), rtol=1e-3, atol=1e-3)
