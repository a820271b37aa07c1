"""Standing statistics (`--ema-bn-batches`): the EMA generator's BatchNorm statistics re-estimated from its own
activations before grids, FID and checkpoints, training itself untouched."""

import pytest
import torch
from torch import nn

from genvision.constants import SEED_STRIDE
from genvision.models.dcgan import Generator
from genvision.training.gan import STANDING_STREAM, standing_statistics
from helpers import TINY_GAN, assert_one_line_error, cli, load_weights


def test_the_statistics_are_the_plain_average_of_each_batchs_own():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).eval()
    norm = model[1]
    with torch.no_grad():
        norm.running_mean.fill_(100.0)  # earlier statistics and the momentum must play no part
        norm.running_var.fill_(100.0)
    parameters = {name: value.clone() for name, value in model.named_parameters()}
    batches = [(torch.randn(5, 4) * (1 + i), None) for i in range(3)]
    standing_statistics(model, batches)
    with torch.no_grad():
        hidden = [model[0](x) for x, _ in batches]  # (5, 3) each: what the BatchNorm saw
    torch.testing.assert_close(norm.running_mean, torch.stack([h.mean(0) for h in hidden]).mean(0))
    torch.testing.assert_close(norm.running_var, torch.stack([h.var(0, unbiased=True) for h in hidden]).mean(0))
    assert int(norm.num_batches_tracked) == 3
    assert not model.training and norm.momentum == 0.1  # its mode and momentum are given back
    for name, value in model.named_parameters():
        torch.testing.assert_close(value, parameters[name], rtol=0, atol=0)


def test_a_model_without_batchnorm_or_without_batches_is_left_as_is():
    model = nn.BatchNorm1d(2)
    with torch.no_grad():
        model.running_mean.fill_(3.0)
    standing_statistics(model, [])
    assert model.running_mean.tolist() == [3.0, 3.0]
    standing_statistics(nn.Linear(2, 2), [(torch.zeros(1, 2), None)])  # nothing to re-estimate, no error


@pytest.fixture(scope="module")
def standing_runs(tmp_path_factory):
    """The same tiny run with standing statistics (4 batches) and without (0): 4 steps, a checkpoint at step 4."""
    root = tmp_path_factory.mktemp("standing")
    runs = {}
    for batches in (4, 0):
        run = root / f"bn{batches}"
        code, _, stderr = cli("train-gan", "--out-dir", run, *TINY_GAN, "--report-to", "none", "--num-steps", "4",
                              "--sample-every", "0", "--checkpoint-every", "4", "--ema-bn-batches", batches)
        assert code == 0, stderr[-3000:]
        runs[batches] = load_weights(run / "checkpoints" / "step-000004")
    return runs


def test_training_is_untouched_and_only_the_ema_statistics_change(standing_runs):
    on, off = standing_runs[4], standing_runs[0]
    assert on.keys() == off.keys()
    statistics = {key for key in on if key.startswith("generator_ema.") and "running_" in key}
    assert statistics
    for key in on:
        if key in statistics or key.endswith("num_batches_tracked"):
            continue
        torch.testing.assert_close(on[key], off[key], rtol=0, atol=0, msg=key)  # weights, EMA weights, live BN
    for key in statistics:  # without: the live generator's; with: re-estimated, so different
        torch.testing.assert_close(off[key], off[key.replace("generator_ema.", "generator.", 1)], rtol=0, atol=0)
        assert not torch.equal(on[key], off[key]), key


def test_the_saved_statistics_are_those_of_the_ema_weights_on_the_seeded_latents(standing_runs):
    """The contract of `GANTask.standing_batches`: --ema-bn-batches batches of --batch-size N(0, I) latents from
    seed * SEED_STRIDE + STANDING_STREAM (seed 0 here)."""
    saved = {key.split(".", 1)[1]: value for key, value in standing_runs[4].items()
             if key.startswith("generator_ema.")}
    generator = Generator(latent_dim=8, base_channels=4, image_channels=1, resolution=32)
    generator.load_state_dict(saved)
    noise = torch.Generator().manual_seed(0 * SEED_STRIDE + STANDING_STREAM)
    standing_statistics(generator, [(torch.randn(8, 8, generator=noise), None) for _ in range(4)])
    for name, value in generator.state_dict().items():
        torch.testing.assert_close(value, saved[name], msg=name)


def test_a_negative_count_is_one_line():
    code, _, stderr = cli("train-gan", "--ema-bn-batches", "-1", "--dry-run")
    assert_one_line_error(code, stderr, "--ema-bn-batches", "-1")
