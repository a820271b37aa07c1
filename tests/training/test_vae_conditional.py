"""A tiny conditional VAE run (Sohn et al. 2015) with --prior gmm: its checkpoint stores one mixture per class,
fitted to the posterior means mu(x, y) of that class's training images."""

import torch

from genvision.checkpoint import read_checkpoint
from genvision.config import VAEConfig, config_from_dict
from genvision.models.prior import GaussianMixturePrior
from genvision.models.vae import ConvVAE
from genvision.prior_fit import class_latent_prior, posterior_means
from genvision.vae_data import prior_fit_images, prior_fit_labels
from helpers import TINY_VAE, train_to_completion


def test_conditional_vae_stores_a_mixture_per_class(tmp_path):
    out = tmp_path / "run"
    train_to_completion("train_vae.py", out, *TINY_VAE, "--conditional", "--num-steps", "3", "--prior", "gmm",
                        "--prior-components", "3", "--sample-every", "3")
    checkpoint = read_checkpoint(out / "checkpoints" / "step-000003")
    assert checkpoint.class_names == tuple("0123456789") and checkpoint.class_counts == (450,) * 10
    stored = checkpoint.weights("prior")
    mixture = GaussianMixturePrior.from_state_dict(stored)
    assert mixture.num_classes == 10 and mixture.num_components == 30  # --prior-components 3 for each class
    assert torch.bincount(mixture.component_classes).tolist() == [3] * 10
    per_class = torch.zeros(10, dtype=torch.float64).index_add_(0, mixture.component_classes, mixture.weights)
    torch.testing.assert_close(per_class, torch.ones(10, dtype=torch.float64))

    # the same mixture again from the checkpoint's model: class y's components fitted to class y's codes
    config = config_from_dict(VAEConfig, checkpoint.config)
    model = ConvVAE(config.latent_dim, config.base_channels, config.channels, config.resolution,
                    config.likelihood == "gaussian-learned", num_classes=10)
    model.load_state_dict(checkpoint.weights("vae"))
    labels = prior_fit_labels(config)
    codes = posterior_means(model, prior_fit_images(config), labels=labels)
    refit = class_latent_prior(codes, labels, 10, config.prior_components, config.seed)
    for name, tensor in refit.state_dict().items():
        torch.testing.assert_close(stored[name], tensor, rtol=1e-6, atol=1e-9)
    for label in range(10):  # each class's mixture sits on that class's codes
        mine = codes[labels == label].mean(0)
        means = mixture.means[mixture.component_classes == label]
        weights = mixture.weights[mixture.component_classes == label]
        torch.testing.assert_close((weights[:, None] * means).sum(0), mine, rtol=1e-4, atol=1e-4)
    assert (out / "samples" / "step-000003.png").is_file()
    assert (out / "samples" / "reconstructions-step-000003.png").is_file()
